//! Backend tests through the validated channel: data round trips, zeroing, and every
//! validation error, on malloc, null and uring.

use std::sync::Arc;

use super::backend::{malloc::MallocBdev, null::NullBdev, uring::UringBdev, Geometry};
use super::*;
use crate::sys::region::Backing;
use crate::sys::DmaPool;

fn pool() -> DmaPool {
    DmaPool::new(64 * 1024, 16, Backing::Normal).unwrap()
}

fn run(ch: &mut Channel, io: BdevIo) -> IoCompletion {
    ch.submit(io).expect("queue has room");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if ch.poll(&mut out) > 0 {
            return out.pop().unwrap();
        }
        std::thread::yield_now();
    }
    panic!("I/O never completed in 60 s");
}

fn io(ty: IoType, lba: u64, n: u32, buf: Option<crate::sys::DmaBuf>) -> BdevIo {
    BdevIo { ty, offset_blocks: lba, num_blocks: n, buf, fua: false, tag: 7 }
}

fn write_read_zero(bdev: Arc<dyn Bdev>, pool: &DmaPool) {
    let bs = bdev.block_size() as usize;
    let mut ch = open_channel(&bdev).unwrap();
    let mut buf = pool.alloc().unwrap();
    buf.set_len(2 * bs);
    buf.as_mut_slice().iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
    let c = run(&mut ch, BdevIo { fua: true, ..io(IoType::Write, 3, 2, Some(buf)) });
    assert_eq!((c.tag, c.status), (7, IoStatus::Success));
    let mut rbuf = c.buf.unwrap();
    rbuf.as_mut_slice().fill(0xEE);
    let c = run(&mut ch, io(IoType::Read, 3, 2, Some(rbuf)));
    assert_eq!(c.status, IoStatus::Success);
    let data = c.buf.unwrap();
    assert!(data.as_slice().iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    assert_eq!(run(&mut ch, io(IoType::WriteZeroes, 4, 1, None)).status, IoStatus::Success);
    assert_eq!(run(&mut ch, io(IoType::Flush, 0, 0, None)).status, IoStatus::Success);
    let c = run(&mut ch, io(IoType::Read, 3, 2, Some(data)));
    let d = c.buf.unwrap();
    assert_eq!(d.as_slice()[0], 0);
    assert_eq!(d.as_slice()[1], 1);
    assert!(d.as_slice()[bs..].iter().all(|&b| b == 0), "write zeroes zeroed block 4");
    assert_eq!(run(&mut ch, io(IoType::Unmap, 3, 1, None)).status, IoStatus::Success);
}

fn rejects_bad_requests(bdev: Arc<dyn Bdev>, pool: &DmaPool) {
    let bs = bdev.block_size() as usize;
    let end = bdev.num_blocks();
    let mut ch = open_channel(&bdev).unwrap();
    let mut b = pool.alloc().unwrap();
    b.set_len(bs);
    let c = run(&mut ch, io(IoType::Read, end, 1, Some(b)));
    assert_eq!(c.status, IoStatus::OutOfRange);
    let mut b = c.buf.unwrap();
    b.set_len(bs + 1);
    let c = run(&mut ch, io(IoType::Write, 0, 1, Some(b)));
    assert_eq!(c.status, IoStatus::InvalidLength);
    assert_eq!(run(&mut ch, io(IoType::Write, 0, 1, None)).status, IoStatus::InvalidLength);
    assert_eq!(run(&mut ch, io(IoType::WriteZeroes, u64::MAX, 2, None)).status, IoStatus::OutOfRange);
    assert_eq!(run(&mut ch, io(IoType::Unmap, 0, 0, None)).status, IoStatus::InvalidLength);
}

#[test]
fn malloc_backend() {
    let p = pool();
    let b = MallocBdev::create(Geometry::new("m0", 512, 64, None).unwrap()).unwrap();
    write_read_zero(b.clone(), &p);
    rejects_bad_requests(b, &p);
}

#[test]
fn null_backend_completes_everything() {
    let p = pool();
    let b: Arc<dyn Bdev> = NullBdev::create(Geometry::new("n0", 4096, 64, None).unwrap());
    let mut ch = open_channel(&b).unwrap();
    let mut buf = p.alloc().unwrap();
    buf.set_len(4096);
    assert!(run(&mut ch, io(IoType::Write, 1, 1, Some(buf))).status.is_success());
    rejects_bad_requests(b, &p);
}

fn temp_file(bytes: u64) -> tempfile::NamedTempFile {
    let dir = std::env::var("FERRITE_TEST_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let f = tempfile::NamedTempFile::new_in(dir).unwrap();
    f.as_file().set_len(bytes).unwrap();
    f
}

#[test]
fn uring_backend() {
    let probe = ferrite_hw::Probe::gather();
    if !probe.has_io_uring() {
        eprintln!("skipping uring_backend: io_uring unavailable");
        return;
    }
    let p = pool();
    let f = temp_file(64 * 4096);
    let path = f.path().to_str().unwrap();
    let b = UringBdev::create("u0", path, Some(4096), None, p.clone()).unwrap();
    write_read_zero(b.clone(), &p);
    rejects_bad_requests(b, &p);
}

#[test]
fn uring_create_errors_name_the_problem() {
    let p = pool();
    let err = UringBdev::create("u1", "/nonexistent/file", None, None, p.clone()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let f = temp_file(4096 + 512);
    let err = UringBdev::create("u1", f.path().to_str().unwrap(), Some(4096), None, p).unwrap_err();
    assert!(err.to_string().contains("not a multiple of the block size"), "{err}");
    let err = Geometry::new("bad name", 512, 1, None).unwrap_err();
    assert!(err.to_string().contains("invalid bdev name"));
    let err = Geometry::new("x", 1000, 1, None).unwrap_err();
    assert!(err.to_string().contains("power of two"));
}

//! Block-device benchmarks: one 4 KiB I/O submitted and completed through a channel, on the
//! null (pure overhead), malloc and uring (O_DIRECT file) backends.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use ferrite::bdev::backend::{malloc::MallocBdev, null::NullBdev, uring::UringBdev, Geometry};
use ferrite::bdev::{open_channel, Bdev, BdevIo, IoType};
use ferrite::sys::region::Backing;
use ferrite::sys::DmaPool;

fn one_io(ch: &mut ferrite::bdev::Channel, buf: &mut Option<ferrite::sys::DmaBuf>, ty: IoType, lba: u64) {
    let io = BdevIo { ty, offset_blocks: lba, num_blocks: 1, buf: buf.take(), fua: false, tag: 0 };
    ch.submit(io).unwrap();
    let mut out = Vec::with_capacity(1);
    while ch.poll(&mut out) == 0 {}
    let c = out.pop().unwrap();
    assert!(c.status.is_success());
    *buf = c.buf;
}

fn bench_dev(c: &mut Criterion, label: &str, dev: Arc<dyn Bdev>, pool: &DmaPool) {
    let mut ch = open_channel(&dev).unwrap();
    let mut buf = pool.alloc();
    buf.as_mut().unwrap().set_len(4096);
    let mut lba = 0u64;
    let blocks = dev.num_blocks();
    let mut g = c.benchmark_group("bdev_4k_qd1");
    g.bench_function(format!("{label}_read"), |b| {
        b.iter(|| {
            lba = (lba + 7919) % blocks;
            one_io(&mut ch, &mut buf, IoType::Read, lba)
        })
    });
    g.bench_function(format!("{label}_write"), |b| {
        b.iter(|| {
            lba = (lba + 7919) % blocks;
            one_io(&mut ch, &mut buf, IoType::Write, lba)
        })
    });
    g.finish();
}

fn backends(c: &mut Criterion) {
    let pool = DmaPool::new(4096, 8, Backing::PreferHuge).unwrap();
    let null = NullBdev::create(Geometry::new("null", 4096, 1 << 16, None).unwrap());
    bench_dev(c, "null", null, &pool);
    let malloc = MallocBdev::create(Geometry::new("malloc", 4096, 1 << 14, None).unwrap()).unwrap();
    bench_dev(c, "malloc", malloc, &pool);
    let dir = std::env::var("FERRITE_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let path = format!("{dir}/ferrite-bench-bdev.img");
    std::fs::write(&path, vec![0u8; 64 << 20]).unwrap();
    let uring = UringBdev::create("uring", &path, Some(4096), None, pool.clone()).unwrap();
    bench_dev(c, "uring", uring, &pool);
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, backends);
criterion_main!(benches);

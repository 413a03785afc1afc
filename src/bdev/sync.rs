//! Blocking I/O for the control plane only (formatting, recovery at open): submit, then poll
//! the channel until the completion arrives. Never used on a reactor.

use std::time::{Duration, Instant};

use super::{BdevIo, Channel, IoStatus, IoType};
use crate::sys::{DmaBuf, DmaPool};

/// How long a control-plane I/O may take.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one I/O to completion.
pub fn run(ch: &mut Channel, mut io: BdevIo) -> Result<Option<DmaBuf>, IoStatus> {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        match ch.submit(io) {
            Ok(()) => break,
            Err(back) => io = back,
        }
        if Instant::now() > deadline {
            return Err(IoStatus::IoError(libc::ETIMEDOUT));
        }
        std::thread::yield_now();
    }
    let mut out = Vec::with_capacity(1);
    while ch.poll(&mut out) == 0 {
        if Instant::now() > deadline {
            return Err(IoStatus::IoError(libc::ETIMEDOUT));
        }
        std::thread::yield_now();
    }
    let c = out.pop().expect("one completion");
    if c.status.is_success() {
        Ok(c.buf)
    } else {
        Err(c.status)
    }
}

/// Reads `blocks` blocks at `lba` into a fresh buffer.
pub fn read(ch: &mut Channel, pool: &DmaPool, lba: u64, blocks: u32) -> Result<Vec<u8>, IoStatus> {
    let bs = ch.bdev().block_size() as usize;
    let mut out = Vec::with_capacity(blocks as usize * bs);
    let per = (pool.buf_size() / bs) as u32;
    let mut done = 0;
    while done < blocks {
        let n = per.min(blocks - done);
        let mut buf = pool.alloc().ok_or(IoStatus::IoError(libc::ENOMEM))?;
        buf.set_len(n as usize * bs);
        let io = BdevIo {
            ty: IoType::Read,
            offset_blocks: lba + u64::from(done),
            num_blocks: n,
            buf: Some(buf),
            fua: false,
            tag: 0,
        };
        let buf = run(ch, io)?.expect("read returns its buffer");
        out.extend_from_slice(buf.as_slice());
        done += n;
    }
    Ok(out)
}

/// Writes `data` (whole blocks) at `lba`, durable (FUA).
pub fn write(ch: &mut Channel, pool: &DmaPool, lba: u64, data: &[u8]) -> Result<(), IoStatus> {
    let bs = ch.bdev().block_size() as usize;
    assert!(data.len() % bs == 0, "sync write of a partial block");
    for (i, chunk) in data.chunks(pool.buf_size() / bs * bs).enumerate() {
        let mut buf = pool.alloc().ok_or(IoStatus::IoError(libc::ENOMEM))?;
        buf.set_len(chunk.len());
        buf.as_mut_slice().copy_from_slice(chunk);
        let at = lba + (i * (pool.buf_size() / bs)) as u64;
        let io = BdevIo {
            ty: IoType::Write,
            offset_blocks: at,
            num_blocks: (chunk.len() / bs) as u32,
            buf: Some(buf),
            fua: true,
            tag: 0,
        };
        run(ch, io)?;
    }
    Ok(())
}

/// Runs an operation without data (flush, zeroes, unmap).
pub fn op(ch: &mut Channel, ty: IoType, lba: u64, blocks: u32) -> Result<(), IoStatus> {
    run(ch, BdevIo { ty, offset_blocks: lba, num_blocks: blocks, buf: None, fua: true, tag: 0 }).map(|_| ())
}

//! The uring bdev: a file or block device driven through a per-channel io_uring.
//!
//! Each channel owns one ring with the device registered as a fixed file and the DMA pool
//! registered as fixed buffers, so a host's data goes from the pool to the device with no copy
//! and no per-I/O page pinning. Writes with FUA use `RWF_DSYNC`; Flush is `fdatasync`;
//! Write Zeroes and Deallocate are `fallocate` (zero range / punch hole). The device is opened
//! with O_DIRECT (a logged fallback to buffered I/O where the filesystem refuses it).
//! Invariants: an in-flight request's buffer is held in the channel's slab until the kernel
//! completes it, also when the channel is dropped (drop waits for the ring to drain).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};

use super::Geometry;
use crate::bdev::{BackendChannel, Bdev, BdevError, BdevIo, IoCompletion, IoStatus, IoType};
use crate::sys::event::EventFd;
use crate::sys::DmaPool;

/// Submission queue depth of each channel's ring.
pub const RING_ENTRIES: u32 = 256;

/// A file or block device through io_uring.
#[derive(Debug)]
pub struct UringBdev {
    geo: Geometry,
    file: File,
    path: String,
    direct: bool,
    pool: DmaPool,
}

fn os_err(what: String) -> impl FnOnce(std::io::Error) -> BdevError {
    move |source| BdevError::Os { what, source }
}

fn open_device(path: &str) -> Result<(File, bool), BdevError> {
    let direct = OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(path);
    match direct {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(path, "O_DIRECT refused by the filesystem; using buffered I/O");
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(os_err(format!("opening {path}")))?;
            Ok((f, false))
        }
        Err(e) => Err(os_err(format!("opening {path}"))(e)),
    }
}

fn device_size(file: &File, path: &str) -> Result<(u64, Option<u32>), BdevError> {
    let meta = file.metadata().map_err(os_err(format!("stat {path}")))?;
    if !meta.file_type().is_block_device() {
        return Ok((meta.len(), None));
    }
    let mut bytes: u64 = 0;
    let mut sector: libc::c_int = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 and BLKSSZGET one int into the live locals passed.
    let rc = unsafe {
        libc::ioctl(file.as_raw_fd(), 0x8008_1272, &mut bytes as *mut u64)
            | libc::ioctl(file.as_raw_fd(), 0x1268, &mut sector as *mut libc::c_int)
    };
    if rc < 0 {
        return Err(os_err(format!("reading the size of block device {path}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok((bytes, u32::try_from(sector).ok()))
}

impl UringBdev {
    /// Opens `path`. `block_size` defaults to the device's logical block size (512 for files).
    pub fn create(
        name: &str,
        path: &str,
        block_size: Option<u32>,
        uuid: Option<uuid::Uuid>,
        pool: DmaPool,
    ) -> Result<Arc<UringBdev>, BdevError> {
        if !std::path::Path::new(path).exists() {
            return Err(BdevError::InvalidParams(format!("file {path:?} does not exist")));
        }
        let (file, direct) = open_device(path)?;
        let (bytes, dev_bs) = device_size(&file, path)?;
        let block_size = block_size.or(dev_bs).unwrap_or(512);
        if bytes % u64::from(block_size) != 0 {
            return Err(BdevError::InvalidParams(format!(
                "size of {path} ({bytes} bytes) is not a multiple of the block size {block_size}"
            )));
        }
        let geo = Geometry::new(name, block_size, bytes / u64::from(block_size), uuid)?;
        Ok(Arc::new(UringBdev { geo, file, path: path.to_string(), direct, pool }))
    }

    /// The backing path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the device is opened with O_DIRECT.
    pub fn is_direct(&self) -> bool {
        self.direct
    }
}

impl Bdev for UringBdev {
    super::geometry_accessors!();
    fn product_name(&self) -> &'static str {
        "URING bdev"
    }
    fn volatile_write_cache(&self) -> bool {
        true
    }
    fn supports(&self, _ty: IoType) -> bool {
        true
    }
    fn open_backend(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        UringChannel::open(self).map(|c| Box::new(c) as Box<dyn BackendChannel>)
    }
}

struct UringChannel {
    ring: IoUring,
    eventfd: EventFd,
    block_size: u64,
    pool: DmaPool,
    slots: Vec<Option<BdevIo>>,
    free: Vec<u32>,
    unsubmitted: u32,
}

impl UringChannel {
    fn open(bdev: &UringBdev) -> Result<UringChannel, BdevError> {
        let ring = IoUring::new(RING_ENTRIES).map_err(os_err("io_uring setup".into()))?;
        let eventfd = EventFd::new().map_err(os_err("eventfd".into()))?;
        let sub = ring.submitter();
        sub.register_files(&[bdev.file.as_raw_fd()]).map_err(os_err("registering the device file".into()))?;
        // SAFETY: the iovecs describe the pool's region, which this channel keeps alive through
        // its `pool` handle for as long as the ring exists.
        unsafe { sub.register_buffers(&bdev.pool.fixed_iovecs()) }
            .map_err(os_err("registering DMA buffers".into()))?;
        sub.register_eventfd(eventfd.as_raw_fd()).map_err(os_err("registering the eventfd".into()))?;
        Ok(UringChannel {
            ring,
            eventfd,
            block_size: u64::from(bdev.geo.block_size),
            pool: bdev.pool.clone(),
            slots: (0..RING_ENTRIES).map(|_| None).collect(),
            free: (0..RING_ENTRIES).rev().collect(),
            unsubmitted: 0,
        })
    }

    fn build(&self, io: &mut BdevIo) -> squeue::Entry {
        let file = types::Fixed(0);
        let off = io.offset_blocks * self.block_size;
        let len = u64::from(io.num_blocks) * self.block_size;
        let fixed = io.buf.as_ref().filter(|b| self.pool.owns(b)).map(|b| b.fixed_index());
        let dsync = if io.fua { libc::RWF_DSYNC } else { 0 };
        match (io.ty, io.buf.as_mut()) {
            (IoType::Read, Some(b)) => match fixed {
                Some(i) => {
                    opcode::ReadFixed::new(file, b.as_mut_ptr(), b.len() as u32, i).offset(off).build()
                }
                None => opcode::Read::new(file, b.as_mut_ptr(), b.len() as u32).offset(off).build(),
            },
            (IoType::Write, Some(b)) => match fixed {
                Some(i) => opcode::WriteFixed::new(file, b.as_ptr(), b.len() as u32, i)
                    .offset(off)
                    .rw_flags(dsync)
                    .build(),
                None => {
                    opcode::Write::new(file, b.as_ptr(), b.len() as u32).offset(off).rw_flags(dsync).build()
                }
            },
            (IoType::Flush, _) => opcode::Fsync::new(file).flags(types::FsyncFlags::DATASYNC).build(),
            (IoType::WriteZeroes, _) => {
                opcode::Fallocate::new(file, len).offset(off).mode(libc::FALLOC_FL_ZERO_RANGE).build()
            }
            (IoType::Unmap, _) => opcode::Fallocate::new(file, len)
                .offset(off)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            (ty, None) => panic!("validated {ty:?} without a buffer"),
        }
    }

    fn reap(&mut self, out: &mut Vec<IoCompletion>) -> usize {
        let mut n = 0;
        for cqe in self.ring.completion() {
            let slot = cqe.user_data() as usize;
            let io = self.slots[slot].take().expect("completion for an empty slot");
            self.free.push(slot as u32);
            let status = match cqe.result() {
                r if r < 0 => IoStatus::IoError(-r),
                r if io.ty.has_data() && r as usize != io.buf.as_ref().map_or(0, |b| b.len()) => {
                    IoStatus::IoError(libc::EIO)
                }
                _ => IoStatus::Success,
            };
            out.push(IoCompletion::of(io, status));
            n += 1;
        }
        n
    }
}

impl BackendChannel for UringChannel {
    fn submit(&mut self, mut io: BdevIo) -> Result<(), BdevIo> {
        let Some(slot) = self.free.pop() else {
            return Err(io);
        };
        let sqe = self.build(&mut io).user_data(u64::from(slot));
        self.slots[slot as usize] = Some(io);
        // SAFETY: the buffer the entry points at is owned by the slab slot until the kernel
        // completes it (reap), and the slab lives as long as the ring (drop drains it).
        let pushed = unsafe { self.ring.submission().push(&sqe) };
        assert!(pushed.is_ok(), "submission queue sized to the slab cannot be full");
        self.unsubmitted += 1;
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<IoCompletion>) -> usize {
        if self.unsubmitted > 0 {
            match self.ring.submit() {
                Ok(_) => self.unsubmitted = 0,
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring submit failed; retrying on next poll")
                }
            }
        }
        // The eventfd only matters to a reactor about to sleep: keep the kernel from signalling
        // it while completions keep coming, and turn it back on (then look again, so none is
        // missed) once a poll finds nothing.
        let reaped = self.reap(out);
        let disabled = self.ring.completion().eventfd_disabled();
        if reaped > 0 {
            if !disabled {
                self.ring.completion().disable_eventfd();
            }
            return reaped;
        }
        if disabled {
            self.ring.completion().enable_eventfd();
            return self.reap(out);
        }
        0
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn wake_fds(&self, out: &mut Vec<RawFd>) {
        out.push(self.eventfd.as_raw_fd());
    }
}

impl Drop for UringChannel {
    fn drop(&mut self) {
        let mut sink = Vec::new();
        while self.in_flight() > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                tracing::error!(error = %e, "draining io_uring on channel close");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.reap(&mut sink);
        }
    }
}

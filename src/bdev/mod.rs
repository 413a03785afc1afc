//! Block devices ("bdevs"): the polled block I/O layer every consumer (NVMe/TCP qpairs, the
//! load generator, the change log) submits to.
//!
//! A [`Bdev`] is shared by all reactors; each reactor (each consumer on it) opens its own
//! [`Channel`], which owns the per-core state (an io_uring, a completion queue) and is never
//! shared. I/O is submitted with [`Channel::submit`] and completions are collected with
//! [`Channel::poll`]: nothing blocks and nothing calls back.
//!
//! Invariants: every submitted [`BdevIo`] completes exactly once, carrying back its `tag` and
//! its buffer; requests that are out of range, misaligned or unsupported never reach a backend
//! (the channel fails them with a clear [`IoStatus`]); a backend's `poll` never blocks.

pub mod backend;
pub mod channel;
pub mod registry;
pub mod sync;

use std::fmt;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::sys::DmaBuf;

pub use channel::Channel;
pub use registry::{BdevRegistry, RegistryError};

/// The operation of one block I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoType {
    /// Read `num_blocks` into the buffer.
    Read,
    /// Write the buffer; `fua` asks for it to be durable before completion.
    Write,
    /// Make every completed write durable.
    Flush,
    /// Zero the range (no buffer).
    WriteZeroes,
    /// Deallocate the range (no buffer); later reads return zeroes.
    Unmap,
}

impl IoType {
    /// Whether this operation moves data through a buffer.
    pub fn has_data(self) -> bool {
        matches!(self, IoType::Read | IoType::Write)
    }
}

/// One block I/O request.
#[derive(Debug)]
pub struct BdevIo {
    /// The operation.
    pub ty: IoType,
    /// First block.
    pub offset_blocks: u64,
    /// Number of blocks (0 only for Flush).
    pub num_blocks: u32,
    /// Data buffer for Read and Write; its `len` must equal `num_blocks * block_size`.
    pub buf: Option<DmaBuf>,
    /// Force unit access: the write is durable when it completes.
    pub fua: bool,
    /// Caller's context, returned in the completion.
    pub tag: u64,
}

impl BdevIo {
    /// A flush of the device's volatile cache.
    pub fn flush(tag: u64) -> BdevIo {
        BdevIo { ty: IoType::Flush, offset_blocks: 0, num_blocks: 0, buf: None, fua: false, tag }
    }
}

/// The outcome of one I/O, mapped later to an NVMe status by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    /// Done.
    Success,
    /// The range ends beyond the device.
    OutOfRange,
    /// The buffer length does not match the block count, or a range of 0 blocks.
    InvalidLength,
    /// The backend does not implement this operation.
    Unsupported,
    /// The backend failed with this errno.
    IoError(i32),
    /// The channel was closed (device deleted) before the I/O ran.
    Aborted,
}

impl IoStatus {
    /// Whether the I/O succeeded.
    pub fn is_success(self) -> bool {
        self == IoStatus::Success
    }
}

impl fmt::Display for IoStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoStatus::Success => write!(f, "success"),
            IoStatus::OutOfRange => write!(f, "LBA range beyond the end of the device"),
            IoStatus::InvalidLength => write!(f, "buffer length does not match the block count"),
            IoStatus::Unsupported => write!(f, "operation not supported by this device"),
            IoStatus::IoError(errno) => {
                write!(f, "I/O error: {}", std::io::Error::from_raw_os_error(*errno))
            }
            IoStatus::Aborted => write!(f, "aborted: device closed"),
        }
    }
}

/// A finished I/O.
#[derive(Debug)]
pub struct IoCompletion {
    /// The request's tag.
    pub tag: u64,
    /// The outcome.
    pub status: IoStatus,
    /// The request's buffer, handed back.
    pub buf: Option<DmaBuf>,
}

impl IoCompletion {
    /// The completion for `io` with `status`.
    pub fn of(io: BdevIo, status: IoStatus) -> IoCompletion {
        IoCompletion { tag: io.tag, status, buf: io.buf }
    }
}

/// Why a channel could not be opened or a device created.
#[derive(Debug, thiserror::Error)]
pub enum BdevError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Parameters that cannot describe a device.
    #[error("{0}")]
    InvalidParams(String),
}

/// The backend half of a channel: per-core, never shared, never blocking.
pub trait BackendChannel {
    /// Starts `io` (already validated). Returns it back when the backend queue is full.
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo>;
    /// Moves finished I/O into `out`; returns how many.
    fn poll(&mut self, out: &mut Vec<IoCompletion>) -> usize;
    /// I/O submitted and not yet returned by `poll`.
    fn in_flight(&self) -> usize;
    /// Descriptors that become readable when completions are ready, for sleeping reactors.
    fn wake_fds(&self, _out: &mut Vec<RawFd>) {}
}

/// A block device, shared by all reactors.
pub trait Bdev: Send + Sync + fmt::Debug {
    /// Unique name.
    fn name(&self) -> &str;
    /// Backend kind as SPDK names it ("Malloc disk", "Null disk", "URING bdev").
    fn product_name(&self) -> &'static str;
    /// Logical block size in bytes.
    fn block_size(&self) -> u32;
    /// Capacity in blocks.
    fn num_blocks(&self) -> u64;
    /// Stable identity (reported as the namespace UUID/NGUID).
    fn uuid(&self) -> [u8; 16];
    /// Whether completed writes may sit in a volatile cache until a flush.
    fn volatile_write_cache(&self) -> bool;
    /// Whether the backend implements `ty`.
    fn supports(&self, ty: IoType) -> bool;
    /// Opens the per-core half. Called on the reactor that will use it.
    fn open_backend(&self) -> Result<Box<dyn BackendChannel>, BdevError>;
}

/// Opens a validated channel on `bdev`.
pub fn open_channel(bdev: &Arc<dyn Bdev>) -> Result<Channel, BdevError> {
    Channel::new(bdev.clone())
}

#[cfg(test)]
mod tests;

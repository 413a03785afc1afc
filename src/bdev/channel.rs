//! A per-core channel: validation in front of a backend channel.
//!
//! Every request is checked here, once, for every backend: supported operation, a data buffer
//! exactly as long as the blocks it names, and a range inside the device. Requests that fail
//! complete with a clear [`IoStatus`] on the next `poll`, never reaching the backend.

use std::sync::Arc;

use super::{BackendChannel, Bdev, BdevError, BdevIo, IoCompletion, IoStatus, IoType};

/// A validated, per-core channel to one bdev.
pub struct Channel {
    bdev: Arc<dyn Bdev>,
    backend: Box<dyn BackendChannel>,
    rejected: Vec<IoCompletion>,
}

impl Channel {
    /// Opens the backend half on the calling reactor.
    pub fn new(bdev: Arc<dyn Bdev>) -> Result<Channel, BdevError> {
        let backend = bdev.open_backend()?;
        Ok(Channel { bdev, backend, rejected: Vec::new() })
    }

    /// The device.
    pub fn bdev(&self) -> &Arc<dyn Bdev> {
        &self.bdev
    }

    /// Checks `io` against the device.
    pub fn validate(bdev: &dyn Bdev, io: &BdevIo) -> IoStatus {
        if !bdev.supports(io.ty) {
            return IoStatus::Unsupported;
        }
        if io.ty == IoType::Flush {
            return IoStatus::Success;
        }
        if io.num_blocks == 0 {
            return IoStatus::InvalidLength;
        }
        let end = io.offset_blocks.checked_add(u64::from(io.num_blocks));
        if end.is_none_or(|end| end > bdev.num_blocks()) {
            return IoStatus::OutOfRange;
        }
        let want = u64::from(io.num_blocks) * u64::from(bdev.block_size());
        match (&io.buf, io.ty.has_data()) {
            (Some(buf), true) if buf.len() as u64 == want => IoStatus::Success,
            (None, false) => IoStatus::Success,
            _ => IoStatus::InvalidLength,
        }
    }

    /// Submits `io`. Invalid requests complete with an error status on the next `poll`. When
    /// the backend queue is full the request comes back (`Err`) for the caller to retry.
    pub fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        match Channel::validate(self.bdev.as_ref(), &io) {
            IoStatus::Success => self.backend.submit(io),
            status => {
                self.rejected.push(IoCompletion::of(io, status));
                Ok(())
            }
        }
    }

    /// Collects finished I/O into `out`; returns how many.
    pub fn poll(&mut self, out: &mut Vec<IoCompletion>) -> usize {
        let rejected = self.rejected.len();
        out.append(&mut self.rejected);
        rejected + self.backend.poll(out)
    }

    /// I/O submitted and not yet collected.
    pub fn in_flight(&self) -> usize {
        self.rejected.len() + self.backend.in_flight()
    }

    /// Descriptors that signal completions to a sleeping reactor.
    pub fn wake_fds(&self) -> Vec<std::os::fd::RawFd> {
        let mut v = Vec::new();
        self.backend.wake_fds(&mut v);
        v
    }
}

//! The null bdev: every I/O completes at once without touching data (reads leave the buffer as
//! it is). It measures the cost of everything above the device.

use std::sync::Arc;

use super::Geometry;
use crate::bdev::{BackendChannel, Bdev, BdevError, BdevIo, IoCompletion, IoStatus, IoType};

/// A device that stores nothing.
#[derive(Debug)]
pub struct NullBdev {
    geo: Geometry,
}

impl NullBdev {
    /// Creates it.
    pub fn create(geo: Geometry) -> Arc<NullBdev> {
        Arc::new(NullBdev { geo })
    }
}

impl Bdev for NullBdev {
    super::geometry_accessors!();
    fn product_name(&self) -> &'static str {
        "Null disk"
    }
    fn volatile_write_cache(&self) -> bool {
        false
    }
    fn supports(&self, _ty: IoType) -> bool {
        true
    }
    fn open_backend(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        Ok(Box::new(NullChannel { done: Vec::with_capacity(256) }))
    }
}

struct NullChannel {
    done: Vec<IoCompletion>,
}

impl BackendChannel for NullChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        self.done.push(IoCompletion::of(io, IoStatus::Success));
        Ok(())
    }
    fn poll(&mut self, out: &mut Vec<IoCompletion>) -> usize {
        let n = self.done.len();
        out.append(&mut self.done);
        n
    }
    fn in_flight(&self) -> usize {
        self.done.len()
    }
}

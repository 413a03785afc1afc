//! The malloc bdev: a RAM disk in one region (on hugepages when free). Every I/O is a memory
//! copy done at submission and reported on the next poll.
//!
//! Concurrency: channels on several reactors copy into the same region without locks, as a
//! real device would; ordering of overlapping in-flight writes is the host's business (NVMe
//! gives none), and each copy stays inside the region (ranges are validated by the channel).

use std::sync::Arc;

use super::Geometry;
use crate::bdev::{BackendChannel, Bdev, BdevError, BdevIo, IoCompletion, IoStatus, IoType};
use crate::sys::region::{Backing, Region};

/// A RAM disk.
#[derive(Debug)]
pub struct MallocBdev {
    geo: Geometry,
    region: Arc<Region>,
}

impl MallocBdev {
    /// Allocates the device's memory (zeroed).
    pub fn create(geo: Geometry) -> Result<Arc<MallocBdev>, BdevError> {
        let bytes = usize::try_from(geo.size_bytes())
            .map_err(|_| BdevError::InvalidParams("malloc bdev larger than the address space".into()))?;
        let region = Region::new(bytes, Backing::PreferHuge).map_err(|source| BdevError::Os {
            what: format!("allocating {bytes} bytes for {}", geo.name),
            source,
        })?;
        Ok(Arc::new(MallocBdev { geo, region: Arc::new(region) }))
    }
}

impl Bdev for MallocBdev {
    super::geometry_accessors!();
    fn product_name(&self) -> &'static str {
        "Malloc disk"
    }
    fn volatile_write_cache(&self) -> bool {
        false
    }
    fn supports(&self, _ty: IoType) -> bool {
        true
    }
    fn open_backend(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        Ok(Box::new(MallocChannel {
            region: self.region.clone(),
            block_size: self.geo.block_size as usize,
            done: Vec::with_capacity(256),
        }))
    }
}

struct MallocChannel {
    region: Arc<Region>,
    block_size: usize,
    done: Vec<IoCompletion>,
}

impl MallocChannel {
    fn execute(&self, io: &mut BdevIo) {
        let off = io.offset_blocks as usize * self.block_size;
        let len = io.num_blocks as usize * self.block_size;
        assert!(off + len <= self.region.len(), "validated range escapes the malloc region");
        // SAFETY: [off, off+len) lies inside the region (asserted); the region outlives this
        // channel (Arc); buffers come from the DMA pool, never from this region, so the copies
        // do not overlap.
        let dev = unsafe { self.region.as_ptr().add(off) };
        match (io.ty, io.buf.as_mut()) {
            // SAFETY: see above; the buffer holds exactly `len` bytes (validated).
            (IoType::Read, Some(buf)) => unsafe { std::ptr::copy_nonoverlapping(dev, buf.as_mut_ptr(), len) },
            // SAFETY: see above.
            (IoType::Write, Some(buf)) => unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), dev, len) },
            // SAFETY: see above.
            (IoType::WriteZeroes | IoType::Unmap, _) => unsafe { std::ptr::write_bytes(dev, 0, len) },
            (IoType::Flush, _) => {}
            (ty, None) => panic!("validated {ty:?} without a buffer"),
        }
    }
}

impl BackendChannel for MallocChannel {
    fn submit(&mut self, mut io: BdevIo) -> Result<(), BdevIo> {
        self.execute(&mut io);
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

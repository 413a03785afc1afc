//! The DMA buffer pool: a fixed number of equally sized, 4 KiB-aligned I/O buffers carved from
//! one [`Region`] at start-up. Host data lands in these buffers and goes to the block device
//! without copies; io_uring registers the whole region as fixed buffers.
//!
//! Invariants: the pool never grows; a buffer index is either on the free list or owned by
//! exactly one [`DmaBuf`]; dropping a `DmaBuf` returns it. The free list is a bounded lock-free
//! queue, so any reactor may take and return buffers without locks.

use std::fmt;
use std::io;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use super::region::{Backing, Region};

/// Alignment of every buffer: enough for O_DIRECT on 512 B and 4 KiB devices.
pub const DMA_ALIGN: usize = 4096;
/// io_uring limits one registered buffer to 1 GiB; larger pools register several chunks.
const FIXED_CHUNK_BYTES: usize = 1 << 30;

struct PoolInner {
    region: Region,
    buf_size: usize,
    count: u32,
    free: ArrayQueue<u32>,
}

/// A shared handle to a buffer pool.
#[derive(Clone)]
pub struct DmaPool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for DmaPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaPool")
            .field("buf_size", &self.inner.buf_size)
            .field("count", &self.inner.count)
            .field("free", &self.inner.free.len())
            .field("huge", &self.inner.region.is_huge())
            .finish()
    }
}

impl DmaPool {
    /// Allocates `count` buffers of `buf_size` bytes (a multiple of 4 KiB).
    pub fn new(buf_size: usize, count: u32, backing: Backing) -> io::Result<DmaPool> {
        assert!(buf_size > 0 && buf_size % DMA_ALIGN == 0, "buf_size must be a multiple of 4 KiB");
        assert!(count > 0, "empty pool");
        let region = Region::new(buf_size * count as usize, backing)?;
        let free = ArrayQueue::new(count as usize);
        for i in 0..count {
            free.push(i).expect("free list sized to count");
        }
        let inner = PoolInner { region, buf_size, count, free };
        Ok(DmaPool { inner: Arc::new(inner) })
    }

    /// Takes a free buffer, or `None` when all are in use (the caller applies back-pressure).
    pub fn alloc(&self) -> Option<DmaBuf> {
        let index = self.inner.free.pop()?;
        Some(DmaBuf { pool: self.inner.clone(), index, len: self.inner.buf_size })
    }

    /// Bytes per buffer.
    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// Total buffers.
    pub fn count(&self) -> u32 {
        self.inner.count
    }

    /// Buffers currently free.
    pub fn free_count(&self) -> usize {
        self.inner.free.len()
    }

    /// Whether the pool sits on hugepages.
    pub fn is_huge(&self) -> bool {
        self.inner.region.is_huge()
    }

    /// Whether `buf` came from this pool (and so lies in its registered region).
    pub fn owns(&self, buf: &DmaBuf) -> bool {
        Arc::ptr_eq(&self.inner, &buf.pool)
    }

    /// The iovecs to register with an io_uring as fixed buffers (≤ 1 GiB each).
    pub fn fixed_iovecs(&self) -> Vec<libc::iovec> {
        let base = self.inner.region.as_ptr();
        let total = self.inner.buf_size * self.inner.count as usize;
        (0..total)
            .step_by(FIXED_CHUNK_BYTES)
            .map(|off| libc::iovec {
                // SAFETY: off < total ≤ region length, so the pointer stays inside the region.
                iov_base: unsafe { base.add(off) }.cast(),
                iov_len: FIXED_CHUNK_BYTES.min(total - off),
            })
            .collect()
    }
}

/// One buffer from a [`DmaPool`]; returned to the pool on drop. `len` is the number of bytes in
/// use (the I/O size), at most the pool's buffer size.
pub struct DmaBuf {
    pool: Arc<PoolInner>,
    index: u32,
    len: usize,
}

impl fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuf").field("index", &self.index).field("len", &self.len).finish()
    }
}

impl DmaBuf {
    fn offset(&self) -> usize {
        self.index as usize * self.pool.buf_size
    }

    /// Start of the buffer.
    pub fn as_ptr(&self) -> *const u8 {
        // SAFETY: offset() + buf_size lies inside the pool's region.
        unsafe { self.pool.region.as_ptr().add(self.offset()) }
    }

    /// Start of the buffer, writable.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: as in `as_ptr`; `&mut self` makes this handle the only user of the buffer.
        unsafe { self.pool.region.as_ptr().add(self.offset()) }
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the buffer is owned by this handle alone (free-list invariant) and `len` is at
        // most `buf_size`, so the slice covers initialised memory inside the region.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The bytes in use, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        // SAFETY: as in `as_slice`, with exclusive access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), len) }
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes available.
    pub fn capacity(&self) -> usize {
        self.pool.buf_size
    }

    /// Sets the bytes in use; panics beyond the capacity (a programmer error).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.pool.buf_size, "DmaBuf::set_len({len}) beyond capacity");
        self.len = len;
    }

    /// Index of the registered fixed buffer (region chunk) that holds this buffer.
    pub fn fixed_index(&self) -> u16 {
        u16::try_from(self.offset() / FIXED_CHUNK_BYTES).expect("pool under 64 TiB")
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        let pushed = self.pool.free.push(self.index);
        assert!(pushed.is_ok(), "DMA buffer {} returned twice", self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_exhausts_and_returns() {
        let pool = DmaPool::new(8192, 3, Backing::Normal).unwrap();
        let mut bufs: Vec<_> = (0..3).map(|_| pool.alloc().unwrap()).collect();
        assert!(pool.alloc().is_none());
        for b in &bufs {
            assert_eq!(b.as_ptr() as usize % DMA_ALIGN, 0);
        }
        bufs[1].as_mut_slice().fill(7);
        assert!(bufs[0].as_slice().iter().all(|&b| b == 0));
        bufs.pop();
        assert_eq!(pool.free_count(), 1);
        let again = pool.alloc().unwrap();
        assert_eq!(again.len(), 8192);
    }

    #[test]
    fn iovecs_cover_the_pool() {
        let pool = DmaPool::new(4096, 4, Backing::Normal).unwrap();
        let v = pool.fixed_iovecs();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].iov_len, 16384);
    }
}

//! One anonymous memory mapping, on 2 MiB hugepages when the kernel has free ones, otherwise on
//! normal pages (a warning is logged once per region, since latency and TLB reach suffer).
//!
//! Invariant: the mapping is page-aligned, zero-filled, `mlock`ed when possible, and unmapped
//! exactly once on drop.

use std::io;
use std::ptr::NonNull;

/// Size of a hugepage on x86-64 and the unit hugepage-backed regions are rounded up to.
pub const HUGEPAGE_SIZE: usize = 2 << 20;

/// An owned, page-aligned, zeroed memory mapping.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: a Region is plain memory owned by this value; sharing its address across threads is
// sound because every access goes through raw pointers whose users document their own rules.
unsafe impl Send for Region {}
// SAFETY: as above; `Region` itself exposes no interior mutation through `&self`.
unsafe impl Sync for Region {}

/// Where a region should come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Hugepages if any are free, normal pages otherwise.
    PreferHuge,
    /// Normal pages only (tests, tiny regions).
    Normal,
}

impl Region {
    /// Maps `len` bytes (rounded up to the page or hugepage size).
    pub fn new(len: usize, backing: Backing) -> io::Result<Region> {
        assert!(len > 0, "empty region");
        if backing == Backing::PreferHuge {
            let huge_len = len.next_multiple_of(HUGEPAGE_SIZE);
            if let Ok(ptr) = map(huge_len, libc::MAP_HUGETLB) {
                return Ok(Region::locked(ptr, huge_len, true));
            }
            tracing::warn!(
                bytes = huge_len,
                "no free 2 MiB hugepages (see /proc/sys/vm/nr_hugepages); using normal pages"
            );
        }
        let page_len = len.next_multiple_of(page_size());
        let ptr = map(page_len, 0)?;
        Ok(Region::locked(ptr, page_len, false))
    }

    fn locked(ptr: NonNull<u8>, len: usize, huge: bool) -> Region {
        // SAFETY: ptr/len describe the mapping just created; mlock failing is harmless (the
        // pages stay pageable), so its result is ignored on purpose.
        unsafe { libc::mlock(ptr.as_ptr().cast(), len) };
        Region { ptr, len, huge }
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes (after rounding).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: regions are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the region sits on hugepages.
    pub fn is_huge(&self) -> bool {
        self.huge
    }
}

/// A region used as plain memory by its one owner (never handed out by pointer, as the DMA
/// pool's is), so it can be borrowed as a byte slice.
pub struct Memory(Region);

impl Memory {
    /// Maps at least `len` bytes, zeroed.
    pub fn new(len: usize, backing: Backing) -> io::Result<Memory> {
        Region::new(len, backing).map(Memory)
    }

    /// The whole region (its length is `len` rounded up to the page size).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes owned by this Memory for its lifetime
        // (mapped zeroed, so initialised) and never reached through a raw pointer elsewhere;
        // the shared borrow of self keeps writers out.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.0.len()) }
    }

    /// The whole region, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and the exclusive borrow of self makes this the only
        // reference into the mapping for its lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), self.0.len()) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map` with exactly this address and length and is
        // unmapped only here.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        assert_eq!(rc, 0, "munmap of an owned region failed");
    }
}

fn map(len: usize, extra_flags: libc::c_int) -> io::Result<NonNull<u8>> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | extra_flags;
    // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
    let ptr =
        unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(ptr.cast()).expect("mmap returned null without MAP_FIXED"))
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_region_is_zeroed_and_aligned() {
        let r = Region::new(10_000, Backing::Normal).unwrap();
        assert_eq!(r.len() % page_size(), 0);
        assert_eq!(r.as_ptr() as usize % page_size(), 0);
        // SAFETY: the region is live and `len` bytes long.
        let bytes = unsafe { std::slice::from_raw_parts(r.as_ptr(), r.len()) };
        assert!(bytes.iter().all(|&b| b == 0));
    }

    #[test]
    fn prefer_huge_falls_back() {
        let r = Region::new(HUGEPAGE_SIZE, Backing::PreferHuge).unwrap();
        assert!(r.len() >= HUGEPAGE_SIZE);
    }
}

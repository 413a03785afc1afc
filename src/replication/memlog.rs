//! The in-memory ring: a copy of the change log's most recent sectors, kept by the volume's
//! home reactor as it builds entries (while the volume has a bunker or a secondary to send them
//! to), so shipping to the secondary and the bunker's catch-up read committed entries from
//! memory instead of the log device (which the volume's own writes keep busy, and which could
//! misread).
//!
//! Invariants: the ring holds exactly the LSNs `[low, end)`, byte for byte what was written to
//! the log there; `end - low <= capacity`; appends come in LSN order (the home reactor reserves
//! and builds every entry), and an append that does not continue at `end` (after a restart the
//! ring starts empty at the log's tail) drops what the ring held first. It is memory only: a
//! restart loses it, and the log device stays the truth for everything below `low`.

use crate::sys::region::Backing;
use crate::sys::Memory;

/// Most bytes a volume's ring takes (less when the log's ring is smaller).
pub const MEMLOG_BYTES: usize = 32 << 20;

/// Recent change-log sectors in memory.
pub struct MemLog {
    mem: Memory,
    sector: usize,
    /// Sectors it can hold.
    capacity: u64,
    low: u64,
    end: u64,
}

impl MemLog {
    /// A ring of up to `bytes` (whole sectors, at most the log's `ring_sectors`) starting empty
    /// at `lsn`; hugepage-backed when hugepages are free.
    pub fn new(bytes: usize, sector: u32, ring_sectors: u64, lsn: u64) -> std::io::Result<MemLog> {
        let sector = sector as usize;
        let capacity = ((bytes / sector) as u64).min(ring_sectors).max(1);
        let mem = Memory::new(capacity as usize * sector, Backing::PreferHuge)?;
        Ok(MemLog { mem, sector, capacity, low: lsn, end: lsn })
    }

    /// Records `data` (whole sectors) written at `lsn`.
    pub fn append(&mut self, lsn: u64, data: &[u8]) {
        debug_assert_eq!(data.len() % self.sector, 0, "appends are whole sectors");
        if lsn != self.end {
            (self.low, self.end) = (lsn, lsn);
        }
        let mut rest = data;
        while !rest.is_empty() {
            let at = (self.end % self.capacity) as usize;
            let room = (self.capacity as usize - at) * self.sector;
            let n = room.min(rest.len());
            self.mem.as_mut_slice()[at * self.sector..at * self.sector + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            self.end += (n / self.sector) as u64;
        }
        self.low = self.low.max(self.end.saturating_sub(self.capacity));
    }

    /// Up to `max` sectors from `lsn` on, as they lie contiguously in memory (a stretch stops
    /// where the ring wraps); `None` if `lsn` is not held.
    pub fn get(&self, lsn: u64, max: u64) -> Option<&[u8]> {
        if lsn < self.low || lsn >= self.end {
            return None;
        }
        let at = lsn % self.capacity;
        let n = max.min(self.end - lsn).min(self.capacity - at) as usize;
        let from = at as usize * self.sector;
        Some(&self.mem.as_slice()[from..from + n * self.sector])
    }

    /// The LSNs held: `[low, end)`.
    pub fn range(&self) -> (u64, u64) {
        (self.low, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sectors(first: u8, n: usize) -> Vec<u8> {
        (0..n).flat_map(|k| vec![first.wrapping_add(k as u8); 512]).collect()
    }

    #[test]
    fn keeps_the_latest_sectors_across_its_wrap() {
        let mut m = MemLog::new(8 * 512, 512, 1 << 20, 100).unwrap();
        m.append(100, &sectors(0, 5));
        assert_eq!(m.range(), (100, 105));
        m.append(105, &sectors(5, 6)); // wraps in memory; 3 oldest sectors go
        assert_eq!(m.range(), (103, 111));
        assert!(m.get(102, 4).is_none());
        // LSN 100 sits at memory sector 4, so 103 is the ring's last sector.
        let first = m.get(103, 100).unwrap();
        assert_eq!(first, &sectors(3, 1)[..], "a stretch stops at the memory wrap");
        assert_eq!(m.get(104, 100).unwrap(), &sectors(4, 7)[..]);
        assert_eq!(m.get(108, 2).unwrap(), &sectors(8, 2)[..]);
        assert!(m.get(111, 1).is_none());
    }

    #[test]
    fn an_append_elsewhere_starts_over() {
        let mut m = MemLog::new(8 * 512, 512, 1 << 20, 0).unwrap();
        m.append(0, &sectors(0, 4));
        m.append(50, &sectors(9, 2));
        assert_eq!(m.range(), (50, 52));
        assert!(m.get(0, 1).is_none());
        assert_eq!(m.get(50, 8).unwrap(), &sectors(9, 2)[..]);
    }

    #[test]
    fn never_larger_than_the_log() {
        let m = MemLog::new(1 << 20, 512, 16, 0).unwrap();
        assert_eq!(m.capacity, 16);
    }
}

//! The change log's positions and the lock-free append protocol.
//!
//! Any reactor appends: [`ChangeLog::reserve`] takes log space and the entry's sequence number
//! (its LSN) in one compare-and-swap on `tail`, refusing (back-pressure) when the ring would
//! overwrite an entry below `head`; the appender writes its entry wherever it likes, then
//! [`ChangeLog::finish`] records it as durable in a per-sector table. One consumer advances
//! `committed` over the finished entries in LSN order ([`ChangeLog::advance_committed`]), so
//! "every entry below `committed` is durable" holds although entries finish out of order.
//!
//! Invariants: `head <= applied <= committed <= tail` and `tail - head <= ring_sectors`; an
//! entry never crosses the end of the ring (a pad entry fills the gap, reserved in the same
//! CAS); a finished-table slot is non-zero only between `finish` and the commit that consumes it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Where the ring lies on the log bdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogGeometry {
    /// Bytes per sector (the log bdev's block size).
    pub sector: u32,
    /// First ring sector on the bdev.
    pub ring_start: u64,
    /// Sectors in the ring.
    pub ring_sectors: u64,
}

impl LogGeometry {
    /// The bdev block that holds `lsn`.
    pub fn block_of(&self, lsn: u64) -> u64 {
        self.ring_start + lsn % self.ring_sectors
    }

    /// Sectors from `lsn` to the end of the ring.
    pub fn until_wrap(&self, lsn: u64) -> u64 {
        self.ring_sectors - lsn % self.ring_sectors
    }
}

/// Space reserved for one entry (and the pad before it, if it wrapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// A pad entry to write first: (lsn, sectors).
    pub pad: Option<(u64, u32)>,
    /// The entry's LSN.
    pub lsn: u64,
    /// The entry's sectors.
    pub sectors: u32,
}

/// The ring is full up to `head`: the write must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("change log full (tail {tail}, head {head}, ring {ring} sectors)")]
pub struct LogFull {
    /// Tail at the time.
    pub tail: u64,
    /// Head at the time.
    pub head: u64,
    /// Ring size.
    pub ring: u64,
}

/// Positions and append state of one change log.
#[derive(Debug)]
pub struct ChangeLog {
    geo: LogGeometry,
    tail: AtomicU64,
    committed: AtomicU64,
    applied: AtomicU64,
    head: AtomicU64,
    finished: Box<[AtomicU32]>,
    appended: AtomicU64,
}

impl ChangeLog {
    /// A log whose next entry goes at `tail` and whose entries below `tail` are all committed.
    pub fn new(geo: LogGeometry, tail: u64, head: u64) -> ChangeLog {
        assert!(geo.ring_sectors > 1 && head <= tail && tail - head <= geo.ring_sectors, "bad log positions");
        ChangeLog {
            geo,
            tail: AtomicU64::new(tail),
            committed: AtomicU64::new(tail),
            applied: AtomicU64::new(tail),
            head: AtomicU64::new(head),
            finished: (0..geo.ring_sectors).map(|_| AtomicU32::new(0)).collect(),
            appended: AtomicU64::new(0),
        }
    }

    /// The geometry.
    pub fn geometry(&self) -> LogGeometry {
        self.geo
    }

    /// Reserves `sectors` for an entry. Lock-free: any reactor may call it.
    pub fn reserve(&self, sectors: u32) -> Result<Reservation, LogFull> {
        let want = u64::from(sectors);
        assert!(want >= 1 && want < self.geo.ring_sectors, "entry larger than the ring");
        let mut tail = self.tail.load(Ordering::Acquire);
        loop {
            let room = self.geo.until_wrap(tail);
            let pad = if room < want { Some((tail, room as u32)) } else { None };
            let lsn = tail + pad.map_or(0, |(_, n)| u64::from(n));
            let new_tail = lsn + want;
            let head = self.head.load(Ordering::Acquire);
            if new_tail - head > self.geo.ring_sectors {
                return Err(LogFull { tail, head, ring: self.geo.ring_sectors });
            }
            match self.tail.compare_exchange_weak(tail, new_tail, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.appended.fetch_add(1, Ordering::Relaxed);
                    return Ok(Reservation { pad, lsn, sectors });
                }
                Err(actual) => tail = actual,
            }
        }
    }

    /// Marks the entry (or pad) at `lsn` durable.
    pub fn finish(&self, lsn: u64, sectors: u32) {
        assert!(sectors > 0, "empty entry");
        let slot = &self.finished[(lsn % self.geo.ring_sectors) as usize];
        let prev = slot.swap(sectors, Ordering::Release);
        assert_eq!(prev, 0, "entry at LSN {lsn} finished twice");
    }

    /// Advances `committed` over finished entries in order; returns the new value. Exactly one
    /// consumer calls this.
    pub fn advance_committed(&self) -> u64 {
        let mut c = self.committed.load(Ordering::Acquire);
        loop {
            let slot = &self.finished[(c % self.geo.ring_sectors) as usize];
            let n = slot.load(Ordering::Acquire);
            if n == 0 {
                break;
            }
            slot.store(0, Ordering::Relaxed);
            c += u64::from(n);
        }
        debug_assert!(c <= self.tail.load(Ordering::Acquire));
        self.committed.store(c, Ordering::Release);
        c
    }

    /// Records that entries below `lsn` are applied to the volume.
    pub fn set_applied(&self, lsn: u64) {
        assert!(lsn <= self.committed(), "applied beyond committed");
        self.applied.fetch_max(lsn, Ordering::AcqRel);
    }

    /// Lets entries below `lsn` be overwritten.
    pub fn set_head(&self, lsn: u64) {
        assert!(lsn <= self.applied(), "head beyond applied");
        self.head.fetch_max(lsn, Ordering::AcqRel);
    }

    /// Takes the head back to `lsn` (a new reader of the log, such as a secondary attached
    /// after the first writes, still needs what lies above it). Only valid while every entry
    /// from `lsn` up is intact: the caller checks `tail - lsn` leaves room in the ring.
    pub fn lower_head(&self, lsn: u64) {
        let tail = self.tail();
        assert!(
            lsn <= tail && tail - lsn < self.geo.ring_sectors,
            "lowering the head past overwritten entries"
        );
        self.head.fetch_min(lsn, Ordering::AcqRel);
    }

    /// Next LSN to reserve.
    pub fn tail(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }
    /// Every entry below is durable.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }
    /// Every entry below is applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
    /// Oldest needed entry.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }
    /// Entries appended since open.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }
    /// Fraction of the ring in use.
    pub fn fill(&self) -> f64 {
        (self.tail() - self.head()) as f64 / self.geo.ring_sectors as f64
    }
}

#[cfg(test)]
mod tests;

/// Records that `[lsn, lsn + sectors)` is durable somewhere and moves `end`, the contiguous
/// durable end, as far as the recorded ranges reach. Ranges may overlap or straddle `end`
/// (a catch-up stream cut in buffer-sized pieces and live entries cover the same LSNs in
/// different pieces), so a range counts whenever it starts at or before `end`.
pub fn advance_contiguous(
    acked: &mut std::collections::BTreeMap<u64, u32>,
    end: &mut u64,
    lsn: u64,
    sectors: u32,
) {
    if lsn + u64::from(sectors) <= *end {
        return;
    }
    let n = acked.entry(lsn).or_insert(0);
    *n = (*n).max(sectors);
    // Keys ascend, so one pass from the front takes every range that starts within reach.
    while let Some((&l, &n)) = acked.first_key_value().filter(|(l, _)| **l <= *end) {
        acked.pop_first();
        *end = (*end).max(l + u64::from(n));
    }
}

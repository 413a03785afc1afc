//! The blocks whose write a volume's home reactor holds: published when the write starts,
//! withdrawn once it is on the data bdev. A write may be answered to the host before its
//! volume write is done (it is durable in the change log by then), so a read of such blocks must
//! not go to the data bdev directly: readers on any reactor check here, without locks, and hand
//! an overlapping read to the home reactor, which serves those blocks from the write's entry in
//! memory.
//!
//! Invariant: a range is published (Release) before its write can be answered, and withdrawn
//! only after the data bdev completed the write; so a read that finds no overlap either races
//! an unanswered write (any result is legal) or sees the written data on the data bdev. A range
//! whose volume write failed is never withdrawn: the volume has stopped, and the home reactor
//! fails reads of it until recovery re-applies the entry.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const EMPTY: u64 = u64::MAX;
/// Bits for the block count; a count that does not fit is stored as "to the end".
const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// One packed `(lba, blocks)` per in-flight slot.
#[derive(Debug)]
pub struct PendingRanges {
    slots: Box<[AtomicU64]>,
    live: AtomicUsize,
}

/// Largest LBA stored as is; beyond it the range is widened (conservative) to the end.
const MAX_LBA: u64 = EMPTY >> (COUNT_BITS + 1);

fn pack(lba: u64, blocks: u32) -> u64 {
    if lba > MAX_LBA {
        return (MAX_LBA << COUNT_BITS) | COUNT_MASK;
    }
    (lba << COUNT_BITS) | u64::from(blocks.max(1) - 1).min(COUNT_MASK)
}

/// The range as `[start, end)`; a saturated count reaches the end of the device.
fn unpack(v: u64) -> (u64, u64) {
    let (lba, count) = (v >> COUNT_BITS, v & COUNT_MASK);
    let end = if count == COUNT_MASK { u64::MAX } else { lba + count + 1 };
    (lba, end)
}

impl PendingRanges {
    /// Room for `n` slots, all empty.
    pub fn new(n: usize) -> PendingRanges {
        PendingRanges { slots: (0..n).map(|_| AtomicU64::new(EMPTY)).collect(), live: AtomicUsize::new(0) }
    }

    /// Publishes slot `slot` as holding `[lba, lba + blocks)` (home reactor only).
    pub fn set(&self, slot: usize, lba: u64, blocks: u32) {
        if self.slots[slot].swap(pack(lba, blocks), Ordering::AcqRel) == EMPTY {
            self.live.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Withdraws slot `slot` (home reactor only).
    pub fn clear(&self, slot: usize) {
        if self.slots[slot].swap(EMPTY, Ordering::AcqRel) != EMPTY {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether any published range overlaps `[lba, lba + blocks)` (any reactor).
    pub fn overlaps(&self, lba: u64, blocks: u32) -> bool {
        if self.live.load(Ordering::Acquire) == 0 {
            return false;
        }
        let end = lba.saturating_add(u64::from(blocks.max(1)));
        self.slots.iter().any(|s| {
            let v = s.load(Ordering::Acquire);
            v != EMPTY && {
                let (a, b) = unpack(v);
                lba < b && a < end
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_edges_and_saturation() {
        let p = PendingRanges::new(4);
        assert!(!p.overlaps(0, 8));
        p.set(1, 100, 8);
        assert!(p.overlaps(107, 1) && p.overlaps(95, 6) && p.overlaps(100, 8));
        assert!(!p.overlaps(108, 4) && !p.overlaps(92, 8));
        p.set(2, 1000, 5_000_000);
        assert!(p.overlaps(u64::MAX / 2, 1), "a huge range is kept to the end");
        p.clear(1);
        p.clear(1);
        assert!(!p.overlaps(100, 8));
        p.clear(2);
        assert_eq!(p.live.load(Ordering::Relaxed), 0);
    }
}

//! The dirty-block map: which parts of the volume a secondary may lack, so a secondary that
//! fell out of step (dropped while the log filled, or attached to a volume already written)
//! is brought back by resending only those parts instead of the whole volume.
//!
//! In memory the map keeps, per granule (a power-of-two run of volume blocks), the LSN of the
//! last log entry that wrote it (0: not written since the map was loaded). Relative to a
//! *floor* LSN, a granule is dirty when its last write is at or above the floor: everything
//! below the floor is known to be on the secondary. While the secondary is in step the floor
//! follows the log's head (the head never passes what the secondary applied); once it is
//! dropped the floor stays where it fell behind, and the head may move on.
//!
//! On disk the map is a bitmap (bit set: dirty relative to the floor recorded in the same
//! checkpoint's superblock) in the last sectors of the log bdev, after the ring. Every
//! checkpoint rewrites it before the superblock; recovery loads it and marks the entries it
//! scans from the checkpoint, so after any crash the map still covers every write the
//! secondary may lack. A torn bitmap write is harmless: each sector holds either snapshot, and
//! both cover what the secondary lacks (bits only clear below a floor the secondary passed).

/// Most granules a map has (a 64 KiB bitmap); larger volumes get larger granules.
const MAX_GRANULES: u64 = 1 << 19;

/// The map of one volume.
#[derive(Debug, Clone)]
pub struct DirtyMap {
    /// Volume blocks per granule, as a power of two.
    shift: u32,
    /// Volume blocks.
    blocks: u64,
    /// Last LSN written per granule.
    last: Vec<u64>,
}

impl DirtyMap {
    /// An empty map for a volume of `blocks` blocks.
    pub fn new(blocks: u64) -> DirtyMap {
        let shift = shift_for(blocks);
        DirtyMap { shift, blocks, last: vec![0; blocks.div_ceil(1 << shift) as usize] }
    }

    /// Bytes of its bitmap.
    pub fn bitmap_bytes(&self) -> usize {
        self.last.len().div_ceil(8)
    }

    /// Log sectors its bitmap takes.
    pub fn sectors(&self, sector: u32) -> u64 {
        sectors_for(self.blocks, sector)
    }

    /// Volume blocks per granule.
    pub fn granule_blocks(&self) -> u64 {
        1 << self.shift
    }

    /// Records that the entry at `lsn` wrote `[lba, lba + blocks)`.
    pub fn mark(&mut self, lba: u64, blocks: u64, lsn: u64) {
        if blocks == 0 || lba >= self.blocks {
            return;
        }
        let end = (lba + blocks).min(self.blocks);
        for g in (lba >> self.shift)..=((end - 1) >> self.shift) {
            let l = &mut self.last[g as usize];
            *l = (*l).max(lsn);
        }
    }

    /// Whether granule `g` is dirty relative to `floor`.
    fn dirty(&self, g: usize, floor: u64) -> bool {
        self.last[g] >= floor
    }

    /// Writes the bitmap relative to `floor` into `out` (at least `bitmap_bytes` long; the
    /// rest is zeroed).
    pub fn encode(&self, floor: u64, out: &mut [u8]) {
        out.fill(0);
        for g in (0..self.last.len()).filter(|&g| self.dirty(g, floor)) {
            out[g / 8] |= 1 << (g % 8);
        }
    }

    /// Merges a bitmap read back from disk: its dirty granules count as written at `lsn` (an
    /// LSN at or above the floor it was written for).
    pub fn load(&mut self, bitmap: &[u8], lsn: u64) {
        for g in 0..self.last.len().min(bitmap.len() * 8) {
            if bitmap[g / 8] & (1 << (g % 8)) != 0 {
                self.last[g] = self.last[g].max(lsn);
            }
        }
    }

    /// The dirty volume ranges `(lba, blocks)` relative to `floor`, merged.
    pub fn ranges(&self, floor: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for g in (0..self.last.len()).filter(|&g| self.dirty(g, floor)) {
            let lba = (g as u64) << self.shift;
            let n = self.granule_blocks().min(self.blocks - lba);
            match out.last_mut() {
                Some(r) if r.0 + r.1 == lba => r.1 += n,
                _ => out.push((lba, n)),
            }
        }
        out
    }

    /// Volume blocks dirty relative to `floor` (counted in place: status asks often).
    pub fn dirty_blocks(&self, floor: u64) -> u64 {
        let g = self.granule_blocks();
        let granule = |i: usize| g.min(self.blocks - i as u64 * g);
        (0..self.last.len()).filter(|&i| self.dirty(i, floor)).map(granule).sum()
    }
}

/// Granule size (as a shift of volume blocks) for a volume of `blocks` blocks.
fn shift_for(blocks: u64) -> u32 {
    let mut shift = 0;
    while blocks.div_ceil(1 << shift) > MAX_GRANULES {
        shift += 1;
    }
    shift
}

/// Log sectors of `sector` bytes the bitmap of a volume of `blocks` blocks takes.
pub fn sectors_for(blocks: u64, sector: u32) -> u64 {
    blocks.div_ceil(1 << shift_for(blocks)).div_ceil(8).div_ceil(u64::from(sector))
}

/// Where a log bdev of `num_blocks` sectors keeps the map of a volume of `volume_blocks`
/// blocks, given its ring: the first sector after the ring, if the map fits there.
pub fn location(
    num_blocks: u64,
    ring_start: u64,
    ring_sectors: u64,
    volume_blocks: u64,
    sector: u32,
) -> Option<u64> {
    let start = ring_start + ring_sectors;
    (start + sectors_for(volume_blocks, sector) <= num_blocks).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn granules_grow_with_the_volume() {
        assert_eq!(DirtyMap::new(256).granule_blocks(), 1);
        assert_eq!(DirtyMap::new(256).sectors(512), 1);
        assert_eq!(DirtyMap::new(MAX_GRANULES + 1).granule_blocks(), 2);
        let big = DirtyMap::new(1 << 28);
        assert!(big.bitmap_bytes() <= 64 << 10 && big.granule_blocks() == 512);
        assert_eq!(location(100, 2, 97, 256, 512), Some(99));
        assert_eq!(location(100, 2, 98, 256, 512), None, "an older log has no room after its ring");
    }

    #[test]
    fn the_floor_decides_what_is_dirty() {
        let mut m = DirtyMap::new(1000);
        m.mark(10, 3, 500);
        m.mark(11, 1, 700);
        m.mark(999, 5, 600);
        assert_eq!(m.ranges(0), vec![(0, 1000)], "floor 0: the whole volume (initial synchronisation)");
        assert_eq!(m.ranges(501), vec![(11, 1), (999, 1)]);
        assert_eq!(m.ranges(500), vec![(10, 3), (999, 1)]);
        assert_eq!(m.ranges(701), vec![]);
        assert_eq!(m.dirty_blocks(500), 4);
    }

    proptest! {
        /// A bitmap written for a floor and loaded back keeps every granule dirty at that floor.
        #[test]
        fn the_bitmap_round_trips(writes in prop::collection::vec((0u64..5000, 1u64..300, 1u64..1000), 0..40), floor in 1u64..1000) {
            let mut m = DirtyMap::new(5000);
            for &(lba, n, lsn) in &writes {
                m.mark(lba, n, lsn);
            }
            let mut bits = vec![0u8; m.bitmap_bytes()];
            m.encode(floor, &mut bits);
            let mut back = DirtyMap::new(5000);
            back.load(&bits, floor);
            prop_assert_eq!(back.ranges(floor), m.ranges(floor));
            for &(lba, n, lsn) in writes.iter().filter(|w| w.2 >= floor) {
                let covered = m.ranges(floor).iter().any(|r| r.0 <= lba && lba < r.0 + r.1);
                prop_assert!(covered, "write at {} (+{}) LSN {} not dirty", lba, n, lsn);
            }
        }
    }
}

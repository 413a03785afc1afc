//! Self-describing blocks for `--verify`: every written block carries a magic, a CRC32C, its own
//! LBA and a generation number, then a fill derived from both. A read is correct when the stamp
//! is intact, names the LBA that was read and carries the generation of the last acknowledged
//! write to that block.
//!
//! Invariant: a job never has two I/Os in flight on the same block, so "the last acknowledged
//! write" is well defined ([`VerifyMap::try_reserve`]).

/// Marks a verify stamp ("FRTV").
pub const MAGIC: u32 = 0x4654_5256;
const HEADER: usize = 24;

/// Fills `block` for `lba` at generation `gen`.
pub fn stamp(block: &mut [u8], lba: u64, gen: u64) {
    assert!(block.len() >= 512, "verify blocks are at least 512 bytes");
    block[8..16].copy_from_slice(&lba.to_le_bytes());
    block[16..24].copy_from_slice(&gen.to_le_bytes());
    let mut x = lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ gen;
    for chunk in block[HEADER..].chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let crc = crc32c::crc32c(&block[8..]);
    block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    block[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// What a read block held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stamp {
    /// A valid stamp for this LBA at this generation.
    Valid(u64),
    /// Not a stamp at all (never written, or zeroed).
    Absent,
    /// A stamp that is damaged or names another LBA: corruption or a misdirected write.
    Corrupt(String),
}

/// Reads the stamp of `block`, which was read from `lba`.
pub fn check(block: &[u8], lba: u64) -> Stamp {
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(block[r].try_into().expect("8 bytes"));
    if u32::from_le_bytes(block[0..4].try_into().expect("4 bytes")) != MAGIC {
        return Stamp::Absent;
    }
    let crc = u32::from_le_bytes(block[4..8].try_into().expect("4 bytes"));
    if crc32c::crc32c(&block[8..]) != crc {
        return Stamp::Corrupt(format!("LBA {lba}: checksum mismatch"));
    }
    let (stamped_lba, gen) = (word(8..16), word(16..24));
    if stamped_lba != lba {
        return Stamp::Corrupt(format!("LBA {lba}: holds the block written for LBA {stamped_lba}"));
    }
    Stamp::Valid(gen)
}

/// Per-job record of the last acknowledged generation of each block and which are in flight.
#[derive(Debug)]
pub struct VerifyMap {
    first_block: u64,
    gens: Vec<u64>,
    busy: Vec<bool>,
    next_gen: u64,
    /// Blocks whose content was checked.
    pub checked: u64,
    /// Failures, described.
    pub failures: Vec<String>,
}

impl VerifyMap {
    /// Tracks `[first_block, first_block + blocks)`; generations start above `gen_base`.
    pub fn new(first_block: u64, blocks: u64, gen_base: u64) -> VerifyMap {
        let n = usize::try_from(blocks).expect("verify range fits memory");
        VerifyMap {
            first_block,
            gens: vec![0; n],
            busy: vec![false; n],
            next_gen: gen_base,
            checked: 0,
            failures: Vec::new(),
        }
    }

    fn idx(&self, lba: u64) -> usize {
        (lba - self.first_block) as usize
    }

    /// Marks `[lba, lba+n)` in flight unless any block already is.
    pub fn try_reserve(&mut self, lba: u64, n: u64) -> bool {
        let i = self.idx(lba);
        let range = i..i + n as usize;
        if self.busy[range.clone()].iter().any(|&b| b) {
            return false;
        }
        self.busy[range].fill(true);
        true
    }

    /// A fresh generation for a write.
    pub fn next_gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    /// A write of `[lba, lba+n)` at `gen` finished (`ok`: acknowledged).
    pub fn write_done(&mut self, lba: u64, n: u64, gen: u64, ok: bool) {
        let i = self.idx(lba);
        if ok {
            self.gens[i..i + n as usize].fill(gen);
        }
        self.busy[i..i + n as usize].fill(false);
    }

    /// A read of `[lba, lba+n)` returned `data` (`block_size` bytes per block).
    pub fn read_done(&mut self, lba: u64, data: &[u8], block_size: usize) {
        let i = self.idx(lba);
        for (k, block) in data.chunks_exact(block_size).enumerate() {
            let want = self.gens[i + k];
            let b = lba + k as u64;
            match (check(block, b), want) {
                (Stamp::Valid(g), w) if w == 0 || g == w => self.checked += u64::from(w != 0),
                (Stamp::Valid(g), w) => self.failures.push(format!("LBA {b}: generation {g}, expected {w}")),
                (Stamp::Absent, 0) => {}
                (Stamp::Absent, w) => {
                    self.failures.push(format!("LBA {b}: acknowledged write {w} is missing"))
                }
                (Stamp::Corrupt(why), _) => self.failures.push(why),
            }
        }
        self.busy[i..i + data.len() / block_size].fill(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip_and_detection() {
        let mut b = vec![0u8; 4096];
        stamp(&mut b, 77, 5);
        assert_eq!(check(&b, 77), Stamp::Valid(5));
        assert!(matches!(check(&b, 78), Stamp::Corrupt(_)));
        b[100] ^= 1;
        assert!(matches!(check(&b, 77), Stamp::Corrupt(_)));
        assert_eq!(check(&[0u8; 512], 0), Stamp::Absent);
    }

    #[test]
    fn map_tracks_generations() {
        let mut m = VerifyMap::new(10, 4, 0);
        assert!(m.try_reserve(10, 2));
        assert!(!m.try_reserve(11, 1));
        let g = m.next_gen();
        m.write_done(10, 2, g, true);
        let mut data = vec![0u8; 1024];
        stamp(&mut data[..512], 10, g);
        stamp(&mut data[512..], 11, g);
        assert!(m.try_reserve(10, 2));
        m.read_done(10, &data, 512);
        assert_eq!(m.checked, 2);
        assert!(m.failures.is_empty());
        stamp(&mut data[512..], 11, g - 1);
        m.read_done(10, &data, 512);
        assert_eq!(m.failures.len(), 1);
    }
}

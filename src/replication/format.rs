//! On-disk formats of the change log: the superblock and the entry header.
//!
//! The log bdev holds two superblock copies (sectors 0 and 1, written alternately, the valid
//! one with the highest `generation` wins, so a torn superblock write never loses the other)
//! and then a circular region of entries. Positions are log sequence numbers (LSN) counted in
//! sectors since the log was formatted; an entry's LSN is both its sequence number and, modulo
//! the ring size, its place on disk, and its header repeats it, so a stale entry from an
//! earlier lap or a misdirected write never passes for a current one.
//!
//! Entry: one header sector (magic, version, kind, LSN, epoch, volume LBA, block count, data
//! length, CRC32C of the data, CRC32C of the header) followed by the data padded to whole
//! sectors. A `Pad` entry fills the end of the ring when the next entry would not fit.

/// Marks a superblock ("FRSB").
pub const SUPER_MAGIC: u32 = 0x4253_5246;
/// Marks an entry header ("FLOG").
pub const ENTRY_MAGIC: u32 = 0x474F_4C46;
/// Format version.
pub const VERSION: u16 = 1;
/// Bytes of a header or superblock that carry fields (the rest of the sector is zero).
const HEADER_BYTES: usize = 64;
const SUPER_BYTES: usize = 512;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum EntryKind {
    /// A host write; data follows.
    Write = 1,
    /// Write Zeroes of the range.
    Zeroes = 2,
    /// Deallocate the range.
    Unmap = 3,
    /// Padding to the end of the ring.
    Pad = 4,
}

impl EntryKind {
    fn from_raw(v: u16) -> Option<EntryKind> {
        Some(match v {
            1 => EntryKind::Write,
            2 => EntryKind::Zeroes,
            3 => EntryKind::Unmap,
            4 => EntryKind::Pad,
            _ => return None,
        })
    }
}

/// An entry header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    /// What it records.
    pub kind: EntryKind,
    /// Its position (sequence number), in sectors.
    pub lsn: u64,
    /// Epoch of the primary that wrote it.
    pub epoch: u64,
    /// First volume block.
    pub lba: u64,
    /// Volume blocks.
    pub blocks: u32,
    /// Data bytes following the header (0 unless Write).
    pub data_len: u32,
    /// Sectors the whole entry occupies (header included).
    pub sectors: u32,
    /// CRC32C of the data.
    pub data_crc: u32,
}

/// Why bytes are not a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// No magic: never written, or zeroed.
    #[error("no entry here")]
    Empty,
    /// Magic present but the header checksum fails: torn or corrupt.
    #[error("entry header checksum mismatch")]
    BadCrc,
    /// A valid header for another position (a stale lap or a misdirected write).
    #[error("entry header names LSN {found}, expected {expected}")]
    WrongLsn {
        /// LSN in the header.
        found: u64,
        /// Where it was read.
        expected: u64,
    },
    /// Fields that cannot be right.
    #[error("entry header fields are inconsistent")]
    Invalid,
}

/// How much of a stretch of log read from an entry's start holds whole, valid entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeEntries {
    /// Sectors of whole valid entries from the start.
    pub sectors: u64,
    /// What follows them is damaged (not merely cut off by the end of the bytes).
    pub damaged: bool,
}

/// Walks the entries of `bytes`, read from LSN `lsn` (an entry's start), checking each header
/// and each write's data checksum, up to the first entry that is damaged or not wholly there.
pub fn whole_entries(bytes: &[u8], lsn: u64, sector: u32) -> WholeEntries {
    let ss = sector as usize;
    let mut at = 0;
    while bytes.len() >= at + ss {
        let pos = lsn + (at / ss) as u64;
        let Ok(h) = EntryHeader::decode(&bytes[at..at + ss], pos, sector) else {
            return WholeEntries { sectors: (at / ss) as u64, damaged: true };
        };
        let len = h.sectors as usize * ss;
        if bytes.len() < at + len {
            break;
        }
        let data = &bytes[at + ss..at + ss + h.data_len as usize];
        if h.kind == EntryKind::Write && crc32c::crc32c(data) != h.data_crc {
            return WholeEntries { sectors: (at / ss) as u64, damaged: true };
        }
        at += len;
    }
    WholeEntries { sectors: (at / ss) as u64, damaged: false }
}

/// Sectors from the start of `bytes` (read from LSN `lsn`) up to where the next entry starts,
/// for bytes that begin with a damaged entry: its own length if its header is whole, else the
/// first later sector holding a header for its own position, else all of `bytes`.
pub fn damaged_span(bytes: &[u8], lsn: u64, sector: u32) -> u64 {
    let ss = sector as usize;
    let all = (bytes.len() / ss) as u64;
    if let Some(Ok(h)) = bytes.get(..ss).map(|s| EntryHeader::decode(s, lsn, sector)) {
        return u64::from(h.sectors).min(all);
    }
    (1..all)
        .find(|&i| {
            let at = i as usize * ss;
            EntryHeader::decode(&bytes[at..at + ss], lsn + i, sector).is_ok()
        })
        .unwrap_or(all)
}

/// CRC32C of a whole header sector except the CRC field itself (bytes 60..64).
fn header_crc(sector: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&sector[..60]), &sector[64..])
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

impl EntryHeader {
    /// Sectors an entry with `data_len` bytes needs.
    pub fn sectors_for(data_len: u32, sector: u32) -> u32 {
        1 + data_len.div_ceil(sector)
    }

    /// Writes the header into the first bytes of `sector` (the rest is zeroed).
    pub fn encode(&self, sector: &mut [u8]) {
        assert!(sector.len() >= HEADER_BYTES, "header sector too small");
        sector.fill(0);
        put(sector, 0, &ENTRY_MAGIC.to_le_bytes());
        put(sector, 4, &VERSION.to_le_bytes());
        put(sector, 6, &(self.kind as u16).to_le_bytes());
        put(sector, 8, &self.lsn.to_le_bytes());
        put(sector, 16, &self.epoch.to_le_bytes());
        put(sector, 24, &self.lba.to_le_bytes());
        put(sector, 32, &self.blocks.to_le_bytes());
        put(sector, 36, &self.data_len.to_le_bytes());
        put(sector, 40, &self.sectors.to_le_bytes());
        put(sector, 44, &self.data_crc.to_le_bytes());
        let crc = header_crc(sector);
        put(sector, 60, &crc.to_le_bytes());
    }

    /// Reads a header found at `expected_lsn`.
    pub fn decode(sector: &[u8], expected_lsn: u64, sector_size: u32) -> Result<EntryHeader, HeaderError> {
        if sector.len() < HEADER_BYTES || u32_at(sector, 0) != ENTRY_MAGIC {
            return Err(HeaderError::Empty);
        }
        if header_crc(sector) != u32_at(sector, 60) {
            return Err(HeaderError::BadCrc);
        }
        let kind =
            EntryKind::from_raw(u16::from_le_bytes([sector[6], sector[7]])).ok_or(HeaderError::Invalid)?;
        let h = EntryHeader {
            kind,
            lsn: u64_at(sector, 8),
            epoch: u64_at(sector, 16),
            lba: u64_at(sector, 24),
            blocks: u32_at(sector, 32),
            data_len: u32_at(sector, 36),
            sectors: u32_at(sector, 40),
            data_crc: u32_at(sector, 44),
        };
        if h.lsn != expected_lsn {
            return Err(HeaderError::WrongLsn { found: h.lsn, expected: expected_lsn });
        }
        let consistent = match kind {
            EntryKind::Pad => h.sectors >= 1 && h.data_len == 0,
            EntryKind::Write => {
                h.data_len > 0 && h.sectors == EntryHeader::sectors_for(h.data_len, sector_size)
            }
            EntryKind::Zeroes | EntryKind::Unmap => h.data_len == 0 && h.sectors == 1,
        };
        if !consistent {
            return Err(HeaderError::Invalid);
        }
        Ok(h)
    }
}

/// The log superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Bumped on every superblock write; the higher valid copy wins.
    pub generation: u64,
    /// Volume identity.
    pub volume_uuid: [u8; 16],
    /// Volume name.
    pub volume_name: String,
    /// 0 primary, 1 bunker, 2 secondary.
    pub role: u8,
    /// Epoch.
    pub epoch: u64,
    /// Log sector size.
    pub sector_size: u32,
    /// First sector of the ring.
    pub ring_start: u64,
    /// Sectors in the ring.
    pub ring_sectors: u64,
    /// Volume block size.
    pub volume_block_size: u32,
    /// Volume size in blocks.
    pub volume_blocks: u64,
    /// Every entry below this LSN is applied to the volume (and durable there).
    pub checkpoint_lsn: u64,
    /// The log's oldest needed entry.
    pub head_lsn: u64,
    /// Largest span of entries that may be in flight at once (bounds holes at recovery).
    pub max_inflight_sectors: u64,
    /// Set by a clean shutdown, cleared when the volume opens.
    pub clean_shutdown: bool,
    /// Primary: its secondary is out of step (dropped, or not yet resynchronised) and needs
    /// the dirty-block map's granules resent. Staging log: the replica is being resynchronised
    /// and is not a consistent image until that ends.
    pub out_of_sync: bool,
    /// Primary: the dirty-block map's floor (see [`super::dirty`]). Staging log: the LSN the
    /// replica must apply through before it is a consistent image again (after a resync).
    pub resync_floor: u64,
    /// How the volume was created (so a restart can reopen it by itself).
    pub setup: VolumeSetup,
}

/// A volume's creation parameters, kept in its log superblock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSetup {
    /// Data bdev name.
    pub data_bdev: String,
    /// 0 bunker-sync, 1 local-only, 2 sync.
    pub mode: u8,
    /// 0 local-only, 1 stall.
    pub on_bunker_loss: u8,
    /// 0 answer once durable, 1 once applied to the volume too.
    pub ack: u8,
    /// Bunker address, empty for none.
    pub bunker: String,
    /// Secondary address (asynchronous shipping), empty for none.
    pub secondary: String,
    /// The first LSN of this log when it was formatted (nothing was ever written if the tail
    /// is still there).
    pub origin_lsn: u64,
}

fn put_str(sector: &mut [u8], len_at: usize, at: usize, max: usize, v: &str) {
    assert!(v.len() <= max, "superblock string too long");
    sector[len_at] = v.len() as u8;
    put(sector, at, v.as_bytes());
}

fn get_str(sector: &[u8], len_at: usize, at: usize, max: usize) -> String {
    let n = usize::from(sector[len_at]).min(max);
    String::from_utf8_lossy(&sector[at..at + n]).into_owned()
}

/// Why no superblock could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperError {
    /// Neither copy has the magic: not a ferrite log.
    #[error("no ferrite log superblock")]
    Missing,
    /// Magic but no copy passes its checksum.
    #[error("ferrite log superblock is corrupt (both copies fail their checksum)")]
    Corrupt,
    /// A newer format.
    #[error("ferrite log format version {0} is not supported")]
    Version(u16),
}

impl Superblock {
    /// Encodes into a sector.
    pub fn encode(&self, sector: &mut [u8]) {
        assert!(sector.len() >= SUPER_BYTES && self.volume_name.len() <= 128, "superblock does not fit");
        sector.fill(0);
        put(sector, 0, &SUPER_MAGIC.to_le_bytes());
        put(sector, 4, &VERSION.to_le_bytes());
        sector[6] = self.role;
        sector[7] = u8::from(self.clean_shutdown);
        put(sector, 8, &self.generation.to_le_bytes());
        put(sector, 16, &self.volume_uuid);
        put(sector, 32, &self.epoch.to_le_bytes());
        put(sector, 40, &self.sector_size.to_le_bytes());
        put(sector, 44, &self.volume_block_size.to_le_bytes());
        put(sector, 48, &self.ring_start.to_le_bytes());
        put(sector, 56, &self.ring_sectors.to_le_bytes());
        put(sector, 64, &self.volume_blocks.to_le_bytes());
        put(sector, 72, &self.checkpoint_lsn.to_le_bytes());
        put(sector, 80, &self.head_lsn.to_le_bytes());
        put(sector, 88, &self.max_inflight_sectors.to_le_bytes());
        sector[96] = self.volume_name.len() as u8;
        put(sector, 100, self.volume_name.as_bytes());
        sector[228] = self.setup.mode;
        sector[229] = self.setup.on_bunker_loss;
        sector[99] = self.setup.ack;
        put_str(sector, 230, 232, 128, &self.setup.data_bdev);
        put_str(sector, 231, 360, 64, &self.setup.bunker);
        put_str(sector, 97, 424, 64, &self.setup.secondary);
        put(sector, 488, &self.setup.origin_lsn.to_le_bytes());
        sector[98] = u8::from(self.out_of_sync);
        put(sector, 496, &self.resync_floor.to_le_bytes());
        let crc = crc32c::crc32c(&sector[..SUPER_BYTES - 4]);
        put(sector, SUPER_BYTES - 4, &crc.to_le_bytes());
    }

    /// Decodes one copy.
    pub fn decode(sector: &[u8]) -> Result<Superblock, SuperError> {
        if sector.len() < SUPER_BYTES || u32_at(sector, 0) != SUPER_MAGIC {
            return Err(SuperError::Missing);
        }
        if crc32c::crc32c(&sector[..SUPER_BYTES - 4]) != u32_at(sector, SUPER_BYTES - 4) {
            return Err(SuperError::Corrupt);
        }
        let version = u16::from_le_bytes([sector[4], sector[5]]);
        if version != VERSION {
            return Err(SuperError::Version(version));
        }
        let name_len = usize::from(sector[96]).min(128);
        Ok(Superblock {
            generation: u64_at(sector, 8),
            volume_uuid: sector[16..32].try_into().expect("16 bytes"),
            volume_name: String::from_utf8_lossy(&sector[100..100 + name_len]).into_owned(),
            role: sector[6],
            epoch: u64_at(sector, 32),
            sector_size: u32_at(sector, 40),
            volume_block_size: u32_at(sector, 44),
            ring_start: u64_at(sector, 48),
            ring_sectors: u64_at(sector, 56),
            volume_blocks: u64_at(sector, 64),
            checkpoint_lsn: u64_at(sector, 72),
            head_lsn: u64_at(sector, 80),
            max_inflight_sectors: u64_at(sector, 88),
            clean_shutdown: sector[7] != 0,
            out_of_sync: sector[98] != 0,
            resync_floor: u64_at(sector, 496),
            setup: VolumeSetup {
                data_bdev: get_str(sector, 230, 232, 128),
                mode: sector[228],
                on_bunker_loss: sector[229],
                ack: sector[99],
                bunker: get_str(sector, 231, 360, 64),
                secondary: get_str(sector, 97, 424, 64),
                origin_lsn: u64_at(sector, 488),
            },
        })
    }

    /// Picks the current superblock from the two copies.
    pub fn choose(a: &[u8], b: &[u8]) -> Result<Superblock, SuperError> {
        match (Superblock::decode(a), Superblock::decode(b)) {
            (Ok(x), Ok(y)) => Ok(if x.generation >= y.generation { x } else { y }),
            (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(x),
            (Err(SuperError::Version(v)), _) | (_, Err(SuperError::Version(v))) => {
                Err(SuperError::Version(v))
            }
            (Err(SuperError::Missing), Err(SuperError::Missing)) => Err(SuperError::Missing),
            _ => Err(SuperError::Corrupt),
        }
    }

    /// The durable (FUA) write of this superblock to its slot, in a buffer from `pool`; `None`
    /// when the pool is exhausted.
    pub fn write_io(&self, pool: &crate::sys::DmaPool, tag: u64) -> Option<crate::bdev::BdevIo> {
        let mut buf = pool.alloc()?;
        buf.set_len(self.sector_size as usize);
        self.encode(buf.as_mut_slice());
        Some(crate::bdev::BdevIo {
            ty: crate::bdev::IoType::Write,
            offset_blocks: self.slot(),
            num_blocks: 1,
            buf: Some(buf),
            fua: true,
            tag,
        })
    }

    /// The sector (0 or 1) this generation is written to.
    pub fn slot(&self) -> u64 {
        self.generation % 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sb() -> Superblock {
        Superblock {
            generation: 3,
            volume_uuid: [9; 16],
            volume_name: "vol0".into(),
            role: 0,
            epoch: 2,
            sector_size: 512,
            ring_start: 2,
            ring_sectors: 1000,
            volume_block_size: 512,
            volume_blocks: 2048,
            checkpoint_lsn: 17,
            head_lsn: 10,
            max_inflight_sectors: 300,
            clean_shutdown: true,
            out_of_sync: true,
            resync_floor: 77,
            setup: VolumeSetup {
                data_bdev: "Data0".into(),
                mode: 1,
                on_bunker_loss: 1,
                ack: 1,
                bunker: "127.0.0.1:7700".into(),
                secondary: "10.0.0.9:7701".into(),
                origin_lsn: 1 << 30,
            },
        }
    }

    #[test]
    fn superblock_round_trip_and_choice() {
        let mut a = vec![0u8; 512];
        let mut b = vec![0u8; 512];
        sb().encode(&mut a);
        Superblock { generation: 4, ..sb() }.encode(&mut b);
        assert_eq!(Superblock::decode(&a).unwrap(), sb());
        assert_eq!(Superblock::choose(&a, &b).unwrap().generation, 4);
        b[20] ^= 1;
        assert_eq!(Superblock::choose(&a, &b).unwrap().generation, 3, "a torn copy loses to the good one");
        assert_eq!(Superblock::choose(&[0; 512], &[0; 512]), Err(SuperError::Missing));
        a[30] ^= 1;
        assert_eq!(Superblock::choose(&a, &b), Err(SuperError::Corrupt));
    }

    /// Three write entries of 1, 2 and 1 data sectors from LSN 100.
    fn three_entries() -> Vec<u8> {
        let mut out = Vec::new();
        let mut lsn = 100;
        for (i, len) in [512u32, 1024, 300].into_iter().enumerate() {
            let data = vec![i as u8 + 1; len as usize];
            let sectors = EntryHeader::sectors_for(len, 512);
            let h = EntryHeader {
                kind: EntryKind::Write,
                lsn,
                epoch: 1,
                lba: i as u64,
                blocks: 1,
                data_len: len,
                sectors,
                data_crc: crc32c::crc32c(&data),
            };
            let mut e = vec![0u8; sectors as usize * 512];
            h.encode(&mut e[..512]);
            e[512..512 + data.len()].copy_from_slice(&data);
            out.extend(e);
            lsn += u64::from(sectors);
        }
        out
    }

    #[test]
    fn whole_entries_stop_at_damage_or_a_cut() {
        let log = three_entries(); // entries at 100 (2 sectors), 102 (3), 105 (2)
        assert_eq!(whole_entries(&log, 100, 512), WholeEntries { sectors: 7, damaged: false });
        assert_eq!(whole_entries(&log[..6 * 512], 100, 512), WholeEntries { sectors: 5, damaged: false });
        let mut bad = log.clone();
        bad[3 * 512 + 7] ^= 1; // the second entry's data
        assert_eq!(whole_entries(&bad, 100, 512), WholeEntries { sectors: 2, damaged: true });
        // Read from the wrong place (misdirected): the first header names another LSN.
        assert_eq!(whole_entries(&log, 101, 512), WholeEntries { sectors: 0, damaged: true });
        // A damaged entry spans to the next one: its own length, or the next valid header.
        assert_eq!(damaged_span(&bad[2 * 512..], 102, 512), 3);
        let mut torn = log.clone();
        torn[2 * 512 + 61] ^= 1; // the second entry's header
        assert_eq!(damaged_span(&torn[2 * 512..], 102, 512), 3);
        assert_eq!(damaged_span(&log[512..], 101, 512), 1);
    }

    proptest! {
        #[test]
        fn entry_headers_round_trip(lsn in 0u64..1 << 40, epoch: u64, lba: u64, blocks in 1u32..256, len in 1u32..131072, crc: u32) {
            let h = EntryHeader { kind: EntryKind::Write, lsn, epoch, lba, blocks, data_len: len, sectors: EntryHeader::sectors_for(len, 512), data_crc: crc };
            let mut s = vec![0u8; 512];
            h.encode(&mut s);
            prop_assert_eq!(EntryHeader::decode(&s, lsn, 512), Ok(h));
            prop_assert_eq!(EntryHeader::decode(&s, lsn + 1, 512), Err(HeaderError::WrongLsn { found: lsn, expected: lsn + 1 }));
        }

        #[test]
        fn any_flipped_bit_is_caught(bit in 0usize..512 * 8) {
            let h = EntryHeader { kind: EntryKind::Zeroes, lsn: 5, epoch: 1, lba: 3, blocks: 2, data_len: 0, sectors: 1, data_crc: 0 };
            let mut s = vec![0u8; 512];
            h.encode(&mut s);
            s[bit / 8] ^= 1 << (bit % 8);
            let r = EntryHeader::decode(&s, 5, 512);
            prop_assert!(r.is_err(), "flipped bit {} not caught", bit);
        }
    }
}

//! A restarted bunker's inventory of its log: every valid entry on the ring (header checksum,
//! the LSN matching its place on the ring, data checksum), so that when a primary re-attaches
//! or a failover pulls, the bunker can say how far it holds a contiguous run of entries from
//! the requested start, instead of forgetting what it held before the restart.
//!
//! Entries of older laps carry older LSNs, so following the chain of LSNs from a start never
//! picks up a stale entry; a torn entry fails its data checksum and ends the chain there.
//! Where the chain from the superblock's checkpoint breaks, the entry there is read again before the
//! break is believed: a corrupted or misdirected read must not shorten what the log holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bdev::{sync, Bdev, Channel};
use crate::replication::format::{EntryHeader, EntryKind, Superblock, ENTRY_MAGIC};
use crate::replication::recovery::READS;
use crate::sys::DmaPool;

/// Ring sectors read at once.
const CHUNK: u64 = 2048;
/// Largest entry in sectors (128 KiB of data and its header, in 512-byte sectors).
const MAX_ENTRY: u64 = 258;

/// The valid entries of the ring that `sb` describes: LSN → sectors. A read error fails the
/// scan: an inventory cut short would claim fewer entries than the log holds.
pub fn scan(log: &Arc<dyn Bdev>, pool: &DmaPool, sb: &Superblock) -> Result<BTreeMap<u64, u32>, String> {
    let mut found = BTreeMap::new();
    let mut ch = Channel::new(log.clone()).map_err(|e| format!("opening {}: {e}", log.name()))?;
    let (ring, ss) = (sb.ring_sectors, sb.sector_size as usize);
    let mut p0 = 0;
    while p0 < ring {
        let n = (CHUNK + MAX_ENTRY).min(ring - p0);
        let bytes = sync::read(&mut ch, pool, sb.ring_start + p0, n as u32)
            .map_err(|s| format!("reading {} for its inventory at sector {p0}: {s}", log.name()))?;
        for i in 0..CHUNK.min(ring - p0) {
            if let Some((lsn, sectors)) = entry_at(&bytes, i as usize, ss, p0 + i, ring) {
                found.insert(lsn, sectors);
            }
        }
        p0 += CHUNK;
    }
    // A bunker or staging log resumes from its checkpoint (`BunkerState::resumed`).
    confirm_run(&mut ch, pool, sb, &mut found, sb.checkpoint_lsn)
        .map_err(|s| format!("reading {} for its inventory: {s}", log.name()))?;
    Ok(found)
}

/// Follows the run of entries from `from`; where it breaks, the entry there is read again
/// (up to [`READS`] reads in all) and, if whole after all, taken into `found`.
fn confirm_run(
    ch: &mut Channel,
    pool: &DmaPool,
    sb: &Superblock,
    found: &mut BTreeMap<u64, u32>,
    from: u64,
) -> Result<(), crate::bdev::IoStatus> {
    let (ring, ss) = (sb.ring_sectors, sb.sector_size as usize);
    let mut end = contiguous_end(found, from);
    let mut reads = 1;
    while end - from < ring && reads < READS {
        let pos = end % ring;
        let n = MAX_ENTRY.min(ring - pos);
        let bytes = sync::read(ch, pool, sb.ring_start + pos, n as u32)?;
        match entry_at(&bytes, 0, ss, pos, ring).filter(|(lsn, _)| *lsn == end) {
            Some((lsn, sectors)) => {
                found.insert(lsn, sectors);
                end = contiguous_end(found, end);
                reads = 1;
            }
            None => reads += 1,
        }
    }
    Ok(())
}

/// The valid entry whose header is sector `i` of `bytes` (ring position `pos`), if any and
/// if it lies whole within `bytes`.
fn entry_at(bytes: &[u8], i: usize, ss: usize, pos: u64, ring: u64) -> Option<(u64, u32)> {
    let sector = bytes.get(i * ss..(i + 1) * ss)?;
    if u32::from_le_bytes(sector[..4].try_into().ok()?) != ENTRY_MAGIC {
        return None;
    }
    let lsn = u64::from_le_bytes(sector[8..16].try_into().ok()?);
    let h = EntryHeader::decode(sector, lsn, ss as u32).ok()?;
    if lsn % ring != pos {
        return None;
    }
    if h.kind == EntryKind::Write {
        let data = bytes.get((i + 1) * ss..(i + 1) * ss + h.data_len as usize)?;
        if crc32c::crc32c(data) != h.data_crc {
            return None;
        }
    }
    Some((lsn, h.sectors))
}

/// The end of the contiguous run of entries from `from`. `from` may fall inside an entry (a
/// transfer cut short mid-entry, since streams are cut in sectors, not entries): the run then
/// goes on from that entry's end.
pub fn contiguous_end(entries: &BTreeMap<u64, u32>, from: u64) -> u64 {
    let mut end = from;
    if let Some((&start, &n)) = entries.range(..from).next_back() {
        end = end.max(start + u64::from(n));
    }
    while let Some(&n) = entries.get(&end) {
        end += u64::from(n);
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_starts_at_an_entry_or_inside_one() {
        // Entries at 100 (9 sectors), 109 (17) and 126 (9); an older lap's entry at 3.
        let entries = BTreeMap::from([(3, 9), (100, 9), (109, 17), (126, 9)]);
        assert_eq!(contiguous_end(&entries, 100), 135);
        // A pull cut after two sectors of the entry at 109 resumes at 111.
        assert_eq!(contiguous_end(&entries, 111), 135);
        // A gap ends the run; a start past every entry holds nothing.
        assert_eq!(contiguous_end(&entries, 12), 12);
        assert_eq!(contiguous_end(&entries, 135), 135);
        assert_eq!(contiguous_end(&BTreeMap::from([(100, 9), (120, 9)]), 100), 109);
    }
}

//! Crash recovery: scanning the log from the last checkpoint and deciding, entry by entry, what
//! to replay. Written as a decision table over what is found at each position:
//!
//! | at `pos`                                | later valid entry         | decision                      |
//! |-----------------------------------------|---------------------------|-------------------------------|
//! | valid header (and data CRC for a write) | —                         | replay it, `pos += sectors`   |
//! | pad                                     | —                         | skip to its end               |
//! | empty / torn / stale / bad data CRC     | none within the window    | end of the log (torn tail)    |
//! | empty / torn / stale / bad data CRC     | within the window, and the log ends within the window of the hole | in-flight hole: skip (it was never acknowledged) |
//! | empty / torn / stale / bad data CRC     | within the window, but the log goes on beyond it | corruption: the volume stops with an error |
//!
//! The window is the largest span of entries the writer keeps in flight (recorded in the
//! superblock): only inside it may a later entry be durable while an earlier one is not.
//! Replaying is idempotent, so recovering twice is harmless.
//!
//! Nothing found bad is believed on one read: a corrupted or misdirected read would end the log
//! early (dropping acknowledged entries) or stop it as corrupt. A bad position, and a window
//! that shows no later entry, are read again from the device ([`READS`] times in all).

use super::format::{EntryHeader, EntryKind, HeaderError};
use super::log::LogGeometry;

/// Reads of a position before what it shows is believed bad.
pub const READS: usize = 3;

/// Reads log sectors by LSN (wrapping is the reader's business).
pub trait LogReader {
    /// `sectors` sectors starting at `lsn`.
    fn read(&mut self, lsn: u64, sectors: u32) -> std::io::Result<Vec<u8>>;

    /// Drops whatever was read ahead, so that the next read goes to the device.
    fn forget(&mut self) {}
}

/// An entry to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Its header.
    pub header: EntryHeader,
    /// Its data (writes only).
    pub data: Vec<u8>,
}

/// What the scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    /// Entries to replay, in LSN order.
    pub entries: Vec<Replay>,
    /// In-flight holes skipped: (LSN, sectors up to the next valid entry).
    pub holes: Vec<(u64, u64)>,
    /// The end of the log: the next entry goes here.
    pub end: u64,
}

/// Why the log cannot be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Reading failed.
    #[error("reading the log: {0}")]
    Io(#[from] std::io::Error),
    /// A damaged entry in the middle of the log.
    #[error("change log corrupt at LSN {lsn}: {why}; entries continue up to LSN {end}, beyond the in-flight window of {window} sectors, so this is not a torn tail")]
    Corrupt {
        /// Where.
        lsn: u64,
        /// What was wrong.
        why: String,
        /// How far valid entries go.
        end: u64,
        /// The window.
        window: u64,
    },
}

enum Found {
    Entry(Replay),
    Bad(String),
}

fn probe(r: &mut dyn LogReader, geo: &LogGeometry, lsn: u64) -> std::io::Result<Found> {
    let head = r.read(lsn, 1)?;
    let h = match EntryHeader::decode(&head, lsn, geo.sector) {
        Ok(h) => h,
        Err(
            e @ (HeaderError::Empty
            | HeaderError::BadCrc
            | HeaderError::WrongLsn { .. }
            | HeaderError::Invalid),
        ) => return Ok(Found::Bad(e.to_string())),
    };
    if u64::from(h.sectors) > geo.until_wrap(lsn) {
        return Ok(Found::Bad("entry crosses the end of the ring".into()));
    }
    if h.kind != EntryKind::Write {
        return Ok(Found::Entry(Replay { header: h, data: Vec::new() }));
    }
    let body = r.read(lsn + 1, h.sectors - 1)?;
    let data = body[..h.data_len as usize].to_vec();
    if crc32c::crc32c(&data) != h.data_crc {
        return Ok(Found::Bad("entry data checksum mismatch".into()));
    }
    Ok(Found::Entry(Replay { header: h, data }))
}

/// Scans from `from` (the checkpoint) for at most one ring; `window` bounds in-flight holes.
pub fn scan(
    r: &mut dyn LogReader,
    geo: &LogGeometry,
    from: u64,
    window: u64,
) -> Result<ScanResult, RecoveryError> {
    let mut out = ScanResult { entries: Vec::new(), holes: Vec::new(), end: from };
    let mut first_hole: Option<(u64, String)> = None;
    let mut pos = from;
    while pos - from < geo.ring_sectors {
        match probe_again(r, geo, pos)? {
            Found::Entry(e) => {
                pos += u64::from(e.header.sectors);
                out.end = pos;
                if e.header.kind != EntryKind::Pad {
                    out.entries.push(e);
                }
            }
            Found::Bad(why) => match next_valid(r, geo, pos, window)? {
                Some(next) => {
                    first_hole.get_or_insert((pos, why));
                    out.holes.push((pos, next - pos));
                    pos = next;
                }
                None => break,
            },
        }
    }
    if let Some((lsn, why)) = first_hole {
        if out.end - lsn > window {
            return Err(RecoveryError::Corrupt { lsn, why, end: out.end, window });
        }
    }
    Ok(out)
}

/// What is at `lsn`, read again from the device while it looks bad.
fn probe_again(r: &mut dyn LogReader, geo: &LogGeometry, lsn: u64) -> std::io::Result<Found> {
    let mut found = probe(r, geo, lsn)?;
    for _ in 1..READS {
        if matches!(found, Found::Entry(_)) {
            break;
        }
        r.forget();
        found = probe(r, geo, lsn)?;
    }
    Ok(found)
}

/// The first position after `pos` (within `window`) holding a valid entry; a window that shows
/// none is read again before the log is taken to end at `pos`.
fn next_valid(
    r: &mut dyn LogReader,
    geo: &LogGeometry,
    pos: u64,
    window: u64,
) -> std::io::Result<Option<u64>> {
    for pass in 0..READS {
        if pass > 0 {
            r.forget();
        }
        for p in pos + 1..=pos + window {
            if let Found::Entry(_) = probe(r, geo, p)? {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

//! The acknowledged-write log of `ferrite perf --ack-log FILE`, and the judgement of
//! `ferrite perf --check-ack-log FILE`, which proves that no acknowledged write was lost after a
//! crash or a failover.
//!
//! # Format (version 1, little-endian)
//! A 64-byte header, then 32-byte records, one per acknowledged write, in acknowledgement
//! order per job (jobs own disjoint LBA ranges, so the order between jobs does not matter).
//!
//! Header: `0` magic `"FRTACKLG"`, `8` version u32 (1), `12` record length u32 (32), `16` block
//! size u32, `20` nsid u32, `24` run id u32, `28` reserved u32, `32` start time (Unix ms) u64,
//! `40..60` reserved (zero), `60` CRC32C of bytes 0..60.
//!
//! Record: `0` first LBA u64, `8` generation u64, `16` block count u32, `20` CRC32C of the
//! written data u32, `24` job index u16, `26` reserved u16, `28` CRC32C of bytes 0..28.
//!
//! Generations are `run_id << 32 | job << 26 | n` ([`gen_base`]): every written block carries
//! its generation in its [`verify`](super::verify) stamp, a block belongs to one job per run,
//! and the run id (Unix seconds at start) orders runs, so "a newer write of the same run" is
//! recognisable on the device without being in the log.
//!
//! # Guarantee
//! A record is put in the job's in-memory buffer when the write's completion is processed,
//! before its slot is reused. The buffer is written to the file (`write(2)`, so into the page
//! cache, where it survives the death of any process) every [`FLUSH_INTERVAL_NS`] while the job
//! is busy, whenever [`FLUSH_BYTES`] are pending, as soon as the job has seen no traffic for
//! 100 µs (before its reactor may go to sleep), and when the job ends, including when it ends
//! because the target died or closed the connection; the file is fsynced when the run ends.
//! So after a SIGKILL of the *target* (the perf process lives on and exits on its own, non-zero),
//! the log holds every write that was acknowledged to perf. If perf itself were killed, at most
//! the acknowledgements of the last 50 ms would be missing, never half a record that passes its
//! CRC; a crash of the OS before the final fsync can lose what the page cache held.
//!
//! # Judgement
//! Per LBA range, the last record wins. A block passes if it holds exactly the acknowledged data
//! (CRC32C of the range, or its stamp names the acknowledged generation), or a valid stamp of a
//! *newer* generation of the same run (a write issued after that acknowledgement, in flight
//! when the target died). Anything else (no stamp, an older generation, another run's data, a
//! damaged stamp) is a lost acknowledged write.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use super::verify::{check, Stamp};
use crate::reactor::Nanos;

/// File magic.
pub const MAGIC: [u8; 8] = *b"FRTACKLG";
/// Format version.
pub const VERSION: u32 = 1;
/// Header bytes.
pub const HEADER_LEN: usize = 64;
/// Record bytes.
pub const RECORD_LEN: usize = 32;
/// Longest time an acknowledgement stays in memory only.
pub const FLUSH_INTERVAL_NS: Nanos = 50_000_000;
/// Pending bytes that force a write.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Bits of a generation below the job index.
const JOB_SHIFT: u32 = 26;

/// First generation of `job` in run `run_id` (generations count up from there).
pub fn gen_base(run_id: u32, job: usize) -> u64 {
    assert!(job < 64, "at most 64 jobs share a run's generation space");
    (u64::from(run_id) << 32) | ((job as u64) << JOB_SHIFT)
}

/// The run a generation belongs to.
pub fn gen_run(gen: u64) -> u32 {
    (gen >> 32) as u32
}

/// A run id: Unix seconds now.
pub fn new_run_id() -> u32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs as u32
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Block size of the namespace.
    pub block_size: u32,
    /// Namespace written.
    pub nsid: u32,
    /// Run id (the high half of every generation).
    pub run_id: u32,
    /// Start time, Unix milliseconds.
    pub started_ms: u64,
}

impl Header {
    /// Encodes the 64-byte header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(RECORD_LEN as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.block_size.to_le_bytes());
        b[20..24].copy_from_slice(&self.nsid.to_le_bytes());
        b[24..28].copy_from_slice(&self.run_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.started_ms.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header.
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() < HEADER_LEN || b[0..8] != MAGIC {
            return Err("not a ferrite ack log (bad magic)".into());
        }
        if crc32c::crc32c(&b[..60]) != get_u32(b, 60) {
            return Err("ack log header is damaged (CRC mismatch)".into());
        }
        let (version, rec_len) = (get_u32(b, 8), get_u32(b, 12));
        if version != VERSION || rec_len as usize != RECORD_LEN {
            return Err(format!("ack log version {version} (record {rec_len} B) is not supported"));
        }
        Ok(Header {
            block_size: get_u32(b, 16),
            nsid: get_u32(b, 20),
            run_id: get_u32(b, 24),
            started_ms: get_u64(b, 32),
        })
    }
}

/// One acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// First block.
    pub lba: u64,
    /// Generation stamped into every block of the write.
    pub gen: u64,
    /// Blocks written.
    pub blocks: u32,
    /// CRC32C of all the data written.
    pub data_crc: u32,
    /// Job that wrote it.
    pub job: u16,
}

impl Record {
    /// Appends the 32-byte encoding to `out` (no allocation while `out` has room).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut b = [0u8; RECORD_LEN];
        b[0..8].copy_from_slice(&self.lba.to_le_bytes());
        b[8..16].copy_from_slice(&self.gen.to_le_bytes());
        b[16..20].copy_from_slice(&self.blocks.to_le_bytes());
        b[20..24].copy_from_slice(&self.data_crc.to_le_bytes());
        b[24..26].copy_from_slice(&self.job.to_le_bytes());
        let crc = crc32c::crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&b);
    }

    /// Decodes a record; `None` if its CRC does not match.
    pub fn decode(b: &[u8]) -> Option<Record> {
        if crc32c::crc32c(&b[..28]) != get_u32(b, 28) {
            return None;
        }
        Some(Record {
            lba: get_u64(b, 0),
            gen: get_u64(b, 8),
            blocks: get_u32(b, 16),
            data_crc: get_u32(b, 20),
            job: u16::from_le_bytes([b[24], b[25]]),
        })
    }

    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.lba + u64::from(self.blocks)
    }
}

/// Creates (truncates) the log and writes its header.
pub fn create(path: &Path, header: &Header) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| format!("creating ack log {}: {e}", path.display()))?;
    f.write_all(&header.encode()).map_err(|e| format!("writing ack log {}: {e}", path.display()))
}

/// One job's appender: records are buffered and written in batches (see the module docs).
#[derive(Debug)]
pub struct AckWriter {
    file: File,
    buf: Vec<u8>,
    last_flush: Nanos,
    /// Records written so far.
    pub records: u64,
}

impl AckWriter {
    /// Opens `path` (created by [`create`]) for appending.
    pub fn open(path: &Path) -> Result<AckWriter, String> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("opening ack log {}: {e}", path.display()))?;
        Ok(AckWriter { file, buf: Vec::with_capacity(FLUSH_BYTES + RECORD_LEN), last_flush: 0, records: 0 })
    }

    /// Logs an acknowledged write; writes the batch if it is full.
    pub fn record(&mut self, r: &Record, now: Nanos) -> std::io::Result<()> {
        r.encode_into(&mut self.buf);
        self.records += 1;
        if self.buf.len() >= FLUSH_BYTES {
            return self.flush(now);
        }
        Ok(())
    }

    /// Writes the batch if it has waited [`FLUSH_INTERVAL_NS`].
    pub fn tick(&mut self, now: Nanos) -> std::io::Result<()> {
        if !self.buf.is_empty() && now.saturating_sub(self.last_flush) >= FLUSH_INTERVAL_NS {
            return self.flush(now);
        }
        Ok(())
    }

    /// Writes everything pending (whole records, one `write` per batch).
    pub fn flush(&mut self, now: Nanos) -> std::io::Result<()> {
        self.last_flush = now;
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.buf);
        self.buf.clear();
        r
    }

    /// Flushes and fsyncs (end of run).
    pub fn close(mut self, now: Nanos) -> std::io::Result<()> {
        self.flush(now)?;
        self.file.sync_data()
    }
}

/// A log read back.
#[derive(Debug, Clone)]
pub struct Log {
    /// Its header.
    pub header: Header,
    /// Every intact record, in file order.
    pub records: Vec<Record>,
    /// Bytes of an incomplete last record (only if the writer itself died mid-write).
    pub torn_tail_bytes: usize,
}

/// Reads a log; a damaged record before the end is an error.
pub fn read(path: &Path) -> Result<Log, String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| format!("reading ack log {}: {e}", path.display()))?;
    let header = Header::decode(&bytes)?;
    let body = &bytes[HEADER_LEN..];
    let mut records = Vec::with_capacity(body.len() / RECORD_LEN);
    for (i, chunk) in body.chunks_exact(RECORD_LEN).enumerate() {
        let r =
            Record::decode(chunk).ok_or_else(|| format!("ack log record {i} is damaged (CRC mismatch)"))?;
        records.push(r);
    }
    Ok(Log { header, records, torn_tail_bytes: body.len() % RECORD_LEN })
}

/// The last record of every LBA range, sorted by LBA. Records of one run never partially
/// overlap (offsets are aligned to the I/O size), so a partial overlap means a damaged log.
pub fn latest(records: &[Record]) -> Result<Vec<Record>, String> {
    let mut by_lba = std::collections::BTreeMap::new();
    for r in records {
        by_lba.insert(r.lba, *r);
    }
    let ranges: Vec<Record> = by_lba.into_values().collect();
    for w in ranges.windows(2) {
        if w[0].end() > w[1].lba {
            return Err(format!(
                "ack log ranges overlap: LBA {}+{} and {}+{}",
                w[0].lba, w[0].blocks, w[1].lba, w[1].blocks
            ));
        }
    }
    Ok(ranges)
}

/// What reading one range back showed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Blocks holding exactly the acknowledged write.
    pub exact: u64,
    /// Blocks holding a newer, unacknowledged write of the same run.
    pub newer: u64,
    /// Lost or damaged blocks, described.
    pub failures: Vec<String>,
}

/// Judges `data` read from `r`'s range (`block_size` bytes per block) against `r`.
pub fn judge(r: &Record, data: &[u8], block_size: usize) -> Verdict {
    let mut v = Verdict::default();
    if crc32c::crc32c(data) == r.data_crc {
        v.exact = u64::from(r.blocks);
        return v;
    }
    for (k, block) in data.chunks_exact(block_size).enumerate() {
        let lba = r.lba + k as u64;
        match check(block, lba) {
            Stamp::Valid(g) if g == r.gen => v.exact += 1,
            Stamp::Valid(g) if g > r.gen && gen_run(g) == gen_run(r.gen) => v.newer += 1,
            Stamp::Valid(g) => v
                .failures
                .push(format!("LBA {lba}: holds generation {g:#x}, acknowledged write {:#x} is lost", r.gen)),
            Stamp::Absent => {
                v.failures.push(format!("LBA {lba}: acknowledged write {:#x} is lost (no stamp)", r.gen))
            }
            Stamp::Corrupt(why) => v.failures.push(format!("{why} (acknowledged write {:#x})", r.gen)),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::super::verify::stamp;
    use super::*;

    fn range(lba: u64, gen: u64, blocks: usize, bs: usize) -> Vec<u8> {
        let mut d = vec![0u8; blocks * bs];
        for (k, b) in d.chunks_exact_mut(bs).enumerate() {
            stamp(b, lba + k as u64, gen);
        }
        d
    }

    #[test]
    fn header_and_records_round_trip() {
        let h = Header { block_size: 4096, nsid: 1, run_id: 77, started_ms: 123 };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        let mut bad = h.encode();
        bad[20] ^= 1;
        assert!(Header::decode(&bad).is_err());
        let r = Record { lba: 9, gen: gen_base(77, 3) + 5, blocks: 8, data_crc: 0xABCD, job: 3 };
        let mut out = Vec::new();
        r.encode_into(&mut out);
        assert_eq!(out.len(), RECORD_LEN);
        assert_eq!(Record::decode(&out), Some(r));
        out[3] ^= 1;
        assert_eq!(Record::decode(&out), None);
    }

    #[test]
    fn writer_and_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ack.log");
        let h = Header { block_size: 512, nsid: 1, run_id: 5, started_ms: 0 };
        create(&path, &h).unwrap();
        let mut w = AckWriter::open(&path).unwrap();
        for i in 0..3000u64 {
            let r = Record { lba: i % 100, gen: gen_base(5, 0) + i + 1, blocks: 1, data_crc: 0, job: 0 };
            w.record(&r, i).unwrap();
        }
        w.close(0).unwrap();
        let log = read(&path).unwrap();
        assert_eq!((log.header, log.records.len(), log.torn_tail_bytes), (h, 3000, 0));
        let last = latest(&log.records).unwrap();
        assert_eq!(last.len(), 100);
        assert_eq!(last[7].gen, gen_base(5, 0) + 2908);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        assert_eq!(read(&path).unwrap().torn_tail_bytes, 3);
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let r = |lba, blocks| Record { lba, gen: 1, blocks, data_crc: 0, job: 0 };
        assert!(latest(&[r(0, 8), r(8, 8)]).is_ok());
        assert!(latest(&[r(0, 8), r(4, 8)]).is_err());
    }

    #[test]
    fn judgement() {
        let bs = 512;
        let g = gen_base(9, 1) + 10;
        let data = range(40, g, 4, bs);
        let r = Record { lba: 40, gen: g, blocks: 4, data_crc: crc32c::crc32c(&data), job: 1 };
        assert_eq!(judge(&r, &data, bs), Verdict { exact: 4, ..Verdict::default() });
        // Block 41 got a newer write of the same run (in flight at the crash): fine.
        let mut d = data.clone();
        stamp(&mut d[bs..2 * bs], 41, g + 3);
        assert_eq!(judge(&r, &d, bs), Verdict { exact: 3, newer: 1, failures: vec![] });
        // An older generation, a zeroed block, another run's newer data: lost.
        stamp(&mut d[2 * bs..3 * bs], 42, g - 1);
        d[3 * bs..].fill(0);
        let mut other_run = data.clone();
        stamp(&mut other_run[..bs], 40, gen_base(10, 1));
        assert_eq!(judge(&r, &d, bs).failures.len(), 2);
        assert_eq!(judge(&r, &other_run, bs).failures.len(), 1);
    }
}

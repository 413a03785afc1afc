//! Opening a volume on the control plane, before it serves: read the log superblock, then
//! either format a fresh log or recover (scan from the checkpoint, replay every durable entry
//! not yet applied, flush the volume, checkpoint). Blocking I/O is fine here: no reactor runs
//! this.

use super::{VolumeConfig, MAX_INFLIGHT};
use crate::bdev::{sync, Channel, IoStatus, IoType};
use crate::replication::dirty::{self, DirtyMap};
use crate::replication::format::{EntryHeader, EntryKind, SuperError, Superblock, VolumeSetup};
use crate::replication::log::LogGeometry;
use crate::replication::recovery::{scan, LogReader, RecoveryError, ScanResult};
use crate::sys::DmaPool;

/// A volume could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Device trouble.
    #[error("{what}: {status}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Outcome.
        status: IoStatus,
    },
    /// Bad parameters.
    #[error("{0}")]
    Invalid(String),
    /// The log is not ours to format.
    #[error("log bdev {log} holds the change log of volume {other:?}; refusing to format it (pass \"force\": true to overwrite)")]
    Foreign {
        /// Log bdev.
        log: String,
        /// The volume it belongs to.
        other: String,
    },
    /// The superblock cannot be read.
    #[error("log superblock: {0}")]
    Super(#[from] SuperError),
    /// Recovery failed.
    #[error("recovery: {0}")]
    Recovery(#[from] RecoveryError),
}

/// An opened log.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The current superblock (as written at open).
    pub sb: Superblock,
    /// Ring geometry.
    pub geo: LogGeometry,
    /// Where the next entry goes.
    pub end: u64,
    /// Entries replayed onto the volume.
    pub replayed: usize,
    /// In-flight holes skipped.
    pub holes: usize,
    /// Whether the log was formatted now.
    pub formatted: bool,
    /// The dirty-block map, if the log has room for one.
    pub dirty: Option<DirtyMap>,
}

fn io_err(what: &'static str) -> impl Fn(IoStatus) -> OpenError {
    move |status| OpenError::Io { what, status }
}

/// Bytes a recovery scan reads at once.
const READ_AHEAD: u64 = 1 << 20;

/// Reads the log for a recovery scan in large reads: probing header after header (and
/// position after position across an in-flight window) is served from what was read ahead.
struct SyncReader<'a> {
    ch: &'a mut Channel,
    pool: &'a DmaPool,
    geo: LogGeometry,
    /// `(lsn, bytes)` read ahead from `lsn`, up to the wrap at most.
    ahead: Option<(u64, Vec<u8>)>,
}

impl<'a> SyncReader<'a> {
    fn new(ch: &'a mut Channel, pool: &'a DmaPool, geo: LogGeometry) -> SyncReader<'a> {
        SyncReader { ch, pool, geo, ahead: None }
    }
}

impl LogReader for SyncReader<'_> {
    fn read(&mut self, lsn: u64, sectors: u32) -> std::io::Result<Vec<u8>> {
        let ss = self.geo.sector as usize;
        let want = sectors as usize * ss;
        if let Some((at, bytes)) = &self.ahead {
            let from = lsn.checked_sub(*at).map(|d| d as usize * ss);
            if let Some(from) = from.filter(|f| f + want <= bytes.len()) {
                return Ok(bytes[from..from + want].to_vec());
            }
        }
        let ahead = READ_AHEAD / u64::from(self.geo.sector);
        let n = ahead.min(self.geo.until_wrap(lsn)).max(u64::from(sectors));
        let bytes = sync::read(self.ch, self.pool, self.geo.block_of(lsn), n as u32)
            .map_err(|s| std::io::Error::other(s.to_string()))?;
        let out = bytes[..want].to_vec();
        self.ahead = Some((lsn, bytes));
        Ok(out)
    }

    fn forget(&mut self) {
        self.ahead = None;
    }
}

impl VolumeConfig {
    /// What the superblock records about this volume.
    pub fn setup(&self, origin_lsn: u64) -> VolumeSetup {
        VolumeSetup {
            data_bdev: self.data.name().to_string(),
            mode: match self.mode {
                super::Mode::BunkerSync => 0,
                super::Mode::LocalOnly => 1,
                super::Mode::Sync => 2,
            },
            on_bunker_loss: u8::from(self.on_bunker_loss == super::OnBunkerLoss::Stall),
            ack: u8::from(self.ack == super::Ack::Applied),
            bunker: self.bunker.map(|a| a.to_string()).unwrap_or_default(),
            secondary: self.secondary.map(|a| a.to_string()).unwrap_or_default(),
            origin_lsn,
        }
    }
}

/// Reads the superblock of `bdev` (control plane only): `None` when it holds no ferrite log;
/// an error when reading fails or both copies are damaged, so that a device that cannot be
/// read is never taken for an empty one (and formatted, or resumed as fresh).
pub fn read_superblock(
    bdev: &std::sync::Arc<dyn crate::bdev::Bdev>,
    pool: &DmaPool,
) -> Result<Option<Superblock>, String> {
    if bdev.num_blocks() < 2 || bdev.block_size() as usize > pool.buf_size() {
        return Ok(None);
    }
    let mut ch = Channel::new(bdev.clone()).map_err(|e| format!("opening {}: {e}", bdev.name()))?;
    let found =
        read_super(&mut ch, pool).map_err(|s| format!("reading the superblock of {}: {s}", bdev.name()))?;
    match found {
        Ok(sb) => Ok(Some(sb)),
        Err(SuperError::Missing) => Ok(None),
        Err(e) => Err(format!("{}: {e}", bdev.name())),
    }
}

/// Reads of the superblock sectors before one that shows a damaged or absent copy is believed.
const SUPER_READS: usize = 3;

/// Reads both superblock copies and takes the newest valid one; while a copy looks damaged or
/// absent it reads again (up to [`SUPER_READS`] times), keeping the newest copy seen, so that a
/// corrupted or misdirected read never makes a log look fresh (and formattable) or older than
/// it is. An error only when every read showed no valid copy.
fn read_super(ch: &mut Channel, pool: &DmaPool) -> Result<Result<Superblock, SuperError>, IoStatus> {
    let sector = ch.bdev().block_size() as usize;
    let mut best: Option<Superblock> = None;
    let mut last = Err(SuperError::Missing);
    for _ in 0..SUPER_READS {
        let two = sync::read(ch, pool, 0, 2)?;
        let (a, b) = two.split_at(sector);
        let whole = Superblock::decode(a).is_ok() && Superblock::decode(b).is_ok();
        last = Superblock::choose(a, b);
        if let Ok(sb) = &last {
            if best.as_ref().is_none_or(|x| sb.generation > x.generation) {
                best = Some(sb.clone());
            }
        }
        if whole {
            break;
        }
    }
    Ok(match best {
        Some(sb) => Ok(sb),
        None => last,
    })
}

/// The largest span of log sectors a volume may have in flight.
pub fn inflight_window(sector: u32, max_io: u32) -> u64 {
    MAX_INFLIGHT as u64 * u64::from(EntryHeader::sectors_for(max_io, sector)) + 2
}

/// Writes the superblock copy for its generation.
pub fn write_super(ch: &mut Channel, pool: &DmaPool, sb: &Superblock) -> Result<(), OpenError> {
    let mut sector = vec![0u8; sb.sector_size as usize];
    sb.encode(&mut sector);
    sync::write(ch, pool, sb.slot(), &sector).map_err(io_err("writing the log superblock"))
}

/// Covers every in-flight hole with pad entries (split at the ring's end), so the log below
/// its end is a run of valid entries that a bunker or secondary can take as it is.
fn pad_holes(
    log_ch: &mut Channel,
    pool: &DmaPool,
    geo: &LogGeometry,
    epoch: u64,
    holes: &[(u64, u64)],
) -> Result<(), OpenError> {
    for &(lsn, sectors) in holes {
        let first = sectors.min(geo.until_wrap(lsn));
        for (at, n) in [(lsn, first), (lsn + first, sectors - first)] {
            if n == 0 {
                continue;
            }
            let mut header = vec![0u8; geo.sector as usize];
            let h = EntryHeader {
                kind: EntryKind::Pad,
                lsn: at,
                epoch,
                lba: 0,
                blocks: 0,
                data_len: 0,
                sectors: n as u32,
                data_crc: 0,
            };
            h.encode(&mut header);
            sync::write(log_ch, pool, geo.block_of(at), &header).map_err(io_err("padding a log hole"))?;
        }
    }
    Ok(())
}

/// Opens (recovering or formatting) the log of `cfg`.
pub fn open(cfg: &VolumeConfig, pool: &DmaPool, max_io: u32) -> Result<Opened, OpenError> {
    let sector = cfg.log.block_size();
    let min = 2 + 2 * inflight_window(sector, max_io);
    if cfg.log.num_blocks() < min {
        return Err(OpenError::Invalid(format!(
            "log bdev {} has {} blocks; a change log needs at least {min}",
            cfg.log.name(),
            cfg.log.num_blocks()
        )));
    }
    let mut log_ch = Channel::new(cfg.log.clone()).map_err(|e| OpenError::Invalid(e.to_string()))?;
    match read_super(&mut log_ch, pool).map_err(io_err("reading the log superblock"))? {
        Ok(sb) if sb.volume_name == cfg.name && !cfg.force => recover(cfg, pool, &mut log_ch, sb),
        Ok(sb) if !cfg.force => Err(OpenError::Foreign { log: cfg.log.name().into(), other: sb.volume_name }),
        Ok(_) | Err(SuperError::Missing) => format(cfg, pool, &mut log_ch, max_io),
        Err(e) => Err(e.into()),
    }
}

fn format(
    cfg: &VolumeConfig,
    pool: &DmaPool,
    log_ch: &mut Channel,
    max_io: u32,
) -> Result<Opened, OpenError> {
    let sector = cfg.log.block_size();
    let (uuid, epoch) = cfg.identity.unwrap_or((*uuid::Uuid::new_v4().as_bytes(), 1));
    // A fresh LSN range per identity and epoch: entries left by an earlier log on this device
    // name other LSNs (and a given identity formats reproducibly, as the simulator needs).
    let mut id = uuid.to_vec();
    id.extend_from_slice(&epoch.to_le_bytes());
    let start = (u64::from(crc32c::crc32c(&id)) + 1) << 24;
    // The dirty-block map lives after the ring, when the log has room to spare for it.
    let map = DirtyMap::new(cfg.data.num_blocks());
    let map_sectors = map.sectors(sector);
    let spare = cfg.log.num_blocks() - 2 > map_sectors + 2 * inflight_window(sector, max_io);
    let ring_sectors = cfg.log.num_blocks() - 2 - if spare { map_sectors } else { 0 };
    let sb = Superblock {
        generation: 2,
        volume_uuid: uuid,
        volume_name: cfg.name.clone(),
        role: 0,
        epoch,
        sector_size: sector,
        ring_start: 2,
        ring_sectors,
        volume_block_size: cfg.data.block_size(),
        volume_blocks: cfg.data.num_blocks(),
        checkpoint_lsn: start,
        head_lsn: start,
        max_inflight_sectors: inflight_window(sector, max_io),
        clean_shutdown: false,
        out_of_sync: false,
        resync_floor: start,
        setup: cfg.setup(start),
    };
    if spare {
        let zeros = vec![0u8; (map_sectors * u64::from(sector)) as usize];
        sync::write(log_ch, pool, 2 + ring_sectors, &zeros)
            .map_err(io_err("clearing the dirty-block map"))?;
    }
    write_super(log_ch, pool, &Superblock { generation: 1, ..sb.clone() })?;
    write_super(log_ch, pool, &sb)?;
    let geo = LogGeometry { sector, ring_start: 2, ring_sectors: sb.ring_sectors };
    tracing::info!(
        volume = cfg.name,
        log = cfg.log.name(),
        ring_sectors = sb.ring_sectors,
        dirty_map = spare,
        "change log formatted"
    );
    let dirty = spare.then_some(map);
    Ok(Opened { end: start, sb, geo, replayed: 0, holes: 0, formatted: true, dirty })
}

fn recover(
    cfg: &VolumeConfig,
    pool: &DmaPool,
    log_ch: &mut Channel,
    sb: Superblock,
) -> Result<Opened, OpenError> {
    if sb.volume_blocks != cfg.data.num_blocks() || sb.volume_block_size != cfg.data.block_size() {
        return Err(OpenError::Invalid(format!(
            "data bdev {} ({} blocks of {}) does not match the volume recorded in the log ({} blocks of {})",
            cfg.data.name(),
            cfg.data.num_blocks(),
            cfg.data.block_size(),
            sb.volume_blocks,
            sb.volume_block_size
        )));
    }
    let geo =
        LogGeometry { sector: sb.sector_size, ring_start: sb.ring_start, ring_sectors: sb.ring_sectors };
    let mut reader = SyncReader::new(log_ch, pool, geo);
    let found = scan(&mut reader, &geo, sb.checkpoint_lsn, sb.max_inflight_sectors)?;
    let mut data_ch = Channel::new(cfg.data.clone()).map_err(|e| OpenError::Invalid(e.to_string()))?;
    for e in &found.entries {
        let h = &e.header;
        match h.kind {
            EntryKind::Write => sync::write(&mut data_ch, pool, h.lba, &e.data),
            EntryKind::Zeroes => sync::op(&mut data_ch, IoType::WriteZeroes, h.lba, h.blocks),
            EntryKind::Unmap => sync::op(&mut data_ch, IoType::Unmap, h.lba, h.blocks),
            EntryKind::Pad => Ok(()),
        }
        .map_err(io_err("replaying a log entry onto the volume"))?;
    }
    sync::op(&mut data_ch, IoType::Flush, 0, 0).map_err(io_err("flushing the volume after replay"))?;
    pad_holes(log_ch, pool, &geo, sb.epoch, &found.holes)?;
    let dirty = load_dirty_map(log_ch, pool, &sb, cfg.log.num_blocks(), &found)?;
    let sb = Superblock {
        generation: sb.generation + 1,
        checkpoint_lsn: found.end,
        // A secondary may still need the entries it has not applied: keep them, but never
        // claim entries the ring has since overwritten (the head moved on after the last
        // checkpoint; in-flight writes beyond the end may have overwritten a window more).
        head_lsn: if cfg.secondary.is_some() {
            let intact = (found.end + sb.max_inflight_sectors).saturating_sub(sb.ring_sectors);
            sb.head_lsn.max(intact).min(found.end)
        } else {
            found.end
        },
        clean_shutdown: false,
        setup: cfg.setup(sb.setup.origin_lsn),
        ..sb
    };
    write_super(log_ch, pool, &sb)?;
    tracing::info!(
        volume = cfg.name,
        replayed = found.entries.len(),
        holes = found.holes.len(),
        end = found.end,
        was_clean = sb.clean_shutdown,
        "change log recovered"
    );
    Ok(Opened {
        end: found.end,
        replayed: found.entries.len(),
        holes: found.holes.len(),
        sb,
        geo,
        formatted: false,
        dirty,
    })
}

/// Reads the dirty-block map back (if the log has one) and marks the entries recovery found
/// after the checkpoint: the map then covers every write from the recorded floor on.
fn load_dirty_map(
    log_ch: &mut Channel,
    pool: &DmaPool,
    sb: &Superblock,
    num_blocks: u64,
    found: &ScanResult,
) -> Result<Option<DirtyMap>, OpenError> {
    let Some(at) =
        dirty::location(num_blocks, sb.ring_start, sb.ring_sectors, sb.volume_blocks, sb.sector_size)
    else {
        return Ok(None);
    };
    let mut map = DirtyMap::new(sb.volume_blocks);
    let bits = sync::read(log_ch, pool, at, map.sectors(sb.sector_size) as u32)
        .map_err(io_err("reading the dirty-block map"))?;
    map.load(&bits, found.end.max(sb.resync_floor));
    for e in &found.entries {
        map.mark(e.header.lba, u64::from(e.header.blocks), e.header.lsn);
    }
    Ok(Some(map))
}

/// The volume ranges `(lba, blocks)` written by the log's entries from `from` (an entry
/// boundary) to its end, merged: what a failed-over primary wrote that its successor never
/// got (control plane only).
pub fn ranges_since(
    log: &std::sync::Arc<dyn crate::bdev::Bdev>,
    pool: &DmaPool,
    from: u64,
) -> Result<Vec<(u64, u64)>, String> {
    let sb = read_superblock(log, pool)?.ok_or_else(|| format!("{} holds no change log", log.name()))?;
    let geo =
        LogGeometry { sector: sb.sector_size, ring_start: sb.ring_start, ring_sectors: sb.ring_sectors };
    let mut ch = Channel::new(log.clone()).map_err(|e| e.to_string())?;
    let mut reader = SyncReader::new(&mut ch, pool, geo);
    let found = scan(&mut reader, &geo, from, sb.max_inflight_sectors).map_err(|e| e.to_string())?;
    let mut ranges: Vec<(u64, u64)> = found
        .entries
        .iter()
        .map(|e| (e.header.lba, u64::from(e.header.blocks)))
        .filter(|r| r.1 > 0)
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (lba, n) in ranges {
        match merged.last_mut() {
            Some(last) if lba <= last.0 + last.1 => last.1 = last.1.max(lba + n - last.0),
            _ => merged.push((lba, n)),
        }
    }
    Ok(merged)
}

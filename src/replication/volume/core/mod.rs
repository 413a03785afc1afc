//! The home-reactor half of a volume: takes writes from every channel, appends them to the
//! change log, mirrors them to the bunker, applies them to the volume once the local entry is
//! durable, answers the host, checkpoints, and catches the bunker up after an outage.
//!
//! Per write: `reserve → {local log write (FUA) ‖ bunker write} → local durable → volume write`;
//! the writes one poll starts share one local log write ([`commit`]: group commit);
//! the host is answered once the local entry and (per mode) the bunker copy are durable, and the
//! slot is retired (log `finish`, so `applied` may pass it) once the volume write is done too.
//! Overlapping writes wait until the earlier one is retired, so the volume sees them in log
//! order; reads of blocks held by a live slot are handed here and served from its entry in
//! memory ([`reads`]).

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::Arc;

use hdrhistogram::Histogram;

use super::{
    Ack, Mode, OnBunkerLoss, VolReq, VolumeConfig, VolumeShared, VolumeStatus, WriteLatency, MAX_INFLIGHT,
};
use crate::bdev::{BdevIo, Channel, IoCompletion, IoStatus, IoType};
use crate::net::tcp::TcpLink;
use crate::net::{Link, LinkEvent, LinkState, Net};
use crate::reactor::time::{NS_PER_MS, NS_PER_US};
use crate::reactor::{Nanos, PollCtx, PollStatus, Poller};
use crate::replication::dirty::DirtyMap;
use crate::replication::format::{EntryHeader, EntryKind, Superblock};
use crate::replication::log::{LogGeometry, Reservation};
use crate::replication::memlog::{MemLog, MEMLOG_BYTES};
use crate::replication::wire::Msg;
use crate::sys::{DmaBuf, DmaPool};

const K_LOG: u64 = 0;
const K_PAD: u64 = 1;
const K_VOLUME: u64 = 2;
const K_FLUSH: u64 = 3;
const K_SUPER: u64 = 4;
const K_CATCHUP: u64 = 5;
const K_READ: u64 = 6;
const K_SHIP: u64 = 7;
const K_RESYNC: u64 = 8;
const K_MAP: u64 = 9;
/// A group-commit write of several slots' entries (tagged with the batch's first slot).
const K_BATCH: u64 = 10;
const CHECKPOINT_EVERY: Nanos = 500 * NS_PER_MS;
const STATUS_EVERY: Nanos = 100 * NS_PER_MS;

fn tag(slot: usize, kind: u64) -> u64 {
    (slot as u64) << 8 | kind
}

struct Inflight {
    req: VolReq,
    /// The request's buffer length, if it has one.
    len: Option<usize>,
    res: Reservation,
    /// The entry bytes (absent while a log write of the entry alone holds them).
    entry: Option<DmaBuf>,
    /// The group-commit batch whose log write carries the entry, while it runs.
    batch: Option<usize>,
    /// The entry reached the bunker link's send queue.
    sent: bool,
    /// The pad (if any) reached the bunker link's send queue.
    pad_sent: bool,
    pad: Option<DmaBuf>,
    local: bool,
    pad_local: bool,
    volume: bool,
    /// The host has its answer (the volume write may still be running).
    answered: bool,
    /// The volume write is expected to succeed; false once the log or volume write failed, so
    /// the entry is never counted as applied.
    applied: bool,
    status: IoStatus,
    started: Nanos,
}

impl Inflight {
    fn overlaps(&self, lba: u64, blocks: u32) -> bool {
        let (a, b) = (self.req.io.offset_blocks, u64::from(self.req.io.num_blocks));
        lba < a + b && a < lba + u64::from(blocks)
    }
}

enum Checkpoint {
    Idle,
    Flushing(u64),
    /// Writing the dirty-block map (`bitmap`, from byte `at` on) before the superblock.
    Map {
        lsn: u64,
        bitmap: Vec<u8>,
        at: usize,
        floor: u64,
        oos: bool,
    },
    /// Writing the superblock (recording whether the secondary is out of step).
    Writing {
        oos: bool,
    },
}

/// Everything the home reactor owns for one volume.
pub struct VolumeCore {
    name: String,
    shared: Arc<VolumeShared>,
    pool: DmaPool,
    log_ch: Channel,
    data_ch: Channel,
    geo: LogGeometry,
    sb: Superblock,
    mode: Mode,
    on_loss: OnBunkerLoss,
    ack: Ack,
    /// The network links go through.
    net: Net,
    link: Option<TcpLink>,
    /// The bunker confirmed this primary's epoch (HelloAck) since it started: until then (with
    /// a bunker configured) it serves nothing, since it may have been failed over.
    confirmed: bool,
    ship: Option<ship::Shipper>,
    /// The superblock's setup changed: checkpoint even if nothing was applied.
    sb_dirty: bool,
    bunker_end: u64,
    bunker_acked: BTreeMap<u64, u32>,
    catch_up: Option<u64>,
    /// Where the catch-up ends (everything reserved when it was asked for).
    catch_up_to: Option<u64>,
    /// The LSN of the catch-up read in flight.
    catch_up_read: Option<u64>,
    /// Where the catch-up last read a damaged entry, and how many reads in a row did.
    catch_up_damaged: (u64, usize),
    slots: Vec<Option<Inflight>>,
    /// One past the highest live slot: scans of the slots stop there (slots are taken lowest
    /// first, so at a queue depth of 32 they scan about 32 of the 128).
    live: usize,
    /// Started slots whose entries go to the log in one write ([`commit`]), in LSN order.
    batch: Vec<usize>,
    waiting: VecDeque<VolReq>,
    /// Reads handed over because they touch a live slot's blocks, in arrival order.
    reads: VecDeque<VolReq>,
    /// Reads issued to the data bdev from here: where to answer, and what to lay over them.
    read_slots: Vec<Option<reads::IssuedRead>>,
    checkpoint: Checkpoint,
    /// The checkpoint whose superblock is durable: recovery replays from here, so the log's
    /// head never passes it (volume writes after it may still sit in a volatile cache).
    checkpointed: u64,
    next_checkpoint: Nanos,
    next_status: Nanos,
    latency: Histogram<u64>,
    writes: u64,
    watched: Vec<RawFd>,
    link_fd: Option<RawFd>,
    completions: Vec<IoCompletion>,
    events: Vec<LinkEvent>,
    alarm: Option<String>,
    /// The dirty-block map (absent on logs formatted without room for it).
    dirty: Option<DirtyMap>,
    /// The map is complete for writes from this LSN; while out of step, the secondary lacks
    /// at most the granules dirty relative to it.
    floor: u64,
    /// The secondary is out of step (dropped, or attached to a used volume) and must be
    /// resynchronised from the map.
    oos: bool,
    /// The head stays here until a superblock recording `oos` is durable.
    oos_hold: Option<u64>,
    /// Recent entries in memory, for shipping and the bunker catch-up: kept only while the
    /// volume has a bunker or a secondary (absent too if it could not be allocated).
    mem: Option<MemLog>,
    /// When the shipping step, waiting for a batch to fill, wants the next poll (handed to
    /// [`PollCtx::wake_at`] at the end of each poll).
    wake: Option<Nanos>,
}

impl VolumeCore {
    /// Builds the core (on the home reactor) for the volume `cfg` describes.
    pub fn new(
        shared: Arc<VolumeShared>,
        pool: DmaPool,
        log_ch: Channel,
        data_ch: Channel,
        sb: Superblock,
        dirty: Option<DirtyMap>,
        cfg: &VolumeConfig,
    ) -> VolumeCore {
        let net = cfg.net.clone();
        let geo = shared.log.geometry();
        let head = shared.log.head();
        let link =
            cfg.bunker.map(|addr| TcpLink::with_dialer(addr, Self::hello(&shared, &sb), net.0.clone()));
        let ship = cfg.secondary.map(|addr| ship::Shipper::new(addr, Self::hello(&shared, &sb), head, &net));
        // Opening the volume wrote this checkpoint durably (recovery or format).
        let checkpointed = sb.checkpoint_lsn;
        if link.is_none() {
            shared.serving.store(true, std::sync::atomic::Ordering::Release);
        }
        shared.dirty_map.store(dirty.is_some(), std::sync::atomic::Ordering::Release);
        let mem = (link.is_some() || ship.is_some()).then(|| Self::memlog(&shared)).flatten();
        VolumeCore {
            name: format!("volume_{}", shared.name),
            shared,
            pool,
            log_ch,
            data_ch,
            geo,
            mode: cfg.mode,
            on_loss: cfg.on_bunker_loss,
            ack: cfg.ack,
            net,
            confirmed: link.is_none(),
            link,
            ship,
            sb_dirty: false,
            bunker_end: head,
            bunker_acked: BTreeMap::new(),
            catch_up: None,
            catch_up_to: None,
            catch_up_read: None,
            catch_up_damaged: (0, 0),
            slots: (0..MAX_INFLIGHT).map(|_| None).collect(),
            live: 0,
            batch: Vec::with_capacity(MAX_INFLIGHT),
            waiting: VecDeque::new(),
            reads: VecDeque::new(),
            read_slots: (0..MAX_INFLIGHT).map(|_| None).collect(),
            checkpoint: Checkpoint::Idle,
            checkpointed,
            next_checkpoint: 0,
            next_status: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            writes: 0,
            watched: Vec::new(),
            link_fd: None,
            completions: Vec::with_capacity(MAX_INFLIGHT),
            events: Vec::new(),
            alarm: None,
            dirty,
            floor: sb.resync_floor,
            oos: sb.out_of_sync,
            oos_hold: None,
            mem,
            wake: None,
            sb,
        }
    }

    /// The in-memory ring, empty from the log's tail on.
    fn memlog(shared: &VolumeShared) -> Option<MemLog> {
        let (geo, tail) = (shared.log.geometry(), shared.log.tail());
        MemLog::new(MEMLOG_BYTES, geo.sector, geo.ring_sectors, tail)
            .map_err(|e| tracing::warn!(volume = shared.name, error = %e, "no in-memory ring: shipping reads the log device"))
            .ok()
    }

    /// The Hello that attaches this volume's log to a peer.
    fn hello(shared: &VolumeShared, sb: &Superblock) -> Msg {
        let geo = shared.log.geometry();
        Msg::Hello {
            volume: shared.name.clone(),
            uuid: shared.uuid,
            epoch: sb.epoch,
            sector: geo.sector,
            ring_sectors: geo.ring_sectors,
            head: shared.log.head(),
            end: shared.log.tail(),
        }
    }

    fn link_up(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.state() == LinkState::Up)
    }

    /// Whether a write's bunker requirement is met: the bunker's *contiguous* durable end
    /// covers the entry (a failover pulls a contiguous run, so an entry held beyond a hole,
    /// say an earlier write lost in a bunker crash, would not reach the secondary).
    fn bunker_ok(&self, slot: &Inflight) -> bool {
        match (self.mode, &self.link) {
            (Mode::LocalOnly, _) | (_, None) => true,
            _ if self.bunker_end >= slot.res.lsn + u64::from(slot.res.sectors) => true,
            _ => !self.link_up() && self.on_loss == OnBunkerLoss::LocalOnly,
        }
    }

    fn watch(&mut self, cx: &mut PollCtx<'_>) {
        if self.watched.is_empty() {
            for fd in self.log_ch.wake_fds().into_iter().chain(self.data_ch.wake_fds()) {
                if cx.watch_eventfd(fd).is_ok() {
                    self.watched.push(fd);
                }
            }
        }
        let fd = self.link.as_ref().and_then(|l| l.fd());
        rewatch(cx, &mut self.link_fd, fd);
        if let Some(sh) = self.ship.as_mut() {
            rewatch(cx, &mut sh.fd, sh.link.fd());
        }
    }

    fn entry_sectors(&self, req: &VolReq) -> (EntryKind, u32) {
        match req.io.ty {
            IoType::Write => {
                let len = req.io.buf.as_ref().map_or(0, |b| b.len()) as u32;
                (EntryKind::Write, EntryHeader::sectors_for(len, self.geo.sector))
            }
            IoType::WriteZeroes => (EntryKind::Zeroes, 1),
            _ => (EntryKind::Unmap, 1),
        }
    }

    /// Builds the entry bytes for `req` at `lsn`.
    fn build_entry(&self, req: &VolReq, kind: EntryKind, lsn: u64, sectors: u32) -> Option<DmaBuf> {
        let mut buf = self.pool.alloc()?;
        let total = sectors as usize * self.geo.sector as usize;
        buf.set_len(total);
        let bytes = buf.as_mut_slice();
        let data = req.io.buf.as_ref().map(|b| b.as_slice()).unwrap_or(&[]);
        let s = self.geo.sector as usize;
        bytes[s..s + data.len()].copy_from_slice(data);
        bytes[s + data.len()..].fill(0);
        let h = EntryHeader {
            kind,
            lsn,
            epoch: self.sb.epoch,
            lba: req.io.offset_blocks,
            blocks: req.io.num_blocks,
            data_len: data.len() as u32,
            sectors,
            data_crc: crc32c::crc32c(data),
        };
        h.encode(&mut bytes[..s]);
        Some(buf)
    }

    /// The whole pad (header and zeroed sectors), so the bunker holds every sector the pad
    /// reserves and its contiguous end can pass it.
    fn pad_entry(&self, lsn: u64, sectors: u32) -> Option<DmaBuf> {
        let mut buf = self.pool.alloc()?;
        buf.set_len(sectors as usize * self.geo.sector as usize);
        buf.as_mut_slice().fill(0);
        let h = EntryHeader {
            kind: EntryKind::Pad,
            lsn,
            epoch: self.sb.epoch,
            lba: 0,
            blocks: 0,
            data_len: 0,
            sectors,
            data_crc: 0,
        };
        let s = self.geo.sector as usize;
        h.encode(&mut buf.as_mut_slice()[..s]);
        Some(buf)
    }
}

/// Hands a completion back to the channel that asked.
fn reply(req: &VolReq, c: IoCompletion) {
    if req.reply.push(c).is_err() {
        panic!("volume reply queue overflow: channels bound their hand-overs");
    }
    req.notify.notify();
}

/// Keeps the watched fd of a link in step with its current socket.
fn rewatch(cx: &mut PollCtx<'_>, watched: &mut Option<RawFd>, fd: Option<RawFd>) {
    if fd == *watched {
        return;
    }
    if let Some(old) = watched.take() {
        cx.unwatch_fd(old);
    }
    if let Some(new) = fd {
        if cx.watch_fd(new).is_ok() {
            *watched = Some(new);
        }
    }
}

mod background;
mod commit;
mod flow;
mod reads;
mod ship;

pub use ship::ShipStatus;

//! Replicated volumes: a bdev that wraps a data bdev and a change-log bdev.
//!
//! Every write, write-zeroes and deallocate becomes a change-log entry, written to the local
//! log (durable: FUA) and mirrored to the bunker at the same time; the volume block is written
//! only once the local log entry is durable; the host is answered as soon as the local copy and
//! the bunker copy (per mode) are durable, while the volume write may still be in flight
//! ([`Ack::Durable`], the default; [`Ack::Applied`] waits for it). Reads go straight to the data
//! bdev from the reactor that asks, unless they touch blocks whose volume write is not done
//! ([`pending`]): those go to the home reactor, which serves those blocks from the entries in
//! memory and the rest from the data bdev.
//!
//! Fencing: a volume with a bunker serves nothing after it starts until the bunker has
//! confirmed its epoch (I/O waits on the home reactor); a peer that answers `Fenced` (it has
//! seen a newer epoch: the volume was failed over) stops it for good, every I/O refused.
//!
//! Writes are sequenced on the volume's home reactor ([`core`]): channels on other reactors
//! hand their writes over through a bounded lock-free queue and get completions back through
//! their own bounded queue, so overlapping writes are ordered in one place and log order and
//! volume order never disagree. The log itself ([`super::log::ChangeLog`]) takes appends from
//! any reactor without locks.

mod core;
pub mod open;
pub mod pending;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};

pub use self::core::{ShipStatus, VolumeCore};
use self::pending::PendingRanges;
use super::log::ChangeLog;
use crate::bdev::{BackendChannel, Bdev, BdevError, BdevIo, Channel, IoCompletion, IoStatus, IoType};
use crate::reactor::Mailbox;
use crate::sys::event::EventFd;

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Local log and bunker copy durable (the default).
    BunkerSync,
    /// Local log durable only (asynchronous RPO).
    LocalOnly,
    /// Also applied on the secondary (needs a secondary).
    Sync,
}

/// What to do when the bunker is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnBunkerLoss {
    /// Keep serving on the local log alone, and raise an alarm.
    LocalOnly,
    /// Make writes wait until the bunker returns.
    Stall,
}

/// When the host gets a write's answer, relative to its volume write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ack {
    /// Once the log copies are durable (per mode), while the volume write may still run: reads
    /// of its blocks are served from the entry in memory meanwhile (the default).
    #[default]
    Durable,
    /// Only once the volume write is done too (one more device write before the answer).
    Applied,
}

/// Most writes a volume keeps in flight (bounds recovery's hole window too).
pub const MAX_INFLIGHT: usize = 128;

/// A secondary to ship to, as `replication_create` asks (built by
/// [`crate::replication::migrate::secondary_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondaryRequest {
    /// Its replication address.
    pub addr: SocketAddr,
    /// Without a dirty-block map: volume ranges `(lba, blocks)` resent before the log applies
    /// (failback), held in memory only.
    pub resync: Vec<(u64, u64)>,
    /// With a dirty-block map: ranges to mark dirty and the floor from which every dirty
    /// granule is resent (taken before the ranges were computed, so writes meanwhile count).
    /// Recorded at the next checkpoint, so the resend survives a restart.
    pub resend: Option<(Vec<(u64, u64)>, u64)>,
}
/// Capacity of the hand-over queue into the home reactor.
pub const REQUEST_QUEUE: usize = 1024;

/// A write handed to the home reactor.
pub struct VolReq {
    /// The I/O.
    pub io: BdevIo,
    /// Where the completion goes.
    pub reply: Arc<ArrayQueue<IoCompletion>>,
    /// Rung after a completion is queued.
    pub notify: Arc<EventFd>,
}

/// Status counters published by the home reactor.
#[derive(Debug, Default, Serialize, Clone)]
pub struct VolumeStatus {
    /// Mode.
    pub mode: Option<Mode>,
    /// When writes are answered.
    pub ack: Option<Ack>,
    /// Bunker address.
    pub bunker: Option<String>,
    /// Bunker link: down, connecting, up.
    pub bunker_link: String,
    pub epoch: u64,
    pub fenced: bool,
    pub secondary: Option<ShipStatus>,
    /// Heartbeat round trip, µs.
    pub bunker_rtt_us: Option<u64>,
    /// Alarm text while degraded.
    pub alarm: Option<String>,
    /// Log positions (LSN, sectors).
    pub tail: u64,
    /// Durable locally and on the bunker (per mode).
    pub committed: u64,
    /// Applied to the volume.
    pub applied: u64,
    /// Oldest entry still needed.
    pub head: u64,
    /// Contiguous end held by the bunker.
    pub bunker_durable: u64,
    /// Where the bunker's catch-up from the local log stands (and whether a read is out).
    pub bunker_catch_up: Option<u64>,
    pub bunker_catch_up_reading: bool,
    /// Last checkpoint.
    pub checkpoint: u64,
    /// Fraction of the ring in use.
    pub log_fill: f64,
    /// Writes completed.
    pub writes: u64,
    /// Write latency percentiles, µs.
    pub write_latency_us: WriteLatency,
}

/// Write latency percentiles.
#[derive(Debug, Default, Serialize, Clone)]
pub struct WriteLatency {
    /// Median.
    pub p50: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// State shared by a volume's channels and its home reactor.
pub struct VolumeShared {
    /// Volume name.
    pub name: String,
    /// Identity.
    pub uuid: [u8; 16],
    /// The change log's positions.
    pub log: Arc<ChangeLog>,
    /// Writes waiting for the home reactor.
    pub requests: ArrayQueue<VolReq>,
    /// Blocks written but not yet on the data bdev (reads of them go through home).
    pub pending: PendingRanges,
    home: Arc<Mailbox>,
    /// Published by the home reactor.
    pub status: Mutex<VolumeStatus>,
    /// Set when the volume stopped serving writes (fenced, failed, deleted).
    pub stopped: AtomicBool,
    /// A newer epoch exists elsewhere: nothing is served.
    pub fenced: AtomicBool,
    /// Reads may be served (the bunker confirmed the epoch, or there is no bunker).
    pub serving: AtomicBool,
    /// A secondary named by `replication_create`, for the home reactor to pick up.
    pub secondary_req: Mutex<Option<SecondaryRequest>>,
    /// The log's first LSN when formatted (a volume never written still has it as its tail).
    pub origin_lsn: u64,
    /// Migration: new writes are held (queued) until the volume is demoted or released.
    pub draining: AtomicBool,
    /// Names of the data and change-log bdevs.
    pub data_bdev: String,
    pub log_bdev: String,
    /// Writes refused after stop.
    pub refused: AtomicU64,
    /// Reads served (wholly or in part) from the entries of writes whose volume write was
    /// still running.
    pub reads_from_memory: AtomicU64,
    /// Set by `volume_delete`: the home poller ends once idle.
    pub deleted: AtomicBool,
    /// Set by the home poller as it ends: nothing of the volume is in flight any more.
    pub closed: AtomicBool,
    /// A promoted replica: the volume ranges of the entries its failover pulled from the
    /// bunker. The old primary may lack some of them (its own copies were in flight when it
    /// failed, and its recovery dropped them), so its failback resends them. `None`: not
    /// known any more (it restarted): the failback resends the whole volume.
    pub pulled: Mutex<Option<Vec<(u64, u64)>>>,
    /// The log keeps a dirty-block map, so a secondary can be (re)synchronised at any time.
    pub dirty_map: AtomicBool,
}

impl VolumeShared {
    /// Shared state for a volume whose home reactor has `home` as mailbox.
    pub fn new(
        name: &str,
        uuid: [u8; 16],
        log: Arc<ChangeLog>,
        home: Arc<Mailbox>,
        origin_lsn: u64,
        bdevs: (&str, &str),
    ) -> VolumeShared {
        VolumeShared {
            name: name.to_string(),
            uuid,
            log,
            requests: ArrayQueue::new(REQUEST_QUEUE),
            pending: PendingRanges::new(MAX_INFLIGHT),
            home,
            status: Mutex::new(VolumeStatus::default()),
            stopped: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            secondary_req: Mutex::new(None),
            origin_lsn,
            draining: AtomicBool::new(false),
            data_bdev: bdevs.0.to_string(),
            log_bdev: bdevs.1.to_string(),
            refused: AtomicU64::new(0),
            reads_from_memory: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            pulled: Mutex::new(Some(Vec::new())),
            dirty_map: AtomicBool::new(false),
        }
    }

    /// Wakes the home reactor after queueing.
    pub fn wake_home(&self) {
        self.home.ring_doorbell_if_sleeping();
    }
}

/// A replicated volume as a bdev.
#[derive(Debug)]
pub struct ReplVolume {
    data: Arc<dyn Bdev>,
    shared: Arc<VolumeShared>,
}

impl std::fmt::Debug for VolumeShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeShared").field("name", &self.name).finish()
    }
}

impl ReplVolume {
    /// Wraps the shared state.
    pub fn new(data: Arc<dyn Bdev>, shared: Arc<VolumeShared>) -> ReplVolume {
        ReplVolume { data, shared }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<VolumeShared> {
        &self.shared
    }
}

impl Bdev for ReplVolume {
    fn name(&self) -> &str {
        &self.shared.name
    }
    fn product_name(&self) -> &'static str {
        "ferrite replicated volume"
    }
    fn block_size(&self) -> u32 {
        self.data.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.data.num_blocks()
    }
    fn uuid(&self) -> [u8; 16] {
        self.shared.uuid
    }
    fn volatile_write_cache(&self) -> bool {
        false
    }
    fn supports(&self, _ty: IoType) -> bool {
        true
    }
    fn open_backend(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        let notify = EventFd::new().map_err(|source| BdevError::Os { what: "eventfd".into(), source })?;
        Ok(Box::new(VolChannel {
            shared: self.shared.clone(),
            data: Channel::new(self.data.clone())?,
            replies: Arc::new(ArrayQueue::new(MAX_INFLIGHT * 2)),
            notify: Arc::new(notify),
            handed_over: 0,
            done: Vec::new(),
        }))
    }
}

/// A channel to a volume on one reactor.
struct VolChannel {
    shared: Arc<VolumeShared>,
    data: Channel,
    replies: Arc<ArrayQueue<IoCompletion>>,
    notify: Arc<EventFd>,
    handed_over: usize,
    done: Vec<IoCompletion>,
}

impl BackendChannel for VolChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        match io.ty {
            _ if self.shared.fenced.load(Ordering::Acquire) => {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                self.done.push(IoCompletion::of(io, IoStatus::Aborted));
                Ok(())
            }
            IoType::Read
                if self.shared.serving.load(Ordering::Acquire)
                    && !self.shared.draining.load(Ordering::Acquire)
                    && !self.shared.pending.overlaps(io.offset_blocks, io.num_blocks) =>
            {
                self.data.submit(io)
            }
            // Every acknowledged write is durable in the log already.
            IoType::Flush => {
                self.done.push(IoCompletion::of(io, IoStatus::Success));
                Ok(())
            }
            IoType::Write | IoType::WriteZeroes | IoType::Unmap
                if self.shared.stopped.load(Ordering::Acquire) =>
            {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                self.done.push(IoCompletion::of(io, IoStatus::Aborted));
                Ok(())
            }
            _ if self.handed_over >= self.replies.capacity() => Err(io),
            _ => {
                let req = VolReq { io, reply: self.replies.clone(), notify: self.notify.clone() };
                match self.shared.requests.push(req) {
                    Ok(()) => {
                        self.handed_over += 1;
                        self.shared.wake_home();
                        Ok(())
                    }
                    Err(req) => Err(req.io),
                }
            }
        }
    }

    fn poll(&mut self, out: &mut Vec<IoCompletion>) -> usize {
        let mut n = self.done.len();
        out.append(&mut self.done);
        n += self.data.poll(out);
        if self.handed_over > 0 {
            while let Some(c) = self.replies.pop() {
                self.handed_over -= 1;
                out.push(c);
                n += 1;
            }
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.done.len() + self.data.in_flight() + self.handed_over
    }

    fn wake_fds(&self, out: &mut Vec<RawFd>) {
        out.push(self.notify.as_raw_fd());
        out.extend(self.data.wake_fds());
    }
}

/// Everything needed to open a volume.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// Name (also the bdev name).
    pub name: String,
    /// Data bdev.
    pub data: Arc<dyn Bdev>,
    /// Log bdev.
    pub log: Arc<dyn Bdev>,
    /// Mode.
    pub mode: Mode,
    /// Bunker address.
    pub bunker: Option<SocketAddr>,
    /// Bunker-loss policy.
    pub on_bunker_loss: OnBunkerLoss,
    /// When writes are answered.
    pub ack: Ack,
    /// Format even if the log holds another volume.
    pub force: bool,
    /// Asynchronous shipping target, if any.
    pub secondary: Option<SocketAddr>,
    /// Volume UUID and epoch to format with (a promoted secondary keeps the volume's identity).
    pub identity: Option<([u8; 16], u64)>,
    /// The network the bunker and shipping links go through.
    pub net: crate::net::Net,
}

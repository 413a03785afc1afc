//! The bunker role: a real-time copy of primaries' change logs, one per volume, each on its
//! own bdev. A primary attaches with Hello and writes log bytes at LSN offsets (one-sided);
//! the bunker writes them durably (FUA) and acknowledges each. It never serves host I/O. It
//! streams any range back on request (failover), in large chunks, and drops what the primary
//! says it may trim.
//!
//! Every frame is checked: an unknown volume, a stale epoch, a write outside the ring or of a
//! partial sector is refused with an Error naming the reason, logged, and nothing is written.

use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use crate::bdev::{Bdev, BdevIo, Channel, IoCompletion, IoType};
use crate::net::framed::Framed;
use crate::reactor::{PollCtx, PollStatus, Poller};
use crate::replication::format::Superblock;
use crate::replication::log::{advance_contiguous, LogGeometry};
use crate::replication::wire::{Frame, Msg};
use crate::sys::DmaPool;

pub(crate) mod inventory;
mod resync;

/// What the bunker knows of one volume.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BunkerState {
    /// Volume identity (hex).
    pub uuid: String,
    /// Highest epoch seen.
    pub epoch: u64,
    /// Contiguous durable end.
    pub durable_end: u64,
    /// Primary's head (older entries may be dropped).
    pub head: u64,
    /// Log bytes written.
    pub bytes_written: u64,
    /// A primary is attached.
    pub attached: bool,
    /// Ring geometry: sector size.
    pub sector: u32,
    /// Ring geometry: sectors.
    pub ring_sectors: u64,
    /// Secondary role: entries below this are applied to the replica volume.
    pub applied: u64,
    /// Secondary role: why applying stopped, if it did.
    pub apply_error: Option<String>,
    /// How many times a new log replaced the one held (the applier restarts from `applied`).
    pub resets: u64,
    /// Failback: the log is not applied until the primary's resync blocks are all durable.
    pub resync_pending: bool,
    /// Failback: resync blocks written.
    pub resync_blocks: u64,
    /// Staging role: the replica volume is a consistent image (a prefix of the primary's
    /// writes) only once `applied` reaches this: after a resync, the LSN through which its
    /// blocks may hold writes; after a restart, the end of the staging log found then, which
    /// bounds what may have been applied before the crash (those applies may have landed in
    /// any subset). Recorded in the staging superblock's `resync_floor`.
    pub consistent_at: u64,
    /// When the attached primary was last heard (ms since the Unix epoch; 0: never).
    pub heard_ms: u64,
    /// Staging role: the generation the next staging superblock is written with (shared by
    /// the applier and the connection, so the newest copy always wins).
    #[serde(skip)]
    pub sb_generation: u64,
    /// Staging role: applies in flight on the replica volume (a resync waits for none).
    #[serde(skip)]
    pub applies_inflight: usize,
    /// Bunker role, after a restart: the entries its log held (LSN → sectors), so a
    /// re-attaching primary or a failover learns the contiguous end it really holds.
    #[serde(skip)]
    inventory: BTreeMap<u64, u32>,
    #[serde(skip)]
    acked: BTreeMap<u64, u32>,
    #[serde(skip)]
    uuid_raw: [u8; 16],
    /// Attaches so far: a connection writes only while its attach is the latest one, so a
    /// superseded connection still draining its socket cannot write behind a newer attach.
    #[serde(skip)]
    attaches: u64,
    /// Bunker role: log writes on the device, of any connection (superseded ones included).
    #[serde(skip)]
    writes_inflight: usize,
    /// Bunker role: the end of the furthest log write issued (landed or not), so a dropped
    /// tail covers writes still on their way to the device too.
    #[serde(skip)]
    issued_end: u64,
    /// Staging role: resumed after a restart and no primary has attached since, so whether
    /// an earlier failover attempt pulled entries into it is not known.
    #[serde(skip)]
    pub resumed: bool,
    /// Staging role: where the first failover attempt since the last primary attach began
    /// (the end of what shipping delivered); what lies beyond came from the bunker.
    #[serde(skip)]
    pub failover_from: Option<u64>,
}

impl BunkerState {
    /// A primary of this log's epoch attaches saying its log ends at `end`: anything held from
    /// there on was written by an earlier life of that primary and never made durable in its
    /// own log (so never acknowledged), and the primary will write other entries at those
    /// LSNs. Forgets it and returns the range to blank on the device, `[from, to)`, so that a
    /// later inventory scan cannot follow the chain of LSNs into it either; `None` if nothing
    /// lies beyond `end`.
    fn drop_tail(&mut self, end: u64) -> Option<(u64, u64)> {
        let last = |m: &BTreeMap<u64, u32>| m.iter().next_back().map_or(0, |(&l, &n)| l + u64::from(n));
        let to = self.durable_end.max(last(&self.acked)).max(last(&self.inventory)).max(self.issued_end);
        let from = end.max(self.head);
        if from >= to {
            return None;
        }
        self.durable_end = self.durable_end.min(from);
        self.issued_end = from;
        self.acked.retain(|&l, _| l < from);
        self.inventory.retain(|&l, _| l < from);
        Some((from, to.min(from + self.ring_sectors)))
    }

    /// The state a staging log resumes with from its superblock (applied end included).
    pub fn resumed(sb: &Superblock) -> BunkerState {
        BunkerState {
            uuid: uuid::Uuid::from_bytes(sb.volume_uuid).to_string(),
            uuid_raw: sb.volume_uuid,
            epoch: sb.epoch,
            durable_end: sb.checkpoint_lsn,
            head: sb.checkpoint_lsn,
            applied: sb.checkpoint_lsn,
            sector: sb.sector_size,
            ring_sectors: sb.ring_sectors,
            resync_pending: sb.out_of_sync,
            consistent_at: sb.resync_floor,
            sb_generation: sb.generation + 1,
            resumed: true,
            ..BunkerState::default()
        }
    }

    /// Staging role: the replica volume is a consistent image now (see `consistent_at`). Not
    /// after a failed apply: the failed write may have reached part of its blocks.
    pub fn consistent(&self) -> bool {
        !self.resync_pending && self.applied >= self.consistent_at && self.apply_error.is_none()
    }

    /// The volume's UUID.
    pub fn uuid_raw(&self) -> [u8; 16] {
        self.uuid_raw
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl BunkerVolume {
    /// How long the attached primary has been silent (`u64::MAX`: never heard); 0 while a
    /// primary is attached and talking.
    pub fn silent_ms(&self) -> u64 {
        let st = self.state.lock().expect("bunker state");
        if st.heard_ms == 0 {
            return u64::MAX;
        }
        now_ms().saturating_sub(st.heard_ms)
    }
}

/// A volume's log held by this bunker.
#[derive(Debug)]
pub struct BunkerVolume {
    /// Volume name.
    pub name: String,
    /// The bdev holding the copy.
    pub log: Arc<dyn Bdev>,
    /// A secondary's staging log (entries must arrive in order) rather than a bunker's.
    pub staging: bool,
    /// Staging role: the replica volume (failback writes resync blocks to it).
    pub data: Option<Arc<dyn Bdev>>,
    /// Staging role: the applier's reactor, rung when more of the log is durable.
    pub waker: Mutex<Option<Arc<crate::reactor::Mailbox>>>,
    /// Staging role: notified by the applier when the applied end moves (the connection
    /// reports it to the primary).
    pub applied_event: Option<crate::sys::event::EventFd>,
    /// Staging role: runs of the log just made durable, handed to the applier so it need not
    /// read them back from the staging log (bounded: a run that does not fit is dropped, and
    /// the applier reads it from the log).
    pub staged: Option<ArrayQueue<Staged>>,
    /// State.
    pub state: Mutex<BunkerState>,
}

/// A run of staging log bytes as written (durable) at `lsn`, while the staging log was on its
/// `resets`-th restart.
#[derive(Debug)]
pub struct Staged {
    /// The staging log's reset count when it was written.
    pub resets: u64,
    /// Its first LSN.
    pub lsn: u64,
    /// The bytes, whole sectors.
    pub buf: crate::sys::DmaBuf,
}

/// Most runs waiting in [`BunkerVolume::staged`].
pub const STAGED_RUNS: usize = 32;

/// The volumes this node is bunker for.
#[derive(Debug, Default)]
pub struct Bunkers {
    volumes: Mutex<BTreeMap<String, Arc<BunkerVolume>>>,
}

impl Bunkers {
    /// Registers a volume's bunker log, resuming what its superblock recorded: the volume's
    /// identity, the highest epoch seen (so a restarted bunker still fences a failed-over
    /// primary) and the head. Nothing is claimed held until a primary attaches again.
    pub fn create(&self, name: &str, log: Arc<dyn Bdev>, pool: &DmaPool) -> Result<(), String> {
        let sb = crate::replication::volume::open::read_superblock(&log, pool)?;
        self.absent(name)?;
        let state = match sb.filter(|sb| sb.role == 1 && sb.volume_name == name) {
            Some(sb) => {
                tracing::info!(volume = name, epoch = sb.epoch, head = sb.head_lsn, "bunker log resumed");
                let inventory = inventory::scan(&log, pool, &sb)?;
                // The bunker's superblock records the attach's head as its checkpoint: resuming
                // sets head, durable end and generation from it.
                BunkerState { inventory, ..BunkerState::resumed(&sb) }
            }
            None => BunkerState::default(),
        };
        self.create_as(name, log, None, state)?;
        Ok(())
    }

    /// Registers a volume's bunker log, or with `staging` a secondary's staging log.
    /// It is registered with its state `state` already in place (what it resumed, read before):
    /// a peer attaching at once must never see a default state replaced afterwards.
    pub fn create_as(
        &self,
        name: &str,
        log: Arc<dyn Bdev>,
        staging: Option<Arc<dyn Bdev>>,
        state: BunkerState,
    ) -> Result<Arc<BunkerVolume>, String> {
        let (data, staging) = (staging.clone(), staging.is_some());
        let mut v = self.volumes.lock().expect("bunkers lock");
        if v.contains_key(name) {
            return Err(format!("a bunker or staging log for volume {name:?} already exists"));
        }
        let vol = Arc::new(BunkerVolume {
            name: name.into(),
            log,
            staging,
            data,
            waker: Mutex::new(None),
            applied_event: if staging {
                Some(crate::sys::event::EventFd::new().map_err(|e| format!("eventfd: {e}"))?)
            } else {
                None
            },
            staged: staging.then(|| ArrayQueue::new(STAGED_RUNS)),
            state: Mutex::new(state),
        });
        v.insert(name.into(), vol.clone());
        Ok(vol)
    }

    /// Refuses a name already registered (checked before a resume reads a whole ring).
    pub fn absent(&self, name: &str) -> Result<(), String> {
        match self.get(name) {
            Some(_) => Err(format!("a bunker or staging log for volume {name:?} already exists")),
            None => Ok(()),
        }
    }

    /// Looks one up.
    pub fn get(&self, name: &str) -> Option<Arc<BunkerVolume>> {
        self.volumes.lock().expect("bunkers lock").get(name).cloned()
    }

    /// All of them.
    pub fn list(&self) -> Vec<Arc<BunkerVolume>> {
        self.volumes.lock().expect("bunkers lock").values().cloned().collect()
    }

    /// Removes one.
    pub fn remove(&self, name: &str) -> Option<Arc<BunkerVolume>> {
        self.volumes.lock().expect("bunkers lock").remove(name)
    }
}

/// Entries received back to back, written to the log together.
struct Run {
    lsn: u64,
    sectors: u64,
    buf: crate::sys::DmaBuf,
}

struct Attached {
    vol: Arc<BunkerVolume>,
    ch: Channel,
    geo: LogGeometry,
    /// The epoch the peer attached with.
    epoch: u64,
    /// Which attach of the volume this is (`BunkerState::attaches`).
    gen: u64,
}

/// One primary's connection to this bunker.
pub struct BunkerConn {
    name: String,
    framed: Framed,
    bunkers: Arc<Bunkers>,
    pool: DmaPool,
    att: Option<Attached>,
    inflight: BTreeMap<u64, (u64, u32)>,
    /// Contiguous entries received in this poll, not yet written ([`BunkerConn::issue_run`]).
    run: Option<Run>,
    next_tag: u64,
    /// Requested ranges `[from, to)`; the front one streams, `from` being the next to send.
    reads: VecDeque<(u64, u64)>,
    /// Next LSN of the front range to read.
    read_issue: Option<u64>,
    /// Reads done but not yet sent (they go out in LSN order).
    read_ready: BTreeMap<u64, crate::sys::DmaBuf>,
    reads_inflight: usize,
    /// Staging role: the LSN the next Write must start at (entries arrive in order).
    next_lsn: u64,
    /// Staging role: the applied end last reported to the primary.
    applied_sent: u64,
    /// The HelloAck to send once the attach's writes (superblock, dropped tail) are durable.
    hello_ack: Option<u64>,
    /// The attach's writes still running (a blanking not yet issued counts as one).
    attach_writes: usize,
    /// A dropped tail to blank once no earlier connection's log write is on the device
    /// (one landing after the blanking would bring the dropped entries back).
    blank: Option<(u64, u64)>,
    /// Failback resync into the replica volume.
    resync: resync::Resync,
    /// Frames received in this poll (a Write's data stays in the stream's receive buffer).
    frames: Vec<Frame>,
    done: Vec<IoCompletion>,
    closing: bool,
    watching: Vec<std::os::fd::RawFd>,
}

/// Tag bit of log reads (the rest of the tag is the LSN).
const READ_BIT: u64 = 1 << 63;
/// Names a failover the bunker refused before taking its epoch (the replica is behind the
/// bunker's trimmed head): the requester may give its epoch back.
pub const OUT_OF_STEP: &str = "that replica fell out of step";

/// Tag of the superblock write.
const SUPER_TAG: u64 = u64::MAX;
/// Tag of a staging superblock write for a resync's start or end.
const RESYNC_SB_TAG: u64 = u64::MAX - 1;
/// Tag of the writes that blank a dropped tail (see [`BunkerState::drop_tail`]).
const ZERO_TAG: u64 = u64::MAX - 2;
/// How soon an attach waiting to blank a dropped tail looks again for earlier writes landed.
const BLANK_RETRY: crate::reactor::Nanos = 100 * crate::reactor::time::NS_PER_US;
/// Log reads in flight per streamed range.
const READS_INFLIGHT: usize = 8;

impl BunkerConn {
    /// Wraps an accepted replication connection.
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        bunkers: Arc<Bunkers>,
        pool: DmaPool,
    ) -> std::io::Result<BunkerConn> {
        Ok(BunkerConn::over(Framed::new(stream)?, peer, bunkers, pool))
    }

    /// Wraps an accepted connection on any stream (the simulator's network, for one).
    pub fn over(framed: Framed, peer: SocketAddr, bunkers: Arc<Bunkers>, pool: DmaPool) -> BunkerConn {
        BunkerConn {
            name: format!("bunker_conn_{peer}"),
            framed,
            bunkers,
            pool,
            att: None,
            inflight: BTreeMap::new(),
            run: None,
            next_tag: 0,
            reads: VecDeque::new(),
            read_issue: None,
            read_ready: BTreeMap::new(),
            reads_inflight: 0,
            next_lsn: 0,
            applied_sent: 0,
            hello_ack: None,
            attach_writes: 0,
            blank: None,
            resync: resync::Resync::default(),
            frames: Vec::new(),
            done: Vec::new(),
            closing: false,
            watching: Vec::new(),
        }
    }

    fn refuse(&mut self, why: String) {
        tracing::warn!(conn = self.name, why, "refusing replication peer");
        self.framed.queue(&Msg::Error { message: why });
        self.closing = true;
    }

    fn handle(&mut self, cx: &mut PollCtx<'_>, msg: Msg) {
        if !matches!(msg, Msg::Write { .. }) {
            if let Err(why) = self.issue_run() {
                return self.refuse(why);
            }
        }
        match msg {
            Msg::Hello { volume, .. } if self.att.is_some() => {
                // Its writes in flight belong to the first attach: one attach per connection.
                self.refuse(format!("Hello for {volume:?} on a connection already attached"))
            }
            Msg::Hello { volume, uuid, epoch, sector, ring_sectors, head, end } => {
                let ends = (head, end);
                if let Err(why) = self.attach(cx, &volume, uuid, epoch, sector, ring_sectors, ends) {
                    self.refuse(why);
                }
            }
            Msg::Write { lsn, data } => {
                if let Err(why) = self.write(lsn, &data) {
                    self.refuse(why);
                }
            }
            Msg::Trim { head } => {
                if let Some(a) = &self.att {
                    let mut st = a.vol.state.lock().expect("bunker state");
                    st.head = st.head.max(head);
                }
            }
            Msg::Heartbeat { seq } => self.framed.queue(&Msg::HeartbeatAck { seq }),
            Msg::Block { lba, data } => {
                if let Err(why) = self.resync_block(cx, lba, &data) {
                    self.refuse(why);
                }
            }
            Msg::ResyncDone { blocks, through } => self.resync.done = Some((blocks, through)),
            Msg::ResyncStart { from } => {
                if let Err(why) = self.resync_start(from) {
                    self.refuse(why);
                }
            }
            Msg::Watch { volume } => {
                let silent_ms = self.bunkers.get(&volume).map_or(u64::MAX, |v| v.silent_ms());
                self.framed.queue(&Msg::Seen { silent_ms });
            }
            Msg::Read { from, to } if self.att.is_some() && from <= to => {
                let head = self.att.as_ref().map_or(0, |a| a.vol.state.lock().expect("bunker state").head);
                if from < head {
                    return self.refuse(format!(
                        "the bunker's log starts at LSN {head} (the primary trimmed it) and no longer holds LSN {from}: \
                         the requester fell out of step and cannot be brought up to date from here"
                    ));
                }
                self.reads.push_back((from, to))
            }
            other => self.refuse(format!("unexpected message {other:?}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attach(
        &mut self,
        cx: &mut PollCtx<'_>,
        volume: &str,
        uuid: [u8; 16],
        epoch: u64,
        sector: u32,
        ring: u64,
        (head, end): (u64, u64),
    ) -> Result<(), String> {
        let vol =
            self.bunkers.get(volume).ok_or_else(|| format!("unknown volume {volume:?} on this bunker"))?;
        if vol.log.block_size() != sector || vol.log.num_blocks() < 2 + ring {
            return Err(format!(
                "bunker log {} ({} blocks of {}) cannot hold a ring of {ring} sectors of {sector}",
                vol.log.name(),
                vol.log.num_blocks(),
                vol.log.block_size()
            ));
        }
        let ch = Channel::new(vol.log.clone()).map_err(|e| e.to_string())?;
        let (durable_end, stale, gen) = {
            let mut st = vol.state.lock().expect("bunker state");
            if epoch < st.epoch {
                self.framed.queue(&Msg::Fenced { epoch: st.epoch });
                return Err(format!("stale epoch {epoch}: this volume is at epoch {}", st.epoch));
            }
            // A failover (a new epoch) starting below the trimmed head cannot be served: refuse
            // it before taking its epoch, so the old primary is not fenced for nothing.
            if !vol.staging && st.uuid_raw == uuid && epoch > st.epoch && head < st.head {
                return Err(format!(
                    "this bunker's log starts at LSN {} (the primary trimmed it) and cannot bring a \
                     replica at LSN {head} up to date: {OUT_OF_STEP}",
                    st.head
                ));
            }
            // A staging log meets a new primary's log (each promotion starts a fresh LSN
            // space at a higher epoch): what it held belongs to the old one.
            let new_log = vol.staging && epoch > st.epoch && st.epoch > 0;
            // A staging log that knows this log but ends before its head has a gap nothing can
            // fill (the primary dropped this secondary and trimmed): it keeps its end, so the
            // primary sees the gap and resynchronises it (or reports it cannot).
            let gap = vol.staging
                && st.uuid_raw == uuid
                && !new_log
                && st.ring_sectors > 0
                && head > st.durable_end;
            let stale = (!vol.staging && st.uuid_raw == uuid && epoch == st.epoch)
                .then(|| st.drop_tail(end))
                .flatten();
            if let Some((from, to)) = stale {
                tracing::warn!(
                    volume,
                    from,
                    to,
                    "the primary restarted with its log ending at LSN {from}: dropping what this bunker holds from there \
                     (writes it never made durable, so never acknowledged)"
                );
            }
            if st.uuid_raw != uuid || new_log {
                *st = BunkerState {
                    uuid: uuid::Uuid::from_bytes(uuid).to_string(),
                    uuid_raw: uuid,
                    durable_end: head,
                    head,
                    applied: head,
                    resets: st.resets + 1,
                    resync_pending: st.resync_pending,
                    sb_generation: st.sb_generation,
                    attaches: st.attaches,
                    // Writes of the old log still land: a later blanking waits for them too.
                    writes_inflight: st.writes_inflight,
                    ..BunkerState::default()
                };
            }
            if vol.staging {
                // A primary ships again: what arrives next is shipped, not pulled.
                (st.resumed, st.failover_from) = (false, None);
            }
            st.epoch = epoch;
            st.sector = sector;
            st.ring_sectors = ring;
            st.attached = true;
            if gap {
                tracing::warn!(
                    volume,
                    durable_end = st.durable_end,
                    head,
                    "staging log ends before the primary's head: the replica needs a resynchronisation"
                );
            } else {
                st.durable_end = st.durable_end.max(head);
                st.applied = st.applied.max(head);
            }
            if !vol.staging {
                st.durable_end = inventory::contiguous_end(&st.inventory, st.durable_end);
            }
            st.attaches += 1;
            (st.durable_end, stale, st.attaches)
        };
        self.next_lsn = durable_end;
        let applied_fd = vol.applied_event.as_ref().map(|e| e.as_raw_fd());
        for fd in ch.wake_fds().into_iter().chain(applied_fd) {
            if cx.watch_eventfd(fd).is_ok() {
                self.watching.push(fd);
            }
        }
        let geo = LogGeometry { sector, ring_start: 2, ring_sectors: ring };
        self.att = Some(Attached { vol, ch, geo, epoch, gen });
        // Blanked once the superseded connections' writes have all landed (`blank_step`).
        (self.blank, self.attach_writes) = (stale, usize::from(stale.is_some()));
        if self.write_superblock(uuid, epoch, head, volume) {
            self.attach_writes += 1;
            // The epoch is durable before the peer hears it is attached: a bunker restarted
            // right after a failover's attach still fences the old primary (and a staging log
            // restarted before its first commit knows what it held).
            self.hello_ack = Some(durable_end);
        } else {
            return Err("the bunker could not record the attach in its superblock".into());
        }
        tracing::info!(volume, epoch, durable_end, "primary attached to bunker");
        Ok(())
    }

    /// Issues the blanking of a dropped tail once no log write of an earlier connection is on
    /// the device; returns whether it did.
    fn blank_step(&mut self, cx: &mut PollCtx<'_>) -> bool {
        let Some((from, to)) = self.blank else { return false };
        let Some(a) = self.att.as_ref() else { return false };
        if a.vol.state.lock().expect("bunker state").writes_inflight > 0 {
            cx.wake_at(cx.now + BLANK_RETRY);
            return false;
        }
        self.blank = None;
        self.attach_writes -= 1; // the placeholder; the writes below count themselves
        if let Err(why) = self.zero_tail(from, to) {
            self.refuse(why);
        }
        true
    }

    /// Blanks the log's sectors for LSNs `[from, to)` (durably) as part of an attach: the
    /// HelloAck waits for these writes, so no entry of the attaching primary lands there first.
    fn zero_tail(&mut self, from: u64, to: u64) -> Result<(), String> {
        let Some(a) = self.att.as_mut() else { return Ok(()) };
        let per = (self.pool.buf_size() / a.geo.sector as usize) as u64;
        let mut lsn = from;
        while lsn < to {
            let n = (to - lsn).min(per).min(a.geo.until_wrap(lsn));
            let mut buf = self.pool.alloc().ok_or("bunker out of DMA buffers")?;
            buf.set_len(n as usize * a.geo.sector as usize);
            buf.as_mut_slice().fill(0);
            let io = BdevIo {
                ty: IoType::Write,
                offset_blocks: a.geo.block_of(lsn),
                num_blocks: n as u32,
                buf: Some(buf),
                fua: true,
                tag: ZERO_TAG,
            };
            a.ch.submit(io).map_err(|_| "bunker log queue full".to_string())?;
            self.attach_writes += 1;
            lsn += n;
        }
        Ok(())
    }

    fn write_superblock(&mut self, uuid: [u8; 16], epoch: u64, head: u64, volume: &str) -> bool {
        let Some(a) = self.att.as_mut() else { return false };
        if let Some(data) = a.vol.data.as_ref() {
            // A staging log records the attach too, before any entry can be applied: a
            // secondary restarted before its first commit then knows what it may have applied.
            let sb = {
                let mut st = a.vol.state.lock().expect("bunker state");
                let applied = st.applied;
                crate::replication::secondary::staging_superblock(&mut st, volume, data.as_ref(), applied)
            };
            return sb.write_io(&self.pool, SUPER_TAG).is_some_and(|io| a.ch.submit(io).is_ok());
        }
        let generation = {
            let mut st = a.vol.state.lock().expect("bunker state");
            st.sb_generation = st.sb_generation.max(1) + 1;
            st.sb_generation
        };
        let sb = Superblock {
            generation,
            volume_uuid: uuid,
            volume_name: volume.into(),
            role: 1,
            epoch,
            sector_size: a.geo.sector,
            ring_start: 2,
            ring_sectors: a.geo.ring_sectors,
            volume_block_size: 0,
            volume_blocks: 0,
            checkpoint_lsn: head,
            head_lsn: head,
            max_inflight_sectors: 0,
            clean_shutdown: false,
            out_of_sync: false,
            resync_floor: 0,
            setup: Default::default(),
        };
        sb.write_io(&self.pool, SUPER_TAG).is_some_and(|io| a.ch.submit(io).is_ok())
    }

    fn write(&mut self, lsn: u64, data: &[u8]) -> Result<(), String> {
        let a = self.att.as_mut().ok_or("Write before Hello")?;
        let sector = a.geo.sector as usize;
        if data.is_empty() || data.len() % sector != 0 || data.len() > self.pool.buf_size() {
            return Err(format!(
                "write of {} bytes at LSN {lsn} is not whole sectors within one buffer",
                data.len()
            ));
        }
        let sectors = (data.len() / sector) as u64;
        if sectors > a.geo.until_wrap(lsn) {
            return Err(format!("write at LSN {lsn} of {sectors} sectors crosses the end of the ring"));
        }
        // A superseded connection's writes are refused where they would start (`issue_run`).
        let current = a.vol.state.lock().expect("bunker state").epoch;
        if a.epoch < current {
            self.framed.queue(&Msg::Fenced { epoch: current });
            return Err(format!("stale epoch {}: this volume is at epoch {current} (failed over)", a.epoch));
        }
        if a.vol.staging {
            if lsn != self.next_lsn {
                return Err(format!("out of order: expected LSN {}, got {lsn}", self.next_lsn));
            }
            let applied = a.vol.state.lock().expect("bunker state").applied;
            if lsn + sectors > applied + a.geo.ring_sectors {
                return Err(format!(
                    "write at LSN {lsn} would overwrite entries not yet applied (applied {applied})"
                ));
            }
            self.next_lsn = lsn + sectors;
        }
        let geo = a.geo;
        let joins = self.run.as_ref().is_some_and(|r| {
            lsn == r.lsn + r.sectors
                && r.sectors + sectors <= geo.until_wrap(r.lsn)
                && r.buf.len() + data.len() <= r.buf.capacity()
        });
        if !joins {
            self.issue_run()?;
            let mut buf = self.pool.alloc().ok_or("bunker out of DMA buffers")?;
            buf.set_len(0);
            self.run = Some(Run { lsn, sectors: 0, buf });
        }
        let r = self.run.as_mut().expect("a run to join");
        let at = r.buf.len();
        r.buf.set_len(at + data.len());
        r.buf.as_mut_slice()[at..].copy_from_slice(data);
        r.sectors += sectors;
        Ok(())
    }

    /// Writes the run of contiguous entries received so far (one FUA write: group commit).
    fn issue_run(&mut self) -> Result<(), String> {
        let (Some(r), Some(a)) = (self.run.take(), self.att.as_mut()) else { return Ok(()) };
        // Counted under the lock an attach takes: once a newer attach is in, no write of
        // this connection starts, and the ones already started are counted.
        let mut st = a.vol.state.lock().expect("bunker state");
        if st.attaches != a.gen {
            return Err(format!(
                "write at LSN {} on a superseded connection: the primary attached again on another one",
                r.lsn
            ));
        }
        self.next_tag += 1;
        let io = BdevIo {
            ty: IoType::Write,
            offset_blocks: a.geo.block_of(r.lsn),
            num_blocks: r.sectors as u32,
            buf: Some(r.buf),
            fua: true,
            tag: self.next_tag,
        };
        a.ch.submit(io).map_err(|_| "bunker log queue full".to_string())?;
        st.writes_inflight += 1;
        st.issued_end = st.issued_end.max(r.lsn + r.sectors);
        self.inflight.insert(self.next_tag, (r.lsn, r.sectors as u32));
        Ok(())
    }

    fn reap(&mut self) -> bool {
        let Some(a) = self.att.as_mut() else { return false };
        let mut done = std::mem::take(&mut self.done);
        a.ch.poll(&mut done);
        let work = !done.is_empty();
        for c in done.drain(..) {
            self.completed(c);
        }
        self.done = done;
        work
    }

    fn completed(&mut self, c: IoCompletion) {
        if c.tag == SUPER_TAG || c.tag == ZERO_TAG {
            if !c.status.is_success() {
                let what = if c.tag == SUPER_TAG { "the bunker superblock" } else { "over the dropped tail" };
                return self.refuse(format!("writing {what}: {}", c.status));
            }
            self.attach_writes = self.attach_writes.saturating_sub(1);
            if self.attach_writes == 0 {
                if let Some(durable_end) = self.hello_ack.take() {
                    self.framed.queue(&Msg::HelloAck { durable_end });
                }
            }
            return;
        }
        if c.tag == RESYNC_SB_TAG {
            return self.resync_sb_done(c);
        }
        if c.tag & READ_BIT != 0 {
            return self.read_done(c);
        }
        let Some((lsn, sectors)) = self.inflight.remove(&c.tag) else { return };
        let a = self.att.as_ref().expect("attached");
        let resets = {
            let mut st = a.vol.state.lock().expect("bunker state");
            st.writes_inflight = st.writes_inflight.saturating_sub(1);
            if !c.status.is_success() {
                drop(st);
                return self.refuse(format!("bunker log write at LSN {lsn} failed: {}", c.status));
            }
            if st.attaches != a.gen {
                return; // superseded: a newer attach decides what this log holds
            }
            st.bytes_written += u64::from(sectors) * u64::from(a.geo.sector);
            let st = &mut *st;
            advance_contiguous(&mut st.acked, &mut st.durable_end, lsn, sectors);
            st.resets
        };
        if let (Some(q), Some(buf)) = (a.vol.staged.as_ref(), c.buf) {
            let _ = q.push(Staged { resets, lsn, buf });
        }
        self.framed.queue(&Msg::Ack { lsn, sectors });
        if let Some(w) = a.vol.waker.lock().expect("waker").as_ref() {
            w.ring_doorbell_if_sleeping();
        }
    }

    /// Streams the front requested range: several reads in flight, sent in LSN order, then an
    /// empty ReadData at its end.
    fn read_step(&mut self) -> bool {
        let Some(&(from, to)) = self.reads.front() else { return false };
        let a = self.att.as_mut().expect("reads need an attachment");
        if from >= to && self.reads_inflight == 0 {
            self.reads.pop_front();
            self.read_issue = None;
            self.framed.queue(&Msg::ReadData { lsn: to, data: Vec::new() });
            return true;
        }
        let per = (self.pool.buf_size() / a.geo.sector as usize) as u64;
        let mut work = false;
        loop {
            let issue = *self.read_issue.get_or_insert(from);
            if issue >= to || self.reads_inflight >= READS_INFLIGHT || self.framed.pending() > (16 << 20) {
                return work;
            }
            let n = (to - issue).min(per).min(a.geo.until_wrap(issue));
            let Some(mut buf) = self.pool.alloc() else { return work };
            buf.set_len(n as usize * a.geo.sector as usize);
            let io = BdevIo {
                ty: IoType::Read,
                offset_blocks: a.geo.block_of(issue),
                num_blocks: n as u32,
                buf: Some(buf),
                fua: false,
                tag: READ_BIT | issue,
            };
            if a.ch.submit(io).is_err() {
                return work;
            }
            self.read_issue = Some(issue + n);
            self.reads_inflight += 1;
            work = true;
        }
    }

    fn read_done(&mut self, c: IoCompletion) {
        self.reads_inflight -= 1;
        let lsn = c.tag & !READ_BIT;
        let Some(buf) = c.buf.filter(|_| c.status.is_success()) else {
            return self.refuse(format!("reading the bunker log at LSN {lsn}: {}", c.status));
        };
        self.read_ready.insert(lsn, buf);
        let sector = self.att.as_ref().map_or(512, |a| a.geo.sector as usize) as u64;
        while let Some(front) = self.reads.front_mut() {
            let Some(buf) = self.read_ready.remove(&front.0) else { break };
            let at = front.0;
            front.0 += buf.len() as u64 / sector;
            self.framed.queue(&Msg::ReadData { lsn: at, data: buf.as_slice().to_vec() });
        }
    }
}

impl BunkerConn {
    /// Staging role: tells the primary how far the replica has applied.
    fn report_applied(&mut self) {
        let Some(a) = self.att.as_ref().filter(|a| a.vol.staging) else { return };
        let applied = a.vol.state.lock().expect("bunker state").applied;
        if applied > self.applied_sent {
            self.applied_sent = applied;
            self.framed.queue(&Msg::Applied { lsn: applied });
        }
    }
}

impl Poller for BunkerConn {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        if let Some(fd) = self.framed.stream.raw_fd().filter(|_| self.watching.is_empty()) {
            if cx.watch_fd(fd).is_ok() {
                self.watching.push(fd);
            }
        }
        let mut work = false;
        let mut frames = std::mem::take(&mut self.frames);
        work |= self.resync_arm();
        work |= self.handle_deferred(cx);
        if !self.closing && !self.resync.arming() && self.resync.deferred.is_empty() {
            match self.framed.receive_frames(&mut frames, 64) {
                Ok(w) => work |= w,
                Err(e) => {
                    tracing::info!(conn = self.name, error = %e, "replication peer gone");
                    self.closing = true;
                }
            }
        }
        if !frames.is_empty() {
            if let Some(a) = self.att.as_ref() {
                a.vol.state.lock().expect("bunker state").heard_ms = now_ms();
            }
        }
        let received = self.framed.take_received();
        for f in frames.drain(..) {
            if self.resync.arming() {
                // After the staging log restarted.
                self.resync.deferred.push_back(f.into_msg(&received));
                continue;
            }
            if self.closing {
                continue;
            }
            match f {
                // A Write's data goes from the receive buffer straight into the run.
                Frame::Write { lsn, at, len } => {
                    if let Err(why) = self.write(lsn, &received[at..at + len]) {
                        self.refuse(why);
                    }
                }
                f => self.handle(cx, f.into_msg(&received)),
            }
        }
        self.framed.return_received(received);
        self.frames = frames;
        if let Err(why) = self.issue_run() {
            self.refuse(why);
        }
        work |= self.reap();
        work |= self.blank_step(cx);
        work |= self.resync_reap();
        work |= self.read_step();
        self.report_applied();
        let flushed = self.framed.flush();
        work |= flushed.as_ref().is_ok_and(|w| *w);
        // Output waiting for socket room, or a range being streamed: keep polling (only
        // readability wakes a sleeping reactor).
        work |= flushed.is_ok() && (self.framed.pending() > 0 || !self.reads.is_empty());
        if self.closing && (self.framed.pending() == 0 || flushed.is_err()) && self.inflight.is_empty() {
            for fd in self.watching.drain(..) {
                cx.unwatch_fd(fd);
            }
            if let Some(a) = &self.att {
                a.vol.state.lock().expect("bunker state").attached = false;
            }
            return PollStatus::Done;
        }
        PollStatus::from_work(work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_tail_covers_writes_still_on_their_way_to_the_device() {
        let mut st = BunkerState { head: 100, durable_end: 233, ring_sectors: 1000, ..Default::default() };
        st.acked.insert(240, 2);
        st.inventory.insert(120, 8);
        // A write to 250 was issued and has not landed: not acked, not in the durable end.
        st.issued_end = 250;
        assert_eq!(st.drop_tail(233), Some((233, 250)));
        assert_eq!((st.durable_end, st.issued_end), (233, 233));
        assert!(st.acked.is_empty() && st.inventory.len() == 1, "only what lies below the end is kept");
        // Nothing beyond the end: nothing to blank; an end below the head blanks from the head.
        assert_eq!(st.drop_tail(233), None);
        st.issued_end = 300;
        assert_eq!(st.drop_tail(50), Some((100, 300)));
    }
}

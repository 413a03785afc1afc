//! The secondary's applier: a poller that takes the staging log in LSN order (the runs the
//! staging connection just wrote, handed over in memory, else read back from the log), checks
//! every entry (header CRC, LSN, data CRC), and applies it to the replica volume, overlapping
//! entries one after the other; it flushes the volume and records the applied end in the
//! staging superblock before reporting it (the primary trims up to it).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Secondary;
use crate::bdev::{BdevError, BdevIo, Channel, IoCompletion, IoType};
use crate::reactor::time::NS_PER_MS;
use crate::reactor::{Nanos, PollCtx, PollStatus, Poller};
use crate::replication::bunker::STAGED_RUNS;
use crate::replication::format::{EntryHeader, EntryKind};
use crate::replication::log::LogGeometry;
use crate::replication::recovery::READS;
use crate::sys::{DmaBuf, DmaPool};

/// Applies in flight at most.
const MAX_APPLIES: usize = 32;
/// How often the applied end is made durable and reported.
const COMMIT_EVERY: Nanos = 20 * NS_PER_MS;

const T_READ: u64 = u64::MAX;
const T_FLUSH: u64 = u64::MAX - 1;
const T_SUPER: u64 = u64::MAX - 2;

/// One parsed entry waiting to be applied.
struct Op {
    lsn: u64,
    end: u64,
    kind: EntryKind,
    lba: u64,
    blocks: u32,
    data: Option<DmaBuf>,
}

/// Why parsing stopped short.
enum Trouble {
    /// A damaged entry: read it again.
    Damaged(String),
    /// Applying cannot go on.
    Stop(String),
}

/// Where the applied end is on its way to being durable.
enum Commit {
    Idle,
    Flushing(u64),
    Writing(u64),
}

/// The poller.
pub struct Applier {
    name: String,
    sec: Arc<Secondary>,
    pool: DmaPool,
    staging: Channel,
    data: Channel,
    geo: Option<LogGeometry>,
    /// Next staging LSN to read.
    read_pos: u64,
    reading: bool,
    /// Bytes read and not yet parsed, starting at `parse_lsn`.
    bytes: Vec<u8>,
    parse_lsn: u64,
    ops: VecDeque<Op>,
    /// Applies in flight: (tag, lsn, end, lba, blocks).
    inflight: Vec<(u64, u64, u64, u64, u32)>,
    next_tag: u64,
    commit: Commit,
    next_commit: Nanos,
    failed: bool,
    /// The first entry whose apply failed: the applied end never passes it (it is not on the
    /// replica), so a restart applies it again.
    failed_at: Option<u64>,
    /// Runs the staging connection handed over, by first LSN (see [`Self::take_staged`]).
    staged: BTreeMap<u64, DmaBuf>,
    /// Parsing stopped for want of a DMA buffer: retried every poll.
    starved: bool,
    /// Reads in a row that found the entry at `parse_lsn` damaged.
    damaged_reads: usize,
    /// The staging state's reset count this applier follows.
    resets: u64,
    done: Vec<IoCompletion>,
    watched: bool,
}

impl Applier {
    /// Opens channels to the staging and data bdevs (on the reactor that will run it).
    pub fn new(sec: Arc<Secondary>, pool: DmaPool) -> Result<Applier, BdevError> {
        Ok(Applier {
            name: format!("secondary_{}", sec.name),
            staging: Channel::new(sec.staging.log.clone())?,
            data: Channel::new(sec.data.clone())?,
            sec,
            pool,
            geo: None,
            read_pos: 0,
            reading: false,
            bytes: Vec::new(),
            parse_lsn: 0,
            ops: VecDeque::new(),
            inflight: Vec::new(),
            next_tag: 0,
            commit: Commit::Idle,
            next_commit: 0,
            failed: false,
            failed_at: None,
            staged: BTreeMap::new(),
            starved: false,
            damaged_reads: 0,
            resets: 0,
            done: Vec::new(),
            watched: false,
        })
    }

    /// Learns the ring geometry and start once a primary has attached (or the staging log
    /// resumed), and again whenever a new primary's log replaces the one held.
    fn geometry(&mut self) -> Option<LogGeometry> {
        let st = self.sec.staging.state.lock().expect("bunker state");
        let stale = self.geo.is_none() || st.resets != self.resets;
        if stale && st.ring_sectors > 0 && self.inflight.is_empty() && !self.reading {
            self.geo = Some(LogGeometry { sector: st.sector, ring_start: 2, ring_sectors: st.ring_sectors });
            (self.read_pos, self.parse_lsn, self.resets) = (st.applied, st.applied, st.resets);
            self.bytes.clear();
            self.ops.clear();
            self.staged.clear();
            (self.failed, self.failed_at, self.damaged_reads) = (false, None, 0);
        }
        self.geo
    }

    /// The applied end: the first entry not yet applied.
    fn applied(&self) -> u64 {
        let first_inflight = self.inflight.iter().map(|f| f.1).min();
        let first_op = self.ops.front().map(|o| o.lsn);
        [first_inflight, first_op, self.failed_at].into_iter().flatten().min().unwrap_or(self.parse_lsn)
    }

    fn stop(&mut self, why: String) {
        tracing::error!(volume = self.sec.name, why, "secondary stops applying");
        self.sec.staging.state.lock().expect("bunker state").apply_error = Some(why);
        self.failed = true;
    }

    /// Takes the next stretch of received staging log: from memory when the staging
    /// connection handed over the run that starts there, else read from the staging log.
    fn read_step(&mut self, geo: LogGeometry) -> bool {
        let received = self.sec.staging.state.lock().expect("bunker state").durable_end;
        if self.reading || self.failed || self.read_pos >= received || self.ops.len() >= MAX_APPLIES * 4 {
            return false;
        }
        if let Some(buf) = self.take_staged() {
            self.sec.state.lock().expect("secondary state").staging_from_memory += 1;
            self.absorb(buf.as_slice(), geo);
            return true;
        }
        let per_buf = (self.pool.buf_size() / geo.sector as usize) as u64;
        let n = (received - self.read_pos).min(per_buf).min(geo.until_wrap(self.read_pos));
        let Some(mut buf) = self.pool.alloc() else { return false };
        buf.set_len((n * u64::from(geo.sector)) as usize);
        let io = BdevIo {
            ty: IoType::Read,
            offset_blocks: geo.block_of(self.read_pos),
            num_blocks: n as u32,
            buf: Some(buf),
            fua: false,
            tag: T_READ,
        };
        self.reading = self.staging.submit(io).is_ok();
        if self.reading {
            self.sec.state.lock().expect("secondary state").staging_reads += 1;
        }
        self.reading
    }

    /// The run written at `read_pos`, if the staging connection handed it over and it is of
    /// this staging log's current life; runs behind `read_pos` are dropped, and at most
    /// [`STAGED_RUNS`] ahead of it are kept.
    fn take_staged(&mut self) -> Option<DmaBuf> {
        let q = self.sec.staging.staged.as_ref()?;
        while self.staged.len() < STAGED_RUNS {
            let Some(s) = q.pop() else { break };
            if s.resets == self.resets && s.lsn >= self.read_pos {
                self.staged.insert(s.lsn, s.buf);
            }
        }
        self.staged.retain(|&lsn, _| lsn >= self.read_pos);
        self.staged.remove(&self.read_pos)
    }

    fn on_read(&mut self, c: IoCompletion, geo: LogGeometry) {
        self.reading = false;
        let Some(buf) = c.buf.filter(|_| c.status.is_success()) else {
            return self.stop(format!("reading the staging log at LSN {}: {}", self.read_pos, c.status));
        };
        self.absorb(buf.as_slice(), geo);
    }

    /// Takes `bytes` (whole sectors of the staging log at `read_pos`) and parses what is whole,
    /// in place: an entry held in part from before is completed with just the bytes it lacks,
    /// so only entries that straddle two stretches are copied (shipped runs of 132 KiB split
    /// nearly every 128 KiB entry; appending whole runs to the held part copied every byte).
    fn absorb(&mut self, bytes: &[u8], geo: LogGeometry) {
        self.read_pos += (bytes.len() / geo.sector as usize) as u64;
        let held = (self.bytes.len() + bytes.len()) / geo.sector as usize;
        if self.read_pos != self.parse_lsn + held as u64 {
            return self.stop("staging read out of step".into());
        }
        let mut kept = std::mem::take(&mut self.bytes);
        let mut rest = bytes;
        let mut trouble = None;
        if !kept.is_empty() {
            let take = self.straddler_lacks(&kept, geo).unwrap_or(rest.len()).min(rest.len());
            kept.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let used;
            (used, trouble) = self.parse(&kept, geo);
            kept.drain(..used);
        }
        if kept.is_empty() && trouble.is_none() {
            let used;
            (used, trouble) = self.parse(rest, geo);
            rest = &rest[used..];
        }
        kept.extend_from_slice(rest);
        self.bytes = kept;
        match trouble {
            Some(Trouble::Damaged(why)) => self.damaged(why),
            Some(Trouble::Stop(why)) => self.stop(why),
            None => {}
        }
    }

    /// How many bytes the entry held in part (`kept`, from `parse_lsn`) still lacks; `None`
    /// when its header does not decode (parsing it then reports why).
    fn straddler_lacks(&self, kept: &[u8], geo: LogGeometry) -> Option<usize> {
        let s = geo.sector as usize;
        let h = EntryHeader::decode(kept.get(..s)?, self.parse_lsn, geo.sector).ok()?;
        Some((h.sectors as usize * s).saturating_sub(kept.len()))
    }

    /// Turns whole entries at the front of `bytes` (the staging log from `parse_lsn` on) into
    /// ops; returns how many bytes they took, and why it stopped short, if it did.
    fn parse(&mut self, bytes: &[u8], geo: LogGeometry) -> (usize, Option<Trouble>) {
        self.starved = false;
        let mut at = 0;
        while !self.failed {
            match self.parse_one(&bytes[at..], geo) {
                Ok(Some(len)) => at += len,
                Ok(None) => break,
                Err(t) => return (at, Some(t)),
            }
        }
        (at, None)
    }

    /// Parses the entry at the front of `bytes` into an op: its length, `None` if it is not
    /// all there yet (or no buffer is free for its data).
    fn parse_one(&mut self, bytes: &[u8], geo: LogGeometry) -> Result<Option<usize>, Trouble> {
        let s = geo.sector as usize;
        if bytes.len() < s {
            return Ok(None);
        }
        let h = EntryHeader::decode(&bytes[..s], self.parse_lsn, geo.sector)
            .map_err(|e| Trouble::Damaged(format!("bad entry at LSN {}: {e}", self.parse_lsn)))?;
        let len = h.sectors as usize * s;
        if u64::from(h.sectors) > geo.until_wrap(self.parse_lsn) {
            return Err(Trouble::Stop(format!(
                "entry at LSN {} crosses the end of the ring",
                self.parse_lsn
            )));
        }
        if bytes.len() < len {
            return Ok(None);
        }
        let data = &bytes[s..s + h.data_len as usize];
        if h.kind == EntryKind::Write && crc32c::crc32c(data) != h.data_crc {
            return Err(Trouble::Damaged(format!("entry at LSN {}: data checksum mismatch", self.parse_lsn)));
        }
        let buf = if h.kind == EntryKind::Write {
            let Some(mut b) = self.pool.alloc() else {
                self.starved = true;
                return Ok(None);
            };
            b.set_len(data.len());
            b.as_mut_slice().copy_from_slice(data);
            Some(b)
        } else {
            None
        };
        let end = self.parse_lsn + u64::from(h.sectors);
        self.ops.push_back(Op { lsn: h.lsn, end, kind: h.kind, lba: h.lba, blocks: h.blocks, data: buf });
        self.parse_lsn = end;
        self.damaged_reads = 0;
        Ok(Some(len))
    }

    /// A damaged entry: the staging log is read again from it (the read may have been
    /// corrupted or misdirected on the way), and the applier stops only when it reads damaged
    /// [`READS`] times in a row.
    fn damaged(&mut self, why: String) {
        self.damaged_reads += 1;
        if self.damaged_reads >= READS {
            return self.stop(why);
        }
        tracing::warn!(volume = self.sec.name, why, "reading the staging log again");
        self.bytes.clear();
        self.read_pos = self.parse_lsn;
    }

    /// Issues ops in order while they do not overlap anything in flight.
    fn issue(&mut self) -> bool {
        let mut work = false;
        // Held across issuing, so a resync that sees no applies in flight sees none start.
        let sec = self.sec.clone();
        let mut st = sec.staging.state.lock().expect("bunker state");
        if st.resync_pending || st.resets != self.resets {
            return false; // a resync: its blocks land first
        }
        // A hold stops at the first consistent point: not before `consistent_at`.
        let hold = self.sec.hold.load(Ordering::Acquire);
        while self.inflight.len() < MAX_APPLIES {
            let Some(op) = self.ops.front() else { break };
            if hold && op.lsn >= st.consistent_at {
                break;
            }
            let (a, n) = (op.lba, u64::from(op.blocks));
            if self.inflight.iter().any(|f| a < f.3 + u64::from(f.4) && f.3 < a + n) {
                break;
            }
            let mut op = self.ops.pop_front().expect("front op");
            work = true;
            let ty = match op.kind {
                EntryKind::Pad => continue,
                EntryKind::Write => IoType::Write,
                EntryKind::Zeroes => IoType::WriteZeroes,
                EntryKind::Unmap => IoType::Unmap,
            };
            self.next_tag += 1;
            let io = BdevIo {
                ty,
                offset_blocks: op.lba,
                num_blocks: op.blocks,
                buf: op.data.take(),
                fua: false,
                tag: self.next_tag,
            };
            if let Err(io) = self.data.submit(io) {
                op.data = io.buf;
                self.ops.push_front(op);
                break;
            }
            self.inflight.push((self.next_tag, op.lsn, op.end, op.lba, op.blocks));
        }
        st.applies_inflight = self.inflight.len();
        work
    }

    fn on_applied(&mut self, c: IoCompletion) {
        let Some(i) = self.inflight.iter().position(|f| f.0 == c.tag) else { return };
        let (_, lsn, end, lba, _) = self.inflight.swap_remove(i);
        if !c.status.is_success() {
            self.failed_at = Some(self.failed_at.map_or(lsn, |f| f.min(lsn)));
            return self.stop(format!("applying LSN {lsn} to LBA {lba}: {}", c.status));
        }
        let mut st = self.sec.state.lock().expect("secondary state");
        st.entries_applied += 1;
        st.bytes_applied += (end - lsn) * u64::from(self.geo.map_or(512, |g| g.sector));
    }

    /// Makes the applied end durable (flush the volume, then the staging superblock) and
    /// publishes it.
    fn commit_step(&mut self, cx: &mut PollCtx<'_>) -> bool {
        let applied = self.applied();
        let published = self.sec.staging.state.lock().expect("bunker state").applied;
        if !matches!(self.commit, Commit::Idle) || applied <= published {
            return false;
        }
        let now = cx.now;
        if now < self.next_commit {
            cx.wake_at(self.next_commit);
            return false;
        }
        self.next_commit = now + COMMIT_EVERY;
        if self.data.submit(BdevIo::flush(T_FLUSH)).is_ok() {
            self.commit = Commit::Flushing(applied);
        }
        true
    }

    fn on_flushed(&mut self, c: IoCompletion) {
        let Commit::Flushing(applied) = self.commit else { return };
        self.commit = Commit::Idle;
        if !c.status.is_success() {
            return tracing::warn!(volume = self.sec.name, status = %c.status, "replica flush failed; will retry");
        }
        let sb = {
            let mut st = self.sec.staging.state.lock().expect("bunker state");
            if st.resets != self.resets {
                return; // the staging log restarted (a resync) since this end was reached
            }
            super::staging_superblock(&mut st, &self.sec.name, self.sec.data.as_ref(), applied)
        };
        let Some(io) = sb.write_io(&self.pool, T_SUPER) else { return };
        if self.staging.submit(io).is_ok() {
            self.commit = Commit::Writing(applied);
        }
    }

    fn on_super(&mut self, c: IoCompletion) {
        let Commit::Writing(applied) = self.commit else { return };
        self.commit = Commit::Idle;
        let mut st = self.sec.staging.state.lock().expect("bunker state");
        if c.status.is_success() && st.resets == self.resets {
            st.applied = st.applied.max(applied);
            if let Some(e) = &self.sec.staging.applied_event {
                e.notify();
            }
        }
    }

    fn reap(&mut self, geo: LogGeometry) -> bool {
        let mut done = std::mem::take(&mut self.done);
        self.staging.poll(&mut done);
        self.data.poll(&mut done);
        let work = !done.is_empty();
        for c in done.drain(..) {
            match c.tag {
                T_READ => self.on_read(c, geo),
                T_FLUSH => self.on_flushed(c),
                T_SUPER => self.on_super(c),
                _ => self.on_applied(c),
            }
        }
        if work {
            self.sec.staging.state.lock().expect("bunker state").applies_inflight = self.inflight.len();
        }
        self.done = done;
        work
    }

    fn watch(&mut self, cx: &mut PollCtx<'_>) {
        if !self.watched {
            for fd in self.staging.wake_fds().into_iter().chain(self.data.wake_fds()) {
                let _ = cx.watch_eventfd(fd);
            }
            self.watched = true;
        }
    }
}

impl Poller for Applier {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        if self.sec.retired.load(Ordering::Acquire) && self.inflight.is_empty() && !self.reading {
            for fd in self.staging.wake_fds().into_iter().chain(self.data.wake_fds()) {
                cx.unwatch_fd(fd);
            }
            return PollStatus::Done;
        }
        self.watch(cx);
        let Some(geo) = self.geometry() else { return PollStatus::Idle };
        let mut work = self.reap(geo);
        if self.starved {
            self.absorb(&[], geo);
        }
        work |= self.read_step(geo);
        work |= self.issue();
        work |= self.commit_step(cx);
        let quiet = self.inflight.is_empty() && matches!(self.commit, Commit::Idle);
        let held = self.sec.hold.load(Ordering::Acquire) && quiet && self.at_rest();
        self.sec.held.store(held, Ordering::Release);
        PollStatus::from_work(work)
    }
}

impl Applier {
    /// Whether the published applied end is the current one (nothing applied but unreported)
    /// and a consistent point, or as far as the received log goes.
    fn at_rest(&self) -> bool {
        let st = self.sec.staging.state.lock().expect("bunker state");
        // After a failed apply the replica may hold part of that write: never at rest.
        !self.failed
            && st.applied >= self.applied()
            && (st.applied >= st.consistent_at || st.applied >= st.durable_end)
    }
}

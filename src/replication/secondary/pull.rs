//! The failover pull, as a poller: attach to the bunker with the new epoch (which fences the
//! old primary there), ask for `[from, bunker's end)`, and write each chunk into the staging
//! log as it arrives (several writes in flight, in LSN order of arrival), publishing the
//! durable end so the applier can follow. Each chunk is written durably (FUA) before it is
//! published: the applier may apply it at once, and a crash must not take from the staging log
//! an entry the replica volume already shows (the replica would call itself consistent short of
//! it).
//! It runs over a replication link, so any [`Dialer`](crate::net::Dialer) carries it: TCP in
//! production, the simulator's network in tests.
//!
//! Invariants: chunks are accepted only at the next expected LSN, in whole sectors; the
//! outcome is reported once (bytes pulled, or why not); a bunker that goes silent for
//! [`PULL_TIMEOUT`] fails the pull rather than hanging it; received chunks waiting to be written
//! are bounded (the link stops reading while [`PULL_WRITES`] are queued).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use super::Secondary;
use crate::bdev::{BdevIo, Channel, IoCompletion, IoType};
use crate::net::tcp::TcpLink;
use crate::net::{Link, LinkEvent, Net};
use crate::reactor::time::NS_PER_S;
use crate::reactor::{Nanos, PollCtx, PollStatus, Poller};
use crate::replication::log::LogGeometry;
use crate::replication::wire::Msg;
use crate::sys::DmaPool;

/// How long the bunker may stay silent (or unreachable) during the pull.
pub const PULL_TIMEOUT: Nanos = 10 * NS_PER_S;
/// Pulled chunks being written (or waiting to be) at once.
const PULL_WRITES: usize = 16;

/// Where the pull's result goes: bytes pulled, or why it failed.
pub type PullOutcome = Arc<Mutex<Option<Result<u64, String>>>>;

/// The pull poller.
pub struct Pull {
    name: String,
    sec: Arc<Secondary>,
    pool: DmaPool,
    link: TcpLink,
    ch: Channel,
    geo: LogGeometry,
    from: u64,
    /// Next LSN the bunker must send.
    pos: u64,
    /// The bunker's end, once attached.
    to: Option<u64>,
    /// Chunks received, waiting to be written.
    queue: VecDeque<(u64, Vec<u8>)>,
    /// Writes in flight: tag → (lsn, sectors).
    inflight: BTreeMap<u64, (u64, u64)>,
    /// Written chunks beyond the contiguous end.
    written: BTreeMap<u64, u64>,
    /// Contiguous written end.
    end: u64,
    tag: u64,
    all_received: bool,
    last_progress: Nanos,
    events: Vec<LinkEvent>,
    done: Vec<IoCompletion>,
    outcome: PullOutcome,
    finished: bool,
    watched: Vec<RawFd>,
    link_fd: Option<RawFd>,
}

impl Pull {
    /// A pull of `[from, …)` into `sec`'s staging log from the bunker at `addr`, attaching
    /// with `hello` (the volume at the new epoch); opens its channel (call on the reactor that
    /// will run it).
    pub fn new(
        sec: Arc<Secondary>,
        pool: DmaPool,
        (addr, hello, net): (SocketAddr, Msg, &Net),
        geo: LogGeometry,
        from: u64,
        outcome: PullOutcome,
    ) -> Result<Pull, String> {
        Ok(Pull {
            name: format!("pull_{}", sec.name),
            ch: Channel::new(sec.staging.log.clone()).map_err(|e| e.to_string())?,
            sec,
            pool,
            link: TcpLink::with_dialer(addr, hello, net.0.clone()),
            geo,
            from,
            pos: from,
            to: None,
            queue: VecDeque::new(),
            inflight: BTreeMap::new(),
            written: BTreeMap::new(),
            end: from,
            tag: 0,
            all_received: false,
            last_progress: 0,
            events: Vec::new(),
            done: Vec::new(),
            outcome,
            finished: false,
            watched: Vec::new(),
            link_fd: None,
        })
    }

    fn finish(&mut self, result: Result<u64, String>) {
        if self.finished {
            return;
        }
        match &result {
            Ok(bytes) => tracing::info!(
                volume = self.sec.name,
                from = self.from,
                to = self.end,
                bytes,
                "pulled the log tail from the bunker"
            ),
            Err(why) => tracing::error!(volume = self.sec.name, why, "failover pull failed"),
        }
        *self.outcome.lock().expect("pull outcome") = Some(result);
        self.finished = true;
    }

    fn on_event(&mut self, ev: LinkEvent, now: Nanos) {
        let addr = self.link.addr();
        match ev {
            LinkEvent::Up { durable_end } if self.to.is_none() => {
                self.to = Some(durable_end);
                self.last_progress = now;
                if durable_end <= self.from {
                    self.all_received = true;
                } else {
                    self.link.send(&Msg::Read { from: self.from, to: durable_end });
                }
            }
            LinkEvent::Up { .. } => self.finish(Err(format!("bunker {addr}: reconnected during the pull"))),
            LinkEvent::Down { why } => self.finish(Err(format!("bunker {addr}: {why}"))),
            LinkEvent::Message(Msg::ReadData { data, .. }) if data.is_empty() => self.all_received = true,
            LinkEvent::Message(Msg::ReadData { lsn, data })
                if lsn == self.pos && data.len() % self.geo.sector as usize == 0 =>
            {
                self.pos += (data.len() / self.geo.sector as usize) as u64;
                self.queue.push_back((lsn, data));
                self.last_progress = now;
            }
            LinkEvent::Message(Msg::Fenced { epoch }) => {
                self.finish(Err(format!("bunker {addr} is at epoch {epoch}, newer than this failover's")))
            }
            LinkEvent::Acked { .. } => {}
            LinkEvent::Message(other) => self.finish(Err(format!(
                "bunker {addr} sent {other:?} during the pull (expected LSN {})",
                self.pos
            ))),
        }
    }

    /// Writes queued chunks while there is room.
    fn write_step(&mut self) -> bool {
        let mut work = false;
        while self.inflight.len() < PULL_WRITES {
            let Some((lsn, data)) = self.queue.pop_front() else { break };
            let Some(mut buf) = self.pool.alloc() else {
                self.queue.push_front((lsn, data));
                break;
            };
            let n = (data.len() / self.geo.sector as usize) as u64;
            buf.set_len(data.len());
            buf.as_mut_slice().copy_from_slice(&data);
            self.tag += 1;
            let io = BdevIo {
                ty: IoType::Write,
                offset_blocks: self.geo.block_of(lsn),
                num_blocks: n as u32,
                buf: Some(buf),
                fua: true,
                tag: self.tag,
            };
            if self.ch.submit(io).is_err() {
                self.queue.push_front((lsn, data));
                break;
            }
            self.inflight.insert(self.tag, (lsn, n));
            work = true;
        }
        work
    }

    fn reap(&mut self) -> bool {
        let mut done = std::mem::take(&mut self.done);
        self.ch.poll(&mut done);
        let work = !done.is_empty();
        for c in done.drain(..) {
            if let Some((lsn, n)) = self.inflight.remove(&c.tag).filter(|_| c.status.is_success()) {
                self.written.insert(lsn, n);
            }
            if !c.status.is_success() {
                self.finish(Err(format!("writing the pulled log: {}", c.status)));
            }
        }
        self.done = done;
        while let Some(n) = self.written.remove(&self.end) {
            self.end += n;
        }
        if work {
            self.publish();
        }
        work
    }

    /// Lets the applier see what is durable so far.
    fn publish(&self) {
        let mut st = self.sec.staging.state.lock().expect("bunker state");
        st.durable_end = st.durable_end.max(self.end);
        drop(st);
        self.sec.wake_applier();
    }

    fn watch(&mut self, cx: &mut PollCtx<'_>) {
        if self.watched.is_empty() {
            for fd in self.ch.wake_fds() {
                if cx.watch_eventfd(fd).is_ok() {
                    self.watched.push(fd);
                }
            }
        }
        let fd = self.link.fd();
        if fd != self.link_fd {
            if let Some(old) = self.link_fd.take() {
                cx.unwatch_fd(old);
            }
            if let Some(new) = fd.filter(|&f| cx.watch_fd(f).is_ok()) {
                self.link_fd = Some(new);
            }
        }
    }

    fn step(&mut self, now: Nanos) -> bool {
        if self.last_progress == 0 {
            self.last_progress = now;
        }
        let mut events = std::mem::take(&mut self.events);
        self.link.set_receiving(self.queue.len() < PULL_WRITES);
        let mut work = self.link.poll(now, &mut events);
        for ev in events.drain(..) {
            self.on_event(ev, now);
        }
        self.events = events;
        work |= self.write_step();
        work |= self.reap();
        let drained = self.all_received && self.queue.is_empty() && self.inflight.is_empty();
        if drained && !self.finished {
            let bytes = (self.end - self.from) * u64::from(self.geo.sector);
            self.finish(Ok(bytes));
            work = true;
        }
        if now.saturating_sub(self.last_progress) > PULL_TIMEOUT && !self.finished {
            let addr = self.link.addr();
            self.finish(Err(format!("bunker {addr}: no progress within {} s", PULL_TIMEOUT / NS_PER_S)));
        }
        work
    }
}

impl Poller for Pull {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        self.watch(cx);
        let work = self.step(cx.now);
        // Done once nothing is in flight (the channel owns buffers until their completions).
        if self.finished && self.inflight.is_empty() {
            for fd in self.watched.drain(..).chain(self.link_fd.take()) {
                cx.unwatch_fd(fd);
            }
            return PollStatus::Done;
        }
        PollStatus::from_work(work)
    }
}

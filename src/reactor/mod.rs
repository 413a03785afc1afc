//! Reactors: one polled, run-to-completion event loop per core.
//!
//! A [`Reactor`] owns a set of pollers (run on every iteration) and timed pollers (run when
//! their period is due), its inbound rings from every other reactor and a mailbox for the
//! control plane. [`Reactor::poll_once`] runs one iteration at the time passed in, so tests and
//! the cluster simulator step reactors on one thread; [`runtime`] runs them on pinned threads
//! with the `busy` or `adaptive` idle policy.
//!
//! Invariants: pollers never block; every queue is bounded; a reactor's pollers and state never
//! leave its thread (they need not be `Send`); the control plane reaches a reactor only by
//! message.

pub mod message;
pub mod poller;
pub mod runtime;
pub mod stats;
pub mod time;

use std::sync::Arc;

pub use message::{Mailbox, Message};
pub use poller::{PollCtx, PollStatus, Poller, SendError};
pub use runtime::{IdlePolicy, ReactorHandle, Runtime, RuntimeConfig};
pub use time::{MonotonicClock, Nanos};

use crate::ring::{spsc, Consumer};
use poller::{Services, Spawn};
use stats::{PollerStats, ReactorCounters, ReactorSnapshot};

/// Messages drained per iteration, so a flood cannot starve the pollers.
const MESSAGES_PER_POLL: usize = 64;
/// Capacity of each reactor-to-reactor ring.
pub const PEER_RING_CAPACITY: usize = 4096;

struct Entry {
    poller: Box<dyn Poller>,
    period: Option<Nanos>,
    next_due: Nanos,
    stats: PollerStats,
}

/// One event loop. Build a set with [`Reactor::build_set`].
pub struct Reactor {
    id: usize,
    core: Option<usize>,
    policy_name: String,
    entries: Vec<Entry>,
    inbound: Vec<Consumer<Message>>,
    mailbox: Arc<Mailbox>,
    services: Services,
    counters: ReactorCounters,
    last_now: Option<Nanos>,
}

/// What `build_set` hands out for one reactor: movable to its thread.
pub struct ReactorSeed {
    id: usize,
    inbound: Vec<Consumer<Message>>,
    peers: Vec<Option<crate::ring::Producer<Message>>>,
    mailboxes: Arc<[Arc<Mailbox>]>,
}

impl ReactorSeed {
    /// The reactor's index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The mailboxes of the whole set (index = reactor id).
    pub fn mailboxes(&self) -> Arc<[Arc<Mailbox>]> {
        self.mailboxes.clone()
    }
}

impl Reactor {
    /// Creates the rings and mailboxes for `count` reactors.
    pub fn build_set(count: usize) -> std::io::Result<Vec<ReactorSeed>> {
        assert!(count > 0, "at least one reactor");
        let mailboxes: Vec<Arc<Mailbox>> =
            (0..count).map(|_| Mailbox::new().map(Arc::new)).collect::<Result<_, _>>()?;
        let mailboxes: Arc<[Arc<Mailbox>]> = mailboxes.into();
        let mut peers: Vec<Vec<Option<_>>> = (0..count).map(|_| (0..count).map(|_| None).collect()).collect();
        let mut inbound: Vec<Vec<_>> = (0..count).map(|_| Vec::new()).collect();
        for (from, row) in peers.iter_mut().enumerate() {
            for to in (0..count).filter(|&to| to != from) {
                let (p, c) = spsc(PEER_RING_CAPACITY);
                row[to] = Some(p);
                inbound[to].push(c);
            }
        }
        let seeds = peers
            .into_iter()
            .zip(inbound)
            .enumerate()
            .map(|(id, (peers, inbound))| ReactorSeed { id, inbound, peers, mailboxes: mailboxes.clone() })
            .collect();
        Ok(seeds)
    }

    /// Builds the reactor from its seed (on the thread that will run it).
    pub fn from_seed(
        seed: ReactorSeed,
        core: Option<usize>,
        policy: &str,
        clock: Option<MonotonicClock>,
    ) -> std::io::Result<Reactor> {
        let epoll = crate::sys::event::Epoll::new()?;
        let mailbox = seed.mailboxes[seed.id].clone();
        epoll.add(std::os::fd::AsRawFd::as_raw_fd(mailbox.doorbell()), u64::MAX)?;
        let services = Services {
            spawned: Vec::new(),
            epoll,
            peers: seed.peers,
            mailboxes: seed.mailboxes,
            stop: false,
            clock,
            wake_at: None,
        };
        Ok(Reactor {
            id: seed.id,
            core,
            policy_name: policy.to_string(),
            entries: Vec::new(),
            inbound: seed.inbound,
            mailbox,
            services,
            counters: ReactorCounters::default(),
            last_now: None,
        })
    }

    /// Builds `count` reactors for stepping on the current thread.
    pub fn local_set(count: usize) -> std::io::Result<Vec<Reactor>> {
        Reactor::build_set(count)?.into_iter().map(|s| Reactor::from_seed(s, None, "stepped", None)).collect()
    }

    /// This reactor's index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The mailbox the control plane sends to.
    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Adds a poller directly (before the loop starts, or from tests).
    pub fn add_poller(&mut self, poller: Box<dyn Poller>, now: Nanos) {
        self.adopt(Spawn { period: None, poller }, now);
    }

    /// Adds a timed poller directly.
    pub fn add_timed_poller(&mut self, period: Nanos, poller: Box<dyn Poller>, now: Nanos) {
        self.adopt(Spawn { period: Some(period), poller }, now);
    }

    fn adopt(&mut self, spawn: Spawn, now: Nanos) {
        let stats = PollerStats {
            name: spawn.poller.name().to_string(),
            timed: spawn.period.is_some(),
            period_us: spawn.period.unwrap_or(0) / time::NS_PER_US,
            ..PollerStats::default()
        };
        let next_due = now + spawn.period.unwrap_or(0);
        self.entries.push(Entry { poller: spawn.poller, period: spawn.period, next_due, stats });
    }

    /// Whether the loop was asked to stop.
    pub fn stopped(&self) -> bool {
        self.services.stop
    }

    /// Number of pollers.
    pub fn poller_count(&self) -> usize {
        self.entries.len()
    }

    /// Runs one iteration at time `now`: messages, then every due poller. Returns whether any
    /// work was done.
    pub fn poll_once(&mut self, now: Nanos) -> bool {
        self.services.wake_at = None;
        let mut busy = self.drain_messages(now);
        let mut i = 0;
        while i < self.entries.len() {
            let entry = &mut self.entries[i];
            if entry.period.is_some_and(|_| now < entry.next_due) {
                i += 1;
                continue;
            }
            let mut cx = PollCtx { now, reactor: self.id, services: &mut self.services };
            let status = entry.poller.poll(&mut cx);
            if let Some(period) = entry.period {
                entry.next_due = now + period;
            }
            match status {
                PollStatus::Busy => entry.stats.busy_count += 1,
                PollStatus::Idle => entry.stats.idle_count += 1,
                PollStatus::Done => {
                    self.entries.swap_remove(i);
                    busy = true;
                    continue;
                }
            }
            busy |= status == PollStatus::Busy;
            i += 1;
        }
        busy |= self.adopt_spawned(now);
        self.account(now, busy);
        busy
    }

    fn adopt_spawned(&mut self, now: Nanos) -> bool {
        let spawned = std::mem::take(&mut self.services.spawned);
        let any = !spawned.is_empty();
        for s in spawned {
            self.adopt(s, now);
        }
        any
    }

    fn account(&mut self, now: Nanos, busy: bool) {
        let elapsed = self.last_now.map_or(0, |last| now.saturating_sub(last));
        self.last_now = Some(now);
        if busy {
            self.counters.busy_polls += 1;
            self.counters.busy_ns += elapsed;
        } else {
            self.counters.idle_polls += 1;
            self.counters.idle_ns += elapsed;
        }
    }

    fn drain_messages(&mut self, now: Nanos) -> bool {
        let mut handled = 0;
        while handled < MESSAGES_PER_POLL {
            let msg = self.mailbox.pop_control().or_else(|| self.inbound.iter_mut().find_map(|c| c.pop()));
            let Some(msg) = msg else { break };
            handled += 1;
            self.handle(msg, now);
        }
        self.counters.messages += handled as u64;
        handled > 0
    }

    fn handle(&mut self, msg: Message, now: Nanos) {
        match msg {
            Message::Call(f) => {
                let mut cx = PollCtx { now, reactor: self.id, services: &mut self.services };
                f(&mut cx);
            }
            Message::Snapshot(reply) => {
                // The requester may have given up waiting; nothing to do then.
                let _ = reply.send(self.snapshot());
            }
            Message::Stop => self.services.stop = true,
        }
    }

    /// Whether any message is waiting.
    pub fn has_messages(&self) -> bool {
        self.mailbox.has_control() || self.inbound.iter().any(|c| !c.is_empty())
    }

    /// The earliest time a timed poller is due, or a poller of the last round asked to be
    /// polled again ([`PollCtx::wake_at`]).
    pub fn next_timer_due(&self) -> Option<Nanos> {
        let timers = self.entries.iter().filter(|e| e.period.is_some()).map(|e| e.next_due);
        timers.chain(self.services.wake_at).min()
    }

    /// The reactor's statistics now.
    pub fn snapshot(&self) -> ReactorSnapshot {
        ReactorSnapshot {
            id: self.id,
            core: self.core,
            idle_policy: self.policy_name.clone(),
            counters: self.counters.clone(),
            pollers: self.entries.iter().map(|e| e.stats.clone()).collect(),
        }
    }

    /// Sleeps until a message, a watched descriptor or `timeout_ns` (adaptive policy). Returns
    /// the nanoseconds slept according to `clock`.
    pub fn sleep(&mut self, timeout_ns: Nanos, clock: &MonotonicClock) -> Nanos {
        self.mailbox.set_sleeping(true);
        if self.has_messages() {
            self.mailbox.set_sleeping(false);
            return 0;
        }
        let start = clock.now();
        let mut tokens = Vec::new();
        if let Err(e) = self.services.epoll.wait_ns(timeout_ns, &mut tokens) {
            tracing::error!(reactor = self.id, error = %e, "epoll_wait failed");
        }
        self.mailbox.set_sleeping(false);
        self.mailbox.doorbell().drain();
        let slept = clock.now().saturating_sub(start);
        self.counters.sleeps += 1;
        self.counters.sleep_ns += slept;
        self.last_now = None;
        slept
    }
}

#[cfg(test)]
mod tests;

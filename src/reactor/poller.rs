//! The poller contract: a poller does a bounded amount of work and returns at once, telling the
//! reactor whether it found any (`Busy`) or not (`Idle`), or that it has finished (`Done`, and
//! the reactor drops it). A poller never blocks, never sleeps and never waits on a lock. A
//! poller that waits for a time (a batch filling, a periodic commit) returns `Idle` and names
//! the time with [`PollCtx::wake_at`]; `Busy` means work was done, never "keep spinning".

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::message::{Mailbox, Message};
use super::time::Nanos;
use crate::ring::Producer;

/// What one call of a poller found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    /// It did work; the reactor will not sleep.
    Busy,
    /// Nothing to do.
    Idle,
    /// Finished: remove it.
    Done,
}

impl PollStatus {
    /// Busy if `did_work`, else Idle.
    pub fn from_work(did_work: bool) -> PollStatus {
        if did_work {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

/// A unit of work that a reactor runs over and over.
pub trait Poller {
    /// Name shown in reactor statistics.
    fn name(&self) -> &str;
    /// Does some work; `cx.now` is the current time.
    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus;
}

/// A poller to start, possibly on a period.
pub(crate) struct Spawn {
    pub(crate) period: Option<Nanos>,
    pub(crate) poller: Box<dyn Poller>,
}

/// What a reactor lends its pollers for one call: the time, and its services.
pub struct PollCtx<'a> {
    /// The current time.
    pub now: Nanos,
    pub(crate) reactor: usize,
    pub(crate) services: &'a mut Services,
}

/// Reactor-owned services reachable from pollers and messages.
pub(crate) struct Services {
    pub(crate) spawned: Vec<Spawn>,
    pub(crate) epoll: crate::sys::event::Epoll,
    /// Rings to every other reactor (`None` at our own index).
    pub(crate) peers: Vec<Option<Producer<Message>>>,
    pub(crate) mailboxes: Arc<[Arc<Mailbox>]>,
    pub(crate) stop: bool,
    /// The real clock when running on a thread; `None` when stepped with virtual time.
    pub(crate) clock: Option<super::time::MonotonicClock>,
    /// The earliest time a poller asked to be polled again this round ([`PollCtx::wake_at`]).
    pub(crate) wake_at: Option<Nanos>,
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No such reactor.
    #[error("no reactor {0}")]
    NoReactor(usize),
    /// The ring to that reactor is full; retry on a later poll.
    #[error("ring to reactor {0} is full")]
    Full(usize),
}

impl PollCtx<'_> {
    /// The time right now, for measuring latency inside one poll: the real clock on a reactor
    /// thread, the poll's `now` when stepped with virtual time.
    pub fn precise_now(&self) -> Nanos {
        self.services.clock.as_ref().map_or(self.now, |c| c.now())
    }

    /// This reactor's index.
    pub fn reactor(&self) -> usize {
        self.reactor
    }

    /// Number of reactors.
    pub fn reactor_count(&self) -> usize {
        self.services.mailboxes.len()
    }

    /// Starts `poller` on this reactor (from the next poll on).
    pub fn spawn(&mut self, poller: Box<dyn Poller>) {
        self.services.spawned.push(Spawn { period: None, poller });
    }

    /// Starts `poller` to run every `period` nanoseconds.
    pub fn spawn_timed(&mut self, period: Nanos, poller: Box<dyn Poller>) {
        assert!(period > 0, "timed poller needs a period");
        self.services.spawned.push(Spawn { period: Some(period), poller });
    }

    /// Asks to be polled again by `at` even if nothing else wakes the reactor: for work due at
    /// a known time (a batch waiting to fill, a periodic commit). A poller waiting for such a
    /// deadline says so here and returns `Idle`, so the reactor sleeps until then instead of
    /// spinning: on these two-core machines a spinning reactor takes the core from the peers
    /// and kernel workers it shares it with. Holds for the current round only.
    pub fn wake_at(&mut self, at: Nanos) {
        self.services.wake_at = Some(self.services.wake_at.map_or(at, |w| w.min(at)));
    }

    /// Wakes this reactor from an idle sleep when `fd` becomes readable (level-triggered; the
    /// owner of `fd` drains it).
    pub fn watch_fd(&mut self, fd: RawFd) -> io::Result<()> {
        self.services.epoll.add(fd, fd as u64)
    }

    /// Wakes this reactor when the eventfd `fd` is notified (edge-triggered: the owner need not
    /// drain it). Use for bdev channels' completion eventfds.
    pub fn watch_eventfd(&mut self, fd: RawFd) -> io::Result<()> {
        self.services.epoll.add_edge(fd, fd as u64)
    }

    /// Stops watching `fd`; call before closing it.
    pub fn unwatch_fd(&mut self, fd: RawFd) {
        self.services.epoll.remove(fd);
    }

    /// Sends `msg` to reactor `to` (possibly ourselves) over the bounded ring for that pair.
    pub fn send(&mut self, to: usize, msg: Message) -> Result<(), (SendError, Message)> {
        if to == self.reactor {
            return self.services.mailboxes[to].push_control(msg).map_err(|m| (SendError::Full(to), m));
        }
        let Some(Some(ring)) = self.services.peers.get_mut(to) else {
            return Err((SendError::NoReactor(to), msg));
        };
        ring.push(msg).map_err(|m| (SendError::Full(to), m))?;
        self.services.mailboxes[to].ring_doorbell_if_sleeping();
        Ok(())
    }

    /// Asks this reactor to stop after the current poll.
    pub fn stop_reactor(&mut self) {
        self.services.stop = true;
    }
}

//! Reactor and poller statistics: how often each poller found work, and how a reactor's time
//! split between busy polls, idle polls and sleep. Read by `reactor_stats` and
//! `framework_get_reactors` through a `Snapshot` message.

use serde::Serialize;

use super::time::Nanos;

/// Counters of one poller.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PollerStats {
    /// Poller name.
    pub name: String,
    /// Whether it runs on a period.
    pub timed: bool,
    /// Period in microseconds (timed pollers).
    pub period_us: u64,
    /// Calls that found work.
    pub busy_count: u64,
    /// Calls that found none.
    pub idle_count: u64,
}

/// Counters of one reactor.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReactorCounters {
    /// Poll iterations that did work.
    pub busy_polls: u64,
    /// Poll iterations that found nothing.
    pub idle_polls: u64,
    /// Nanoseconds spent in busy iterations.
    pub busy_ns: Nanos,
    /// Nanoseconds spent in idle iterations (spinning).
    pub idle_ns: Nanos,
    /// Nanoseconds asleep (adaptive policy).
    pub sleep_ns: Nanos,
    /// Times the reactor went to sleep.
    pub sleeps: u64,
    /// Messages handled.
    pub messages: u64,
}

/// What a reactor reports about itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReactorSnapshot {
    /// Reactor index.
    pub id: usize,
    /// Core it is pinned to (None when stepped by a test).
    pub core: Option<usize>,
    /// Idle policy name.
    pub idle_policy: String,
    /// Counters.
    pub counters: ReactorCounters,
    /// Active pollers.
    pub pollers: Vec<PollerStats>,
}

//! Time as the reactors see it: nanoseconds on a monotonic clock, passed *in* to every poll so
//! tests and the cluster simulator can drive virtual time.

use std::time::Instant;

/// Nanoseconds since a clock's epoch.
pub type Nanos = u64;

/// Nanoseconds per microsecond.
pub const NS_PER_US: Nanos = 1_000;
/// Nanoseconds per millisecond.
pub const NS_PER_MS: Nanos = 1_000_000;
/// Nanoseconds per second.
pub const NS_PER_S: Nanos = 1_000_000_000;

/// The real monotonic clock; its epoch is its creation.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    epoch: Instant,
}

impl MonotonicClock {
    /// A clock starting at zero now.
    pub fn new() -> MonotonicClock {
        MonotonicClock { epoch: Instant::now() }
    }

    /// Nanoseconds since the epoch.
    pub fn now(&self) -> Nanos {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock::new()
    }
}

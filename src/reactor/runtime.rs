//! Running reactors on pinned OS threads, and the handles the control plane uses to reach them.
//!
//! Idle policies: `busy` spins like SPDK (lowest latency, burns a core); `adaptive` (default)
//! spins while there is work and, after `idle_spell_us` without any, sleeps in `epoll_wait` on
//! the reactor's doorbell and watched descriptors until a message, an I/O completion, a socket
//! or the next timer is due. These machines have two cores, so sleeping is the default.
//!
//! The idle spell (100 µs by default) is a trade measured on these 2-core VMs
//! (`scripts/bench.sh`, `scripts/bench-replication.sh`): a spinning reactor holds off the kernel
//! work its own I/O waits for (the kworker that completes an `RWF_DSYNC` write on the disk's
//! interrupt core, softirq network processing), so spinning 200 µs left 128 KiB NVMe/TCP writes
//! at 1.9 GB/s where 100 µs gives 3.5 GB/s; 20-50 µs costs the wake-up from a halted vCPU on
//! every QD1 disk I/O (uring 4 KiB QD1 p50 70 µs at 100 µs, 118-177 µs at 50-20 µs). Yielding
//! (`sched_yield`) while idle instead was tried and rejected: it freed the kworker (FUA QD1 p50
//! 129 µs) but under EEVDF a yielding reactor lost the core to a busy reactor of another
//! process on the same core for milliseconds (shipping with the load generator beside the
//! secondary fell from 0.61x to 0.2x of no replication). The spell counts only polls that found
//! nothing: a poller waiting for a time must return `Idle` and name it with
//! [`PollCtx::wake_at`], which the sleep honours to the nanosecond (`epoll_pwait2`); one that
//! answered `Busy` instead kept the secondary's reactor awake through every 20 ms commit
//! interval (70% of a core while shipping 4 KiB writes, 0.26 once it slept).

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::message::{Mailbox, Message};
use super::stats::ReactorSnapshot;
use super::time::{MonotonicClock, Nanos, NS_PER_MS, NS_PER_US};
use super::{PollCtx, Reactor};

/// How a reactor behaves when it finds no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdlePolicy {
    /// Spin forever.
    Busy,
    /// Spin for the idle spell, then sleep.
    Adaptive,
}

impl IdlePolicy {
    /// The policy's config name.
    pub fn name(self) -> &'static str {
        match self {
            IdlePolicy::Busy => "busy",
            IdlePolicy::Adaptive => "adaptive",
        }
    }
}

/// Reactor settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// One reactor per listed core.
    pub cores: Vec<usize>,
    /// Idle behaviour.
    pub idle_policy: IdlePolicy,
    /// Continuous idleness before sleeping (adaptive).
    pub idle_spell_us: u64,
    /// Longest single sleep, so periodic work is never starved by a lost timer. Replication
    /// links send heartbeats every 200 ms from their pollers, which only run when the reactor
    /// wakes: 100 ms keeps an idle primary audible (at 1000 ms a bunker heard nothing from an
    /// idle primary for a second, which an `auto_failover` of 800 ms took for its loss).
    pub max_sleep_ms: u64,
    /// Pin threads to their cores.
    pub pin: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cores: vec![0],
            idle_policy: IdlePolicy::Adaptive,
            idle_spell_us: 100,
            max_sleep_ms: 100,
            pin: true,
        }
    }
}

/// The control plane's way to a reactor.
#[derive(Clone)]
pub struct ReactorHandle {
    id: usize,
    core: usize,
    mailbox: Arc<Mailbox>,
}

/// The control plane could not reach a reactor.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Its control queue is full.
    #[error("reactor {0} is not taking messages (control queue full)")]
    Busy(usize),
    /// It did not answer in time.
    #[error("reactor {0} did not answer within {1:?}")]
    Timeout(usize, Duration),
}

/// How long the control plane waits for a reactor's answer.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

impl ReactorHandle {
    /// Reactor index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Its mailbox (to wake it after queueing work for it elsewhere).
    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Core it runs on.
    pub fn core(&self) -> usize {
        self.core
    }

    /// Sends a message.
    pub fn send(&self, msg: Message) -> Result<(), ControlError> {
        self.mailbox.push_control(msg).map_err(|_| ControlError::Busy(self.id))
    }

    /// Runs `f` on the reactor and waits for its result.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut PollCtx<'_>) -> R + Send + 'static,
    ) -> Result<R, ControlError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Message::call(move |cx| {
            let _ = tx.send(f(cx));
        }))?;
        rx.recv_timeout(CONTROL_TIMEOUT).map_err(|_| ControlError::Timeout(self.id, CONTROL_TIMEOUT))
    }

    /// The reactor's statistics.
    pub fn snapshot(&self) -> Result<ReactorSnapshot, ControlError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Message::Snapshot(tx))?;
        rx.recv_timeout(CONTROL_TIMEOUT).map_err(|_| ControlError::Timeout(self.id, CONTROL_TIMEOUT))
    }
}

/// Reactors running on threads.
pub struct Runtime {
    handles: Vec<ReactorHandle>,
    threads: Vec<JoinHandle<()>>,
    config: RuntimeConfig,
}

impl Runtime {
    /// Starts one pinned thread per configured core.
    pub fn start(config: RuntimeConfig) -> std::io::Result<Runtime> {
        let seeds = Reactor::build_set(config.cores.len())?;
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for (seed, &core) in seeds.into_iter().zip(&config.cores) {
            let mailbox = seed.mailboxes()[seed.id()].clone();
            handles.push(ReactorHandle { id: seed.id(), core, mailbox });
            let cfg = config.clone();
            let thread = std::thread::Builder::new()
                .name(format!("reactor_{}", seed.id()))
                .spawn(move || run_thread(seed, core, cfg))?;
            threads.push(thread);
        }
        Ok(Runtime { handles, threads, config })
    }

    /// Handles to every reactor, by index.
    pub fn handles(&self) -> &[ReactorHandle] {
        &self.handles
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Stops every reactor and joins its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        for h in &self.handles {
            while h.send(Message::Stop).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a reactor thread panicked");
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run_thread(seed: super::ReactorSeed, core: usize, cfg: RuntimeConfig) {
    if cfg.pin {
        crate::sys::affinity::pin_current_thread(core);
    }
    let clock = MonotonicClock::new();
    let mut reactor = match Reactor::from_seed(seed, Some(core), cfg.idle_policy.name(), Some(clock)) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(core, error = %e, "reactor could not start");
            return;
        }
    };
    tracing::debug!(reactor = reactor.id(), core, "reactor running");
    run_loop(&mut reactor, &cfg, &clock);
}

/// The reactor loop: poll, and in the adaptive policy sleep after an idle spell.
pub fn run_loop(reactor: &mut Reactor, cfg: &RuntimeConfig, clock: &MonotonicClock) {
    let idle_spell: Nanos = cfg.idle_spell_us * NS_PER_US;
    let max_sleep: Nanos = cfg.max_sleep_ms.max(1) * NS_PER_MS;
    let mut idle_since: Option<Nanos> = None;
    while !reactor.stopped() {
        let now = clock.now();
        if reactor.poll_once(now) {
            idle_since = None;
            continue;
        }
        if cfg.idle_policy == IdlePolicy::Busy {
            std::hint::spin_loop();
            continue;
        }
        let since = *idle_since.get_or_insert(now);
        if now - since < idle_spell {
            std::hint::spin_loop();
            continue;
        }
        let until_timer = reactor.next_timer_due().map_or(max_sleep, |due| due.saturating_sub(now));
        if until_timer > 0 {
            reactor.sleep(until_timer.min(max_sleep), clock);
        }
        idle_since = None;
    }
}

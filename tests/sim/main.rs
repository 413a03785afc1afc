//! The seeded cluster simulator (issue 7): a primary, a bunker and a secondary running
//! ferrite's own replication code on one thread, stepped with `poll_once(now)` in a seeded
//! order under virtual time, over a simulated disk ([`disk`]) and network ([`net`]), with a
//! host workload and model ([`host`]) and a fault schedule and checker ([`cluster`]).
//! `cargo test --test sim` runs a fixed set;
//! `scripts/sim.sh SEEDS MS` runs many seeds in release mode (`FERRITE_SIM_SEEDS`,
//! `FERRITE_SIM_MS`, `FERRITE_SIM_FIRST` pick them).

pub mod cluster;
pub mod disk;
pub mod host;
pub mod net;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cluster::{Cluster, Plan};
use ferrite::reactor::Nanos;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn run(seed: u64, plan: Plan) -> cluster::Outcome {
    if std::env::var_os("FERRITE_SIM_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).try_init();
    }
    let c = Cluster::new(seed, &plan).unwrap_or_else(|e| panic!("seed {seed}: setup: {e}"));
    c.run(plan).unwrap_or_else(|e| panic!("{e}"))
}

/// Without faults, everything written reaches the replica and nothing is lost.
#[test]
fn a_quiet_cluster_converges() {
    let out = run(1, Plan { faults: false, ..Plan::faulty_ms(2_000) });
    assert!(out.acked > 100, "{out:?}");
    // Reads of blocks whose volume write was still running were answered from memory, and
    // the host checked them like every read.
    assert!(out.reads_from_memory > 0, "{out:?}");
}

/// The same seed replays the same run, event for event.
#[test]
fn a_seed_replays_deterministically() {
    let (a, b) = (run(42, Plan::faulty_ms(3_000)), run(42, Plan::faulty_ms(3_000)));
    assert_eq!((a.trace_hash, a.acked, a.end), (b.trace_hash, b.acked, b.end));
}

/// The fixed seed set CI runs.
#[test]
fn fixed_seeds_lose_nothing() {
    let (first, count, ms) =
        (env("FERRITE_SIM_FIRST", 1000), env("FERRITE_SIM_SEEDS", 6), env("FERRITE_SIM_MS", 6_000));
    for seed in first..first + count {
        let out = run(seed, Plan::faulty_ms(ms));
        eprintln!("seed {seed}: {out:?}");
    }
}

/// The fixed failover set CI runs: each seed fails over once, at a seeded moment, among the
/// other faults.
#[test]
fn failover_seeds_lose_nothing() {
    let (first, count, ms) =
        (env("FERRITE_SIM_FIRST", 2000), env("FERRITE_SIM_SEEDS", 6), env("FERRITE_SIM_MS", 6_000));
    for seed in first..first + count {
        let out = run(seed, Plan { failover: true, ..Plan::faulty_ms(ms) });
        eprintln!("seed {seed}: {out:?}");
        assert!(out.failovers + out.failovers_refused > 0, "seed {seed} never failed over: {out:?}");
    }
}

/// Virtual time, shared by the disks, the network and the stepping loop.
#[derive(Clone, Default)]
pub struct Clock(Arc<AtomicU64>);

impl Clock {
    /// Now.
    pub fn now(&self) -> Nanos {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves time to `t` (never backwards).
    pub fn set(&self, t: Nanos) {
        self.0.fetch_max(t, Ordering::Relaxed);
    }
}

/// A seeded latency: uniform in `[lo, hi)`, plus up to `tail` more one time in `one_in`.
pub fn delay(rng: &mut ferrite::rng::Rng, (lo, hi): (Nanos, Nanos), one_in: u64, tail: Nanos) -> Nanos {
    let base = lo + rng.below(hi - lo);
    if rng.below(one_in) == 0 {
        base + rng.below(tail)
    } else {
        base
    }
}

//! Three nodes (0 primary, 1 bunker, 2 secondary at first; the operator's failovers, failbacks
//! and migrations move the primary and secondary roles between nodes 0 and 2), the stepping
//! loop, the fault schedule and the checker.
//!
//! Invariants checked: every block of the primary's volume holds a write the host may see
//! (after every restart, on every host read, after a failover, and at the end: no acknowledged
//! write lost or changed); a frozen replica is a prefix of the primary's writes; once faults stop the cluster converges within a bound (the
//! secondary applies everything the primary committed, and the replica then equals the
//! primary; a failed-over old primary is fenced, then fails back); a fenced old primary refuses
//! a write sent to it at once.
//!
//! Faults: crashes and restarts, link cuts, clogs and resets, disk I/O errors (the node that
//! saw one is restarted, as an operator would) and misreads from log devices (a replica whose
//! applier stopped on an entry that reads damaged every time is restarted, and fetches it
//! again), and the operator's failovers, failbacks and migrations.

mod failover;
mod freeze;
mod roles;

use roles::Role;

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrite::bdev::{Bdev, Channel};
use ferrite::net::framed::Framed;
use ferrite::net::Net;
use ferrite::reactor::{Nanos, Reactor};
use ferrite::replication::bunker::{BunkerConn, Bunkers};
use ferrite::replication::manager;
use ferrite::replication::secondary::{self, apply::Applier, Secondary};
use ferrite::replication::volume::{open, Ack, Mode, OnBunkerLoss, ReplVolume, VolumeConfig, VolumeShared};
use ferrite::rng::Rng;
use ferrite::sys::region::Backing;
use ferrite::sys::DmaPool;

use super::disk::SimDisk;
use super::host::{Host, BLOCK};
use super::net::{addr, SimNet};
use crate::Clock;

const MS: Nanos = 1_000_000;
const S: Nanos = 1_000 * MS;
/// Volume size in blocks.
const VOLUME_BLOCKS: u64 = 256;
/// Log, bunker and staging size in 512-byte sectors.
const LOG_SECTORS: u64 = 32768;
const PRIMARY: usize = 0;
const BUNKER: usize = 1;
const SECONDARY: usize = 2;
const NAMES: [&str; 3] = ["node0", "bunker", "node2"];

/// How a run goes.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Virtual time with workload and faults.
    pub faulty: Nanos,
    /// Bound on convergence once faults stop.
    pub settle: Nanos,
    /// Faults at all.
    pub faults: bool,
    /// Every run fails over once (the primary stalls without its bunker), at a seeded moment.
    pub failover: bool,
    /// While faults run, one disk I/O in this many fails (0: none).
    pub disk_errors: u64,
    /// While faults run, one read in this many from a log device comes back wrong (0: none).
    /// Not from volumes: their blocks carry no checksum, as on any device without protection
    /// information.
    pub misreads: u64,
}

impl Plan {
    /// `ms` milliseconds of faults, then up to two minutes to converge.
    pub fn faulty_ms(ms: u64) -> Plan {
        Plan {
            faulty: ms * MS,
            settle: 120 * S,
            faults: true,
            failover: false,
            disk_errors: 4_000,
            misreads: 500,
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Writes acknowledged.
    pub acked: u64,
    /// Host reads checked.
    pub reads: u64,
    /// Reads a primary served (wholly or in part) from entries whose volume write was running.
    pub reads_from_memory: u64,
    /// Crashes and restarts.
    pub crashes: u64,
    /// Disk I/O errors injected (each node that saw one was restarted, as an operator would).
    pub io_errors: u64,
    /// Reads from log devices that came back corrupted or misdirected.
    pub misreads: u64,
    /// Link cuts.
    pub cuts: u64,
    /// Links clogged (slowed to a low bandwidth for a while).
    pub clogs: u64,
    /// Volume blocks the secondary took as resyncs from the dirty-block map (it fell out of
    /// step: dropped a whole log behind, or its staging log ended before the primary's head).
    pub resynced: u64,
    /// Failovers completed (the host moved to the promoted secondary).
    pub failovers: u64,
    /// Failed-over old primaries that rejoined as secondaries.
    pub failbacks: u64,
    /// Planned swaps of primary and secondary.
    pub migrations: u64,
    /// Migrations abandoned (a node crashed, or the drain did not finish).
    pub migrations_abandoned: u64,
    /// Failovers refused or abandoned (the replica was out of step), with the primary restarted.
    pub failovers_refused: u64,
    /// Times the replica was frozen at a consistent point and checked to be a prefix.
    pub prefixes_checked: u64,
    /// Freezes given up because the applier did not reach a consistent point in time.
    pub freezes_given_up: u64,
    /// Virtual time at the end.
    pub end: Nanos,
    /// Hash of the event trace (equal for equal seeds).
    pub trace_hash: u32,
}

struct Node {
    reactor: Option<Reactor>,
    pool: DmaPool,
    disks: Vec<SimDisk>,
    /// Disk errors already answered with a restart.
    errors_seen: u64,
    volume: Option<(Arc<VolumeShared>, Channel)>,
    secondary: Option<Arc<Secondary>>,
    bunkers: Arc<Bunkers>,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    Restart(usize),
    Heal(usize, usize),
    /// A clogged link flows again.
    Unclog(usize, usize),
    /// (Re)try a failover to the secondary.
    Failover,
    /// (Re)try failing the old primary back.
    Failback,
    /// Crash a node (and restart it later).
    Crash(usize),
    /// Restart a node whose disk failed an I/O (its components stop on an error).
    Replace(usize),
}

/// The simulated cluster.
pub struct Cluster {
    seed: u64,
    clock: Clock,
    net: SimNet,
    rng: Rng,
    nodes: Vec<Node>,
    host: Host,
    pending: BTreeMap<(Nanos, u64), Pending>,
    next_fault: Nanos,
    trace: Vec<String>,
    out: Outcome,
    /// Each node's role.
    roles: [Role; 3],
    /// The node the host writes to: the primary.
    serving: usize,
    /// The node with the secondary role (none between a failover and its failback).
    replica: Option<usize>,
    /// A failed-over old primary: it must come up fenced, until it fails back.
    fenced_node: Option<usize>,
    /// Where the last failover forked the volume (the promoted replica's applied end).
    fork: Option<u64>,
    /// Roles moved (failover or migration): the bunker sits by the first primary only, so no
    /// more failovers.
    roles_changed: bool,
    /// A failover or migration under way.
    failing_over: Option<failover::Phase>,
    /// The operator's last `replication_create`: to which node, rolling back what.
    asked: Option<(usize, Vec<(u64, u64)>)>,
    /// The primary lost its bunker just before the failover (once per run).
    cut_before_failover: bool,
    /// What the primary does without its bunker (seeded): keep serving on the local log, or
    /// stall writes. Failovers run only with `Stall`: under `LocalOnly` the writes answered
    /// while the bunker was away are, by that policy's contract, not on the bunker.
    on_bunker_loss: OnBunkerLoss,
    /// When the first primary answers writes (seeded).
    ack: Ack,
    /// The replica has been held for a check since then.
    frozen_since: Option<Nanos>,
    /// The next freeze of the replica.
    next_freeze: Nanos,
    /// One disk I/O in this many fails, one log read in this many comes back wrong (0: none),
    /// outside the operator's own steps.
    disk_fault_rates: (u64, u64),
}

fn pool() -> DmaPool {
    DmaPool::new(12288, 512, Backing::Normal).expect("sim DMA pool")
}

impl Cluster {
    /// A fresh cluster for `seed`, every node started.
    pub fn new(seed: u64, plan: &Plan) -> Result<Cluster, String> {
        let clock = Clock::default();
        let mut rng = Rng::new(seed);
        let mut disk =
            |name: &str, bs: u32, blocks: u64| SimDisk::new(name, bs, blocks, rng.next_u64(), clock.clone());
        let disks = vec![
            vec![
                disk("p-data", BLOCK as u32, VOLUME_BLOCKS),
                disk("p-log", 512, LOG_SECTORS),
                disk("p-stage", 512, LOG_SECTORS),
            ],
            vec![disk("b-log", 512, LOG_SECTORS)],
            vec![
                disk("s-data", BLOCK as u32, VOLUME_BLOCKS),
                disk("s-stage", 512, LOG_SECTORS),
                disk("s-log", 512, LOG_SECTORS),
            ],
        ];
        let net = SimNet::new(rng.next_u64(), clock.clone());
        let nodes = disks
            .into_iter()
            .map(|disks| Node {
                reactor: None,
                pool: pool(),
                disks,
                errors_seen: 0,
                volume: None,
                secondary: None,
                bunkers: Arc::new(Bunkers::default()),
            })
            .collect();
        let mut c = Cluster {
            seed,
            clock,
            net,
            rng,
            nodes,
            host: Host::new(VOLUME_BLOCKS, 8),
            pending: BTreeMap::new(),
            next_fault: 0,
            trace: Vec::new(),
            out: Outcome::default(),
            roles: [Role::Bunker, Role::Bunker, Role::Bunker],
            serving: PRIMARY,
            replica: Some(SECONDARY),
            fenced_node: None,
            fork: None,
            roles_changed: false,
            failing_over: None,
            asked: None,
            cut_before_failover: false,
            on_bunker_loss: OnBunkerLoss::LocalOnly,
            ack: Ack::Durable,
            frozen_since: None,
            next_freeze: 0,
            disk_fault_rates: (0, 0),
        };
        if c.rng.below(2) == 0 || plan.failover {
            c.on_bunker_loss = OnBunkerLoss::Stall;
        }
        if c.rng.below(4) == 0 {
            c.ack = Ack::Applied;
        }
        if plan.failover {
            let at = S + c.rng.below(plan.faulty.saturating_sub(2 * S).max(1));
            c.pending.insert((at, 0), Pending::Failover);
        }
        c.roles = [c.first_primary(), Role::Bunker, Role::Secondary { bunker: Some(addr(BUNKER)) }];
        c.event(format!(
            "without its bunker the primary {:?}; writes answered {:?}",
            c.on_bunker_loss, c.ack
        ));
        for n in [BUNKER, SECONDARY, PRIMARY] {
            c.start(n)?;
        }
        if plan.faults {
            c.set_disk_faults((plan.disk_errors, plan.misreads));
        }
        Ok(c)
    }

    fn now(&self) -> Nanos {
        self.clock.now()
    }

    fn event(&mut self, what: String) {
        self.trace.push(format!("{:>9.3}ms {what}", self.now() as f64 / MS as f64));
    }

    /// Starts node `n` in its role. A start that fails because a disk failed an I/O leaves the
    /// node down and tries again later; any other failure is a broken invariant.
    fn start(&mut self, n: usize) -> Result<(), String> {
        let before = self.disk_errors(n);
        match self.start_role(n) {
            Err(e) if self.disk_errors(n) > before => {
                self.nodes[n].errors_seen = self.disk_errors(n);
                self.event(format!("{} failed to start on a disk error: {e}", NAMES[n]));
                self.crash(n);
                let down = 10 * MS + self.rng.below(500 * MS);
                self.later(down, Pending::Restart(n));
                Ok(())
            }
            other => other,
        }
    }

    fn set_disk_faults(&mut self, rates: (u64, u64)) {
        self.disk_fault_rates = rates;
        self.apply_disk_faults(rates);
    }

    fn apply_disk_faults(&self, (errors, misreads): (u64, u64)) {
        for (n, node) in self.nodes.iter().enumerate() {
            for (i, d) in node.disks.iter().enumerate() {
                d.set_errors(errors);
                // Volumes (disk 0 of a node that holds one) carry no checksums.
                let volume = i == 0 && n != BUNKER;
                d.set_misreads(if volume { 0 } else { misreads });
            }
        }
    }

    /// Runs an operator's step with no disk errors while it runs: the operator's own
    /// synchronous steps (scans, demotion, promotion) are not where errors are hunted; what
    /// they start runs on afterwards with errors back on.
    fn operator_step<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.apply_disk_faults((0, 0));
        let out = f(self);
        self.apply_disk_faults(self.disk_fault_rates);
        out
    }

    /// Disk errors node `n` has seen.
    fn disk_errors(&self, n: usize) -> u64 {
        self.nodes[n].disks.iter().map(SimDisk::errors).sum()
    }

    /// Nodes whose disk failed an I/O since the last look are restarted soon, as an operator
    /// would: ferrite stops a volume, a bunker log or an applier on an I/O error, and recovers
    /// on restart.
    fn disk_failures(&mut self) {
        for (n, name) in NAMES.iter().enumerate() {
            let errors = self.disk_errors(n);
            if errors > self.nodes[n].errors_seen && self.nodes[n].reactor.is_some() {
                self.out.io_errors += errors - self.nodes[n].errors_seen;
                self.nodes[n].errors_seen = errors;
                let last = self.nodes[n].disks.iter().filter(|d| d.errors() > 0).map(SimDisk::last_error);
                let what = last.collect::<Vec<_>>().join(", ");
                self.event(format!("{} saw a disk error ({what}): restart soon", name));
                let after = self.rng.below(50 * MS);
                self.later(after, Pending::Replace(n));
            }
        }
        self.restart_stopped_replica();
    }

    /// A replica whose applier stopped on an entry that reads damaged every time (a misread
    /// the primary shipped or the bunker streamed) is restarted too: its inventory ends before
    /// that entry, so it is fetched again.
    fn restart_stopped_replica(&mut self) {
        let Some(r) = self.replica else { return };
        let stopped = (self.nodes[r].secondary.as_ref())
            .is_some_and(|s| s.staging.state.lock().expect("state").apply_error.is_some());
        if stopped && !self.pending.values().any(|p| matches!(p, Pending::Replace(x) if *x == r)) {
            self.event(format!("{}'s applier stopped: restart soon", NAMES[r]));
            let after = self.rng.below(50 * MS);
            self.later(after, Pending::Replace(r));
        }
    }

    fn start_role(&mut self, n: usize) -> Result<(), String> {
        self.net.restart(n);
        self.nodes[n].reactor = Some(Reactor::local_set(1).map_err(|e| e.to_string())?.remove(0));
        match self.roles[n].clone() {
            Role::Primary(cfg) => {
                let secondary = self.recorded_secondary(n, &cfg);
                let cfg = VolumeConfig { net: Net(self.net.dialer(n)), secondary, ..cfg };
                // A failed-over old primary's image is stale by design: it must come up fenced.
                let when = (self.fenced_node != Some(n)).then_some("after the primary's recovery");
                self.open_volume(n, &cfg, when)?;
                self.ask_again(n, secondary)?
            }
            Role::Bunker => self.start_bunker()?,
            Role::Secondary { bunker } => self.start_secondary(n, bunker, false)?,
        }
        self.net.listen(n);
        self.event(format!("{} started", NAMES[n]));
        Ok(())
    }

    /// Opens (recovering or formatting) node `n`'s volume as a primary, starts its home poller
    /// and hands the host a channel; checks the image `when` given.
    fn open_volume(&mut self, n: usize, cfg: &VolumeConfig, when: Option<&str>) -> Result<(), String> {
        let node = &mut self.nodes[n];
        let max_io = (node.pool.buf_size() as u32 - 512).min(128 * 1024);
        node.disks.iter().for_each(|d| d.set_immediate(true));
        let opened =
            open::open(cfg, &node.pool, max_io).map_err(|e| format!("{} volume open: {e}", NAMES[n]));
        node.disks.iter().for_each(|d| d.set_immediate(false));
        let opened = opened?;
        let reactor = node.reactor.as_mut().expect("started");
        let shared = manager::assemble(cfg, &opened, reactor.mailbox().clone());
        let core = manager::home_poller(cfg, shared.clone(), &opened, node.pool.clone())?;
        reactor.add_poller(Box::new(core), self.clock.now());
        let vol: Arc<dyn Bdev> = Arc::new(ReplVolume::new(cfg.data.clone(), shared.clone()));
        node.volume = Some((shared, Channel::new(vol).map_err(|e| e.to_string())?));
        let image = node.disks[0].view();
        if let Some(when) = when {
            self.host.check_image(&image, when)?;
        }
        self.event(format!("{} volume open: {} entries replayed", NAMES[n], opened.replayed));
        Ok(())
    }

    fn start_bunker(&mut self) -> Result<(), String> {
        let node = &mut self.nodes[BUNKER];
        node.bunkers = Arc::new(Bunkers::default());
        node.disks[0].set_immediate(true);
        let created = node.bunkers.create("vol0", Arc::new(node.disks[0].clone()), &node.pool);
        node.disks[0].set_immediate(false);
        created
    }

    /// Starts node `n`'s secondary role (`resync`: its log waits for a failback's blocks).
    fn start_secondary(
        &mut self,
        n: usize,
        bunker: Option<std::net::SocketAddr>,
        resync: bool,
    ) -> Result<(), String> {
        let (data, staging, log) = roles::secondary_disks(n);
        let node = &mut self.nodes[n];
        node.bunkers = Arc::new(Bunkers::default());
        let d = |i: usize| -> Arc<dyn Bdev> { Arc::new(node.disks[i].clone()) };
        node.disks.iter().for_each(|d| d.set_immediate(true));
        let sec = secondary::assemble(
            &node.bunkers,
            &node.pool,
            "vol0",
            (d(data), d(staging), d(log)),
            bunker,
            resync,
        );
        node.disks.iter().for_each(|d| d.set_immediate(false));
        let sec = sec?;
        let reactor = node.reactor.as_mut().expect("started");
        *sec.staging.waker.lock().expect("waker") = Some(reactor.mailbox().clone());
        let applier = Applier::new(sec.clone(), node.pool.clone()).map_err(|e| e.to_string())?;
        reactor.add_poller(Box::new(applier), self.clock.now());
        node.secondary = Some(sec);
        Ok(())
    }

    fn crash(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if node.reactor.is_none() {
            return;
        }
        let log = node.volume.as_ref().map(|(s, _)| {
            let l = &s.log;
            format!(
                " (log head {} applied {} committed {} tail {})",
                l.head(),
                l.applied(),
                l.committed(),
                l.tail()
            )
        });
        if Some(n) == self.replica {
            self.cancel_freeze();
        }
        self.count_volume(n);
        let node = &mut self.nodes[n];
        node.volume = None;
        node.secondary = None;
        node.reactor = None;
        node.disks.iter().for_each(SimDisk::crash);
        self.net.crash(n);
        if n == self.serving {
            self.host.lost_primary();
        }
        self.interrupt_failover(n);
        self.out.crashes += 1;
        self.event(format!("{} crashed{}", NAMES[n], log.unwrap_or_default()));
    }

    /// Adds node `n`'s primary volume's counters to the outcome (before it goes away).
    fn count_volume(&mut self, n: usize) {
        if let Some((s, _)) = self.nodes[n].volume.as_ref() {
            self.out.reads_from_memory += s.reads_from_memory.swap(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Runs the plan; an error is a broken invariant (with the seed and the trace's tail).
    pub fn run(mut self, plan: Plan) -> Result<Outcome, String> {
        let result = self.run_inner(plan);
        self.out.trace_hash = crc32c::crc32c(self.trace.join("\n").as_bytes());
        self.out.end = self.now();
        self.out.acked = self.host.acked;
        self.out.misreads = self.nodes.iter().flat_map(|n| &n.disks).map(SimDisk::misreads).sum();
        self.out.reads = self.host.reads;
        (0..self.nodes.len()).for_each(|n| self.count_volume(n));
        result.map(|()| std::mem::take(&mut self.out)).map_err(|e| {
            let tail = self.trace.iter().rev().take(40).rev().cloned().collect::<Vec<_>>().join("\n");
            format!(
                "seed {} (commit {}): {e}\nlast events:\n{tail}",
                self.seed,
                std::env::var("FERRITE_COMMIT").unwrap_or_else(|_| "see git log".into())
            )
        })
    }

    fn run_inner(&mut self, plan: Plan) -> Result<(), String> {
        self.next_fault = self.rng.below(S);
        while self.now() < plan.faulty {
            let busy = self.step(true)?;
            if plan.faults {
                self.faults()?;
            }
            self.advance(busy);
        }
        self.settle(plan.settle)
    }

    /// One round: every live node polls once, in a seeded order, then the host.
    fn step(&mut self, workload: bool) -> Result<bool, String> {
        let now = self.now();
        let mut order = [PRIMARY, BUNKER, SECONDARY];
        for i in (1..order.len()).rev() {
            order.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        let mut busy = false;
        for n in order {
            for (stream, peer) in self.net.accepted(n) {
                let node = &mut self.nodes[n];
                let conn = BunkerConn::over(
                    Framed::over(Box::new(stream)),
                    peer,
                    node.bunkers.clone(),
                    node.pool.clone(),
                );
                node.reactor.as_mut().expect("accepting node is up").add_poller(Box::new(conn), now);
            }
            if let Some(r) = self.nodes[n].reactor.as_mut() {
                busy |= r.poll_once(now);
            }
        }
        busy |= self.operator_step(Self::failover_step)?;
        busy |= self.freeze_step()?;
        let node = &mut self.nodes[self.serving];
        if let Some((_, ch)) = node.volume.as_mut() {
            busy |= self.host.reap(ch)?;
            if workload {
                busy |= self.host.submit(ch, &node.pool, &mut self.rng, now);
            }
        }
        Ok(busy)
    }

    /// Moves virtual time: a little after a busy round, to the next disk or network event
    /// (at most a millisecond away) after an idle one.
    fn advance(&mut self, busy: bool) {
        let now = self.now();
        let next = if busy {
            now + 1_000 + self.rng.below(4_000)
        } else {
            let due = self.nodes.iter().flat_map(|n| n.disks.iter().filter_map(SimDisk::next_due));
            due.chain(self.net.next_due()).min().unwrap_or(u64::MAX).clamp(now + 1_000, now + MS)
        };
        self.clock.set(next);
    }

    fn faults(&mut self) -> Result<(), String> {
        let now = self.now();
        while let Some((&(at, id), &p)) = self.pending.first_key_value() {
            if at > now {
                break;
            }
            self.pending.remove(&(at, id));
            match p {
                Pending::Restart(n) => self.start(n)?,
                Pending::Heal(a, b) => {
                    self.net.set_cut(a, b, false);
                    self.event(format!("{} -> {} healed", NAMES[a], NAMES[b]));
                }
                Pending::Unclog(a, b) => {
                    self.net.set_clog(a, b, None);
                    self.event(format!("{} -> {} flows again", NAMES[a], NAMES[b]));
                }
                Pending::Failover => self.operator_step(Self::begin_failover)?,
                Pending::Failback => self.operator_step(Self::failback)?,
                Pending::Crash(n) => self.crash_and_restart(n),
                Pending::Replace(n) => self.replace(n)?,
            }
        }
        self.disk_failures();
        if now >= self.next_fault {
            self.next_fault = now + self.rng.below(2 * S);
            self.inject()?;
        }
        Ok(())
    }

    fn crash_and_restart(&mut self, n: usize) {
        if self.nodes[n].reactor.is_some() {
            self.crash(n);
            let down = 50 * MS + self.rng.below(3 * S);
            self.later(down, Pending::Restart(n));
        }
    }

    /// Restarts node `n` at once (it loses its write cache, as on a crash).
    fn replace(&mut self, n: usize) -> Result<(), String> {
        if self.nodes[n].reactor.is_some() {
            self.crash(n);
            self.start(n)?;
        }
        Ok(())
    }

    fn later(&mut self, after: Nanos, p: Pending) {
        let id = self.rng.next_u64();
        self.pending.insert((self.now() + after, id), p);
    }

    fn inject(&mut self) -> Result<(), String> {
        let n = self.rng.below(3) as usize;
        match self.rng.below(10) {
            0..=3 if self.nodes[n].reactor.is_some() => self.crash_and_restart(n),
            4..=7 => {
                let m = self.peer_of(n);
                let both = self.rng.below(2) == 0;
                let span = self.fault_span();
                for (a, b) in [(n, m), (m, n)].into_iter().take(if both { 2 } else { 1 }) {
                    self.net.set_cut(a, b, true);
                    self.later(span, Pending::Heal(a, b));
                }
                self.out.cuts += 1;
                self.event(format!(
                    "{} -> {} cut{} for {} ms",
                    NAMES[n],
                    NAMES[m],
                    if both { " both ways" } else { "" },
                    span / MS
                ));
            }
            9 if self.failing_over.is_none() => self.operator_step(Self::operator)?,
            8 if self.rng.below(2) == 0 => self.clog(n),
            _ => {
                self.net.reset_one();
                self.event("a connection reset".into());
            }
        }
        Ok(())
    }

    /// One of the two other nodes, at random.
    fn peer_of(&mut self, n: usize) -> usize {
        (n + 1 + self.rng.below(2) as usize) % 3
    }

    /// How long a link fault lasts: 100 ms to 6.1 s.
    fn fault_span(&mut self) -> Nanos {
        100 * MS + self.rng.below(6 * S)
    }

    /// Clogs the link from `n` to another node: 64 KiB/s to 4 MiB/s for up to six seconds.
    fn clog(&mut self, n: usize) {
        let m = self.peer_of(n);
        let bw = (64 << 10) << self.rng.below(7);
        let span = self.fault_span();
        self.net.set_clog(n, m, Some(bw));
        self.later(span, Pending::Unclog(n, m));
        self.out.clogs += 1;
        self.event(format!(
            "{} -> {} clogged to {} KiB/s for {} ms",
            NAMES[n],
            NAMES[m],
            bw >> 10,
            span / MS
        ));
    }

    /// Faults stop: heal, restart, finish the host's I/O, and wait for the secondary to apply
    /// everything the primary committed; then compare.
    fn settle(&mut self, bound: Nanos) -> Result<(), String> {
        self.net.heal();
        self.set_disk_faults((0, 0));
        self.disk_failures();
        self.event("faults stopped".into());
        let deadline = self.now() + bound;
        loop {
            self.restart_stopped_replica();
            self.settle_pending()?;
            let busy = self.step(false)?;
            if self.converged() {
                break;
            }
            if self.now() > deadline {
                return Err(format!(
                    "no convergence within {} s after faults stopped: {}",
                    bound / S,
                    self.positions()
                ));
            }
            self.advance(busy);
        }
        let committed = self.nodes[self.serving].volume.as_ref().map(|(s, _)| s.log.committed());
        let replica = self.replica.and_then(|r| self.nodes[r].secondary.as_ref());
        self.out.resynced = replica.map_or(0, |s| s.staging.state.lock().expect("state").resync_blocks);
        self.event(format!("converged at LSN {committed:?}"));
        let primary = self.nodes[self.serving].disks[0].view();
        self.host.check_image(&primary, "primary volume at the end")?;
        let r = self.replica.expect("converged with a secondary");
        let replica = self.nodes[r].disks[0].view();
        if let Some(b) = (0..VOLUME_BLOCKS as usize)
            .find(|b| primary[b * BLOCK..(b + 1) * BLOCK] != replica[b * BLOCK..(b + 1) * BLOCK])
        {
            return Err(format!("after convergence the replica differs from the primary at block {b}"));
        }
        Ok(())
    }

    /// Once faults stop, what is pending happens now: restarts first, then a failover (which
    /// may itself schedule a restart, handled on the next round).
    fn settle_pending(&mut self) -> Result<(), String> {
        let pending = std::mem::take(&mut self.pending);
        let (mut failover, mut failback) = (false, false);
        for (_, p) in pending {
            match p {
                Pending::Restart(n) if self.nodes[n].reactor.is_none() => self.start(n)?,
                Pending::Replace(n) => self.replace(n)?,
                Pending::Failover => failover = true,
                Pending::Failback => failback = true,
                Pending::Restart(_) | Pending::Heal(..) | Pending::Unclog(..) | Pending::Crash(_) => {}
            }
        }
        if failover {
            self.begin_failover()?;
        }
        if failback {
            self.failback()?;
        }
        Ok(())
    }

    fn positions(&self) -> String {
        let p = self.nodes[self.serving].volume.as_ref().map(|(s, _)| (s.log.committed(), s.log.applied()));
        let ship = self.nodes[self.serving]
            .volume
            .as_ref()
            .map(|(s, _)| serde_json::to_string(&*s.status.lock().expect("status")).unwrap_or_default());
        let s = self
            .replica
            .and_then(|r| self.nodes[r].secondary.as_ref())
            .map(|s| serde_json::to_string(&*s.staging.state.lock().expect("state")).unwrap_or_default());
        let b = self.nodes[BUNKER].bunkers.get("vol0").map(|v| {
            let st = v.state.lock().expect("state");
            (st.durable_end, st.head, st.attached, st.epoch)
        });
        format!(
            "primary (committed, applied) {p:?}, bunker (durable_end, head, attached, epoch) {b:?}, shipping {ship:?}, secondary staging {s:?}, host in flight [{}]",
            self.host.describe_inflight()
        )
    }

    /// The host has its answers and every answered write has reached the primary's volume
    /// (answers precede volume writes, so `committed` alone is not enough: nothing may be live).
    fn primary_settled(&self) -> bool {
        let Some((shared, _)) = self.nodes[self.serving].volume.as_ref() else { return false };
        self.host.idle() && shared.log.applied() >= shared.log.tail()
    }

    fn converged(&self) -> bool {
        // A failover converges through its failback: nothing is settled before.
        if self.failing_over.is_some() || self.fenced_node.is_some() {
            return false;
        }
        let Some((shared, _)) = self.nodes[self.serving].volume.as_ref() else { return false };
        let Some(sec) = self.replica.and_then(|r| self.nodes[r].secondary.as_ref()) else { return false };
        let in_step =
            shared.status.lock().expect("status").secondary.as_ref().is_some_and(|s| !s.out_of_sync);
        let st = sec.staging.state.lock().expect("state");
        self.primary_settled() && in_step && !st.resync_pending && st.applied >= shared.log.tail()
    }
}

//! Roles and the operator's role changes: failback of a failed-over old primary (it rejoins
//! as the new primary's secondary, the blocks its log wrote after the fork rolled back) and
//! migration (drain the primary, promote the secondary with the drained end, demote the old
//! primary to a secondary). The same production pieces as the RPCs: `migrate::drained`,
//! `failover::begin`/`promoted`, `open::ranges_since`, `migrate::flush_data`, the secondary
//! assembly and `replication_create`'s request.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::failover::Phase;
use super::*;
use ferrite::bdev::{BdevIo, IoType};
use ferrite::replication::migrate;
use ferrite::replication::secondary::failover::{self, FailoverRequest};

/// A node's role (what it starts as after a crash).
#[derive(Clone, Debug)]
pub(super) enum Role {
    /// A primary volume with this configuration (its `net` is set at each start).
    Primary(VolumeConfig),
    Bunker,
    /// A replica, pulling from this bunker at failover.
    Secondary {
        bunker: Option<SocketAddr>,
    },
}

/// The disks a node's secondary role uses: (data, staging, log).
pub(super) fn secondary_disks(n: usize) -> (usize, usize, usize) {
    if n == PRIMARY {
        (0, 2, 1)
    } else {
        (0, 1, 2)
    }
}

/// How long a migration may wait for the drain.
const DRAIN_PATIENCE: Nanos = 5 * S;

impl Cluster {
    /// Node 0's first configuration: bunker-sync with the bunker, shipping to node 2.
    pub(super) fn first_primary(&self) -> Role {
        let node = &self.nodes[PRIMARY];
        Role::Primary(VolumeConfig {
            name: "vol0".into(),
            data: Arc::new(node.disks[0].clone()),
            log: Arc::new(node.disks[1].clone()),
            mode: Mode::BunkerSync,
            bunker: Some(addr(BUNKER)),
            on_bunker_loss: self.on_bunker_loss,
            ack: self.ack,
            force: false,
            secondary: Some(addr(SECONDARY)),
            identity: Some(([0x5a; 16], 1)),
            net: Net(self.net.dialer(PRIMARY)),
        })
    }

    /// The operator acts: a failover while the first primary and its bunker serve (and the
    /// primary stalls without its bunker), else a failback owed, else a migration.
    pub(super) fn operator(&mut self) -> Result<(), String> {
        if !self.roles_changed && self.on_bunker_loss == OnBunkerLoss::Stall {
            self.begin_failover()
        } else if self.fenced_node.is_some() {
            self.failback()
        } else {
            self.begin_migration()
        }
    }

    /// The failed-over old primary, once up and fenced, rejoins as the new primary's
    /// secondary; the blocks its log wrote after the fork are resent by the new primary.
    pub(super) fn failback(&mut self) -> Result<(), String> {
        let Some(old) = self.fenced_node else { return Ok(()) };
        let fenced = self.nodes[old].volume.as_ref().is_some_and(|(s, _)| s.fenced.load(Ordering::Acquire));
        if !fenced || self.nodes[self.serving].volume.is_none() {
            self.later(200 * MS, Pending::Failback);
            return Ok(());
        }
        self.fenced_refuses(old)?;
        let fork = self.fork.expect("a failover forked the volume");
        let node = &self.nodes[old];
        let log: Arc<dyn Bdev> = Arc::new(node.disks[roles_log(old)].clone());
        node.disks.iter().for_each(|d| d.set_immediate(true));
        let divergent = open::ranges_since(&log, &node.pool, fork);
        node.disks.iter().for_each(|d| d.set_immediate(false));
        let divergent = divergent.map_err(|e| format!("failback: {e}"))?;
        let blocks: u64 = divergent.iter().map(|r| r.1).sum();
        self.demote(old, !divergent.is_empty())?;
        self.attach(self.serving, old, divergent)?;
        self.fenced_node = None;
        self.out.failbacks += 1;
        self.event(format!("failback: {} rejoins as secondary, {blocks} divergent blocks", NAMES[old]));
        Ok(())
    }

    /// A fenced node never accepts a write: one sent to it (a host that never moved) is
    /// refused at once.
    fn fenced_refuses(&mut self, n: usize) -> Result<(), String> {
        let node = &mut self.nodes[n];
        let (Some((_, ch)), Some(mut buf)) = (node.volume.as_mut(), node.pool.alloc()) else { return Ok(()) };
        buf.set_len(BLOCK);
        let tag = u64::MAX;
        let io =
            BdevIo { ty: IoType::Write, offset_blocks: 0, num_blocks: 1, buf: Some(buf), fua: false, tag };
        if ch.submit(io).is_err() {
            return Err(format!("{}: a fenced volume did not answer a write", NAMES[n]));
        }
        let mut done = Vec::new();
        ch.poll(&mut done);
        match done.iter().find(|c| c.tag == tag) {
            Some(c) if !c.status.is_success() => Ok(()),
            Some(_) => Err(format!("{}: a fenced volume accepted a write", NAMES[n])),
            None => Err(format!("{}: a fenced volume took a write in instead of refusing it", NAMES[n])),
        }
    }

    /// Ends node `n`'s primary volume (its home poller closes, its last volume writes are
    /// made durable) and starts its secondary role on the same reactor.
    pub(super) fn demote(&mut self, n: usize, resync: bool) -> Result<(), String> {
        self.count_volume(n);
        let (shared, _) = self.nodes[n].volume.take().expect("demoting a running primary");
        shared.stopped.store(true, Ordering::Release);
        shared.deleted.store(true, Ordering::Release);
        let node = &mut self.nodes[n];
        node.disks.iter().for_each(|d| d.set_immediate(true));
        let reactor = node.reactor.as_mut().expect("a running primary has a reactor");
        for _ in 0..10_000 {
            if shared.closed.load(Ordering::Acquire) {
                break;
            }
            reactor.poll_once(self.clock.now());
        }
        let data: Arc<dyn Bdev> = Arc::new(node.disks[0].clone());
        let flushed = migrate::flush_data(&shared, &data);
        node.disks.iter().for_each(|d| d.set_immediate(false));
        flushed.map_err(|e| format!("demoting {}: {e}", NAMES[n]))?;
        self.roles[n] = Role::Secondary { bunker: None };
        self.start_secondary(n, None, resync)?;
        self.replica = Some(n);
        Ok(())
    }

    /// `replication_create` on primary `p` towards node `to` (failback: `divergent` rolled
    /// back); the volume records it at its next checkpoint, and the operator asks again if `p`
    /// restarts without it recorded. One time in three either node crashes soon after, while
    /// the new secondary is being brought in step.
    pub(super) fn attach(&mut self, p: usize, to: usize, divergent: Vec<(u64, u64)>) -> Result<(), String> {
        self.asked = Some((to, divergent.clone()));
        if self.rng.below(3) == 0 {
            let (victim, after) = ([p, to][self.rng.below(2) as usize], self.rng.below(50 * MS));
            self.later(after, Pending::Crash(victim));
        }
        let node = &self.nodes[p];
        let Some((shared, _)) = node.volume.as_ref() else { return Ok(()) };
        let Role::Primary(cfg) = &self.roles[p] else { return Ok(()) };
        node.disks.iter().for_each(|d| d.set_immediate(true));
        let req =
            migrate::secondary_request(shared, &cfg.log, VOLUME_BLOCKS, &node.pool, addr(to), divergent);
        node.disks.iter().for_each(|d| d.set_immediate(false));
        let req = req.map_err(|e| format!("replication_create: {e}"))?;
        *shared.secondary_req.lock().expect("secondary request") = Some(req);
        shared.wake_home();
        Ok(())
    }

    /// A restarted primary ships to the secondary its superblock records (as `examine`
    /// reopens it); if the operator's request never reached it, the operator asks again.
    pub(super) fn recorded_secondary(&self, n: usize, cfg: &VolumeConfig) -> Option<SocketAddr> {
        let node = &self.nodes[n];
        node.disks.iter().for_each(|d| d.set_immediate(true));
        let sb = open::read_superblock(&cfg.log, &node.pool);
        node.disks.iter().for_each(|d| d.set_immediate(false));
        match sb {
            Ok(Some(sb)) if sb.volume_name == cfg.name => sb.setup.secondary.parse().ok(),
            _ => cfg.secondary, // formatted now: as configured
        }
    }

    /// After primary `n` opened: ask again for a secondary it did not record.
    pub(super) fn ask_again(&mut self, n: usize, recorded: Option<SocketAddr>) -> Result<(), String> {
        match (self.replica, self.asked.clone()) {
            (Some(r), Some((to, divergent))) if n == self.serving && r == to && recorded.is_none() => {
                self.event(format!("{} restarted without its secondary recorded: asked again", NAMES[n]));
                self.attach(n, to, divergent)
            }
            _ => Ok(()),
        }
    }

    /// A migration starts: the primary holds new writes until the secondary has everything.
    fn begin_migration(&mut self) -> Result<(), String> {
        let Some(r) = self.replica else { return Ok(()) };
        let up = self.nodes[r].secondary.is_some();
        let Some((shared, _)) = self.nodes[self.serving].volume.as_ref().filter(|_| up) else {
            return Ok(());
        };
        shared.draining.store(true, Ordering::Release);
        shared.wake_home();
        self.failing_over = Some(Phase::Draining { since: self.now() });
        self.event(format!("migration to {} begins: draining the primary", NAMES[r]));
        Ok(())
    }

    /// Moves a drain on: once drained, the secondary takes the new epoch with the drained end.
    pub(super) fn drain_step(&mut self, since: Nanos) -> Option<Phase> {
        let r = self.replica?;
        let Some((shared, _)) = self.nodes[self.serving].volume.as_ref() else {
            self.abandon_migration("the primary went down".into());
            return None;
        };
        let end = match migrate::drained(shared) {
            Ok(Some((end, _))) => end,
            Ok(None) if self.now() - since < DRAIN_PATIENCE => {
                return Some(Phase::Draining { since });
            }
            Ok(None) => return self.abandon_migration("the drain did not finish".into()),
            Err(e) => return self.abandon_migration(e),
        };
        let sec = self.nodes[r].secondary.clone()?;
        let req = FailoverRequest { end: Some(end), ..FailoverRequest::default() };
        match failover::begin(&sec, &req) {
            Ok((epoch, _, uuid, _, _)) => {
                self.event(format!("drained to LSN {end}: {} takes epoch {epoch}", NAMES[r]));
                Some(Phase::Applying { epoch, uuid, planned: true, pulled: Some(u64::MAX) })
            }
            Err(e) => self.abandon_migration(e),
        }
    }

    /// A migration ends without a role change: the primary takes writes again.
    pub(super) fn abandon_migration(&mut self, why: String) -> Option<Phase> {
        if let Some((shared, _)) = self.nodes[self.serving].volume.as_ref() {
            shared.draining.store(false, Ordering::Release);
            shared.wake_home();
        }
        if let Some(sec) = self.replica.and_then(|r| self.nodes[r].secondary.as_ref()) {
            sec.hold.store(false, Ordering::Release);
        }
        self.out.migrations_abandoned += 1;
        self.event(format!("migration abandoned: {why}"));
        None
    }
}

/// The disk holding node `n`'s change log as a primary.
fn roles_log(n: usize) -> usize {
    secondary_disks(n).2
}

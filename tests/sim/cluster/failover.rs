//! Operator failover in the simulator, with ferrite's own pieces: the primary is down, the
//! secondary takes the new epoch (`failover::begin`), pulls the bunker's tail with the real
//! [`Pull`] poller over the simulated network, applies everything (the real applier), is held,
//! retired and promoted (`failover::promoted`, then the volume opens as any primary does); the
//! host then writes to it. The checker requires every acknowledged write on the promoted
//! volume, and a restarted old primary fenced. A replica that fell out of step is refused (or
//! the bunker cannot bring it up to date): the failover is abandoned and the primary restarts.

use std::sync::atomic::Ordering;

use super::*;
use ferrite::replication::bunker::OUT_OF_STEP;
use ferrite::replication::secondary::failover::{self, FailoverRequest};
use ferrite::replication::secondary::pull::{Pull, PullOutcome};
use ferrite::replication::wire::Msg;

/// Where a failover is.
pub(super) enum Phase {
    /// Pulling the bunker's tail.
    Pulling { outcome: PullOutcome, epoch: u64, uuid: [u8; 16] },
    /// Waiting for the applier to apply everything, then for it to hold.
    Applying { epoch: u64, uuid: [u8; 16] },
}

impl Cluster {
    /// The operator fails over to the secondary: the primary is (or is made) down and stays
    /// down until the failover ends.
    pub(super) fn begin_failover(&mut self) -> Result<(), String> {
        if self.promoted.is_some() || self.failing_over.is_some() {
            return Ok(());
        }
        // Half the time the primary first loses its bunker for a moment, the classic prelude
        // to losing the primary: writes sent then must not have been answered.
        if self.nodes[PRIMARY].reactor.is_some() && !self.cut_before_failover && self.rng.below(2) == 0 {
            self.cut_before_failover = true;
            for (a, b) in [(PRIMARY, BUNKER), (BUNKER, PRIMARY)] {
                self.net.set_cut(a, b, true);
                let span = S + self.rng.below(2 * S);
                self.later(span, Pending::Heal(a, b));
            }
            self.event("primary <-> bunker cut before the failover".into());
            let after = 20 * MS + self.rng.below(300 * MS);
            self.later(after, Pending::Failover);
            return Ok(());
        }
        if self.nodes[PRIMARY].reactor.is_some() {
            self.crash(PRIMARY);
        }
        self.cancel_freeze();
        self.pending.retain(|_, p| !matches!(p, Pending::Restart(PRIMARY)));
        let Some(sec) = self.nodes[SECONDARY].secondary.clone() else {
            self.later(200 * MS, Pending::Failover); // the secondary is down: once it is back
            return Ok(());
        };
        let req = FailoverRequest { bunker: None, nqn: None, force: false, end: None };
        let (epoch, geo, uuid, from) = match failover::begin(&sec, &req) {
            Ok(v) => v,
            Err(e) => {
                self.abandon_failover(format!("refused: {e}"));
                return Ok(());
            }
        };
        let hello = Msg::Hello {
            volume: "vol0".into(),
            uuid,
            epoch,
            sector: geo.sector,
            ring_sectors: geo.ring_sectors,
            head: from,
        };
        let outcome = PullOutcome::default();
        let net = Net(self.net.dialer(SECONDARY));
        let node = &mut self.nodes[SECONDARY];
        let pull =
            Pull::new(sec, node.pool.clone(), (addr(BUNKER), hello, &net), geo, from, outcome.clone())?;
        node.reactor.as_mut().expect("secondary is up").add_poller(Box::new(pull), self.clock.now());
        self.failing_over = Some(Phase::Pulling { outcome, epoch, uuid });
        self.event(format!("failover begins at epoch {epoch}: pulling from LSN {from}"));
        Ok(())
    }

    fn abandon_failover(&mut self, why: String) {
        self.failing_over = None;
        self.out.failovers_refused += 1;
        self.event(format!("failover abandoned ({why}); the primary restarts"));
        let down = 50 * MS + self.rng.below(S);
        self.later(down, Pending::Restart(PRIMARY));
    }

    /// Moves a failover on; an error is a broken invariant.
    pub(super) fn failover_step(&mut self) -> Result<bool, String> {
        match self.failing_over.take() {
            None => Ok(false),
            Some(Phase::Pulling { outcome, epoch, uuid }) => {
                let result = outcome.lock().expect("pull outcome").take();
                let done = result.is_some();
                match result {
                    None => self.failing_over = Some(Phase::Pulling { outcome, epoch, uuid }),
                    Some(Ok(bytes)) => {
                        self.event(format!("pulled {bytes} bytes from the bunker"));
                        self.failing_over = Some(Phase::Applying { epoch, uuid });
                    }
                    // The bunker refused before taking the epoch: the old primary may go on.
                    Some(Err(e)) if e.contains(OUT_OF_STEP) => {
                        if let Some(sec) = self.nodes[SECONDARY].secondary.as_ref() {
                            failover::abort(sec, epoch);
                        }
                        self.abandon_failover(e)
                    }
                    Some(Err(e)) => {
                        self.event(format!("failover pull failed ({e}); the operator retries"));
                        let after = 200 * MS + self.rng.below(S);
                        self.later(after, Pending::Failover);
                    }
                }
                Ok(done)
            }
            Some(Phase::Applying { epoch, uuid }) => self.finish_failover(epoch, uuid),
        }
    }

    /// Once everything pulled is applied and the applier holds: promote.
    fn finish_failover(&mut self, epoch: u64, uuid: [u8; 16]) -> Result<bool, String> {
        let Some(sec) = self.nodes[SECONDARY].secondary.clone() else { return Ok(false) };
        let st = sec.staging.state.lock().expect("state").clone();
        if let Some(e) = st.apply_error {
            return Err(format!("failover: the replica cannot be brought up to date: {e}"));
        }
        sec.hold.store(st.applied >= st.durable_end, Ordering::Release);
        if !sec.held.load(Ordering::Acquire) {
            self.failing_over = Some(Phase::Applying { epoch, uuid });
            return Ok(false);
        }
        failover::retire(&sec, &self.nodes[SECONDARY].bunkers);
        let cfg =
            VolumeConfig { net: Net(self.net.dialer(SECONDARY)), ..failover::promoted(&sec, uuid, epoch) };
        self.nodes[SECONDARY].secondary = None;
        self.promoted = Some((uuid, epoch));
        self.serving = SECONDARY;
        self.host.failed_over();
        self.open_volume(SECONDARY, &cfg, Some("after the failover"))?;
        self.out.failovers += 1;
        self.event(format!("failover done: the secondary serves at epoch {epoch} from LSN {}", st.applied));
        // The old primary comes back later: it must find itself fenced.
        let down = 100 * MS + self.rng.below(2 * S);
        self.later(down, Pending::Restart(PRIMARY));
        Ok(true)
    }

    /// A promoted secondary restarting: its volume recovers like any primary's.
    pub(super) fn start_promoted(&mut self) -> Result<(), String> {
        let (uuid, epoch) = self.promoted.expect("promoted");
        let node = &self.nodes[SECONDARY];
        let cfg = VolumeConfig {
            name: "vol0".into(),
            data: Arc::new(node.disks[0].clone()),
            log: Arc::new(node.disks[2].clone()),
            mode: Mode::LocalOnly,
            bunker: None,
            on_bunker_loss: OnBunkerLoss::LocalOnly,
            force: false,
            secondary: None,
            identity: Some((uuid, epoch)),
            net: Net(self.net.dialer(SECONDARY)),
        };
        self.open_volume(SECONDARY, &cfg, Some("after the promoted secondary's recovery"))
    }

    /// After a failover, the cluster has converged when the promoted volume has every answer
    /// applied and a running old primary knows it is fenced.
    pub(super) fn failover_converged(&self) -> bool {
        if self.failing_over.is_some() {
            return false;
        }
        let old = self.nodes[PRIMARY].volume.as_ref();
        self.primary_settled() && old.is_none_or(|(s, _)| s.fenced.load(Ordering::Acquire))
    }
}

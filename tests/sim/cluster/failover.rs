//! Operator failover in the simulator, with ferrite's own pieces: the primary is down, the
//! secondary takes the new epoch (`failover::begin`), pulls the bunker's tail with the real
//! [`Pull`] poller over the simulated network, applies everything (the real applier), is held,
//! retired and promoted (`failover::promoted`, then the volume opens as any primary does); the
//! host then writes to it. The checker requires every acknowledged write on the promoted
//! volume, and a restarted old primary fenced (it then fails back, see [`super::roles`]). A
//! replica that fell out of step is refused (or the bunker cannot bring it up to date): the
//! failover is abandoned and the primary restarts. A migration ends the same way as a
//! failover, without the pull, and demotes the old primary at once.

use std::sync::atomic::Ordering;

use super::*;
use ferrite::replication::bunker::OUT_OF_STEP;
use ferrite::replication::secondary::failover::{self, FailoverRequest};
use ferrite::replication::secondary::pull::{Pull, PullOutcome};
use ferrite::replication::wire::Msg;

/// Where a failover (or migration) is.
pub(super) enum Phase {
    /// Migration: waiting for the primary to drain.
    Draining { since: Nanos },
    /// Pulling the bunker's tail.
    Pulling { outcome: PullOutcome, epoch: u64, uuid: [u8; 16], from: u64, pulled: Option<u64> },
    /// Waiting for the applier to apply everything, then for it to hold; `planned` for a
    /// migration; `pulled`: where the entries pulled from the bunker (by this attempt or an
    /// earlier one) begin, `None` if not known (`failover::begin`).
    Applying { epoch: u64, uuid: [u8; 16], planned: bool, pulled: Option<u64> },
}

impl Cluster {
    /// The operator fails over to the secondary: the primary is (or is made) down and stays
    /// down until the failover ends.
    pub(super) fn begin_failover(&mut self) -> Result<(), String> {
        if self.roles_changed || self.failing_over.is_some() {
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
        self.pending.retain(|_, p| !matches!(p, Pending::Restart(PRIMARY)));
        self.cancel_freeze();
        let Some(sec) = self.nodes[SECONDARY].secondary.clone() else {
            self.later(200 * MS, Pending::Failover); // the secondary is down: once it is back
            return Ok(());
        };
        let req = FailoverRequest { bunker: None, nqn: None, force: false, end: None };
        let (epoch, geo, uuid, from, pulled) = match failover::begin(&sec, &req) {
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
            end: u64::MAX,
        };
        let outcome = PullOutcome::default();
        let net = Net(self.net.dialer(SECONDARY));
        let node = &mut self.nodes[SECONDARY];
        let pull =
            Pull::new(sec, node.pool.clone(), (addr(BUNKER), hello, &net), geo, from, outcome.clone())?;
        node.reactor.as_mut().expect("secondary is up").add_poller(Box::new(pull), self.clock.now());
        self.failing_over = Some(Phase::Pulling { outcome, epoch, uuid, from, pulled });
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
            Some(Phase::Draining { since }) => {
                self.failing_over = self.drain_step(since);
                Ok(false)
            }
            Some(Phase::Pulling { outcome, epoch, uuid, from, pulled }) => {
                let result = outcome.lock().expect("pull outcome").take();
                let done = result.is_some();
                match result {
                    None => self.failing_over = Some(Phase::Pulling { outcome, epoch, uuid, from, pulled }),
                    Some(Ok(bytes)) => {
                        self.event(format!("pulled {bytes} bytes from the bunker"));
                        self.failing_over = Some(Phase::Applying { epoch, uuid, planned: false, pulled });
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
            Some(Phase::Applying { epoch, uuid, planned, pulled }) => {
                self.finish_failover(epoch, uuid, planned, pulled)
            }
        }
    }

    /// Once everything pulled is applied and the applier holds: promote; the old primary is
    /// demoted at once (migration) or restarts later and must find itself fenced (failover).
    fn finish_failover(
        &mut self,
        epoch: u64,
        uuid: [u8; 16],
        planned: bool,
        pulled: Option<u64>,
    ) -> Result<bool, String> {
        let r = self.replica.expect("a failover has a replica");
        let Some(sec) = self.nodes[r].secondary.clone() else { return Ok(false) };
        let st = sec.staging.state.lock().expect("state").clone();
        if st.apply_error.is_some() {
            // The applier stopped (a disk error, or an entry that read damaged every time):
            // the operator restarts the node soon, and the failover goes again.
            self.failing_over = Some(Phase::Applying { epoch, uuid, planned, pulled });
            return Ok(false);
        }
        sec.hold.store(st.applied >= st.durable_end, Ordering::Release);
        if !sec.held.load(Ordering::Acquire) {
            self.failing_over = Some(Phase::Applying { epoch, uuid, planned, pulled });
            return Ok(false);
        }
        let node = &self.nodes[r];
        node.disks.iter().for_each(|d| d.set_immediate(true));
        let ranges = pulled.map(|from| failover::pulled_ranges(&sec, &node.pool, from, st.durable_end));
        node.disks.iter().for_each(|d| d.set_immediate(false));
        let ranges = ranges.transpose().map_err(|e| format!("failover: {e}"))?;
        failover::retire(&sec, &self.nodes[r].bunkers);
        let cfg = VolumeConfig { net: Net(self.net.dialer(r)), ..failover::promoted(&sec, uuid, epoch) };
        self.nodes[r].secondary = None;
        let old = self.serving;
        (self.roles_changed, self.serving, self.replica) = (true, r, None);
        self.roles[r] = Role::Primary(VolumeConfig { force: false, ..cfg.clone() });
        if planned {
            // Writes held by the drain are refused: the host never learns their outcome.
            self.host.lost_primary();
            self.demote(old, false)?;
            self.open_volume(r, &cfg, Some("after the migration"))?;
            self.attach(r, old, Vec::new())?;
            self.out.migrations += 1;
            self.event(format!(
                "migration done: {} serves at epoch {epoch} from LSN {}",
                NAMES[r], st.applied
            ));
            return Ok(true);
        }
        (self.fork, self.fenced_node) = (Some(st.applied), Some(old));
        self.host.failed_over();
        self.open_volume(r, &cfg, Some("after the failover"))?;
        if let Some((shared, _)) = self.nodes[r].volume.as_ref() {
            *shared.pulled.lock().expect("pulled ranges") = ranges;
        }
        self.out.failovers += 1;
        self.event(format!("failover done: {} serves at epoch {epoch} from LSN {}", NAMES[r], st.applied));
        // The old primary comes back later: it must find itself fenced, then fails back.
        let down = 100 * MS + self.rng.below(2 * S);
        self.later(down, Pending::Restart(old));
        let after = down + self.rng.below(2 * S);
        self.later(after, Pending::Failback);
        Ok(true)
    }

    /// A crash of node `n` during a failover or migration: a failover whose secondary crashed
    /// is retried; a migration is abandoned when either side crashes (the epoch given back).
    pub(super) fn interrupt_failover(&mut self, n: usize) {
        let Some(phase) = self.failing_over.take() else { return };
        let planned = matches!(phase, Phase::Draining { .. } | Phase::Applying { planned: true, .. });
        if planned && (Some(n) == self.replica || n == self.serving) {
            if let (Phase::Applying { epoch, .. }, Some(sec)) =
                (&phase, self.replica.and_then(|r| self.nodes[r].secondary.as_ref()))
            {
                failover::abort(sec, *epoch);
            }
            self.abandon_migration(format!("{} crashed", NAMES[n]));
        } else if !planned && Some(n) == self.replica {
            self.event("failover interrupted by the secondary's crash".into());
            self.later(100 * MS, Pending::Failover);
        } else {
            self.failing_over = Some(phase);
        }
    }
}

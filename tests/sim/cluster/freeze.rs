//! The replica is checked at random moments: the secondary is held at a consistent point the
//! way `secondary_freeze` holds it (the applier's own `hold`/`held`), and its volume must then
//! be a prefix of the primary's writes ([`Host::check_prefix`]) whenever the secondary says
//! it is consistent (not while a resync, or the re-apply after a crash, is under way). Not
//! during a failover (which holds the applier itself).

use std::sync::atomic::Ordering;

use super::*;

/// A freeze that waits longer than this for the applier is given up (and counted).
const PATIENCE: Nanos = S;

impl Cluster {
    /// Starts, checks or ends a freeze of the replica; returns whether anything happened.
    pub(super) fn freeze_step(&mut self) -> Result<bool, String> {
        let now = self.now();
        let Some(r) = self.replica else {
            self.frozen_since = None;
            return Ok(false);
        };
        let Some(sec) = self.nodes[r].secondary.clone() else {
            self.frozen_since = None;
            return Ok(false);
        };
        if self.failing_over.is_some() {
            self.frozen_since = None;
            return Ok(false);
        }
        let Some(since) = self.frozen_since else {
            if now < self.next_freeze {
                return Ok(false);
            }
            sec.hold.store(true, Ordering::Release);
            self.frozen_since = Some(now);
            return Ok(true);
        };
        if !sec.held.load(Ordering::Acquire) {
            if now - since > PATIENCE {
                self.thaw(&sec);
                self.out.freezes_given_up += 1;
            }
            return Ok(false);
        }
        let (applied, consistent) = {
            let st = sec.staging.state.lock().expect("state");
            (st.applied, st.consistent())
        };
        // Held short of a consistent point: everything received is applied, the rest (a
        // resync's or a crash's span) has not arrived yet.
        if consistent {
            let image = self.nodes[r].disks[0].view();
            let when = format!("replica frozen at LSN {applied}");
            self.host.check_prefix(&image, &when).map_err(|e| format!("{e}\n{}", self.positions()))?;
            self.out.prefixes_checked += 1;
        }
        self.thaw(&sec);
        Ok(true)
    }

    /// Lets the applier go on; the next freeze comes at a seeded moment.
    fn thaw(&mut self, sec: &Secondary) {
        sec.hold.store(false, Ordering::Release);
        self.frozen_since = None;
        self.next_freeze = self.now() + self.rng.below(400 * MS);
    }

    /// A freeze in progress ends without a check (a failover takes the applier over, or the
    /// secondary went down).
    pub(super) fn cancel_freeze(&mut self) {
        if self.frozen_since.take().is_some() {
            if let Some(sec) = self.replica.and_then(|r| self.nodes[r].secondary.as_ref()) {
                sec.hold.store(false, Ordering::Release);
            }
        }
    }
}

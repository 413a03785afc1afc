//! Resync on a staging connection: the primary sends the volume blocks that differ as `Block`
//! messages (failback: the old primary's divergent tail; a dirty-map resync: every granule
//! the secondary may lack); they are written straight to the replica volume (FUA), and when
//! `ResyncDone` has arrived and every block is durable the staging log may be applied (the
//! held applier is released) and `ResyncDone` is echoed.
//!
//! A dirty-map resync opens with `ResyncStart { from }`: the connection stops taking messages,
//! waits until nothing is in flight (its own staging writes, resync blocks, the applier's
//! applies), restarts the staging log at `from`, and records in the staging superblock that
//! the replica is being resynchronised (not a consistent image: failover refuses it) before it
//! takes anything more. The end of a resync clears that record before it is echoed.

use super::*;

/// Resync progress of one connection.
#[derive(Default)]
pub(super) struct Resync {
    /// Channel to the replica volume, opened on the first block.
    ch: Option<Channel>,
    /// Block writes in flight.
    inflight: usize,
    /// `ResyncDone` received, with the count the primary sent and its `through`.
    pub done: Option<(u64, u64)>,
    /// The `through` of the last `ResyncDone`, echoed back.
    through: u64,
    /// Volume blocks written durably.
    written: u64,
    done_buf: Vec<IoCompletion>,
    /// A `ResyncStart` being carried out.
    arm: Arm,
    /// Messages that came after a `ResyncStart`, handled once the staging log restarted.
    pub deferred: VecDeque<Msg>,
    /// The end-of-resync superblock is being written; echo `ResyncDone` after it.
    echo: bool,
}

/// Where a `ResyncStart` is.
#[derive(Default, PartialEq, Eq)]
enum Arm {
    #[default]
    Idle,
    /// Waiting for nothing in flight, then restart at this LSN.
    Draining(u64),
    /// The staging superblock marking the resync is being written.
    Writing,
}

impl Resync {
    /// Messages wait while a `ResyncStart` is carried out.
    pub fn arming(&self) -> bool {
        self.arm != Arm::Idle
    }
}

impl BunkerConn {
    /// `ResyncStart`: stops the applier and begins restarting the staging log at `from`.
    pub(super) fn resync_start(&mut self, from: u64) -> Result<(), String> {
        let a = self.att.as_ref().ok_or("ResyncStart before Hello")?;
        if a.vol.data.is_none() {
            return Err("ResyncStart sent to a bunker (only a secondary resynchronises)".into());
        }
        a.vol.state.lock().expect("bunker state").resync_pending = true;
        self.resync.arm = Arm::Draining(from);
        Ok(())
    }

    /// Carries a `ResyncStart` on once nothing is in flight: restart the staging log and
    /// record the resync durably.
    pub(super) fn resync_arm(&mut self) -> bool {
        let Arm::Draining(from) = self.resync.arm else { return false };
        let Some(a) = self.att.as_mut() else { return false };
        let data = a.vol.data.clone().expect("checked at ResyncStart");
        let sb = {
            let mut st = a.vol.state.lock().expect("bunker state");
            if !self.inflight.is_empty() || self.resync.inflight > 0 || st.applies_inflight > 0 {
                return false;
            }
            (st.durable_end, st.head, st.applied) = (from, from, from);
            st.acked.clear();
            st.resets += 1;
            crate::replication::secondary::staging_superblock(&mut st, &a.vol.name, data.as_ref(), from)
        };
        self.next_lsn = from;
        (self.resync.written, self.resync.done) = (0, None);
        tracing::warn!(volume = a.vol.name, from, "secondary resynchronising: staging log restarts");
        self.resync.arm = Arm::Writing;
        self.write_staging_super(&sb);
        true
    }

    /// Handles the messages held back by a `ResyncStart` once it is carried out.
    pub(super) fn handle_deferred(&mut self, cx: &mut PollCtx<'_>) -> bool {
        let mut work = false;
        while !self.resync.arming() && !self.closing {
            let Some(m) = self.resync.deferred.pop_front() else { break };
            self.handle(cx, m);
            work = true;
        }
        work
    }

    fn write_staging_super(&mut self, sb: &Superblock) {
        let Some(a) = self.att.as_mut() else { return };
        let Some(io) = sb.write_io(&self.pool, RESYNC_SB_TAG) else {
            return self.refuse("out of DMA buffers for the staging superblock".into());
        };
        if a.ch.submit(io).is_err() {
            self.refuse("staging log queue full writing its superblock".into());
        }
    }

    /// A resync's staging superblock is durable: take messages again, or echo the end.
    pub(super) fn resync_sb_done(&mut self, c: IoCompletion) {
        if !c.status.is_success() {
            return self.refuse(format!("writing the staging superblock: {}", c.status));
        }
        if self.resync.arm == Arm::Writing {
            self.resync.arm = Arm::Idle;
        }
        if std::mem::take(&mut self.resync.echo) {
            self.framed.queue(&Msg::ResyncDone { blocks: self.resync.written, through: self.resync.through });
        }
    }

    /// Checks and writes one resync block.
    pub(super) fn resync_block(&mut self, cx: &mut PollCtx<'_>, lba: u64, data: &[u8]) -> Result<(), String> {
        let a = self.att.as_ref().ok_or("Block before Hello")?;
        let vol =
            a.vol.data.clone().ok_or("Block sent to a bunker (only a secondary takes resync blocks)")?;
        let bs = vol.block_size() as usize;
        let blocks = (data.len() / bs.max(1)) as u64;
        if data.is_empty() || data.len() % bs != 0 || data.len() > self.pool.buf_size() {
            return Err(format!(
                "resync block at LBA {lba}: {} bytes is not whole blocks within one buffer",
                data.len()
            ));
        }
        if lba.checked_add(blocks).is_none_or(|end| end > vol.num_blocks()) {
            return Err(format!("resync block at LBA {lba} (+{blocks}) lies beyond the volume"));
        }
        if self.resync.ch.is_none() {
            let ch = Channel::new(vol).map_err(|e| e.to_string())?;
            for fd in ch.wake_fds() {
                if cx.watch_eventfd(fd).is_ok() {
                    self.watching.push(fd);
                }
            }
            self.resync.ch = Some(ch);
        }
        let mut buf = self.pool.alloc().ok_or("out of DMA buffers for resync")?;
        buf.set_len(data.len());
        buf.as_mut_slice().copy_from_slice(data);
        let io = BdevIo {
            ty: IoType::Write,
            offset_blocks: lba,
            num_blocks: blocks as u32,
            buf: Some(buf),
            fua: true,
            tag: blocks,
        };
        let ch = self.resync.ch.as_mut().expect("opened above");
        ch.submit(io).map_err(|_| "replica volume queue full during resync".to_string())?;
        self.resync.inflight += 1;
        Ok(())
    }

    /// Collects block writes; releases the applier once everything announced is durable.
    pub(super) fn resync_reap(&mut self) -> bool {
        let mut work = false;
        if let Some(ch) = self.resync.ch.as_mut() {
            let mut done = std::mem::take(&mut self.resync.done_buf);
            ch.poll(&mut done);
            for c in done.drain(..) {
                work = true;
                self.resync.inflight -= 1;
                if !c.status.is_success() {
                    self.refuse(format!("writing a resync block to the replica: {}", c.status));
                }
                self.resync.written += c.tag;
            }
            self.resync.done_buf = done;
        }
        if let (Some((sent, through)), 0) = (self.resync.done, self.resync.inflight) {
            (self.resync.done, self.resync.through) = (None, through);
            let Some(a) = self.att.as_ref() else { return work };
            let data = a.vol.data.clone();
            let sb = {
                let mut st = a.vol.state.lock().expect("bunker state");
                st.resync_pending = false;
                st.consistent_at = st.consistent_at.max(through);
                st.resync_blocks += self.resync.written;
                let applied = st.applied;
                data.map(|d| {
                    crate::replication::secondary::staging_superblock(
                        &mut st,
                        &a.vol.name,
                        d.as_ref(),
                        applied,
                    )
                })
            };
            tracing::info!(
                volume = a.vol.name,
                blocks = self.resync.written,
                sent,
                "resync durable: applying the log"
            );
            if let Some(w) = a.vol.waker.lock().expect("waker").clone() {
                w.ring_doorbell_if_sleeping();
            }
            // The echo waits until the staging superblock no longer says "resynchronising".
            match sb {
                Some(sb) => {
                    self.resync.echo = true;
                    self.write_staging_super(&sb);
                }
                None => self
                    .framed
                    .queue(&Msg::ResyncDone { blocks: self.resync.written, through: self.resync.through }),
            }
            work = true;
        }
        work
    }
}

//! Background duties of the home poller: checkpoints, bunker catch-up, trims, status, and the
//! `Poller` glue.

use super::*;
use std::sync::atomic::Ordering;

impl VolumeCore {
    /// Starts a checkpoint when due: flush the volume, then record `applied` in the superblock.
    pub(super) fn maybe_checkpoint(&mut self, now: Nanos) -> bool {
        let applied = self.shared.log.applied();
        // The head waits for checkpoints: with a quarter of the ring since the last one, the
        // next one is due at once.
        // So is one recording a dropped secondary, which holds the head until it is durable.
        let urgent =
            applied.saturating_sub(self.checkpointed) > self.geo.ring_sectors / 4 || self.oos_hold.is_some();
        if !matches!(self.checkpoint, Checkpoint::Idle)
            || (now < self.next_checkpoint && !urgent)
            || (applied == self.sb.checkpoint_lsn && !self.sb_dirty)
        {
            return false;
        }
        self.next_checkpoint = now + CHECKPOINT_EVERY;
        if self.data_ch.submit(BdevIo::flush(tag(0, K_FLUSH))).is_ok() {
            self.checkpoint = Checkpoint::Flushing(applied);
            self.sb_dirty = false;
        }
        true
    }

    pub(super) fn on_checkpoint(&mut self, kind: u64, status: IoStatus) {
        if !status.is_success() {
            tracing::error!(volume = self.shared.name, %status, "checkpoint failed; will retry");
            self.checkpoint = Checkpoint::Idle;
            return;
        }
        match (kind, std::mem::replace(&mut self.checkpoint, Checkpoint::Idle)) {
            (K_FLUSH, Checkpoint::Flushing(lsn)) => self.checkpoint_map(lsn),
            (K_MAP, Checkpoint::Map { lsn, bitmap, at, floor, oos }) => {
                self.checkpoint = Checkpoint::Map { lsn, bitmap, at, floor, oos };
                self.write_map_chunk();
            }
            (K_SUPER, Checkpoint::Writing { oos }) => {
                self.checkpointed = self.sb.checkpoint_lsn;
                if oos && self.oos {
                    self.oos_hold = None;
                }
            }
            _ => {}
        }
    }

    /// The volume is flushed up to `lsn`: write the dirty-block map (relative to its floor,
    /// which follows the head while the secondary is in step), then the superblock.
    fn checkpoint_map(&mut self, lsn: u64) {
        let head = self.shared.log.head();
        if !self.oos {
            self.floor = self.floor.max(head);
        }
        let Some(map) = self.dirty.as_ref() else {
            return self.write_checkpoint_super(lsn, self.floor, self.oos);
        };
        let mut bitmap = vec![0u8; (map.sectors(self.geo.sector) * u64::from(self.geo.sector)) as usize];
        map.encode(self.floor, &mut bitmap);
        self.checkpoint = Checkpoint::Map { lsn, bitmap, at: 0, floor: self.floor, oos: self.oos };
        self.write_map_chunk();
    }

    /// Writes the next piece of the map, or the superblock once it is all written.
    fn write_map_chunk(&mut self) {
        let Checkpoint::Map { lsn, bitmap, at, floor, oos } = &mut self.checkpoint else { return };
        if *at >= bitmap.len() {
            let (lsn, floor, oos) = (*lsn, *floor, *oos);
            return self.write_checkpoint_super(lsn, floor, oos);
        }
        let n = (bitmap.len() - *at).min(self.pool.buf_size());
        let Some(mut buf) = self.pool.alloc() else {
            self.checkpoint = Checkpoint::Idle;
            return;
        };
        buf.set_len(n);
        buf.as_mut_slice().copy_from_slice(&bitmap[*at..*at + n]);
        let sector = self.geo.sector as usize;
        let io = BdevIo {
            ty: IoType::Write,
            offset_blocks: self.geo.ring_start + self.geo.ring_sectors + (*at / sector) as u64,
            num_blocks: (n / sector) as u32,
            buf: Some(buf),
            fua: true,
            tag: tag(0, K_MAP),
        };
        *at += n;
        if self.log_ch.submit(io).is_err() {
            self.checkpoint = Checkpoint::Idle;
        }
    }

    fn write_checkpoint_super(&mut self, lsn: u64, floor: u64, oos: bool) {
        let sb = Superblock {
            generation: self.sb.generation + 1,
            checkpoint_lsn: lsn,
            head_lsn: self.shared.log.head().min(lsn),
            out_of_sync: oos,
            resync_floor: floor,
            ..self.sb.clone()
        };
        let Some(io) = sb.write_io(&self.pool, tag(0, K_SUPER)) else { return };
        if self.log_ch.submit(io).is_ok() {
            self.sb = sb;
            self.checkpoint = Checkpoint::Writing { oos };
        }
    }

    /// Streams committed log bytes the bunker missed, from the in-memory ring while it holds
    /// them, else from the local log.
    pub(super) fn catch_up_step(&mut self) -> bool {
        let (Some(from), Some(to)) = (self.catch_up, self.catch_up_to) else { return false };
        if self.catch_up_read.is_some() || !self.link_up() {
            return false;
        }
        if from >= to {
            (self.catch_up, self.catch_up_to) = (None, None);
            return false;
        }
        // Only what is committed is surely in the local log; the rest follows as it commits.
        let committed = self.shared.log.committed().min(to);
        if from >= committed {
            return false;
        }
        let per_buf = (self.pool.buf_size() / self.geo.sector as usize) as u64;
        let n = (committed - from).min(per_buf).min(self.geo.until_wrap(from));
        if let Some(data) = self.mem.as_ref().and_then(|m| m.get(from, n)) {
            // From memory: exactly what was written, no read and nothing to check.
            let sent = data.len() as u64 / u64::from(self.geo.sector);
            let queued = self.link.as_mut().is_some_and(|l| l.write_at(from, data));
            self.catch_up = Some(from + if queued { sent } else { 0 });
            return queued;
        }
        let Some(mut buf) = self.pool.alloc() else { return false };
        buf.set_len(n as usize * self.geo.sector as usize);
        let io = BdevIo {
            ty: IoType::Read,
            offset_blocks: self.geo.block_of(from),
            num_blocks: n as u32,
            buf: Some(buf),
            fua: false,
            tag: tag(0, K_CATCHUP),
        };
        self.catch_up_read = self.log_ch.submit(io).is_ok().then_some(from);
        self.catch_up_read.is_some()
    }

    pub(super) fn on_catch_up_read(&mut self, c: IoCompletion) {
        // The catch-up may have restarted (link up again) while this read ran: only bytes read
        // for the current position go out.
        let read = self.catch_up_read.take();
        let (Some(from), Some(buf)) = (self.catch_up.filter(|f| Some(*f) == read), c.buf) else { return };
        if !c.status.is_success() {
            tracing::error!(volume = self.shared.name, status = %c.status, "reading the log for bunker catch-up");
            return;
        }
        let n = self.catch_up_checked(from, buf.as_slice());
        let bytes = &buf.as_slice()[..n as usize * self.geo.sector as usize];
        if n > 0 && self.link.as_mut().is_some_and(|l| l.write_at(from, bytes)) {
            self.catch_up = Some(from + n);
        }
    }

    /// How many sectors of a catch-up read from `from` may go to the bunker: whole entries
    /// that pass their checksums (the bunker acknowledges what it gets, and a failover would
    /// pull it: a misread must not get there). A damaged entry is read again; after
    /// [`READS`](crate::replication::recovery::READS) damaged reads in a row (the log itself
    /// is damaged there, or the catch-up does not start at an entry) the bytes up to the next
    /// entry go as read, and the check resumes there.
    fn catch_up_checked(&mut self, from: u64, bytes: &[u8]) -> u64 {
        use crate::replication::format::{damaged_span, whole_entries};
        let whole = whole_entries(bytes, from, self.geo.sector);
        if whole.sectors > 0 || !whole.damaged {
            // Nothing whole and nothing damaged: an entry longer than the read (not made).
            let all = (bytes.len() / self.geo.sector as usize) as u64;
            return if whole.sectors > 0 { whole.sectors } else { all };
        }
        let count = if self.catch_up_damaged.0 == from { self.catch_up_damaged.1 + 1 } else { 1 };
        self.catch_up_damaged = (from, count);
        if count < crate::replication::recovery::READS {
            tracing::warn!(
                volume = self.shared.name,
                lsn = from,
                "catch-up read a damaged entry: reading it again"
            );
            return 0;
        }
        tracing::error!(
            volume = self.shared.name,
            lsn = from,
            "the change log entry for the bunker reads damaged every time: sent as read"
        );
        self.catch_up_damaged = (0, 0);
        damaged_span(bytes, from, self.geo.sector)
    }

    pub(super) fn publish(&mut self, now: Nanos) {
        if now < self.next_status {
            return;
        }
        self.next_status = now + STATUS_EVERY;
        if let Some(link) = self.link.as_mut() {
            link.send(&Msg::Trim { head: self.shared.log.head() });
        }
        self.take_secondary();
        let secondary = self.ship_status(now);
        let Ok(mut st) = self.shared.status.try_lock() else { return };
        let log = &self.shared.log;
        let q = |v: f64| self.latency.value_at_quantile(v) as f64;
        *st = VolumeStatus {
            mode: Some(self.mode),
            ack: Some(self.ack),
            bunker: self.link.as_ref().map(|l| l.addr().to_string()),
            bunker_link: self.link.as_ref().map_or("none", |l| ship::link_state(l.state())).into(),
            epoch: self.sb.epoch,
            fenced: self.shared.fenced.load(Ordering::Acquire),
            secondary,
            bunker_rtt_us: self.link.as_ref().and_then(|l| l.rtt_us()),
            alarm: self.alarm.clone(),
            tail: log.tail(),
            committed: log.committed(),
            applied: log.applied(),
            head: log.head(),
            bunker_durable: self.bunker_end,
            bunker_catch_up: self.catch_up.filter(|_| self.catch_up_to.is_some()),
            bunker_catch_up_reading: self.catch_up_read.is_some(),
            checkpoint: self.sb.checkpoint_lsn,
            log_fill: log.fill(),
            writes: self.writes,
            write_latency_us: WriteLatency {
                p50: q(0.5),
                p99: q(0.99),
                p999: q(0.999),
                max: self.latency.max() as f64,
            },
        };
    }
}

impl Poller for VolumeCore {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        self.watch(cx);
        let now = cx.now;
        let mut work = self.on_link(now);
        work |= self.ship_link(now);
        work |= self.intake(cx.precise_now());
        work |= self.reap();
        work |= self.resend();
        work |= self.finish_ready(cx.precise_now());
        work |= self.serve_reads();
        self.advance();
        work |= self.catch_up_step();
        work |= self.ship_step(cx.precise_now());
        work |= self.resync_step();
        self.ship_guard();
        work |= self.maybe_checkpoint(now);
        self.publish(now);
        if let Some(at) = self.wake.take() {
            cx.wake_at(at);
        }
        let idle = self.live == 0 && self.read_slots.iter().all(Option::is_none);
        if self.shared.stopped.load(Ordering::Acquire) && idle && !work {
            self.fail_waiting();
            if self.shared.deleted.load(Ordering::Acquire) {
                for fd in self.watched.drain(..).chain(self.link_fd.take()) {
                    cx.unwatch_fd(fd);
                }
                self.shared.closed.store(true, Ordering::Release);
                return PollStatus::Done;
            }
        }
        PollStatus::from_work(work)
    }
}

impl VolumeCore {
    /// Picks up a secondary named by `replication_create`, and records it in the superblock.
    fn take_secondary(&mut self) {
        let Some(req) = self.shared.secondary_req.try_lock().ok().and_then(|mut g| g.take()) else {
            return;
        };
        if self.ship.is_some() {
            return;
        }
        let (log, origin) = (&self.shared.log, self.shared.origin_lsn);
        let intact = log.tail() - origin <= self.geo.ring_sectors / 2;
        // Asked while the log still held everything since its origin, but no longer: the
        // whole volume is resent instead.
        let everything = (vec![(0, self.sb.volume_blocks)], log.committed());
        let resend = req.resend.or_else(|| (!intact).then_some(everything));
        let from = match (resend, self.dirty.as_mut()) {
            // Blocks resent from the dirty-block map (failback, initial synchronisation):
            // marked now, recorded with the floor and "out of step" at the next checkpoint;
            // the secondary is resynchronised when it attaches, with shipping from the head.
            (Some((ranges, floor)), Some(map)) => {
                let tail = log.tail();
                for (lba, blocks) in ranges {
                    map.mark(lba, blocks, tail);
                }
                (self.oos, self.floor, self.oos_hold) = (true, floor, Some(log.head()));
                log.head()
            }
            // The log still holds everything since its origin: ship from there, holding the head.
            _ if intact => {
                log.lower_head(origin);
                origin
            }
            _ => {
                self.alarm =
                    Some("the secondary came too late: the volume needs an initial synchronisation".into());
                return;
            }
        };
        self.sb.setup.secondary = req.addr.to_string();
        self.sb_dirty = true;
        let shipper = ship::Shipper::new(req.addr, Self::hello(&self.shared, &self.sb), from, &self.net);
        self.ship = Some(if req.resync.is_empty() { shipper } else { shipper.with_resync(req.resync) });
        if self.mem.is_none() {
            self.mem = Self::memlog(&self.shared);
        }
        tracing::info!(volume = self.shared.name, secondary = %req.addr, "shipping to the secondary");
    }

    fn fail_waiting(&mut self) {
        self.sort_queued();
        if self.shared.fenced.load(Ordering::Acquire) || self.shared.deleted.load(Ordering::Acquire) {
            for req in self.reads.drain(..) {
                let c = IoCompletion { tag: req.io.tag, status: IoStatus::Aborted, buf: req.io.buf };
                let _ = req.reply.push(c);
                req.notify.notify();
            }
        }
        while let Some(req) = self.waiting.pop_front() {
            let c = IoCompletion { tag: req.io.tag, status: IoStatus::Aborted, buf: req.io.buf };
            let _ = req.reply.push(c);
            req.notify.notify();
        }
    }
}

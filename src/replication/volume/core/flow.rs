//! The steps of a volume's home poller, each bounded and non-blocking.

use super::*;

impl VolumeCore {
    /// Starts queued writes while there are free slots, log space and no overlap; reads handed
    /// over go to their own queue.
    pub(super) fn intake(&mut self, now: Nanos) -> bool {
        let mut work = false;
        let halt = |f: &std::sync::atomic::AtomicBool| f.load(std::sync::atomic::Ordering::Acquire);
        if !self.confirmed || halt(&self.shared.draining) {
            return false;
        }
        // A stopped volume starts no write (they wait to be failed once the slots drain); its
        // reads still go to their queue.
        if halt(&self.shared.stopped) {
            return self.sort_queued();
        }
        while let Some(slot) = self.slots.iter().position(Option::is_none) {
            let Some(req) = self.next_write() else { break };
            let busy = self.slots[..self.live]
                .iter()
                .flatten()
                .any(|s| s.overlaps(req.io.offset_blocks, req.io.num_blocks));
            if busy {
                self.waiting.push_front(req);
                break;
            }
            if !self.start(slot, req, now) {
                break;
            }
            work = true;
        }
        self.issue_batch();
        // Keep order: anything behind a blocked write waits behind it.
        if !self.waiting.is_empty() {
            self.sort_queued();
        }
        work
    }

    /// The next write to start, parking any handed-over reads met on the way.
    fn next_write(&mut self) -> Option<VolReq> {
        if let Some(req) = self.waiting.pop_front() {
            return Some(req);
        }
        while let Some(req) = self.shared.requests.pop() {
            if req.io.ty != IoType::Read {
                return Some(req);
            }
            self.reads.push_back(req);
        }
        None
    }

    /// Moves every queued request to its own queue (reads, or writes waiting); true if any.
    pub(super) fn sort_queued(&mut self) -> bool {
        let mut any = false;
        while let Some(req) = self.shared.requests.pop() {
            self.sort_request(req);
            any = true;
        }
        any
    }

    fn sort_request(&mut self, req: VolReq) {
        if req.io.ty == IoType::Read {
            self.reads.push_back(req);
        } else {
            self.waiting.push_back(req);
        }
    }

    /// Reserves, builds and issues one write; false (request parked) when it must wait.
    pub(super) fn start(&mut self, slot: usize, req: VolReq, now: Nanos) -> bool {
        let (kind, sectors) = self.entry_sectors(&req);
        let res = match self.shared.log.reserve(sectors) {
            Ok(r) => r,
            Err(_) => {
                self.waiting.push_front(req);
                return false;
            }
        };
        self.shared.pending.set(slot, req.io.offset_blocks, req.io.num_blocks);
        if let Some(m) = self.dirty.as_mut() {
            m.mark(req.io.offset_blocks, u64::from(req.io.num_blocks), res.lsn);
        }
        let exhausted = "DMA pool exhausted with a log reservation held: size the pool for MAX_INFLIGHT";
        let entry = self.build_entry(&req, kind, res.lsn, sectors).expect(exhausted);
        let pad = res.pad.map(|(l, n)| self.pad_entry(l, n).expect(exhausted));
        if let Some(m) = self.mem.as_mut() {
            if let (Some((plsn, _)), Some(p)) = (res.pad, pad.as_ref()) {
                m.append(plsn, p.as_slice());
            }
            m.append(res.lsn, entry.as_slice());
        }
        let (mut sent, mut pad_sent) = (self.link.is_none(), self.link.is_none() || pad.is_none());
        if let Some(link) = self.link.as_mut() {
            if let (Some((plsn, _)), Some(p)) = (res.pad, pad.as_ref()) {
                pad_sent = link.write_at(plsn, p.as_slice());
            }
            sent = pad_sent && link.write_at(res.lsn, entry.as_slice());
        }
        if let (Some((plsn, _)), Some(p)) = (res.pad, pad.as_ref()) {
            let mut copy = self.pool.alloc().expect(exhausted);
            copy.set_len(p.len());
            copy.as_mut_slice().copy_from_slice(p.as_slice());
            self.issue_log(slot, K_PAD, plsn, copy);
        }
        let len = req.io.buf.as_ref().map(|b| b.len());
        let f = Inflight {
            req,
            len,
            res,
            entry: Some(entry),
            batch: None,
            sent,
            pad_sent,
            pad_local: pad.is_none(),
            pad,
            local: false,
            volume: false,
            answered: false,
            applied: true,
            status: IoStatus::Success,
            started: now,
        };
        self.slots[slot] = Some(f);
        self.live = self.live.max(slot + 1);
        self.batch_add(slot, res.lsn, res.sectors);
        true
    }

    pub(super) fn issue_log(&mut self, slot: usize, kind: u64, lsn: u64, buf: DmaBuf) {
        let io = BdevIo {
            ty: IoType::Write,
            offset_blocks: self.geo.block_of(lsn),
            num_blocks: (buf.len() / self.geo.sector as usize) as u32,
            buf: Some(buf),
            fua: true,
            tag: tag(slot, kind),
        };
        if self.log_ch.submit(io).is_err() {
            panic!("log channel queue full: sized for MAX_INFLIGHT");
        }
    }

    pub(super) fn issue_volume(&mut self, slot: usize) {
        let s = self.slots[slot].as_mut().expect("live slot");
        let io = BdevIo {
            ty: s.req.io.ty,
            offset_blocks: s.req.io.offset_blocks,
            num_blocks: s.req.io.num_blocks,
            buf: s.req.io.buf.take(),
            fua: false,
            tag: tag(slot, K_VOLUME),
        };
        if let Err(io) = self.data_ch.submit(io) {
            s.req.io.buf = io.buf;
            self.volume_failed(slot, IoStatus::IoError(libc::EAGAIN));
        }
    }

    /// A volume write failed: the entry stays unapplied in the log (recovery re-applies it) and
    /// the volume stops taking writes, since the host may have its answer already. Its blocks
    /// stay published as pending (no write starts on a stopped volume to reuse the slot), so
    /// reads of them fail instead of returning what the data bdev holds.
    fn volume_failed(&mut self, slot: usize, status: IoStatus) {
        tracing::error!(volume = self.shared.name, %status, "volume write failed: the volume stops taking writes; the change log keeps the entry");
        self.shared.stopped.store(true, std::sync::atomic::Ordering::Release);
        let s = self.slots[slot].as_mut().expect("live slot");
        s.volume = true;
        s.applied = false;
        if !s.answered {
            s.status = status;
        }
    }

    /// Collects device completions.
    pub(super) fn reap(&mut self) -> bool {
        let mut done = std::mem::take(&mut self.completions);
        self.log_ch.poll(&mut done);
        self.data_ch.poll(&mut done);
        let work = !done.is_empty();
        for c in done.drain(..) {
            self.on_device(c);
        }
        self.completions = done;
        work
    }

    pub(super) fn on_device(&mut self, c: IoCompletion) {
        let (slot, kind) = ((c.tag >> 8) as usize, c.tag & 0xFF);
        match kind {
            K_FLUSH | K_SUPER | K_MAP => return self.on_checkpoint(kind, c.status),
            K_BATCH => return self.on_batch(slot, c.status),
            K_CATCHUP => return self.on_catch_up_read(c),
            K_READ => return self.on_read(slot, c),
            K_SHIP => return self.on_ship_read(slot, c),
            K_RESYNC => return self.on_resync_read(c),
            K_VOLUME if !c.status.is_success() => return self.volume_failed(slot, c.status),
            _ => {}
        }
        if kind == K_LOG {
            return self.log_done(slot, c.status, c.buf);
        }
        let s = self.slots[slot].as_mut().expect("completion for a live slot");
        if !c.status.is_success() && !s.answered {
            s.status = c.status;
        }
        match kind {
            K_PAD => s.pad_local = true,
            K_VOLUME => {
                s.volume = true;
                s.req.io.buf = c.buf;
                self.shared.pending.clear(slot);
            }
            _ => unreachable!("unknown tag kind {kind}"),
        }
    }

    /// A slot's log entry is written (durable: FUA) or failed; `buf` is the entry's buffer
    /// when it went alone.
    pub(super) fn log_done(&mut self, slot: usize, status: IoStatus, buf: Option<DmaBuf>) {
        let s = self.slots[slot].as_mut().expect("completion for a live slot");
        if !status.is_success() && !s.answered {
            s.status = status;
        }
        s.local = true;
        if buf.is_some() {
            s.entry = buf;
        }
        if status.is_success() {
            return self.issue_volume(slot);
        }
        tracing::error!(volume = self.shared.name, %status, "change log write failed: the volume stops taking writes");
        self.shared.stopped.store(true, std::sync::atomic::Ordering::Release);
        s.volume = true;
        s.applied = false;
        self.shared.pending.clear(slot);
    }

    /// Answers writes whose log copies are durable (per mode), and retires those whose volume
    /// write is done too.
    pub(super) fn finish_ready(&mut self, now: Nanos) -> bool {
        let mut work = false;
        for i in 0..self.live {
            let Some(s) = self.slots[i].as_ref() else { continue };
            let volume_ok = s.volume || self.ack == Ack::Durable;
            if !s.answered && s.local && s.pad_local && volume_ok && self.bunker_ok(s) {
                work |= self.answer(i, now);
            }
            if self.slots[i].as_ref().is_some_and(|s| s.answered && s.volume) {
                self.retire(i);
                work = true;
            }
        }
        work
    }

    /// Answers the host; false when no buffer can be handed back yet (it then waits for the
    /// volume write to return the host's own).
    fn answer(&mut self, slot: usize, now: Nanos) -> bool {
        let Some(buf) = self.reply_buf(slot) else { return false };
        let s = self.slots[slot].as_mut().expect("live slot");
        s.answered = true;
        let c = IoCompletion { tag: s.req.io.tag, status: s.status, buf };
        let _ = self.latency.record(now.saturating_sub(s.started).max(1) / 1000);
        self.writes += 1;
        reply(&s.req, c);
        true
    }

    /// A completion hands a buffer of the request's length back: the host's own once the
    /// volume write returned it, else a fresh one (a write's answer carries no data; the entry
    /// stays with the slot, since reads of its blocks are served from it until the volume write
    /// is done). `Some(None)` for requests without a buffer.
    fn reply_buf(&mut self, slot: usize) -> Option<Option<DmaBuf>> {
        let s = self.slots[slot].as_mut().expect("live slot");
        let Some(len) = s.len else { return Some(None) };
        if s.volume {
            return Some(s.req.io.buf.take());
        }
        let mut buf = self.pool.alloc()?;
        buf.set_len(len);
        Some(Some(buf))
    }

    /// Frees a slot: its entry may now count as applied (unless its volume write failed).
    fn retire(&mut self, slot: usize) {
        let s = self.slots[slot].take().expect("retired slot");
        while self.live > 0 && self.slots[self.live - 1].is_none() {
            self.live -= 1;
        }
        if !(s.sent && s.pad_sent) {
            // Answered without reaching the bunker (local-only, or the link down): the bunker
            // gets it from the local log.
            self.catch_up_through(self.shared.log.tail());
        }
        if !s.applied {
            return;
        }
        if let Some((plsn, pn)) = s.res.pad {
            self.shared.log.finish(plsn, pn);
        }
        self.shared.log.finish(s.res.lsn, s.res.sectors);
    }

    /// Sends to the bunker what could not be queued earlier (link down or send queue full).
    pub(super) fn resend(&mut self) -> bool {
        let Some(link) = self.link.as_mut() else { return false };
        if link.state() != LinkState::Up {
            return false;
        }
        let mut work = false;
        for s in self.slots[..self.live].iter_mut().flatten() {
            if !s.pad_sent {
                if let (Some((plsn, _)), Some(p)) = (s.res.pad, s.pad.as_ref()) {
                    s.pad_sent = link.write_at(plsn, p.as_slice());
                    work |= s.pad_sent;
                }
            }
            if s.pad_sent && !s.sent {
                if let Some(e) = s.entry.as_ref() {
                    s.sent = link.write_at(s.res.lsn, e.as_slice());
                    work |= s.sent;
                }
            }
        }
        work
    }

    /// Moves positions: committed, applied, head.
    pub(super) fn advance(&mut self) {
        let log = &self.shared.log;
        let committed = log.advance_committed();
        log.set_applied(committed);
        // Entries after the durable checkpoint are needed by recovery (their volume writes may
        // be only in a volatile cache), and by the bunker until it holds them.
        let mut head = committed.min(self.checkpointed);
        if self.link.is_some() {
            head = head.min(self.bunker_end);
        }
        if let Some(held) = self.ship.as_ref().and_then(|s| s.holds()) {
            head = head.min(held.max(log.head()));
        }
        // A secondary just dropped: its entries stay until the superblock says it is out of
        // step (else a crash would forget that and ship it overwritten entries).
        if let Some(held) = self.oos_hold {
            head = head.min(held.max(log.head()));
        }
        if head > log.head() {
            log.set_head(head);
        }
    }

    pub(super) fn on_link(&mut self, now: Nanos) -> bool {
        let Some(link) = self.link.as_mut() else { return false };
        let mut work = link.poll(now, &mut self.events);
        for ev in std::mem::take(&mut self.events) {
            work = true;
            match ev {
                LinkEvent::Up { durable_end } => self.on_link_up(durable_end),
                LinkEvent::Down { .. } if self.shared.fenced.load(std::sync::atomic::Ordering::Acquire) => {}
                LinkEvent::Down { why } => {
                    // The next attach says where the log ends now (see `Msg::Hello::end`).
                    let hello = Self::hello(&self.shared, &self.sb);
                    if let Some(l) = self.link.as_mut() {
                        l.set_hello(hello);
                    }
                    self.alarm = Some(format!(
                        "bunker unreachable ({why}); {}",
                        match self.on_loss {
                            OnBunkerLoss::LocalOnly => "serving on the local log alone",
                            OnBunkerLoss::Stall => "writes stall until it returns",
                        }
                    ));
                    tracing::warn!(volume = self.shared.name, alarm = self.alarm.as_deref(), "bunker lost");
                }
                LinkEvent::Acked { lsn, sectors } => self.on_ack(lsn, sectors),
                LinkEvent::Message(Msg::Fenced { epoch }) => self.fence(epoch),
                LinkEvent::Message(m) => {
                    tracing::debug!(volume = self.shared.name, ?m, "unexpected bunker message")
                }
            }
        }
        work
    }

    pub(super) fn on_link_up(&mut self, durable_end: u64) {
        if !self.confirmed {
            self.confirmed = true;
            self.shared.serving.store(true, std::sync::atomic::Ordering::Release);
            tracing::info!(
                volume = self.shared.name,
                epoch = self.sb.epoch,
                "bunker confirmed the epoch: serving"
            );
        }
        let head = self.shared.log.head();
        self.bunker_end = durable_end.max(head);
        self.bunker_acked.retain(|&l, _| l >= self.bunker_end);
        for s in self.slots[..self.live].iter_mut().flatten() {
            s.sent = false;
            s.pad_sent = s.pad.is_none();
        }
        // Everything reserved so far that the bunker may lack goes again from the local log as
        // it commits (slots retire out of order, so live slots do not bound what is missing);
        // live slots are resent as well, and the bunker takes the same bytes twice.
        (self.catch_up, self.catch_up_to) = (None, None);
        self.catch_up_through(self.shared.log.tail());
        self.alarm = None;
    }

    /// Makes the bunker catch-up cover `[bunker_end, to)`.
    fn catch_up_through(&mut self, to: u64) {
        if self.bunker_end >= to {
            return;
        }
        self.catch_up = Some(self.catch_up.map_or(self.bunker_end, |c| c.min(self.bunker_end)));
        self.catch_up_to = Some(self.catch_up_to.map_or(to, |t| t.max(to)));
    }

    pub(super) fn on_ack(&mut self, lsn: u64, sectors: u32) {
        crate::replication::log::advance_contiguous(
            &mut self.bunker_acked,
            &mut self.bunker_end,
            lsn,
            sectors,
        );
    }
}

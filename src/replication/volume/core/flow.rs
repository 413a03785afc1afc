//! The steps of a volume's home poller, each bounded and non-blocking.

use super::*;

impl VolumeCore {
    /// Starts queued writes while there are free slots, log space and no overlap.
    pub(super) fn intake(&mut self, now: Nanos) -> bool {
        let mut work = false;
        while let Some(slot) = self.slots.iter().position(Option::is_none) {
            let Some(req) = self.waiting.pop_front().or_else(|| self.shared.requests.pop()) else { break };
            let busy =
                self.slots.iter().flatten().any(|s| s.overlaps(req.io.offset_blocks, req.io.num_blocks));
            if busy {
                self.waiting.push_front(req);
                break;
            }
            if !self.start(slot, req, now) {
                break;
            }
            work = true;
        }
        // Keep order: anything behind a blocked write waits behind it.
        if !self.waiting.is_empty() {
            while let Some(req) = self.shared.requests.pop() {
                self.waiting.push_back(req);
            }
        }
        work
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
        let exhausted = "DMA pool exhausted with a log reservation held: size the pool for MAX_INFLIGHT";
        let entry = self.build_entry(&req, kind, res.lsn, sectors).expect(exhausted);
        let pad = res.pad.map(|(l, n)| self.pad_entry(l, n).expect(exhausted));
        let (mut sent, mut pad_sent) = (self.link.is_none(), self.link.is_none() || pad.is_none());
        if let Some(link) = self.link.as_mut() {
            if let (Some((plsn, _)), Some(p)) = (res.pad, pad.as_ref()) {
                pad_sent = link.write_at(plsn, p.as_slice());
            }
            sent = pad_sent && link.write_at(res.lsn, entry.as_slice());
        }
        self.issue_log(slot, K_LOG, res.lsn, entry);
        if let (Some((plsn, _)), Some(p)) = (res.pad, pad.as_ref()) {
            let mut copy = self.pool.alloc().expect(exhausted);
            copy.set_len(p.len());
            copy.as_mut_slice().copy_from_slice(p.as_slice());
            self.issue_log(slot, K_PAD, plsn, copy);
        }
        let f = Inflight {
            req,

            res,
            entry: None,
            sent,
            pad_sent,
            pad_local: pad.is_none(),
            pad_bunker: pad.is_none(),
            pad,
            local: false,
            volume: false,
            bunker: false,
            status: IoStatus::Success,
            started: now,
        };
        self.slots[slot] = Some(f);
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
            s.status = IoStatus::IoError(libc::EAGAIN);
            s.volume = true;
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
            K_FLUSH | K_SUPER => return self.on_checkpoint(kind, c.status),
            K_CATCHUP => return self.on_catch_up_read(c),
            _ => {}
        }
        let s = self.slots[slot].as_mut().expect("completion for a live slot");
        if !c.status.is_success() {
            s.status = c.status;
        }
        match kind {
            K_LOG if !c.status.is_success() => {
                tracing::error!(volume = self.shared.name, status = %c.status, "change log write failed: the volume stops taking writes");
                self.shared.stopped.store(true, std::sync::atomic::Ordering::Release);
                s.local = true;
                s.volume = true;
            }
            K_LOG => {
                s.local = true;
                s.entry = c.buf;
                self.issue_volume(slot);
            }
            K_PAD => s.pad_local = true,
            K_VOLUME => {
                s.volume = true;
                s.req.io.buf = c.buf;
            }
            _ => unreachable!("unknown tag kind {kind}"),
        }
    }

    /// Answers writes whose every copy is done, and records them in the log.
    pub(super) fn finish_ready(&mut self, now: Nanos) -> bool {
        let mut work = false;
        for i in 0..self.slots.len() {
            let ready = self.slots[i]
                .as_ref()
                .is_some_and(|s| s.local && s.pad_local && s.volume && self.bunker_ok(s));
            if !ready {
                continue;
            }
            let s = self.slots[i].take().expect("ready slot");
            if !(s.sent && s.pad_sent) {
                // Answered without reaching the bunker (local-only, or the link down): the
                // bunker gets it from the local log.
                self.catch_up = Some(self.catch_up.map_or(self.bunker_end, |c| c.min(self.bunker_end)));
            }
            if let Some((plsn, pn)) = s.res.pad {
                self.shared.log.finish(plsn, pn);
            }
            self.shared.log.finish(s.res.lsn, s.res.sectors);
            let _ = self.latency.record(now.saturating_sub(s.started).max(1) / 1000);
            self.writes += 1;
            let c = IoCompletion { tag: s.req.io.tag, status: s.status, buf: s.req.io.buf };
            if s.req.reply.push(c).is_err() {
                panic!("volume reply queue overflow: channels bound their hand-overs");
            }
            s.req.notify.notify();
            work = true;
        }
        work
    }

    /// Sends to the bunker what could not be queued earlier (link down or send queue full).
    pub(super) fn resend(&mut self) -> bool {
        let Some(link) = self.link.as_mut() else { return false };
        if link.state() != LinkState::Up {
            return false;
        }
        let mut work = false;
        for s in self.slots.iter_mut().flatten() {
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
        let head = if self.link.is_some() { committed.min(self.bunker_end) } else { committed };
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
                LinkEvent::Down { why } => {
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
                LinkEvent::Message(m) => {
                    tracing::debug!(volume = self.shared.name, ?m, "unexpected bunker message")
                }
            }
        }
        work
    }

    pub(super) fn on_link_up(&mut self, durable_end: u64) {
        let head = self.shared.log.head();
        self.bunker_end = durable_end.max(head);
        self.bunker_acked.retain(|&l, _| l >= self.bunker_end);
        let oldest_live = self.slots.iter().flatten().map(|s| s.res.pad.map_or(s.res.lsn, |p| p.0)).min();
        for s in self.slots.iter_mut().flatten() {
            s.sent = false;
            s.pad_sent = s.pad.is_none();
        }
        let until = oldest_live.unwrap_or(self.shared.log.tail());
        self.catch_up = (self.bunker_end < until).then_some(self.bunker_end);
        self.alarm = None;
    }

    pub(super) fn on_ack(&mut self, lsn: u64, sectors: u32) {
        for s in self.slots.iter_mut().flatten() {
            if s.res.lsn == lsn {
                s.bunker = true;
            }
            if s.res.pad.is_some_and(|(l, _)| l == lsn) {
                s.pad_bunker = true;
            }
        }
        if lsn >= self.bunker_end {
            self.bunker_acked.insert(lsn, sectors);
        }
        while let Some(n) = self.bunker_acked.remove(&self.bunker_end) {
            self.bunker_end += u64::from(n);
        }
    }
}

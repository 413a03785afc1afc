//! Reads handed to the home reactor because they touch blocks a live write holds
//! ([`super::super::pending`]). The blocks of a write whose local entry is durable (so its
//! volume write may be running, and the host may have its answer) are served from the entry's
//! bytes in memory, not from the data bdev; the other blocks come from the data bdev. A read
//! wholly covered by such writes never touches a device.
//!
//! Invariants: at most one live slot holds any block (overlapping writes wait for the earlier
//! one to retire), and a slot keeps its entry bytes until its volume write is done, so the
//! image taken when the read is issued is the newest durable data of those blocks. A slot whose
//! entry is not durable yet has not started its volume write either: the data bdev still holds
//! the previous data, which is legal for a read racing an unanswered write. Blocks of a durable
//! entry without bytes in memory (write-zeroes, deallocate) make the read wait for the volume
//! write, as every handed-over read did before.

use super::*;

/// The blocks of an issued read that are filled from memory when the data bdev answers.
pub(super) struct Overlay {
    /// The read's image of those blocks, at the read buffer's offsets.
    image: DmaBuf,
    /// Byte ranges `[from, to)` of the read taken from `image`.
    spans: Vec<(usize, usize)>,
}

/// A handed-over read issued to the data bdev.
pub(super) struct IssuedRead {
    req: VolReq,
    overlay: Option<Overlay>,
}

/// Where a handed-over read's blocks come from.
enum Plan {
    /// Some block is held by a durable entry not in memory: wait for its volume write.
    Wait,
    /// Copies `(read offset, entry slot, entry offset, len)` from live entries; the rest from
    /// the data bdev.
    Copy(Vec<(usize, usize, usize, usize)>),
}

impl VolumeCore {
    /// Issues handed-over reads, in order.
    pub(super) fn serve_reads(&mut self) -> bool {
        let mut work = false;
        // Draining for a migration: the secondary may be serving writes soon; no stale read.
        if !self.confirmed || self.shared.draining.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        while let Some(front) = self.reads.front() {
            let (lba, n) = (front.io.offset_blocks, front.io.num_blocks);
            let len = front.io.buf.as_ref().map_or(0, |b| b.len());
            if self.shared.stopped.load(std::sync::atomic::Ordering::Acquire)
                && self.shared.pending.overlaps(lba, n)
            {
                // A failed volume write: the data bdev may hold the old data or part of the
                // new; the change log keeps the entry until recovery re-applies it.
                let mut req = self.reads.pop_front().expect("front read");
                let buf = req.io.buf.take();
                reply(&req, IoCompletion { tag: req.io.tag, status: IoStatus::IoError(libc::EIO), buf });
                continue;
            }
            let Plan::Copy(copies) = self.plan_read(lba, n, len) else { break };
            if !self.issue_read(copies, len) {
                break;
            }
            work = true;
        }
        work
    }

    /// Where the blocks of a read of `[lba, lba + n)` (`len` bytes) come from.
    fn plan_read(&self, lba: u64, n: u32, len: usize) -> Plan {
        let bs = len / n.max(1) as usize;
        let end = lba + u64::from(n);
        let mut copies = Vec::new();
        for (slot, s) in self.slots[..self.live].iter().enumerate() {
            let Some(s) = s.as_ref().filter(|s| !s.volume && s.local && s.overlaps(lba, n)) else {
                continue;
            };
            if s.req.io.ty != IoType::Write || s.entry.is_none() || !s.status.is_success() {
                return Plan::Wait;
            }
            let a = s.req.io.offset_blocks;
            let (from, to) = (a.max(lba), (a + u64::from(s.req.io.num_blocks)).min(end));
            let entry_at = self.geo.sector as usize + (from - a) as usize * bs;
            copies.push(((from - lba) as usize * bs, slot, entry_at, (to - from) as usize * bs));
        }
        Plan::Copy(copies)
    }

    /// Serves the front read: from memory alone, or from the data bdev with `copies` laid over
    /// it. False (the read stays queued) when no read slot or image buffer is free.
    fn issue_read(&mut self, copies: Vec<(usize, usize, usize, usize)>, len: usize) -> bool {
        if copies.iter().map(|c| c.3).sum::<usize>() == len && len > 0 {
            let mut req = self.reads.pop_front().expect("front read");
            let mut buf = req.io.buf.take().expect("a read carries its buffer");
            self.copy_entries(&copies, buf.as_mut_slice());
            reply(&req, IoCompletion { tag: req.io.tag, status: IoStatus::Success, buf: Some(buf) });
            self.shared.reads_from_memory.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return true;
        }
        let Some(idx) = self.read_slots.iter().position(Option::is_none) else { return false };
        let overlay = if copies.is_empty() {
            None
        } else {
            let Some(mut image) = self.pool.alloc() else { return false };
            image.set_len(len);
            self.copy_entries(&copies, image.as_mut_slice());
            Some(Overlay { image, spans: copies.iter().map(|c| (c.0, c.0 + c.3)).collect() })
        };
        let mut req = self.reads.pop_front().expect("front read");
        let io = BdevIo {
            ty: IoType::Read,
            offset_blocks: req.io.offset_blocks,
            num_blocks: req.io.num_blocks,
            buf: req.io.buf.take(),
            fua: false,
            tag: tag(idx, K_READ),
        };
        if let Err(io) = self.data_ch.submit(io) {
            req.io.buf = io.buf;
            self.reads.push_front(req);
            return false;
        }
        if overlay.is_some() {
            self.shared.reads_from_memory.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.read_slots[idx] = Some(IssuedRead { req, overlay });
        true
    }

    /// Copies live entries' bytes into `out` at the read's offsets.
    fn copy_entries(&self, copies: &[(usize, usize, usize, usize)], out: &mut [u8]) {
        for &(at, slot, from, n) in copies {
            let s = self.slots[slot].as_ref().expect("planned slot");
            let entry = s.entry.as_ref().expect("planned entry").as_slice();
            out[at..at + n].copy_from_slice(&entry[from..from + n]);
        }
    }

    /// A read issued here completed: lay the memory image over it and answer.
    pub(super) fn on_read(&mut self, idx: usize, mut c: IoCompletion) {
        let IssuedRead { req, overlay } = self.read_slots[idx].take().expect("completion for a live read");
        if let (Some(o), Some(buf), true) = (overlay, c.buf.as_mut(), c.status.is_success()) {
            for &(from, to) in &o.spans {
                buf.as_mut_slice()[from..to].copy_from_slice(&o.image.as_slice()[from..to]);
            }
        }
        reply(&req, IoCompletion { tag: req.io.tag, status: c.status, buf: c.buf });
    }
}

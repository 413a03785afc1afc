//! The in-process load generator: one job per reactor, each a poller with its own channel to
//! the bdev, keeping `queue_depth` I/Os in flight over its own slice of the device.
//!
//! Every buffer is taken from the DMA pool when the job starts, not per I/O.

use std::sync::mpsc::SyncSender;

use super::report::JobResult;
use super::verify::{stamp, VerifyMap};
use super::workload::{OffsetGen, Workload};
use crate::bdev::{BdevIo, Channel, IoCompletion, IoType};
use crate::reactor::{Nanos, PollCtx, PollStatus, Poller};
use crate::sys::DmaBuf;

struct Slot {
    buf: Option<DmaBuf>,
    lba: u64,
    read: bool,
    gen: u64,
    submitted: Nanos,
}

/// One job on one reactor.
pub struct BdevJob {
    name: String,
    channel: Channel,
    w: Workload,
    block_size: u32,
    blocks_per_io: u64,
    offsets: OffsetGen,
    read_percent: u8,
    slots: Vec<Slot>,
    free: Vec<usize>,
    verify: Option<VerifyMap>,
    result: JobResult,
    reply: Option<SyncSender<Result<JobResult, String>>>,
    started: Option<Nanos>,
    measure_from: Nanos,
    stopping: bool,
    watching: Vec<std::os::fd::RawFd>,
    completions: Vec<IoCompletion>,
}

impl BdevJob {
    /// A job over blocks `[first, first + range)`, with buffers already taken from the pool.
    pub fn new(
        channel: Channel,
        w: Workload,
        range: (u64, u64),
        bufs: Vec<DmaBuf>,
        core: usize,
        reply: SyncSender<Result<JobResult, String>>,
    ) -> BdevJob {
        let block_size = channel.bdev().block_size();
        let blocks_per_io = u64::from(w.io_size / block_size);
        let offsets = OffsetGen::new(&w, range.0, range.1, blocks_per_io, w.seed ^ core as u64);
        let verify = w.verify.then(|| VerifyMap::new(range.0, range.1, (core as u64) << 40));
        let slots = bufs
            .into_iter()
            .map(|b| Slot { buf: Some(b), lba: 0, read: false, gen: 0, submitted: 0 })
            .collect();
        BdevJob {
            name: format!("perf_{}", channel.bdev().name()),
            read_percent: w.pattern.read_percent(w.read_percent),
            free: (0..w.queue_depth as usize).rev().collect(),
            channel,
            w,
            block_size,
            blocks_per_io,
            offsets,
            slots,
            verify,
            result: JobResult::new(core),
            reply: Some(reply),
            started: None,
            measure_from: 0,
            stopping: false,
            watching: Vec::new(),
            completions: Vec::with_capacity(256),
        }
    }

    fn pick(&mut self) -> Option<(u64, bool)> {
        for _ in 0..16 {
            let lba = self.offsets.next_block();
            let read = self.offsets.is_read(self.read_percent);
            let n = self.blocks_per_io;
            if self.verify.as_mut().is_none_or(|v| v.try_reserve(lba, n)) {
                return Some((lba, read));
            }
        }
        None
    }

    fn submit_one(&mut self, now: Nanos) -> bool {
        let Some(&idx) = self.free.last() else { return false };
        let Some((lba, read)) = self.pick() else { return false };
        let mut buf = self.slots[idx].buf.take().expect("free slot holds its buffer");
        buf.set_len(self.w.io_size as usize);
        let mut gen = 0;
        if let (false, Some(v)) = (read, self.verify.as_mut()) {
            gen = v.next_gen();
            let bs = self.block_size as usize;
            for (k, block) in buf.as_mut_slice().chunks_exact_mut(bs).enumerate() {
                stamp(block, lba + k as u64, gen);
            }
        }
        let ty = if read { IoType::Read } else { IoType::Write };
        let io = BdevIo {
            ty,
            offset_blocks: lba,
            num_blocks: self.blocks_per_io as u32,
            buf: Some(buf),
            fua: !read && self.w.fua,
            tag: idx as u64,
        };
        match self.channel.submit(io) {
            Ok(()) => {
                self.free.pop();
                self.slots[idx] = Slot { buf: None, lba, read, gen, submitted: now };
                true
            }
            Err(io) => {
                self.slots[idx].buf = io.buf;
                if let Some(v) = self.verify.as_mut() {
                    v.write_done(lba, self.blocks_per_io, 0, false);
                }
                false
            }
        }
    }

    fn complete(&mut self, c: IoCompletion, now: Nanos) {
        let idx = c.tag as usize;
        let slot = &mut self.slots[idx];
        let buf = c.buf.expect("data I/O returns its buffer");
        let (lba, read, gen, submitted) = (slot.lba, slot.read, slot.gen, slot.submitted);
        let ok = c.status.is_success();
        if let Some(v) = self.verify.as_mut() {
            match (read, ok) {
                (true, true) => v.read_done(lba, buf.as_slice(), self.block_size as usize),
                (true, false) => v.write_done(lba, self.blocks_per_io, 0, false),
                (false, _) => v.write_done(lba, self.blocks_per_io, gen, ok),
            }
        }
        slot.buf = Some(buf);
        self.free.push(idx);
        if !ok {
            self.result.error(format!("{} LBA {lba}: {}", if read { "read" } else { "write" }, c.status));
        }
        if submitted >= self.measure_from {
            self.result.ios += 1;
            self.result.bytes += u64::from(self.w.io_size);
            let _ = self.result.latency_ns.record(now.saturating_sub(submitted).max(1));
        }
    }

    fn finish(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        for fd in self.watching.drain(..) {
            cx.unwatch_fd(fd);
        }
        self.result.elapsed_ns = cx.now.saturating_sub(self.measure_from);
        if let Some(v) = self.verify.take() {
            self.result.verified_blocks = v.checked;
            self.result.verify_failures = v.failures;
        }
        let result = std::mem::replace(&mut self.result, JobResult::new(0));
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Ok(result));
        }
        PollStatus::Done
    }

    fn start(&mut self, cx: &mut PollCtx<'_>) {
        let warmup = (self.w.warmup_s * 1e9) as Nanos;
        self.started = Some(cx.now);
        self.measure_from = cx.now + warmup;
        for fd in self.channel.wake_fds() {
            if cx.watch_eventfd(fd).is_ok() {
                self.watching.push(fd);
            }
        }
    }

    fn should_stop(&self, now: Nanos) -> bool {
        let limit = (self.w.time_s * 1e9) as Nanos;
        (self.w.time_s > 0.0 && now >= self.measure_from + limit)
            || (self.w.io_count > 0 && self.result.ios >= self.w.io_count)
    }
}

impl Poller for BdevJob {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        if self.started.is_none() {
            self.start(cx);
        }
        let now = cx.precise_now();
        let mut work = false;
        self.stopping |= self.should_stop(now);
        while !self.stopping && self.submit_one(now) {
            work = true;
        }
        let mut done = std::mem::take(&mut self.completions);
        self.channel.poll(&mut done);
        work |= !done.is_empty();
        let now = if done.is_empty() { now } else { cx.precise_now() };
        for c in done.drain(..) {
            self.complete(c, now);
        }
        self.completions = done;
        if self.stopping && self.free.len() == self.slots.len() {
            return self.finish(cx);
        }
        PollStatus::from_work(work)
    }
}

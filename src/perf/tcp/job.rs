//! One NVMe/TCP load job: a poller on a pinned reactor that keeps `queue_depth` commands in
//! flight on its own I/O queue pair over its own LBA slice, times every I/O, stamps and checks
//! blocks for `--verify`, and logs acknowledged writes for `--ack-log`.
//!
//! One poll: receive (completions are timed with one clock read), resubmit into the freed
//! slots, then flush all new PDUs with one `writev`. Nothing here allocates per I/O: buffers,
//! completion lists and the ack-log batch are sized when the job is built.

use std::sync::mpsc::SyncSender;

use super::super::ack_log::{AckWriter, Record};
use super::super::report::JobResult;
use super::super::verify::{stamp, VerifyMap};
use super::super::workload::{OffsetGen, Workload};
use super::qpair::{Done, TcpQpair};
use crate::nvmf::spec::{IoOpcode, Sqe};
use crate::reactor::{Nanos, PollCtx, PollStatus, Poller};

/// A command that makes no progress for this long fails the job.
const IO_TIMEOUT_NS: Nanos = 30_000_000_000;
/// Idle time after which pending ack-log records are written at once: shorter than the
/// reactor's idle spell, so nothing acknowledged waits in memory while the reactor sleeps.
const ACK_IDLE_FLUSH_NS: Nanos = 100_000;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    lba: u64,
    read: bool,
    gen: u64,
    submitted: Nanos,
}

/// Where a job runs and what it writes to.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job index (selects the LBA slice and the generation space).
    pub index: usize,
    /// Core, for the report.
    pub core: usize,
    /// Namespace.
    pub nsid: u32,
    /// Block size, bytes.
    pub block_size: u32,
    /// First block and block count of the job's slice.
    pub range: (u64, u64),
    /// First generation (see [`super::super::ack_log::gen_base`]).
    pub gen_base: u64,
}

/// One job on one reactor.
pub struct TcpJob {
    name: String,
    qp: TcpQpair,
    spec: JobSpec,
    w: Workload,
    blocks_per_io: u64,
    offsets: OffsetGen,
    read_percent: u8,
    slots: Vec<Slot>,
    free: Vec<u16>,
    verify: Option<VerifyMap>,
    ack: Option<AckWriter>,
    result: JobResult,
    reply: Option<SyncSender<Result<JobResult, String>>>,
    started: Option<Nanos>,
    measure_from: Nanos,
    last_progress: Nanos,
    stopping: bool,
    watching: bool,
    done: Vec<Done>,
}

impl TcpJob {
    /// A job over `qp`; `verify` stamps and checks blocks, `ack` logs acknowledged writes.
    pub fn new(
        qp: TcpQpair,
        spec: JobSpec,
        w: Workload,
        ack: Option<AckWriter>,
        reply: SyncSender<Result<JobResult, String>>,
    ) -> TcpJob {
        let blocks_per_io = u64::from(w.io_size / spec.block_size);
        let (first, count) = spec.range;
        let offsets = OffsetGen::new(&w, first, count, blocks_per_io, w.seed ^ spec.index as u64);
        let verify = (w.verify || ack.is_some()).then(|| VerifyMap::new(first, count, spec.gen_base));
        let qd = w.queue_depth as usize;
        TcpJob {
            name: format!("perf_tcp_{}", spec.index),
            read_percent: w.pattern.read_percent(w.read_percent),
            free: (0..qd as u16).rev().collect(),
            slots: vec![Slot::default(); qd],
            result: JobResult::new(spec.core),
            qp,
            spec,
            w,
            blocks_per_io,
            offsets,
            verify,
            ack,
            reply: Some(reply),
            started: None,
            measure_from: 0,
            last_progress: 0,
            stopping: false,
            watching: false,
            done: Vec::with_capacity(qd),
        }
    }

    fn pick(&mut self) -> Option<(u64, bool)> {
        for _ in 0..16 {
            let lba = self.offsets.next_block();
            let read = self.offsets.is_read(self.read_percent);
            if self.verify.as_mut().is_none_or(|v| v.try_reserve(lba, self.blocks_per_io)) {
                return Some((lba, read));
            }
        }
        None
    }

    fn submit_one(&mut self, now: Nanos) -> bool {
        let Some(&idx) = self.free.last() else { return false };
        let Some((lba, read)) = self.pick() else { return false };
        let mut gen = 0;
        if let (false, Some(v)) = (read, self.verify.as_mut()) {
            gen = v.next_gen();
            let bs = self.spec.block_size as usize;
            let len = self.w.io_size as usize;
            for (k, block) in self.qp.buf_mut(idx)[..len].chunks_exact_mut(bs).enumerate() {
                stamp(block, lba + k as u64, gen);
            }
        }
        let opcode = if read { IoOpcode::Read } else { IoOpcode::Write };
        let sqe = Sqe {
            opcode: opcode.raw(),
            nsid: self.spec.nsid,
            cdw10: lba as u32,
            cdw11: (lba >> 32) as u32,
            cdw12: (self.blocks_per_io - 1) as u32 | (u32::from(self.w.fua && !read) << 30),
            ..Sqe::default()
        };
        self.qp.submit(idx, sqe, self.w.io_size, !read);
        self.free.pop();
        self.slots[usize::from(idx)] = Slot { lba, read, gen, submitted: now };
        true
    }

    fn complete(&mut self, d: Done, now: Nanos) {
        let Slot { lba, read, gen, submitted } = self.slots[usize::from(d.slot)];
        let ok = d.status.is_success();
        let n = self.blocks_per_io;
        let len = self.w.io_size as usize;
        if let Some(v) = self.verify.as_mut() {
            match (read, ok) {
                (true, true) => v.read_done(lba, &self.qp.buf(d.slot)[..len], self.spec.block_size as usize),
                (true, false) => v.write_done(lba, n, 0, false),
                (false, _) => v.write_done(lba, n, gen, ok),
            }
        }
        if let (false, true, Some(ack)) = (read, ok, self.ack.as_mut()) {
            let data_crc = crc32c::crc32c(&self.qp.buf(d.slot)[..len]);
            let r = Record { lba, gen, blocks: n as u32, data_crc, job: self.spec.index as u16 };
            if let Err(e) = ack.record(&r, now) {
                self.result.error(format!("ack log: {e}"));
            }
        }
        self.free.push(d.slot);
        if !ok {
            self.result.error(format!("{} LBA {lba}: {}", if read { "read" } else { "write" }, d.status));
        }
        if submitted >= self.measure_from {
            self.result.ios += 1;
            self.result.bytes += len as u64;
            let _ = self.result.latency_ns.record(now.saturating_sub(submitted).max(1));
        }
    }

    /// The connection failed: every command in flight fails with it.
    fn fail_all(&mut self, why: String) {
        let inflight = self.slots.len() - self.free.len();
        self.result.error(format!("{why} ({inflight} commands in flight)"));
        self.result.errors += inflight.saturating_sub(1) as u64;
        for idx in 0..self.slots.len() as u16 {
            if self.free.contains(&idx) {
                continue;
            }
            let Slot { lba, .. } = self.slots[usize::from(idx)];
            if let Some(v) = self.verify.as_mut() {
                v.write_done(lba, self.blocks_per_io, 0, false);
            }
            self.free.push(idx);
        }
        self.stopping = true;
    }

    fn finish(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        if self.watching {
            cx.unwatch_fd(self.qp.fd());
        }
        let now = cx.precise_now();
        self.result.elapsed_ns = now.saturating_sub(self.measure_from);
        if let Some(v) = self.verify.take() {
            self.result.verified_blocks = v.checked;
            self.result.verify_failures = v.failures;
        }
        if let Some(ack) = self.ack.take() {
            if let Err(e) = ack.close(now) {
                self.result.error(format!("ack log: {e}"));
            }
        }
        let result = std::mem::replace(&mut self.result, JobResult::new(0));
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Ok(result));
        }
        PollStatus::Done
    }

    fn start(&mut self, cx: &mut PollCtx<'_>) {
        let now = cx.precise_now();
        self.started = Some(now);
        self.last_progress = now;
        self.measure_from = now + (self.w.warmup_s * 1e9) as Nanos;
        self.watching = cx.watch_fd(self.qp.fd()).is_ok();
    }

    fn should_stop(&self, now: Nanos) -> bool {
        let limit = (self.w.time_s * 1e9) as Nanos;
        (self.w.time_s > 0.0 && now >= self.measure_from + limit)
            || (self.w.io_count > 0 && self.result.ios >= self.w.io_count)
    }

    fn step(&mut self, cx: &mut PollCtx<'_>) -> Result<bool, String> {
        let mut done = std::mem::take(&mut self.done);
        let got = self.qp.recv(&mut done).map_err(|e| e.to_string());
        let now = cx.precise_now();
        for d in done.drain(..) {
            self.complete(d, now);
        }
        self.done = done;
        let mut work = got?;
        if work {
            self.last_progress = now;
        }
        self.stopping |= self.should_stop(now);
        while !self.stopping && self.submit_one(now) {
            work = true;
        }
        if self.qp.has_pending_send() && self.qp.flush().map_err(|e| e.to_string())? {
            self.last_progress = now;
            work = true;
        }
        if let Some(ack) = self.ack.as_mut() {
            let r = if now.saturating_sub(self.last_progress) > ACK_IDLE_FLUSH_NS {
                ack.flush(now)
            } else {
                ack.tick(now)
            };
            r.map_err(|e| format!("ack log: {e}"))?;
        }
        let inflight = self.free.len() < self.slots.len();
        if inflight && now.saturating_sub(self.last_progress) > IO_TIMEOUT_NS {
            return Err(format!("no progress for {} s", IO_TIMEOUT_NS / 1_000_000_000));
        }
        Ok(work)
    }
}

impl Poller for TcpJob {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        if self.started.is_none() {
            self.start(cx);
        }
        let work = match self.step(cx) {
            Ok(work) => work,
            Err(why) => {
                self.fail_all(why);
                true
            }
        };
        if self.stopping && self.free.len() == self.slots.len() {
            return self.finish(cx);
        }
        PollStatus::from_work(work)
    }
}

//! `ferrite perf --check-ack-log`: a poller that reads back every range of an ack log (the last
//! record of each) over one I/O queue pair, a few reads in flight, and judges each block
//! against its last acknowledged write ([`ack_log::judge`]).

use std::sync::mpsc::SyncSender;

use serde::{Deserialize, Serialize};

use super::super::ack_log::{self, Record};
use super::qpair::{Done, TcpQpair};
use crate::nvmf::spec::{IoOpcode, Sqe};
use crate::reactor::{Nanos, PollCtx, PollStatus, Poller};

/// Failure descriptions kept in the report.
const MAX_DESCRIBED: usize = 100;
/// A read that takes longer than this fails the check.
const IO_TIMEOUT_NS: Nanos = 30_000_000_000;

/// The result of checking an ack log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckReport {
    /// Records in the log.
    pub records: u64,
    /// Distinct ranges checked (the last record of each).
    pub ranges: u64,
    /// Blocks holding exactly their last acknowledged write.
    pub blocks_exact: u64,
    /// Blocks holding a newer write of the same run that was in flight (not acknowledged).
    pub blocks_newer: u64,
    /// Blocks whose acknowledged write is lost or damaged.
    pub blocks_lost: u64,
    /// Failed reads.
    pub read_errors: u64,
    /// Bytes of a torn last record (ignored).
    pub torn_tail_bytes: u64,
    /// The first failures, described.
    pub failures: Vec<String>,
}

impl CheckReport {
    /// Whether every acknowledged write is there.
    pub fn is_clean(&self) -> bool {
        self.blocks_lost == 0 && self.read_errors == 0
    }

    /// A human summary.
    pub fn render(&self) -> String {
        let mut s = format!(
            "ack log: {} records, {} ranges; blocks exact {}, newer (unacknowledged) {}, lost {}; read errors {}",
            self.records, self.ranges, self.blocks_exact, self.blocks_newer, self.blocks_lost, self.read_errors
        );
        for f in &self.failures {
            s.push_str(&format!("\n  {f}"));
        }
        s
    }

    fn fail(&mut self, what: String) {
        if self.failures.len() < MAX_DESCRIBED {
            self.failures.push(what);
        }
    }
}

/// Reads back ranges and judges them.
pub struct CheckJob {
    qp: TcpQpair,
    nsid: u32,
    block_size: usize,
    ranges: Vec<Record>,
    next: usize,
    inflight: Vec<Option<usize>>,
    free: Vec<u16>,
    report: CheckReport,
    reply: Option<SyncSender<Result<CheckReport, String>>>,
    done: Vec<Done>,
    last_progress: Option<Nanos>,
}

impl CheckJob {
    /// A check of `ranges` over `qp` (whose slot count is the reads in flight).
    pub fn new(
        qp: TcpQpair,
        nsid: u32,
        block_size: usize,
        ranges: Vec<Record>,
        slots: usize,
        report: CheckReport,
        reply: SyncSender<Result<CheckReport, String>>,
    ) -> CheckJob {
        CheckJob {
            qp,
            nsid,
            block_size,
            ranges,
            next: 0,
            inflight: vec![None; slots],
            free: (0..slots as u16).rev().collect(),
            report,
            reply: Some(reply),
            done: Vec::with_capacity(slots),
            last_progress: None,
        }
    }

    fn submit(&mut self) -> bool {
        let mut any = false;
        while self.next < self.ranges.len() {
            let Some(slot) = self.free.pop() else { break };
            let r = self.ranges[self.next];
            let sqe = Sqe {
                opcode: IoOpcode::Read.raw(),
                nsid: self.nsid,
                cdw10: r.lba as u32,
                cdw11: (r.lba >> 32) as u32,
                cdw12: r.blocks - 1,
                ..Sqe::default()
            };
            self.qp.submit(slot, sqe, r.blocks * self.block_size as u32, false);
            self.inflight[usize::from(slot)] = Some(self.next);
            self.next += 1;
            any = true;
        }
        any
    }

    fn complete(&mut self, d: Done) {
        let i = self.inflight[usize::from(d.slot)].take().expect("completion for a submitted read");
        self.free.push(d.slot);
        let r = self.ranges[i];
        if !d.status.is_success() {
            self.report.read_errors += 1;
            self.report.fail(format!("read of LBA {}+{}: {}", r.lba, r.blocks, d.status));
            return;
        }
        let len = r.blocks as usize * self.block_size;
        let v = ack_log::judge(&r, &self.qp.buf(d.slot)[..len], self.block_size);
        self.report.blocks_exact += v.exact;
        self.report.blocks_newer += v.newer;
        self.report.blocks_lost += v.failures.len() as u64;
        for f in v.failures {
            self.report.fail(f);
        }
    }

    fn step(&mut self, now: Nanos) -> Result<bool, String> {
        let mut done = std::mem::take(&mut self.done);
        let got = self.qp.recv(&mut done).map_err(|e| e.to_string())?;
        for d in done.drain(..) {
            self.complete(d);
        }
        self.done = done;
        let mut work = got | self.submit();
        work |= self.qp.flush().map_err(|e| e.to_string())?;
        let last = self.last_progress.get_or_insert(now);
        if work {
            *last = now;
        } else if now.saturating_sub(*last) > IO_TIMEOUT_NS {
            return Err("reads made no progress for 30 s".into());
        }
        Ok(work)
    }

    fn finish(&mut self, cx: &mut PollCtx<'_>, result: Result<CheckReport, String>) -> PollStatus {
        cx.unwatch_fd(self.qp.fd());
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
        PollStatus::Done
    }
}

impl Poller for CheckJob {
    fn name(&self) -> &str {
        "perf_check_ack_log"
    }

    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        if self.last_progress.is_none() {
            let _ = cx.watch_fd(self.qp.fd());
        }
        match self.step(cx.precise_now()) {
            Err(e) => self.finish(cx, Err(e)),
            Ok(_) if self.next == self.ranges.len() && self.free.len() == self.inflight.len() => {
                let report = std::mem::take(&mut self.report);
                self.finish(cx, Ok(report))
            }
            Ok(work) => PollStatus::from_work(work),
        }
    }
}

//! `ferrite perf -r ...`: the NVMe/TCP initiator, like spdk_nvme_perf, on the target's own PDU
//! codec. The control path ([`session`]) connects the admin queue, enables the controller,
//! learns the namespace and the transfer limits, and connects one I/O queue per core; each
//! queue then goes to a pinned reactor as a pipelined, non-blocking poller ([`job`] over
//! [`qpair`]). The calling thread waits for the jobs and sends a Keep Alive every KATO/2.
//!
//! Each job owns an equal, disjoint slice of the namespace, so `--verify` and `--ack-log` never
//! see another job's writes.

pub mod check;
pub mod job;
pub mod qpair;
#[cfg(test)]
mod qpair_tests;
pub mod session;

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use self::check::{CheckJob, CheckReport};
use self::job::{JobSpec, TcpJob};
use self::qpair::{QpairParams, TcpQpair};
use self::session::{Geometry, Session};
use super::ack_log::{self, AckWriter};
use super::report::{JobResult, Report};
use super::trid::TransportId;
use super::workload::Workload;
use crate::nvmf::tcp::pdu::Digests;
use crate::reactor::{IdlePolicy, Message, Poller, Runtime, RuntimeConfig};

/// Largest slot buffer, whatever MDTS allows.
const MAX_IO_BYTES: u32 = 4 << 20;
/// Reads in flight while checking an ack log.
const CHECK_QD: usize = 16;

/// What to connect to and how.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// The target.
    pub trid: TransportId,
    /// Cores to run one job (and one I/O queue) on each.
    pub cores: Vec<usize>,
    /// Header / data digests to ask for.
    pub digests: Digests,
    /// Namespace.
    pub nsid: u32,
    /// Keep Alive Timeout asked for at Connect, ms.
    pub kato_ms: u32,
    /// Spin instead of sleeping when idle.
    pub busy_poll: bool,
    /// Idle polls for this long before sleeping (adaptive; the reactor default when `None`).
    pub idle_spell_us: Option<u64>,
    /// Use only the first this many bytes of the namespace (0: all of it).
    pub span_bytes: u64,
}

fn runtime(o: &TcpOptions, cores: Vec<usize>) -> Result<Runtime, String> {
    let idle_policy = if o.busy_poll { IdlePolicy::Busy } else { IdlePolicy::Adaptive };
    let base = RuntimeConfig::default();
    let idle_spell_us = o.idle_spell_us.unwrap_or(base.idle_spell_us);
    Runtime::start(RuntimeConfig { cores, idle_policy, idle_spell_us, ..base })
        .map_err(|e| format!("starting reactors: {e}"))
}

fn qpair(
    s: &Session,
    qid: u16,
    sqsize: u16,
    icd: u32,
    slots: usize,
    buf_len: usize,
) -> Result<TcpQpair, String> {
    let (stream, ic) = s.connect_io(qid, sqsize)?;
    let p = QpairParams { digests: ic.dgst, cpda: ic.cpda, maxh2cdata: ic.maxh2cdata, icd, slots, buf_len };
    TcpQpair::new(stream, p).map_err(|e| format!("I/O queue {qid}: {e}"))
}

fn sqsize_for(depth: u32, g: &Geometry) -> Result<u16, String> {
    if depth > g.max_queue_entries {
        return Err(format!("queue depth {depth} exceeds the target's queue size {}", g.max_queue_entries));
    }
    Ok(depth.min(g.max_queue_entries - 1).max(1) as u16)
}

/// Runs `w` against the target; with `ack_log`, logs every acknowledged write there.
pub fn run(o: &TcpOptions, w: &Workload, ack_log: Option<PathBuf>) -> Result<Report, String> {
    let mut s = Session::open(&o.trid, o.digests, o.kato_ms)?;
    let mut g = s.identify(o.nsid)?;
    if o.span_bytes > 0 {
        g.blocks = g.blocks.min(o.span_bytes / u64::from(g.block_size));
    }
    w.validate(g.block_size, g.blocks, g.max_transfer.min(MAX_IO_BYTES) as usize)?;
    let sqsize = sqsize_for(w.queue_depth, &g)?;
    let jobs = o.cores.len();
    if jobs > 64 {
        return Err(format!("{jobs} cores given; at most 64 jobs share a run's generation space"));
    }
    let per_job = g.blocks / jobs as u64;
    if per_job < u64::from(w.io_size / g.block_size) {
        return Err(format!("namespace too small for {jobs} jobs of {} bytes", w.io_size));
    }
    s.set_queue_count(jobs as u16)?;
    let run_id = ack_log::new_run_id();
    if let Some(path) = &ack_log {
        let started_ms = u64::from(run_id) * 1000;
        let h = ack_log::Header { block_size: g.block_size, nsid: o.nsid, run_id, started_ms };
        ack_log::create(path, &h)?;
    }
    let (tx, rx) = mpsc::sync_channel::<Result<JobResult, String>>(jobs);
    let mut pollers: Vec<Box<dyn Poller + Send>> = Vec::new();
    for (i, &core) in o.cores.iter().enumerate() {
        let qp = qpair(&s, i as u16 + 1, sqsize, g.icd, w.queue_depth as usize, w.io_size as usize)?;
        let ack = ack_log.as_deref().map(AckWriter::open).transpose()?;
        let spec = JobSpec {
            index: i,
            core,
            nsid: o.nsid,
            block_size: g.block_size,
            range: (i as u64 * per_job, per_job),
            gen_base: ack_log::gen_base(run_id, i),
        };
        pollers.push(Box::new(TcpJob::new(qp, spec, w.clone(), ack, tx.clone())));
    }
    tracing::info!(
        subnqn = s.subnqn,
        cntlid = s.cntlid,
        block_size = g.block_size,
        blocks = g.blocks,
        icd = g.icd,
        jobs,
        "connected"
    );
    let rt = runtime(o, o.cores.clone())?;
    spawn_all(&rt, pollers)?;
    let limit = Duration::from_secs_f64(w.time_s + w.warmup_s + 120.0);
    let results = wait(&mut s, &rx, jobs, limit);
    rt.shutdown();
    s.shutdown();
    Ok(Report::merge(&results?))
}

fn spawn_all(rt: &Runtime, pollers: Vec<Box<dyn Poller + Send>>) -> Result<(), String> {
    for (h, p) in rt.handles().iter().zip(pollers) {
        h.send(Message::call(move |cx| cx.spawn(p))).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Collects `n` results, sending a Keep Alive every KATO/2 meanwhile.
fn wait<T>(
    s: &mut Session,
    rx: &Receiver<Result<T, String>>,
    n: usize,
    limit: Duration,
) -> Result<Vec<T>, String> {
    let deadline = Instant::now() + limit;
    let period = Duration::from_millis(u64::from(s.kato_ms.max(2) / 2));
    let mut next_ka = Instant::now() + period;
    let mut ka_ok = s.kato_ms > 0;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("{} of {n} jobs did not finish within {limit:?}", n - out.len()));
        }
        if ka_ok && now >= next_ka {
            if let Err(e) = s.keep_alive() {
                tracing::warn!(error = %e, "keep alive failed; the I/O queues will tell");
                ka_ok = false;
            }
            next_ka = now + period;
        }
        let wake = if ka_ok { next_ka.min(deadline) } else { deadline };
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(r) => out.push(r?),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err("a job ended without a result".into()),
        }
    }
    Ok(out)
}

/// Reads back every range of the ack log at `path` and judges it (see [`ack_log`]).
pub fn check_ack_log(o: &TcpOptions, path: &std::path::Path) -> Result<CheckReport, String> {
    let log = ack_log::read(path)?;
    let ranges = ack_log::latest(&log.records)?;
    let mut s = Session::open(&o.trid, o.digests, o.kato_ms)?;
    let g = s.identify(log.header.nsid)?;
    if g.block_size != log.header.block_size {
        return Err(format!(
            "namespace {} has {}-byte blocks, the log was written with {}",
            log.header.nsid, g.block_size, log.header.block_size
        ));
    }
    if let Some(r) = ranges.iter().find(|r| r.end() > g.blocks) {
        return Err(format!(
            "log range LBA {}+{} lies beyond the namespace ({} blocks)",
            r.lba, r.blocks, g.blocks
        ));
    }
    let max_blocks = ranges.iter().map(|r| r.blocks).max().unwrap_or(1);
    let buf_len = max_blocks as usize * g.block_size as usize;
    if buf_len > g.max_transfer.min(MAX_IO_BYTES) as usize {
        return Err(format!("log ranges of {buf_len} bytes exceed the target's largest transfer"));
    }
    s.set_queue_count(1)?;
    let slots = CHECK_QD.min(g.max_queue_entries as usize);
    let qp = qpair(&s, 1, sqsize_for(slots as u32, &g)?, g.icd, slots, buf_len)?;
    let report = CheckReport {
        records: log.records.len() as u64,
        ranges: ranges.len() as u64,
        torn_tail_bytes: log.torn_tail_bytes as u64,
        ..CheckReport::default()
    };
    let (tx, rx) = mpsc::sync_channel(1);
    let job = CheckJob::new(qp, log.header.nsid, g.block_size as usize, ranges, slots, report, tx);
    let rt = runtime(o, o.cores[..1].to_vec())?;
    spawn_all(&rt, vec![Box::new(job)])?;
    let result = wait(&mut s, &rx, 1, Duration::from_secs(3600));
    rt.shutdown();
    s.shutdown();
    Ok(result?.pop().expect("one report"))
}

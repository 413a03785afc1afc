//! Running a bdev workload on a set of reactors and merging the results.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::bdev::BdevJob;
use super::report::{JobResult, Report};
use super::workload::Workload;
use crate::bdev::{open_channel, Bdev};
use crate::reactor::{Message, ReactorHandle};
use crate::sys::DmaPool;

/// Runs `w` against `bdev` with one job on each of `reactors`; each job gets its own equal slice
/// of the device so `--verify` never sees another job's writes.
pub fn run_bdev_workload(
    reactors: &[ReactorHandle],
    bdev: Arc<dyn Bdev>,
    pool: &DmaPool,
    w: &Workload,
) -> Result<Report, String> {
    assert!(!reactors.is_empty(), "no reactors to run on");
    w.validate(bdev.block_size(), bdev.num_blocks(), pool.buf_size())?;
    let jobs = reactors.len() as u64;
    let per_job = bdev.num_blocks() / jobs;
    let blocks_per_io = u64::from(w.io_size / bdev.block_size());
    if per_job < blocks_per_io {
        return Err(format!("device too small for {jobs} jobs of {} bytes", w.io_size));
    }
    if pool.free_count() < (w.queue_depth as usize) * reactors.len() {
        return Err(format!("not enough free DMA buffers for queue depth {} on {jobs} jobs", w.queue_depth));
    }
    let (tx, rx) = mpsc::sync_channel::<Result<JobResult, String>>(reactors.len());
    for (i, h) in reactors.iter().enumerate() {
        let bufs: Vec<_> = (0..w.queue_depth).map_while(|_| pool.alloc()).collect();
        let (bdev, w, tx) = (bdev.clone(), w.clone(), tx.clone());
        let range = (i as u64 * per_job, per_job);
        let core = h.core();
        h.send(Message::call(move |cx| match open_channel(&bdev) {
            Ok(ch) => cx.spawn(Box::new(BdevJob::new(ch, w, range, bufs, core, tx))),
            Err(e) => {
                let _ = tx.send(Err(format!("opening a channel to {}: {e}", bdev.name())));
            }
        }))
        .map_err(|e| e.to_string())?;
    }
    let wait = Duration::from_secs_f64(w.time_s + w.warmup_s + 60.0);
    let mut results = Vec::new();
    for _ in reactors {
        results.push(rx.recv_timeout(wait).map_err(|_| "a perf job did not finish in time".to_string())??);
    }
    Ok(Report::merge(&results))
}

//! `ferrite perf`: the load generator, with spdk_nvme_perf's flags. `--bdev NAME` drives a
//! block device on the reactors: of a running daemon (over RPC) or, with `--config FILE`, of an
//! in-process instance built from that config.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::{call, CliResult};
use crate::perf::{Pattern, Report, Workload};

/// Load generator options.
#[derive(Debug, Args)]
pub struct PerfArgs {
    /// Block device to drive (in-process / daemon mode).
    #[arg(long)]
    bdev: Option<String>,
    /// Run in-process with this config instead of asking a running daemon.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Queue depth per job.
    #[arg(short = 'q', long, default_value_t = 1)]
    queue_depth: u32,
    /// I/O size in bytes.
    #[arg(short = 'o', long, default_value_t = 4096)]
    io_size: u32,
    /// Pattern.
    #[arg(short = 'w', long, value_enum, default_value_t = Pattern::Randread)]
    pattern: Pattern,
    /// Percentage of reads for rw/randrw.
    #[arg(short = 'M', long, default_value_t = 50)]
    rwmixread: u8,
    /// Seconds to measure.
    #[arg(short = 't', long, default_value_t = 5.0)]
    time: f64,
    /// Unmeasured warm-up seconds.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Stop each job after this many I/Os instead.
    #[arg(long, default_value_t = 0)]
    io_count: u64,
    /// Write self-describing blocks and check every read.
    #[arg(long)]
    verify: bool,
    /// Reactor indices to run jobs on (default: all), e.g. `1`.
    #[arg(long)]
    reactors: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl PerfArgs {
    fn workload(&self) -> Workload {
        Workload {
            queue_depth: self.queue_depth,
            io_size: self.io_size,
            pattern: self.pattern,
            read_percent: self.rwmixread,
            time_s: if self.io_count > 0 { 0.0 } else { self.time },
            io_count: self.io_count,
            warmup_s: self.warmup,
            verify: self.verify,
            seed: 0x5EED,
        }
    }
}

fn reactor_list(s: &Option<String>) -> Result<Option<Vec<usize>>, String> {
    s.as_deref().map(super::serve::parse_core_list).transpose()
}

/// Runs the load generator.
pub fn run(socket: &Path, args: PerfArgs) -> CliResult {
    let Some(bdev) = args.bdev.clone() else {
        return Err("give --bdev NAME (NVMe/TCP mode arrives with `-r`)".into());
    };
    let w = args.workload();
    let reactors = reactor_list(&args.reactors)?;
    let report: Report = match &args.config {
        Some(path) => in_process(path, &bdev, &w, reactors)?,
        None => {
            let mut p = serde_json::to_value(&w).expect("serialisable");
            p["bdev"] = json!(bdev);
            if let Some(r) = reactors {
                p["reactors"] = json!(r);
            }
            serde_json::from_value(call(socket, "bdev_perf", Some(p))?)
                .map_err(|e| format!("bad report: {e}"))?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
    } else {
        println!("{}", report.render());
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(format!("{} I/O errors, {} verification failures", report.errors, report.verify_failures.len()))
    }
}

fn in_process(path: &Path, bdev: &str, w: &Workload, reactors: Option<Vec<usize>>) -> Result<Report, String> {
    let config = crate::config::Config::load(path).map_err(|e| e.to_string())?;
    let app = crate::app::App::start(config).map_err(|e| e.to_string())?;
    let dev = app.bdevs.get(bdev).map_err(|e| e.to_string())?;
    let all = app.runtime.handles();
    let handles: Vec<_> = match reactors {
        None => all.to_vec(),
        Some(ids) => ids
            .iter()
            .map(|&i| all.get(i).cloned().ok_or(format!("no reactor {i}")))
            .collect::<Result<_, _>>()?,
    };
    crate::perf::run::run_bdev_workload(&handles, dev, &app.pool, w)
}

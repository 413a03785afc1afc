//! `ferrite perf`: the load generator, with spdk_nvme_perf's flags. Four modes:
//! - `-r 'trtype:tcp traddr:A trsvcid:P subnqn:N'`: the NVMe/TCP initiator against any target
//!   (a discovery NQN, or no subnqn, goes through the discovery log); `--ack-log FILE` logs
//!   every acknowledged write;
//! - `--check-ack-log FILE -r ...`: reads every logged range back and fails if an acknowledged
//!   write is lost;
//! - `--bdev NAME`: drives a block device on the reactors of a running daemon (over RPC) or,
//!   with `--config FILE`, of an in-process instance built from that config;
//! - `--pingpong SIZE`: the busy-polled loopback TCP round trip, the floor under the others.

use std::path::{Path, PathBuf};

use clap::{ArgAction, Args};
use serde_json::json;

use super::{call, CliResult};
use crate::nvmf::tcp::pdu::Digests;
use crate::perf::pingpong::{self, PingPong};
use crate::perf::tcp::{self, TcpOptions};
use crate::perf::trid::{parse_core_mask, TransportId};
use crate::perf::{Pattern, Report, Workload};

/// Load generator options.
#[derive(Debug, Args)]
pub struct PerfArgs {
    /// NVMe/TCP target, spdk_nvme_perf syntax: 'trtype:tcp adrfam:ipv4 traddr:A trsvcid:P
    /// subnqn:N [hostnqn:H] [ns:N]'.
    #[arg(short = 'r', long = "transport-id")]
    trid: Option<String>,
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
    /// Cores for the NVMe/TCP jobs, one I/O queue each: a mask (0x2) or a list (1,2 / [0-3]).
    #[arg(short = 'c', long = "core-mask")]
    core_mask: Option<String>,
    /// Latency tracking (accepted for spdk_nvme_perf compatibility; the histogram is always on).
    #[arg(short = 'L', action = ArgAction::Count)]
    latency: u8,
    /// Ask for NVMe/TCP header digests.
    #[arg(long)]
    hdr_digest: bool,
    /// Ask for NVMe/TCP data digests.
    #[arg(long)]
    data_digest: bool,
    /// Namespace to drive (default: `ns:` of -r, else 1).
    #[arg(long)]
    nsid: Option<u32>,
    /// Keep Alive Timeout asked for at Connect, ms (a Keep Alive goes out every half of it).
    #[arg(long, default_value_t = 10_000)]
    kato_ms: u32,
    /// Confine I/O to the first MiB of the namespace (like fio's --size; 0: all of it).
    #[arg(long, value_name = "MiB", default_value_t = 0)]
    size_mb: u64,
    /// Spin when idle instead of sleeping after a short idle spell.
    #[arg(long)]
    busy_poll: bool,
    /// Idle spell before the load generator's reactor sleeps, µs (default: the reactor's 100).
    /// A shorter one leaves the core to what shares it (a secondary, kernel workers) while
    /// responses are awaited.
    #[arg(long, value_name = "US")]
    idle_spell_us: Option<u64>,
    /// Set Force Unit Access on every write (NVMe/TCP and --bdev): each is durable when it
    /// completes.
    #[arg(long)]
    fua: bool,
    /// Append a record for every acknowledged write to FILE (implies --verify stamps).
    #[arg(long, value_name = "FILE")]
    ack_log: Option<PathBuf>,
    /// Read back every range of the ack log FILE from the target named by -r; fails if an
    /// acknowledged write is lost.
    #[arg(long, value_name = "FILE")]
    check_ack_log: Option<PathBuf>,
    /// Measure the busy-polled loopback TCP ping-pong with SIZE-byte messages instead.
    #[arg(long, value_name = "SIZE")]
    pingpong: Option<usize>,
    /// Core of the ping-pong echo server (the client runs on the first core of -c).
    #[arg(long, default_value_t = 0)]
    pingpong_server_core: usize,
    /// Reactor indices to run bdev jobs on (default: all), e.g. `1`.
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
            fua: self.fua,
        }
    }

    fn cores(&self) -> Result<Vec<usize>, String> {
        self.core_mask.as_deref().map_or(Ok(vec![0]), parse_core_mask)
    }

    fn tcp_options(&self) -> Result<TcpOptions, String> {
        let trid = TransportId::parse(self.trid.as_deref().ok_or("give the target with -r")?)?;
        Ok(TcpOptions {
            nsid: self.nsid.or(trid.nsid).unwrap_or(1),
            trid,
            cores: self.cores()?,
            digests: Digests { hdgst: self.hdr_digest, ddgst: self.data_digest },
            kato_ms: self.kato_ms,
            busy_poll: self.busy_poll,
            idle_spell_us: self.idle_spell_us,
            span_bytes: self.size_mb << 20,
        })
    }
}

fn reactor_list(s: &Option<String>) -> Result<Option<Vec<usize>>, String> {
    s.as_deref().map(super::serve::parse_core_list).transpose()
}

/// Runs the load generator.
pub fn run(socket: &Path, args: PerfArgs) -> CliResult {
    if let Some(size) = args.pingpong {
        if size == 0 {
            return Err("--pingpong needs a message size above 0".into());
        }
        let p = PingPong {
            size,
            time_s: args.time,
            warmup_s: args.warmup,
            server_core: args.pingpong_server_core,
            client_core: args.cores()?[0],
        };
        return print_report(&pingpong::run(&p)?, args.json);
    }
    if let Some(path) = &args.check_ack_log {
        let report = tcp::check_ack_log(&args.tcp_options()?, path)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
        } else {
            println!("{}", report.render());
        }
        return if report.is_clean() {
            Ok(())
        } else {
            Err(format!(
                "{} acknowledged blocks lost, {} read errors",
                report.blocks_lost, report.read_errors
            ))
        };
    }
    if args.trid.is_some() {
        let report = tcp::run(&args.tcp_options()?, &args.workload(), args.ack_log.clone())?;
        return print_report(&report, args.json);
    }
    let Some(bdev) = args.bdev.clone() else {
        return Err("give -r TRID (NVMe/TCP), --bdev NAME or --pingpong SIZE".into());
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
    print_report(&report, args.json)
}

fn print_report(report: &Report, json: bool) -> CliResult {
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("serialisable"));
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

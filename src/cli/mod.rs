//! The `ferrite` command line: one binary, one subcommand per job. Each subcommand is a thin
//! layer over the library: `serve` builds an [`App`](crate::app::App); the others are JSON-RPC
//! clients of a running daemon (or, for `perf --config`, run in-process).

mod bdev;
mod demo;
mod nvmf;
mod perf;
mod proxy;
mod secondary;
mod serve;
mod volume;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::rpc::client;

/// ferrite: a polled NVMe-oF block storage target with a replicated change log.
#[derive(Debug, Parser)]
#[command(name = "ferrite", version, about)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(short = 's', long, global = true, default_value = crate::rpc::DEFAULT_SOCKET)]
    pub rpc_socket: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the target daemon.
    Serve(serve::ServeArgs),
    /// Print what this machine offers (CPUs, hugepages, io_uring, NVMe, RDMA, loop devices).
    Probe {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Call a JSON-RPC method on the daemon: `ferrite rpc METHOD ['{"param": 1}']`.
    Rpc {
        /// Method name.
        method: String,
        /// Parameters as a JSON object.
        params: Option<String>,
    },
    /// Create, delete and list block devices.
    #[command(subcommand)]
    Bdev(bdev::BdevCmd),
    /// NVMe-oF subsystems, namespaces, listeners and hosts.
    #[command(subcommand)]
    Nvmf(nvmf::NvmfCmd),
    /// Replicated volumes: create, list, status, delete.
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// Bunker logs and the replication port.
    #[command(subcommand)]
    Bunker(volume::BunkerCmd),
    /// Replica volumes on a secondary: create, freeze.
    #[command(subcommand)]
    Secondary(secondary::SecondaryCmd),
    /// Asynchronous shipping from a primary to a secondary.
    #[command(subcommand)]
    Replication(secondary::ReplicationCmd),
    /// Promote a secondary: pull the log tail from the bunker, apply, serve (epoch + 1).
    Failover(secondary::FailoverArgs),
    /// Swap primary and secondary on purpose: drain, promote the secondary, demote this node.
    Migrate(secondary::MigrateArgs),
    /// On a failed-over old primary: rejoin as secondary, resending only differing blocks.
    Failback(secondary::FailbackArgs),
    /// Roles, epochs, positions, lag and link states of every volume on the node.
    Status,
    /// Primary, bunker and secondary on loopback: write, kill the primary, fail over, check.
    Demo(demo::DemoArgs),
    /// Reactor statistics (busy/idle per poller).
    Reactors,
    /// Load generator.
    Perf(perf::PerfArgs),
    /// TCP fault proxy for tests: delay, bandwidth limit, stall and partition on a control port.
    Proxy(proxy::ProxyArgs),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_tracing();
    let socket_override = cli.rpc_socket_given().then(|| cli.rpc_socket.clone());
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, socket_override),
        Command::Probe { json } => {
            let p = ferrite_hw::Probe::gather();
            println!("{}", if json { p.to_json_pretty() } else { p.to_string() });
            Ok(())
        }
        Command::Rpc { method, params } => raw_rpc(&cli.rpc_socket, &method, params.as_deref()),
        Command::Bdev(cmd) => bdev::run(&cli.rpc_socket, cmd),
        Command::Nvmf(cmd) => nvmf::run(&cli.rpc_socket, cmd),
        Command::Volume(cmd) => volume::run_volume(&cli.rpc_socket, cmd),
        Command::Bunker(cmd) => volume::run_bunker(&cli.rpc_socket, cmd),
        Command::Secondary(cmd) => secondary::run_secondary(&cli.rpc_socket, cmd),
        Command::Replication(cmd) => secondary::run_replication(&cli.rpc_socket, cmd),
        Command::Failover(a) => secondary::run_failover(&cli.rpc_socket, a),
        Command::Demo(a) => demo::run(a),
        Command::Migrate(a) => secondary::run_migrate(&cli.rpc_socket, a),
        Command::Failback(a) => secondary::run_failback(&cli.rpc_socket, a),
        Command::Status => call(&cli.rpc_socket, "replication_status", None).map(|v| print_json(&v)),
        Command::Reactors => call(&cli.rpc_socket, "reactor_stats", None).map(|v| print_json(&v)),
        Command::Perf(args) => perf::run(&cli.rpc_socket, args),
        Command::Proxy(args) => proxy::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ferrite: {e}");
            1
        }
    }
}

impl Cli {
    fn rpc_socket_given(&self) -> bool {
        self.rpc_socket.as_os_str() != crate::rpc::DEFAULT_SOCKET
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// A CLI failure, shown as `ferrite: <message>`.
pub type CliResult = Result<(), String>;

fn call(socket: &std::path::Path, method: &str, params: Option<Value>) -> Result<Value, String> {
    client::call(socket, method, params, Duration::from_secs(600)).map_err(|e| e.to_string())
}

fn print_json(v: &Value) {
    match v {
        Value::String(s) => println!("{s}"),
        other => println!("{}", serde_json::to_string_pretty(other).expect("serialisable")),
    }
}

fn raw_rpc(socket: &std::path::Path, method: &str, params: Option<&str>) -> CliResult {
    let params = params
        .map(|p| serde_json::from_str::<Value>(p).map_err(|e| format!("parameters are not valid JSON: {e}")))
        .transpose()?;
    print_json(&call(socket, method, params)?);
    Ok(())
}

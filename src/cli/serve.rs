//! `ferrite serve`: load the config (or the embedded default), start reactors, devices and the
//! RPC server, and run until SIGINT, SIGTERM or the `shutdown` RPC.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliResult;
use crate::app::App;
use crate::config::Config;
use crate::reactor::IdlePolicy;
use crate::rpc::server::RpcServer;

/// `serve` options; flags override the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML); default: the embedded default config.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Cores to run reactors on, e.g. `0,1` or `0-1`.
    #[arg(long)]
    cores: Option<String>,
    /// Idle policy: adaptive (sleep when idle) or busy (spin).
    #[arg(long, value_parser = ["adaptive", "busy"])]
    idle_policy: Option<String>,
    /// Print the embedded default config and exit.
    #[arg(long)]
    print_default_config: bool,
}

/// Parses `0,2-3` into core numbers.
pub fn parse_core_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad core list {s:?} (expected e.g. 0,1 or 0-3)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(cores)
}

fn load(args: &ServeArgs, socket: Option<PathBuf>) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::embedded_default(),
    };
    if let Some(c) = &args.cores {
        config.reactor.cores = Some(parse_core_list(c)?);
    }
    if let Some(p) = &args.idle_policy {
        config.reactor.idle_policy = if p == "busy" { IdlePolicy::Busy } else { IdlePolicy::Adaptive };
    }
    if let Some(s) = socket {
        config.rpc.socket = s.display().to_string();
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Runs the daemon until it is told to stop.
pub fn run(args: ServeArgs, socket: Option<PathBuf>) -> CliResult {
    if args.print_default_config {
        print!("{}", crate::config::DEFAULT_CONFIG);
        return Ok(());
    }
    crate::sys::signal::block_termination_signals();
    let config = load(&args, socket)?;
    let socket = PathBuf::from(&config.rpc.socket);
    let app = App::start(config).map_err(|e| e.to_string())?;
    let server = RpcServer::start(app.clone(), &socket).map_err(|e| e.to_string())?;
    let rt = app.runtime.config();
    tracing::info!(
        reactors = rt.cores.len(),
        cores = ?rt.cores,
        idle_policy = rt.idle_policy.name(),
        socket = %server.path().display(),
        "ferrite serving"
    );
    while !app.shutdown_requested() {
        if let Some(sig) = crate::sys::signal::wait_termination(Duration::from_millis(500)) {
            tracing::info!(signal = sig, "stopping on signal");
            app.request_shutdown();
        }
    }
    drop(server);
    tracing::info!("ferrite stopped");
    Ok(())
}

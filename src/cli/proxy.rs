//! `ferrite proxy`: a TCP fault proxy for tests (delay, bandwidth limit, stall, partition),
//! driven over its `--control` port; see [`crate::net::proxy`].

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::CliResult;
use crate::net::proxy::{mbit, Proxy, ProxyConfig};

/// `ferrite proxy` flags.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Where clients connect, IP:PORT (port 0: any; the chosen one is printed).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where each connection is forwarded, IP:PORT.
    #[arg(long)]
    pub to: SocketAddr,
    /// One-way delay per direction, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Bandwidth limit per direction, Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    pub rate_mbit: f64,
    /// Control port, IP:PORT: one command per line (delay MS, rate MBIT, cut, heal, pause,
    /// resume, stats), one answer line each (`ok ...` or `err REASON`).
    #[arg(long)]
    pub control: Option<SocketAddr>,
}

/// Runs the proxy until the process is killed.
pub fn run(args: ProxyArgs) -> CliResult {
    if !args.rate_mbit.is_finite() || args.rate_mbit < 0.0 {
        return Err(format!("--rate-mbit must be ≥ 0, not {}", args.rate_mbit));
    }
    let mut cfg = ProxyConfig::new(args.listen, args.to);
    cfg.delay = Duration::from_millis(args.delay_ms);
    cfg.rate = (args.rate_mbit > 0.0).then(|| mbit(args.rate_mbit).max(1));
    cfg.control = args.control;
    let proxy = Proxy::start(cfg).map_err(|e| format!("proxy: cannot bind: {e}"))?;
    let control = proxy.control_addr().map_or("none".to_string(), |a| a.to_string());
    println!("ferrite proxy: listen {} to {} control {control}", proxy.local_addr(), args.to);
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

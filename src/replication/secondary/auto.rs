//! Automatic failover: a watcher thread per secondary that promotes it once the primary has
//! been silent for the configured time both here (its shipping connection) and at the bunker
//! (asked with `Watch`). Both must see the loss: a secondary cut off from the primary alone, or
//! a bunker that cannot be asked, never triggers it. The bunker is asked twice, a check apart,
//! and its silence must have grown between the answers: a bunker whose reactor was starved
//! (and had not yet read the primary's latest messages) answers with a stale silence once,
//! not twice in a row.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::failover::{self, FailoverRequest};
use super::Secondary;
use crate::app::App;
use crate::replication::wire::Msg;

const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Starts the watcher: after `after` of silence seen by both, fail over (exporting on `nqn`).
pub fn watch(
    app: &Arc<App>,
    sec: Arc<Secondary>,
    after: Duration,
    nqn: Option<String>,
) -> std::io::Result<()> {
    let app = Arc::downgrade(app);
    std::thread::Builder::new()
        .name(format!("auto-failover-{}", sec.name))
        .spawn(move || run(app, sec, after, nqn))?;
    Ok(())
}

fn run(app: Weak<App>, sec: Arc<Secondary>, after: Duration, nqn: Option<String>) {
    let limit = after.as_millis() as u64;
    let mut seen_before: Option<u64> = None;
    loop {
        std::thread::sleep(CHECK_EVERY);
        if sec.retired.load(Ordering::Acquire) || sec.state.lock().expect("secondary state").role != "replica"
        {
            return;
        }
        let here = sec.staging.silent_ms();
        if here == u64::MAX || here < limit {
            seen_before = None;
            continue;
        }
        let Some(bunker) = *sec.bunker.lock().expect("bunker addr") else { continue };
        let there = match ask(bunker, &sec.name) {
            Ok(ms) if ms != u64::MAX && ms >= limit => ms,
            _ => {
                seen_before = None;
                continue;
            }
        };
        let grew = seen_before.is_some_and(|b| there >= b + CHECK_EVERY.as_millis() as u64 / 2);
        seen_before = Some(there);
        if !grew {
            continue;
        }
        let Some(app) = app.upgrade() else { return };
        tracing::warn!(
            volume = sec.name,
            silent_here_ms = here,
            silent_at_bunker_ms = there,
            "primary lost: automatic failover"
        );
        let req = FailoverRequest { bunker: None, nqn: nqn.clone(), force: false, end: None };
        match failover::failover(&app, &sec, &req) {
            Ok(r) => return tracing::info!(volume = sec.name, ?r, "automatic failover done"),
            Err(e) => tracing::error!(volume = sec.name, error = e, "automatic failover failed; will retry"),
        }
    }
}

/// Asks the bunker how long the primary of `volume` has been silent.
fn ask(bunker: SocketAddr, volume: &str) -> Result<u64, String> {
    let mut s = TcpStream::connect_timeout(&bunker, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(1))).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    Msg::Watch { volume: volume.into() }.encode(&mut out);
    s.write_all(&out).map_err(|e| e.to_string())?;
    let mut inbox = Vec::new();
    loop {
        if let Some((m, _)) = Msg::decode(&inbox).map_err(|e| e.to_string())? {
            return match m {
                Msg::Seen { silent_ms } => Ok(silent_ms),
                other => Err(format!("unexpected answer {other:?}")),
            };
        }
        let mut chunk = [0u8; 256];
        match s.read(&mut chunk) {
            Ok(0) => return Err("bunker closed".into()),
            Ok(n) => inbox.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

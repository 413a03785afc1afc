//! Failover on the secondary (the seeds' "manual update initiation"): fence the old primary,
//! pull from the bunker every log block after the staging end, apply everything in order, and
//! promote the replica to a primary volume with the same UUID (so the same NGUID/UUID over
//! NVMe/TCP) and a higher epoch. Control plane: runs on the RPC thread, blocking.
//!
//! Order matters for fencing: the staging log's epoch is bumped first (the old primary's
//! shipping is refused from then on), and the bunker learns the new epoch in the pull's Hello
//! (the old primary is refused there too, and told it is fenced).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::pull::{Pull, PullOutcome};
use super::Secondary;
use crate::app::App;
use crate::net::Net;
use crate::reactor::Message;
use crate::replication::bunker::OUT_OF_STEP;
use crate::replication::log::LogGeometry;
use crate::replication::manager;
use crate::replication::volume::{Mode, OnBunkerLoss, VolumeConfig};
use crate::replication::wire::Msg;

/// How long applying the pulled tail may take.
const APPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// What a failover did, with timings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FailoverReport {
    /// The epoch the volume now serves at.
    pub epoch: u64,
    /// The staging end before the pull (what shipping had delivered).
    pub received_before: u64,
    /// The log end after the pull: everything below is applied.
    pub end: u64,
    /// Bytes pulled from the bunker.
    pub bytes_from_bunker: u64,
    /// The bunker pulled from, or why not.
    pub bunker: Option<String>,
    /// Time to pull, to apply, and in all (ms).
    pub pull_ms: u64,
    pub apply_ms: u64,
    pub total_ms: u64,
    /// The subsystem the volume was exported on, if asked.
    pub exported_on: Option<String>,
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct FailoverRequest {
    /// Bunker to pull from (else the one given at `secondary_create`).
    pub bunker: Option<SocketAddr>,
    /// Export the promoted volume on this subsystem.
    pub nqn: Option<String>,
    /// Promote even if the bunker cannot be reached (acknowledged writes may be lost).
    pub force: bool,
    /// Planned (migration): the primary drained up to this LSN, which this secondary must
    /// hold already; the bunker is then only told the new epoch.
    pub end: Option<u64>,
}

/// Runs a failover of `sec` to completion.
pub fn failover(
    app: &Arc<App>,
    sec: &Arc<Secondary>,
    req: &FailoverRequest,
) -> Result<FailoverReport, String> {
    let started = Instant::now();
    {
        let mut st = sec.state.lock().expect("secondary state");
        if st.role != "replica" {
            return Err(format!("volume {:?} is {}, not a replica", sec.name, st.role));
        }
        st.role = "failing-over".into();
    }
    let result = run(app, sec, req, started);
    let mut st = sec.state.lock().expect("secondary state");
    match &result {
        Ok(r) => {
            st.role = "primary".into();
            st.failover = Some(r.clone());
        }
        Err(_) => st.role = "replica".into(),
    }
    result
}

/// What [`begin`] hands the failover: the new epoch, the ring, the volume's identity, the
/// staging end to pull from, and where the entries the old primary may lack begin (`None`:
/// not known, see [`BunkerState::resumed`](crate::replication::bunker::BunkerState)).
pub type Begun = (u64, LogGeometry, [u8; 16], u64, Option<u64>);

/// Checks the replica can be promoted and takes the new epoch.
pub fn begin(sec: &Secondary, req: &FailoverRequest) -> Result<Begun, String> {
    let mut st = sec.staging.state.lock().expect("bunker state");
    if st.ring_sectors == 0 {
        return Err("no primary ever shipped to this secondary: nothing to fail over".into());
    }
    if st.resync_pending && !req.force {
        return Err("the replica is being resynchronised (it fell out of step with the primary) and is \
                    not a consistent image: promoting it would serve a mix of old and new blocks; \
                    pass \"force\": true to promote it anyway"
            .into());
    }
    if let Some(end) = req.end.filter(|&e| st.durable_end < e) {
        return Err(format!(
            "planned failover: the primary drained to LSN {end} but this secondary holds only up to {}",
            st.durable_end
        ));
    }
    // An attempt before this one (interrupted, or failed after pulling) may have pulled
    // entries already: they count as pulled too, from where the first attempt began.
    let durable_end = st.durable_end;
    let pulled_from = (!st.resumed).then(|| *st.failover_from.get_or_insert(durable_end));
    st.epoch += 1;
    let geo = LogGeometry { sector: st.sector, ring_start: 2, ring_sectors: st.ring_sectors };
    Ok((st.epoch, geo, st.uuid_raw(), durable_end, pulled_from))
}

fn run(
    app: &Arc<App>,
    sec: &Arc<Secondary>,
    req: &FailoverRequest,
    started: Instant,
) -> Result<FailoverReport, String> {
    let mut report = FailoverReport::default();
    let (epoch, geo, uuid, from, pulled_from) = begin(sec, req)?;
    tracing::warn!(volume = sec.name, epoch, "failover: the old primary is fenced from here on");
    report.epoch = epoch;
    report.received_before = from;
    let bunker = req.bunker.or(*sec.bunker.lock().expect("bunker addr"));
    match bunker.map(|addr| pull(app, sec, addr, epoch, geo, uuid, from)) {
        Some(Ok(bytes)) => {
            report.bytes_from_bunker = bytes;
            report.bunker = bunker.map(|a| a.to_string());
        }
        Some(Err(e)) if !req.force && e.contains(OUT_OF_STEP) => {
            abort(sec, epoch);
            return Err(format!("{e}; nothing changed: the primary keeps epoch {}", epoch - 1));
        }
        Some(Err(e)) if !req.force => return Err(format!("{e}; the volume is fenced at epoch {epoch}: retry, or pass \"force\": true to promote without the bunker's tail")),
        Some(Err(e)) => report.bunker = Some(format!("not reached ({e}); promoted without its tail")),
        None if req.end.is_some() => report.bunker = None,
        None if !req.force => return Err("no bunker known: give \"bunker\": \"IP:PORT\", or \"force\": true to promote without it".into()),
        None => report.bunker = None,
    }
    report.pull_ms = started.elapsed().as_millis() as u64;
    report.end = apply_all(sec)?;
    report.apply_ms = started.elapsed().as_millis() as u64 - report.pull_ms;
    // Read before promoting: a failure here must not leave a promoted volume reported failed.
    let pulled = match pulled_from {
        Some(f) => Some(pulled_ranges(sec, &app.pool, f, report.end)?),
        None => {
            tracing::warn!(
                volume = sec.name,
                "failover after a restart: what earlier attempts pulled from the bunker is not known, so a failback resends the whole volume"
            );
            None
        }
    };
    promote(app, sec, uuid, epoch)?;
    if let Some(v) = app.replication.volume(&sec.name) {
        *v.pulled.lock().expect("pulled ranges") = pulled;
    }
    if let Some(nqn) = &req.nqn {
        crate::nvmf::setup::add_namespace(app, nqn, &sec.name, None, None, None)
            .map_err(|e| e.to_string())?;
        report.exported_on = Some(nqn.clone());
    }
    report.total_ms = started.elapsed().as_millis() as u64;
    tracing::info!(volume = sec.name, ?report, "failover complete: serving as primary");
    Ok(report)
}

/// The volume ranges of the entries the staging log holds in `[from, end)`: those a failover
/// pulled from the bunker (see [`crate::replication::volume::VolumeShared::pulled`]).
pub fn pulled_ranges(
    sec: &Secondary,
    pool: &crate::sys::DmaPool,
    from: u64,
    end: u64,
) -> Result<Vec<(u64, u64)>, String> {
    if from >= end {
        return Ok(Vec::new());
    }
    crate::replication::volume::open::ranges_since(&sec.staging.log, pool, from)
        .map_err(|e| format!("reading back what the failover pulled: {e}"))
}

/// Streams `[from, bunker's end)` of the bunker's copy into the staging log (a [`Pull`] on a
/// reactor); returns bytes.
fn pull(
    app: &App,
    sec: &Arc<Secondary>,
    addr: SocketAddr,
    epoch: u64,
    geo: LogGeometry,
    uuid: [u8; 16],
    from: u64,
) -> Result<u64, String> {
    let hello = Msg::Hello {
        volume: sec.name.clone(),
        uuid,
        epoch,
        sector: geo.sector,
        ring_sectors: geo.ring_sectors,
        head: from,
        end: u64::MAX,
    };
    let outcome: PullOutcome = Arc::default();
    let (s, pool, out) = (sec.clone(), app.pool.clone(), outcome.clone());
    let spawn = Message::call(move |cx| {
        match Pull::new(s, pool, (addr, hello, &Net::default()), geo, from, out.clone()) {
            Ok(p) => cx.spawn(Box::new(p)),
            Err(e) => *out.lock().expect("pull outcome") = Some(Err(e)),
        }
    });
    app.runtime.handles()[0].send(spawn).map_err(|e| e.to_string())?;
    loop {
        if let Some(r) = outcome.lock().expect("pull outcome").take() {
            return r;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the applier has applied (and made durable) everything staged, then holds it.
fn apply_all(sec: &Secondary) -> Result<u64, String> {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    loop {
        let st = sec.staging.state.lock().expect("bunker state").clone();
        if let Some(e) = st.apply_error {
            return Err(format!("the replica cannot be brought up to date: {e}"));
        }
        if st.applied >= st.durable_end {
            break;
        }
        sec.wake_applier();
        if Instant::now() > deadline {
            return Err(format!("applying did not finish: applied {} of {}", st.applied, st.durable_end));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let end = super::freeze(sec, true)?;
    Ok(end)
}

/// Turns the replica into a primary volume: its own change log, the volume's UUID, the new
/// epoch; no bunker yet (the old one sits by the old primary).
fn promote(app: &Arc<App>, sec: &Secondary, uuid: [u8; 16], epoch: u64) -> Result<(), String> {
    retire(sec, &app.bunkers);
    for b in [&sec.data, &sec.log] {
        app.bdevs.release(b.name());
    }
    manager::create_volume(app, promoted(sec, uuid, epoch)).map(|_| ())
}

/// A failover the bunker refused before taking its new epoch gives that epoch back, so the
/// old primary is not fenced by its own secondary for a failover that never happened.
pub fn abort(sec: &Secondary, epoch: u64) {
    let mut st = sec.staging.state.lock().expect("bunker state");
    if st.epoch == epoch {
        st.epoch -= 1;
    }
}

/// Ends the replica role: the applier stops and the staging log leaves the bunker table.
pub fn retire(sec: &Secondary, bunkers: &crate::replication::bunker::Bunkers) {
    sec.retired.store(true, Ordering::Release);
    sec.wake_applier();
    bunkers.remove(&sec.name);
    sec.staging.state.lock().expect("bunker state").attached = false;
}

/// The primary volume a promoted replica becomes (its own log formatted with the volume's
/// identity at the new epoch).
pub fn promoted(sec: &Secondary, uuid: [u8; 16], epoch: u64) -> VolumeConfig {
    VolumeConfig {
        name: sec.name.clone(),
        data: sec.data.clone(),
        log: sec.log.clone(),
        mode: Mode::LocalOnly,
        bunker: None,
        on_bunker_loss: OnBunkerLoss::LocalOnly,
        ack: Default::default(),
        force: true,
        secondary: None,
        identity: Some((uuid, epoch)),
        net: Default::default(),
    }
}

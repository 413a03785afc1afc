//! Secondary and shipping methods (stable names): on the secondary `secondary_create`,
//! `volume_failover`, `secondary_freeze`; on the primary `replication_create`, and for a
//! migration `volume_drain` and `volume_demote`; on any node `replication_status`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{params, Handler, RpcError, RpcResult};
use crate::app::App;
use crate::replication::migrate;
use crate::replication::secondary::{self, failover};

/// The methods.
pub const METHODS: &[(&str, Handler)] = &[
    ("secondary_create", secondary_create),
    ("replication_create", replication_create),
    ("volume_failover", volume_failover),
    ("secondary_freeze", secondary_freeze),
    ("replication_status", replication_status),
    ("volume_drain", volume_drain),
    ("volume_demote", volume_demote),
    ("volume_failback", volume_failback),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Failback {
    volume: String,
    fork_lsn: u64,
    staging_bdev: String,
}

fn volume_failback(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: Failback = params(p)?;
    let plan = migrate::failback(app, &p.volume, p.fork_lsn, &p.staging_bdev).map_err(RpcError::invalid)?;
    Ok(serde_json::to_value(plan).expect("serialisable"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Drain {
    volume: String,
    #[serde(default = "yes")]
    drain: bool,
}

fn volume_drain(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: Drain = params(p)?;
    let d = migrate::drain(app, &p.volume, p.drain).map_err(RpcError::invalid)?;
    Ok(d.map_or(json!({"volume": p.volume, "draining": false}), |d| {
        serde_json::to_value(d).expect("serialisable")
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Demote {
    volume: String,
    staging_bdev: String,
}

fn volume_demote(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: Demote = params(p)?;
    migrate::demote(app, &p.volume, &p.staging_bdev, false).map_err(RpcError::invalid)?;
    Ok(json!(true))
}

fn addr(s: &str) -> Result<SocketAddr, RpcError> {
    s.parse().map_err(|_| RpcError::invalid_params(format!("{s:?} is not IP:PORT")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecondaryCreate {
    volume: String,
    data_bdev: String,
    staging_bdev: String,
    log_bdev: String,
    bunker: Option<String>,
    /// Promote automatically once the primary has been silent this long, here and at the
    /// bunker.
    auto_failover_ms: Option<u64>,
    /// Subsystem to export on after an automatic failover.
    nqn: Option<String>,
}

fn secondary_create(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: SecondaryCreate = params(p)?;
    let (data, staging, log) =
        (app.bdevs.get(&p.data_bdev)?, app.bdevs.get(&p.staging_bdev)?, app.bdevs.get(&p.log_bdev)?);
    let bunker = p.bunker.as_deref().map(addr).transpose()?;
    if p.auto_failover_ms.is_some() && bunker.is_none() {
        return Err(RpcError::invalid_params(
            "auto_failover_ms needs \"bunker\": both must see the primary lost",
        ));
    }
    let sec =
        secondary::create(app, &p.volume, data, staging, log, bunker, false).map_err(RpcError::invalid)?;
    if let Some(ms) = p.auto_failover_ms {
        secondary::auto::watch(app, sec, std::time::Duration::from_millis(ms), p.nqn)
            .map_err(|e| RpcError::invalid(format!("starting the auto-failover watcher: {e}")))?;
    }
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicationCreate {
    volume: String,
    secondary: String,
    /// Failback: volume ranges `[lba, blocks]` to resend before the log applies.
    #[serde(default)]
    resync: Vec<(u64, u64)>,
}

fn replication_create(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: ReplicationCreate = params(p)?;
    let to = addr(&p.secondary)?;
    let v = app
        .replication
        .volume(&p.volume)
        .ok_or_else(|| RpcError::no_device(format!("volume {}", p.volume)))?;
    if v.status.lock().expect("status lock").secondary.is_some() {
        return Err(RpcError::exists(format!("volume {} already ships to a secondary", p.volume)));
    }
    let blocks = app.bdevs.get(&p.volume)?.num_blocks();
    if let Some(r) = p.resync.iter().find(|r| r.1 == 0 || r.0.checked_add(r.1).is_none_or(|end| end > blocks))
    {
        return Err(RpcError::invalid_params(format!(
            "resync range {r:?} is empty or beyond the volume's {blocks} blocks"
        )));
    }
    let log = app.bdevs.get(&v.log_bdev)?;
    let req = crate::replication::migrate::secondary_request(&v, &log, blocks, &app.pool, to, p.resync)
        .map_err(RpcError::invalid)?;
    *v.secondary_req.lock().expect("secondary request") = Some(req);
    v.wake_home();
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Failover {
    volume: String,
    bunker: Option<String>,
    nqn: Option<String>,
    #[serde(default)]
    force: bool,
    end: Option<u64>,
}

fn volume_failover(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: Failover = params(p)?;
    let sec = app
        .secondaries
        .get(&p.volume)
        .ok_or_else(|| RpcError::no_device(format!("secondary {}", p.volume)))?;
    let req = failover::FailoverRequest {
        bunker: p.bunker.as_deref().map(addr).transpose()?,
        nqn: p.nqn,
        force: p.force,
        end: p.end,
    };
    let report = failover::failover(app, &sec, &req).map_err(RpcError::invalid)?;
    Ok(serde_json::to_value(report).expect("serialisable"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Freeze {
    volume: String,
    #[serde(default = "yes")]
    frozen: bool,
}

fn yes() -> bool {
    true
}

fn secondary_freeze(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: Freeze = params(p)?;
    let sec = app
        .secondaries
        .get(&p.volume)
        .ok_or_else(|| RpcError::no_device(format!("secondary {}", p.volume)))?;
    let applied = secondary::freeze(&sec, p.frozen).map_err(RpcError::invalid)?;
    Ok(json!({"volume": p.volume, "frozen": p.frozen, "applied": applied}))
}

fn replication_status(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    super::no_params("replication_status", &p)?;
    let primaries: Vec<Value> = app
        .replication
        .volumes()
        .iter()
        .map(|v| {
            let st = v.status.lock().expect("status lock").clone();
            json!({"volume": v.name, "role": "primary", "epoch": st.epoch, "fenced": v.fenced.load(Ordering::Acquire),
                   "mode": st.mode, "committed": st.committed, "head": st.head,
                   "bunker": {"address": st.bunker, "link": st.bunker_link, "durable": st.bunker_durable, "rtt_us": st.bunker_rtt_us},
                   "secondary": st.secondary, "alarm": st.alarm})
        })
        .collect();
    let bunkers: Vec<Value> = app
        .bunkers
        .list()
        .iter()
        .filter(|b| !b.staging)
        .map(|b| json!({"volume": b.name, "role": "bunker", "state": *b.state.lock().expect("bunker state")}))
        .collect();
    let secondaries: Vec<Value> = app.secondaries.list().iter().map(|s| secondary::describe(s)).collect();
    Ok(json!({"primaries": primaries, "bunkers": bunkers, "secondaries": secondaries}))
}

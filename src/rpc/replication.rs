//! Replication methods (names and parameters are stable, scripts rely on them):
//! `replication_listen`, `bunker_create`, `bunker_get_bunkers`, `volume_create`,
//! `volume_get_volumes`, `volume_status`, `volume_delete`.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{params, Handler, RpcError, RpcResult};
use crate::app::App;
use crate::replication::manager;
use crate::replication::volume::{Ack, Mode, OnBunkerLoss, VolumeConfig, VolumeShared};

/// The replication methods.
pub const METHODS: &[(&str, Handler)] = &[
    ("replication_listen", listen),
    ("bunker_create", bunker_create),
    ("bunker_get_bunkers", bunker_list),
    ("volume_create", volume_create),
    ("volume_get_volumes", volume_list),
    ("volume_status", volume_status),
    ("volume_delete", volume_delete),
];

fn addr(s: &str) -> Result<SocketAddr, RpcError> {
    s.parse().map_err(|_| RpcError::invalid_params(format!("{s:?} is not IP:PORT")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Listen {
    address: String,
}

fn listen(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: Listen = params(p)?;
    manager::listen(app, addr(&p.address)?).map_err(RpcError::invalid)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BunkerCreate {
    volume: String,
    log_bdev: String,
}

fn bunker_create(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: BunkerCreate = params(p)?;
    let log = app.bdevs.get(&p.log_bdev)?;
    app.bdevs.claim(&p.log_bdev, &format!("bunker of volume {}", p.volume))?;
    app.bunkers.create(&p.volume, log, &app.pool).map_err(|e| {
        app.bdevs.release(&p.log_bdev);
        RpcError::exists(e)
    })?;
    Ok(json!(true))
}

fn bunker_list(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    super::no_params("bunker_get_bunkers", &p)?;
    let list: Vec<Value> = app
        .bunkers
        .list()
        .iter()
        .map(|b| json!({"volume": b.name, "log_bdev": b.log.name(), "state": *b.state.lock().expect("bunker state")}))
        .collect();
    Ok(json!(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeCreate {
    name: String,
    data_bdev: String,
    log_bdev: String,
    #[serde(default = "default_mode")]
    mode: Mode,
    bunker: Option<String>,
    #[serde(default = "default_loss")]
    on_bunker_loss: OnBunkerLoss,
    #[serde(default)]
    ack: Ack,
    #[serde(default)]
    force: bool,
}

fn default_mode() -> Mode {
    Mode::BunkerSync
}

fn default_loss() -> OnBunkerLoss {
    OnBunkerLoss::LocalOnly
}

fn volume_create(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: VolumeCreate = params(p)?;
    let cfg = VolumeConfig {
        name: p.name.clone(),
        data: app.bdevs.get(&p.data_bdev)?,
        log: app.bdevs.get(&p.log_bdev)?,
        mode: p.mode,
        bunker: p.bunker.as_deref().map(addr).transpose()?,
        on_bunker_loss: p.on_bunker_loss,
        ack: p.ack,
        force: p.force,
        secondary: None,
        identity: None,
        net: Default::default(),
    };
    let opened = manager::create_volume(app, cfg).map_err(RpcError::invalid)?;
    Ok(
        json!({"name": p.name, "formatted": opened.formatted, "replayed_entries": opened.replayed, "holes": opened.holes}),
    )
}

fn describe(v: &VolumeShared) -> Value {
    let st = v.status.lock().expect("status lock").clone();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    json!({"name": v.name, "uuid": uuid::Uuid::from_bytes(v.uuid).to_string(),
           "stopped": v.stopped.load(std::sync::atomic::Ordering::Acquire),
           "reads_from_memory": load(&v.reads_from_memory), "status": st})
}

fn volume_list(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    super::no_params("volume_get_volumes", &p)?;
    Ok(Value::Array(app.replication.volumes().iter().map(|v| describe(v)).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByName {
    name: String,
}

fn volume_status(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: ByName = params(p)?;
    let v =
        app.replication.volume(&p.name).ok_or_else(|| RpcError::no_device(format!("volume {}", p.name)))?;
    Ok(describe(&v))
}

fn volume_delete(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: ByName = params(p)?;
    manager::delete_volume(app, &p.name).map_err(RpcError::invalid)?;
    Ok(json!(true))
}

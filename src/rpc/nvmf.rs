//! NVMe-oF methods with SPDK's names and parameters: `nvmf_create_transport`,
//! `nvmf_create_subsystem`, `nvmf_delete_subsystem`, `nvmf_subsystem_add_ns`,
//! `nvmf_subsystem_remove_ns`, `nvmf_subsystem_add_listener`, `nvmf_subsystem_remove_listener`,
//! `nvmf_subsystem_add_host`, `nvmf_subsystem_remove_host`, `nvmf_subsystem_allow_any_host`,
//! `nvmf_get_subsystems`, `nvmf_subsystem_listener_set_ana_state`, plus `nvmf_get_stats`.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{params, Handler, RpcError, RpcResult};
use crate::app::App;
use crate::nvmf::config::TransportSection;
use crate::nvmf::setup::{self, SetupError};
use crate::nvmf::subsystem::{AnaState, Subsystem, SubsystemError, SubsystemKind};
use crate::nvmf::target::TargetError;

/// The nvmf methods.
pub const METHODS: &[(&str, Handler)] = &[
    ("nvmf_create_transport", create_transport),
    ("nvmf_create_subsystem", create_subsystem),
    ("nvmf_delete_subsystem", delete_subsystem),
    ("nvmf_subsystem_add_ns", add_ns),
    ("nvmf_subsystem_remove_ns", remove_ns),
    ("nvmf_subsystem_add_listener", add_listener),
    ("nvmf_subsystem_remove_listener", remove_listener),
    ("nvmf_subsystem_add_host", add_host),
    ("nvmf_subsystem_remove_host", remove_host),
    ("nvmf_subsystem_allow_any_host", allow_any_host),
    ("nvmf_subsystem_listener_set_ana_state", set_ana_state),
    ("nvmf_get_subsystems", get_subsystems),
    ("nvmf_get_stats", get_stats),
];

fn target_err(e: TargetError) -> RpcError {
    match e {
        TargetError::NoSubsystem(_) => RpcError::invalid_params(e),
        TargetError::Exists(_) | TargetError::TransportExists => RpcError::exists(e),
        TargetError::Listen { .. } => RpcError::internal(e),
        _ => RpcError::invalid_params(e),
    }
}

fn setup_err(e: SetupError) -> RpcError {
    match e {
        SetupError::Target(t) => target_err(t),
        SetupError::Bdev(b) => RpcError::invalid_params(b),
        SetupError::Invalid(m) => RpcError::invalid_params(m),
    }
}

#[derive(Deserialize)]
struct CreateTransport {
    trtype: String,
    max_queue_depth: Option<u16>,
    max_io_qpairs_per_ctrlr: Option<u16>,
    in_capsule_data_size: Option<u32>,
    max_io_size: Option<u32>,
    max_aq_depth: Option<u16>,
    c2h_success: Option<bool>,
}

fn create_transport(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: CreateTransport = params(p)?;
    let d = TransportSection::default();
    let t = TransportSection {
        max_queue_depth: p.max_queue_depth.unwrap_or(d.max_queue_depth),
        max_aq_depth: p.max_aq_depth.unwrap_or(d.max_aq_depth),
        max_io_qpairs_per_ctrlr: p.max_io_qpairs_per_ctrlr.unwrap_or(d.max_io_qpairs_per_ctrlr),
        in_capsule_data_size: p.in_capsule_data_size.unwrap_or(d.in_capsule_data_size),
        max_io_size: p.max_io_size.unwrap_or(d.max_io_size),
        c2h_success: p.c2h_success.unwrap_or(d.c2h_success),
    };
    setup::check_transport(app, &t).map_err(setup_err)?;
    app.nvmf.create_transport(&p.trtype, t).map_err(target_err)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
struct CreateSubsystem {
    nqn: String,
    serial_number: Option<String>,
    model_number: Option<String>,
    #[serde(default)]
    allow_any_host: bool,
    max_namespaces: Option<u32>,
}

fn create_subsystem(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: CreateSubsystem = params(p)?;
    let s = Subsystem::new(&p.nqn, p.serial_number.as_deref(), p.model_number.as_deref())
        .map_err(RpcError::invalid_params)?;
    s.update(|c| {
        c.allow_any_host = p.allow_any_host;
        if let Some(m) = p.max_namespaces.filter(|&m| m > 0) {
            c.max_namespaces = m;
        }
        Ok(())
    })
    .map_err(RpcError::invalid_params)?;
    app.nvmf.add_subsystem(s).map_err(target_err)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
struct ByNqn {
    nqn: String,
}

fn delete_subsystem(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: ByNqn = params(p)?;
    setup::delete_subsystem(app, &p.nqn).map_err(setup_err)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
struct NsParams {
    bdev_name: String,
    nsid: Option<u32>,
    nguid: Option<String>,
    uuid: Option<uuid::Uuid>,
}

#[derive(Deserialize)]
struct AddNs {
    nqn: String,
    namespace: NsParams,
}

fn parse_nguid(s: &str) -> Result<[u8; 16], RpcError> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>();
    bytes
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| RpcError::invalid_params(format!("nguid {s:?} is not 32 hex digits")))
}

fn add_ns(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: AddNs = params(p)?;
    let ns = p.namespace;
    let nguid = ns.nguid.as_deref().map(parse_nguid).transpose()?;
    let uuid = ns.uuid.map(|u| *u.as_bytes());
    let nsid = setup::add_namespace(app, &p.nqn, &ns.bdev_name, ns.nsid, uuid, nguid).map_err(setup_err)?;
    Ok(json!(nsid))
}

#[derive(Deserialize)]
struct RemoveNs {
    nqn: String,
    nsid: u32,
}

fn remove_ns(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: RemoveNs = params(p)?;
    let s = app.nvmf.subsystem(&p.nqn).map_err(target_err)?;
    let ns = s.remove_namespace(p.nsid).map_err(RpcError::invalid_params)?;
    app.bdevs.release(ns.bdev.name());
    app.nvmf.namespaces_changed(&p.nqn, &[p.nsid]);
    Ok(json!(true))
}

#[derive(Deserialize)]
struct ListenAddress {
    trtype: String,
    traddr: String,
    trsvcid: Option<String>,
    adrfam: Option<String>,
}

impl ListenAddress {
    fn socket_addr(&self) -> Result<SocketAddr, RpcError> {
        if !self.trtype.eq_ignore_ascii_case("tcp") {
            return Err(RpcError::invalid_params(format!(
                "transport type {:?} is not supported (only TCP)",
                self.trtype
            )));
        }
        if let Some(f) = &self.adrfam {
            if !matches!(f.to_ascii_lowercase().as_str(), "ipv4" | "ipv6") {
                return Err(RpcError::invalid_params(format!("address family {f:?} is not supported")));
            }
        }
        let port = self.trsvcid.as_deref().unwrap_or("4420");
        let ip: std::net::IpAddr = self.traddr.parse().map_err(|_| {
            RpcError::invalid_params(format!("traddr {:?} is not an IP address", self.traddr))
        })?;
        let port: u16 =
            port.parse().map_err(|_| RpcError::invalid_params(format!("trsvcid {port:?} is not a port")))?;
        Ok(SocketAddr::new(ip, port))
    }
}

fn parse_ana(s: &str) -> Result<AnaState, RpcError> {
    serde_json::from_value(json!(s.to_ascii_lowercase())).map_err(|_| {
        RpcError::invalid_params(format!("ana_state {s:?} must be optimized, non_optimized or inaccessible"))
    })
}

#[derive(Deserialize)]
struct ListenerParams {
    nqn: String,
    listen_address: ListenAddress,
    ana_state: Option<String>,
}

fn add_listener(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: ListenerParams = params(p)?;
    let addr = p.listen_address.socket_addr()?;
    let ana = p.ana_state.as_deref().map(parse_ana).transpose()?.unwrap_or(AnaState::Optimized);
    app.nvmf.add_listener(&p.nqn, addr, ana).map_err(target_err)?;
    Ok(json!(true))
}

fn remove_listener(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: ListenerParams = params(p)?;
    let addr = p.listen_address.socket_addr()?;
    app.nvmf.remove_listener(&p.nqn, addr).map_err(target_err)?;
    Ok(json!(true))
}

fn set_ana_state(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: ListenerParams = params(p)?;
    let addr = p.listen_address.socket_addr()?;
    let ana = parse_ana(
        p.ana_state.as_deref().ok_or_else(|| RpcError::invalid_params("missing field `ana_state`"))?,
    )?;
    app.nvmf.set_ana_state(&p.nqn, addr, ana).map_err(target_err)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
struct HostParams {
    nqn: String,
    host: String,
}

fn nvm_subsystem(app: &App, nqn: &str) -> Result<Arc<Subsystem>, RpcError> {
    let s = app.nvmf.subsystem(nqn).map_err(target_err)?;
    if s.kind == SubsystemKind::Discovery {
        return Err(target_err(TargetError::Discovery));
    }
    Ok(s)
}

fn add_host(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: HostParams = params(p)?;
    crate::nvmf::subsystem::validate_nqn(&p.host).map_err(RpcError::invalid_params)?;
    nvm_subsystem(app, &p.nqn)?
        .update(|c| {
            c.hosts.insert(p.host.clone());
            Ok(())
        })
        .map_err(RpcError::invalid_params)?;
    app.nvmf.bump_genctr();
    Ok(json!(true))
}

fn remove_host(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: HostParams = params(p)?;
    let s = nvm_subsystem(app, &p.nqn)?;
    s.update(|c| if c.hosts.remove(&p.host) { Ok(()) } else { Err(SubsystemError::NoHost(p.host.clone())) })
        .map_err(RpcError::invalid_params)?;
    // Controllers of a removed host are torn down, as SPDK does.
    for c in app.nvmf.ctrlrs_of(&p.nqn).iter().filter(|c| c.hostnqn == p.host && !s.host_allowed(&p.host)) {
        c.fail("host removed from the subsystem");
    }
    app.nvmf.wake_all();
    app.nvmf.bump_genctr();
    Ok(json!(true))
}

#[derive(Deserialize)]
struct AllowAny {
    nqn: String,
    allow_any_host: bool,
}

fn allow_any_host(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: AllowAny = params(p)?;
    nvm_subsystem(app, &p.nqn)?
        .update(|c| {
            c.allow_any_host = p.allow_any_host;
            Ok(())
        })
        .map_err(RpcError::invalid_params)?;
    app.nvmf.bump_genctr();
    Ok(json!(true))
}

fn describe(s: &Subsystem) -> Value {
    let c = s.config();
    let listeners: Vec<Value> = c
        .listeners
        .iter()
        .map(|l| {
            json!({"trtype": "TCP", "adrfam": if l.addr.is_ipv6() {"IPv6"} else {"IPv4"},
                   "traddr": l.addr.ip().to_string(), "trsvcid": l.addr.port().to_string(), "ana_state": l.ana_state})
        })
        .collect();
    let hosts: Vec<Value> = c.hosts.iter().map(|h| json!({"nqn": h})).collect();
    if s.kind == SubsystemKind::Discovery {
        return json!({"nqn": s.nqn, "subtype": "Discovery", "listen_addresses": listeners, "allow_any_host": true, "hosts": []});
    }
    let namespaces: Vec<Value> = c
        .namespaces
        .values()
        .map(|ns| {
            let nguid: String = ns.nguid.iter().map(|b| format!("{b:02X}")).collect();
            json!({"nsid": ns.nsid, "bdev_name": ns.bdev.name(), "name": ns.bdev.name(), "nguid": nguid,
                   "uuid": uuid::Uuid::from_bytes(ns.uuid).to_string(), "anagrpid": ns.anagrpid})
        })
        .collect();
    json!({
        "nqn": s.nqn, "subtype": "NVMe", "listen_addresses": listeners, "allow_any_host": c.allow_any_host,
        "hosts": hosts, "serial_number": c.serial, "model_number": c.model, "max_namespaces": c.max_namespaces,
        "min_cntlid": 1, "max_cntlid": 0xFFEF, "namespaces": namespaces,
    })
}

#[derive(Deserialize)]
struct GetSubsystems {
    nqn: Option<String>,
}

fn get_subsystems(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: GetSubsystems = params(p)?;
    let list = match p.nqn {
        Some(nqn) => {
            vec![app.nvmf.subsystem(&nqn).map_err(|_| RpcError::no_device(format!("subsystem {nqn}")))?]
        }
        None => app.nvmf.subsystems(),
    };
    Ok(Value::Array(list.iter().map(|s| describe(s)).collect()))
}

fn get_stats(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    super::no_params("nvmf_get_stats", &p)?;
    let ctrlrs: Vec<Value> = app
        .nvmf
        .subsystems()
        .iter()
        .flat_map(|s| app.nvmf.ctrlrs_of(&s.nqn))
        .map(|c| json!({"cntlid": c.cntlid, "subnqn": c.subsys.nqn, "hostnqn": c.hostnqn, "io_qpairs": c.io_qpair_count()}))
        .collect();
    Ok(
        json!({"controllers": ctrlrs, "dma_pool_free": app.pool.free_count(), "dma_pool_count": app.pool.count()}),
    )
}

//! NVM subsystems: an NQN, identity strings, namespaces mapped to bdevs, the hosts allowed in,
//! and the listeners it is reachable on, each with its ANA state.
//!
//! Invariants: namespace ids are unique and non-zero; a namespace keeps the UUID/NGUID it was
//! created with (derived from the bdev's UUID unless given), so a volume keeps its identity
//! across restarts and failover; every change bumps `generation`, which qpairs compare on
//! each I/O (one atomic load) to notice namespace changes without a lock on the data path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};

use crate::bdev::Bdev;

/// Asymmetric Namespace Access state of a listener (the path a host uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnaState {
    /// Optimized path.
    Optimized,
    /// Usable, not optimized.
    NonOptimized,
    /// Not usable now.
    Inaccessible,
    /// Permanently unusable.
    PersistentLoss,
    /// In transition.
    Change,
}

impl AnaState {
    /// The code in the ANA log page.
    pub fn code(self) -> u8 {
        match self {
            AnaState::Optimized => 0x1,
            AnaState::NonOptimized => 0x2,
            AnaState::Inaccessible => 0x3,
            AnaState::PersistentLoss => 0x4,
            AnaState::Change => 0xF,
        }
    }

    /// Whether I/O may be served on a path in this state.
    pub fn serves_io(self) -> bool {
        matches!(self, AnaState::Optimized | AnaState::NonOptimized)
    }
}

/// A namespace.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// Namespace id (1-based).
    pub nsid: u32,
    /// Backing device.
    pub bdev: Arc<dyn Bdev>,
    /// Namespace UUID.
    pub uuid: [u8; 16],
    /// Namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// ANA group.
    pub anagrpid: u32,
}

/// A listener of a subsystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Address and port.
    pub addr: SocketAddr,
    /// ANA state of this path.
    pub ana_state: AnaState,
}

/// Whether a subsystem serves I/O or discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubsystemKind {
    /// The discovery subsystem.
    Discovery,
    /// An NVM subsystem.
    Nvme,
}

/// Mutable subsystem configuration.
#[derive(Debug, Clone)]
pub struct SubsystemConfig {
    /// Serial number (≤ 20 ASCII).
    pub serial: String,
    /// Model number (≤ 40 ASCII).
    pub model: String,
    /// Accept any host.
    pub allow_any_host: bool,
    /// Allowed host NQNs.
    pub hosts: BTreeSet<String>,
    /// Namespaces by id.
    pub namespaces: BTreeMap<u32, Namespace>,
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// Largest namespace id allowed.
    pub max_namespaces: u32,
}

/// A subsystem operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubsystemError {
    /// Bad NQN, serial, model...
    #[error("{0}")]
    Invalid(String),
    /// A namespace id is taken.
    #[error("namespace id {0} is already in use")]
    NsidInUse(u32),
    /// No free namespace id.
    #[error("no free namespace id (max_namespaces {0})")]
    NoFreeNsid(u32),
    /// A listener exists.
    #[error("listener {0} already exists")]
    ListenerExists(SocketAddr),
    /// No such listener.
    #[error("listener {0} not found")]
    NoListener(SocketAddr),
    /// No such host.
    #[error("host {0:?} is not in the allowed list")]
    NoHost(String),
}

/// A subsystem.
#[derive(Debug)]
pub struct Subsystem {
    /// NQN.
    pub nqn: String,
    /// Discovery or NVM.
    pub kind: SubsystemKind,
    config: RwLock<SubsystemConfig>,
    generation: AtomicU64,
}

/// Checks an NQN as NVMe Base 2.0 §4.5 defines it (loosely: length and prefix).
pub fn validate_nqn(nqn: &str) -> Result<(), SubsystemError> {
    let ok_prefix = nqn.starts_with("nqn.") && nqn.len() > 11;
    if !ok_prefix || nqn.len() > 223 || !nqn.is_ascii() || nqn.contains(char::is_whitespace) {
        return Err(SubsystemError::Invalid(format!(
            "invalid NQN {nqn:?} (expected nqn.yyyy-mm.reverse-domain:name, at most 223 bytes)"
        )));
    }
    Ok(())
}

fn validate_ascii(field: &str, value: &str, max: usize) -> Result<(), SubsystemError> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(SubsystemError::Invalid(format!(
            "invalid {field} {value:?} (1 to {max} printable ASCII characters)"
        )));
    }
    Ok(())
}

impl Subsystem {
    /// A new NVM subsystem.
    pub fn new(nqn: &str, serial: Option<&str>, model: Option<&str>) -> Result<Subsystem, SubsystemError> {
        validate_nqn(nqn)?;
        let serial = serial.map(str::to_string).unwrap_or_else(|| default_serial(nqn));
        let model = model.unwrap_or("ferrite NVMe/TCP volume").to_string();
        validate_ascii("serial number", &serial, 20)?;
        validate_ascii("model number", &model, 40)?;
        Ok(Subsystem::with(nqn, SubsystemKind::Nvme, serial, model))
    }

    /// The discovery subsystem.
    pub fn discovery() -> Subsystem {
        let mut s = Subsystem::with(
            crate::nvmf::DISCOVERY_NQN,
            SubsystemKind::Discovery,
            "ferrite-discovery".into(),
            "ferrite discovery controller".into(),
        );
        s.config.get_mut().expect("fresh lock").allow_any_host = true;
        s
    }

    fn with(nqn: &str, kind: SubsystemKind, serial: String, model: String) -> Subsystem {
        let config = SubsystemConfig {
            serial,
            model,
            allow_any_host: false,
            hosts: BTreeSet::new(),
            namespaces: BTreeMap::new(),
            listeners: Vec::new(),
            max_namespaces: 1024,
        };
        Subsystem { nqn: nqn.to_string(), kind, config: RwLock::new(config), generation: AtomicU64::new(1) }
    }

    /// Reads the configuration (control path and connect time only).
    pub fn config(&self) -> RwLockReadGuard<'_, SubsystemConfig> {
        self.config.read().expect("subsystem lock poisoned")
    }

    /// Changes the configuration and bumps the generation.
    pub fn update<R>(
        &self,
        f: impl FnOnce(&mut SubsystemConfig) -> Result<R, SubsystemError>,
    ) -> Result<R, SubsystemError> {
        let mut cfg = self.config.write().expect("subsystem lock poisoned");
        let r = f(&mut cfg)?;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(r)
    }

    /// Changes so far; qpairs compare it to their cached value.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether `hostnqn` may connect.
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        let cfg = self.config();
        cfg.allow_any_host || cfg.hosts.contains(hostnqn)
    }

    /// The ANA state of the listener on `addr` (None: not listening there).
    pub fn listener_state(&self, addr: SocketAddr) -> Option<AnaState> {
        self.config().listeners.iter().find(|l| l.addr == addr).map(|l| l.ana_state)
    }

    /// Adds a namespace; returns its id.
    pub fn add_namespace(
        &self,
        bdev: Arc<dyn Bdev>,
        nsid: Option<u32>,
        uuid: Option<[u8; 16]>,
        nguid: Option<[u8; 16]>,
    ) -> Result<u32, SubsystemError> {
        self.update(|cfg| {
            let nsid = match nsid {
                Some(0) => return Err(SubsystemError::Invalid("nsid 0 is not a valid namespace id".into())),
                Some(n) if cfg.namespaces.contains_key(&n) => return Err(SubsystemError::NsidInUse(n)),
                Some(n) if n > cfg.max_namespaces => {
                    return Err(SubsystemError::Invalid(format!("nsid {n} above max_namespaces")))
                }
                Some(n) => n,
                None => (1..=cfg.max_namespaces)
                    .find(|n| !cfg.namespaces.contains_key(n))
                    .ok_or(SubsystemError::NoFreeNsid(cfg.max_namespaces))?,
            };
            let uuid = uuid.unwrap_or_else(|| bdev.uuid());
            let nguid = nguid.unwrap_or(uuid);
            cfg.namespaces.insert(nsid, Namespace { nsid, bdev, uuid, nguid, anagrpid: 1 });
            Ok(nsid)
        })
    }

    /// Removes a namespace.
    pub fn remove_namespace(&self, nsid: u32) -> Result<Namespace, SubsystemError> {
        self.update(|cfg| {
            cfg.namespaces
                .remove(&nsid)
                .ok_or_else(|| SubsystemError::Invalid(format!("namespace {nsid} not found")))
        })
    }

    /// The namespace `nsid`, if any.
    pub fn namespace(&self, nsid: u32) -> Option<Namespace> {
        self.config().namespaces.get(&nsid).cloned()
    }
}

/// A serial number derived from the NQN (stable across restarts).
pub fn default_serial(nqn: &str) -> String {
    format!("FE{:016X}", crc32c::crc32c(nqn.as_bytes()) as u64 * 0x9E37_79B9 % 10u64.pow(16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::backend::{null::NullBdev, Geometry};

    fn bdev(name: &str) -> Arc<dyn Bdev> {
        NullBdev::create(Geometry::new(name, 512, 100, None).unwrap())
    }

    #[test]
    fn namespaces_get_ids_and_identity() {
        let s = Subsystem::new("nqn.2024-01.io.ferrite:vol0", None, None).unwrap();
        let g0 = s.generation();
        let b = bdev("a");
        assert_eq!(s.add_namespace(b.clone(), None, None, None).unwrap(), 1);
        assert_eq!(s.add_namespace(bdev("b"), None, None, None).unwrap(), 2);
        assert_eq!(s.add_namespace(bdev("c"), Some(2), None, None), Err(SubsystemError::NsidInUse(2)));
        assert_eq!(s.namespace(1).unwrap().uuid, b.uuid());
        assert!(s.generation() > g0);
        s.remove_namespace(1).unwrap();
        assert!(s.namespace(1).is_none());
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Subsystem::new("vol0", None, None).is_err());
        assert!(Subsystem::new("nqn.2024-01.io.ferrite:v", Some(&"x".repeat(21)), None).is_err());
        assert!(Subsystem::new("nqn.2024-01.io.ferrite:v", None, Some("")).is_err());
        assert_eq!(default_serial("nqn.x"), default_serial("nqn.x"));
    }

    #[test]
    fn hosts() {
        let s = Subsystem::new("nqn.2024-01.io.ferrite:vol0", None, None).unwrap();
        assert!(!s.host_allowed("nqn.h"));
        s.update(|c| {
            c.hosts.insert("nqn.h".into());
            Ok(())
        })
        .unwrap();
        assert!(s.host_allowed("nqn.h"));
    }
}

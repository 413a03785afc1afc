//! The `[nvmf]` section of the config file: transport settings, the discovery listener and the
//! subsystems to create at start-up (the same things the `nvmf_*` RPCs create).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Transport limits (as `nvmf_create_transport` sets them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSection {
    /// Entries per I/O queue (sqsize + 1 at most).
    pub max_queue_depth: u16,
    /// Entries in the admin queue.
    pub max_aq_depth: u16,
    /// I/O queues per controller.
    pub max_io_qpairs_per_ctrlr: u16,
    /// In-capsule data accepted on I/O queues, bytes.
    pub in_capsule_data_size: u32,
    /// Largest transfer (MDTS), bytes.
    pub max_io_size: u32,
    /// Send C2HData with the SUCCESS flag instead of a response capsule.
    pub c2h_success: bool,
}

impl Default for TransportSection {
    fn default() -> Self {
        TransportSection {
            max_queue_depth: 128,
            max_aq_depth: 32,
            max_io_qpairs_per_ctrlr: 8,
            in_capsule_data_size: 8192,
            max_io_size: 128 * 1024,
            c2h_success: true,
        }
    }
}

/// A namespace in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSection {
    /// Backing bdev.
    pub bdev: String,
    /// Namespace id (default: the next free).
    pub nsid: Option<u32>,
    /// Fixed UUID (default: the bdev's).
    pub uuid: Option<uuid::Uuid>,
}

/// A subsystem in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsystemSection {
    /// NVMe Qualified Name.
    pub nqn: String,
    /// Serial number (default derived from the NQN).
    pub serial_number: Option<String>,
    /// Model number.
    pub model_number: Option<String>,
    /// Accept any host NQN.
    #[serde(default)]
    pub allow_any_host: bool,
    /// Allowed host NQNs.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Namespaces.
    #[serde(default)]
    pub namespaces: Vec<NamespaceSection>,
    /// Listen addresses, `IP:PORT`.
    #[serde(default)]
    pub listeners: Vec<String>,
}

/// The `[nvmf]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvmfSection {
    /// Transport limits; the TCP transport exists as soon as this section does.
    pub transport: Option<TransportSection>,
    /// Discovery listeners, `IP:PORT` (e.g. 127.0.0.1:8009).
    pub discovery: Vec<String>,
    /// Subsystems.
    pub subsystem: Vec<SubsystemSection>,
}

impl NvmfSection {
    /// Checks that names and addresses make sense. Namespace bdevs are checked when applied:
    /// a volume found on examine is a bdev the file does not list.
    pub fn validate(&self, _bdevs: &BTreeSet<&str>) -> Result<(), String> {
        let mut nqns = BTreeSet::new();
        for s in &self.subsystem {
            if !nqns.insert(s.nqn.as_str()) {
                return Err(format!("subsystem {:?} is defined twice", s.nqn));
            }
            for l in &s.listeners {
                parse_listen_address(l).map_err(|e| format!("subsystem {:?}: {e}", s.nqn))?;
            }
        }
        for l in &self.discovery {
            parse_listen_address(l).map_err(|e| format!("nvmf.discovery: {e}"))?;
        }
        Ok(())
    }
}

/// Parses `IP:PORT`.
pub fn parse_listen_address(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| format!("listen address {s:?} is not IP:PORT"))
}

//! RDMA (verbs) devices from `/sys/class/infiniband` and `/dev/infiniband`.

use crate::sysfs::{list_dir, read_str};
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;

const IB_CLASS: &str = "/sys/class/infiniband";
const IB_DEV: &str = "/dev/infiniband";

/// Cap on GID table entries read per port, to keep the probe cheap.
const MAX_GIDS: usize = 256;

/// One port of an RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaPort {
    pub port: u32,
    /// e.g. `4: ACTIVE`.
    pub state: Option<String>,
    /// `InfiniBand` or `Ethernet` (RoCE/iWARP).
    pub link_layer: Option<String>,
    /// Populated (non-zero) GID entries, counting at most `MAX_GIDS`.
    pub gids: Option<usize>,
}

impl RdmaPort {
    pub fn is_active(&self) -> bool {
        self.state.as_deref().is_some_and(|s| s.contains("ACTIVE"))
    }
}

/// One RDMA device (e.g. `mlx5_0`, `rxe0`, `siw0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaDevice {
    pub name: String,
    pub node_type: Option<String>,
    pub ports: Vec<RdmaPort>,
}

/// RDMA devices and verbs character devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaInfo {
    /// `/sys/class/infiniband` exists (ib_core loaded).
    pub class_present: bool,
    pub devices: Vec<RdmaDevice>,
    /// `/dev/infiniband/uverbsN` nodes.
    pub uverbs: Vec<String>,
    pub errors: Vec<String>,
}

impl RdmaInfo {
    /// Lists RDMA devices; failures are recorded in `errors`, never raised.
    pub fn gather() -> Self {
        let mut info = Self::default();
        match list_dir(IB_CLASS) {
            Ok(names) => {
                info.class_present = true;
                info.devices = names.iter().map(|n| device(n, &mut info.errors)).collect();
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => info.errors.push(format!("{IB_CLASS}: {e}")),
        }
        match list_dir(IB_DEV) {
            Ok(names) => {
                info.uverbs = names
                    .into_iter()
                    .filter(|n| n.starts_with("uverbs"))
                    .map(|n| format!("{IB_DEV}/{n}"))
                    .collect();
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => info.errors.push(format!("{IB_DEV}: {e}")),
        }
        info
    }

    /// `Ok` if some device has an ACTIVE port and a uverbs node exists;
    /// otherwise a human reason suitable for a test-skip message.
    pub fn available(&self) -> Result<(), String> {
        if !self.class_present {
            return Err(format!("no {IB_CLASS} (ib_core not loaded / no RDMA hardware)"));
        }
        if self.devices.is_empty() {
            return Err(format!(
                "{IB_CLASS} is empty (no RDMA devices; try `rdma link add rxe0 type rxe netdev <if>`)"
            ));
        }
        if !self.devices.iter().any(|d| d.ports.iter().any(RdmaPort::is_active)) {
            return Err("RDMA devices present but no port is ACTIVE".to_string());
        }
        if self.uverbs.is_empty() {
            return Err(format!("no {IB_DEV}/uverbs* (ib_uverbs not loaded or /dev not exposed)"));
        }
        Ok(())
    }
}

fn device(name: &str, errors: &mut Vec<String>) -> RdmaDevice {
    let dir = format!("{IB_CLASS}/{name}");
    let ports_dir = format!("{dir}/ports");
    let ports = match list_dir(&ports_dir) {
        Ok(p) => p.iter().filter_map(|p| p.parse().ok()).map(|p| port(&ports_dir, p)).collect(),
        Err(e) => {
            errors.push(format!("{ports_dir}: {e}"));
            Vec::new()
        }
    };
    RdmaDevice { name: name.to_string(), node_type: read_str(&format!("{dir}/node_type")).ok(), ports }
}

fn port(ports_dir: &str, port: u32) -> RdmaPort {
    let dir = format!("{ports_dir}/{port}");
    RdmaPort {
        port,
        state: read_str(&format!("{dir}/state")).ok(),
        link_layer: read_str(&format!("{dir}/link_layer")).ok(),
        gids: gid_count(&format!("{dir}/gids")),
    }
}

/// Unpopulated GID entries read as all-zero or fail with EINVAL; skip both.
fn gid_count(gids_dir: &str) -> Option<usize> {
    let entries = list_dir(gids_dir).ok()?;
    let populated = entries
        .iter()
        .take(MAX_GIDS)
        .filter_map(|e| read_str(&format!("{gids_dir}/{e}")).ok())
        .filter(|g| g.chars().any(|c| c.is_ascii_hexdigit() && c != '0'))
        .count();
    Some(populated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_reasons() {
        let mut info = RdmaInfo::default();
        assert!(info.available().unwrap_err().contains("ib_core"));
        info.class_present = true;
        assert!(info.available().unwrap_err().contains("no RDMA devices"));
        let port = RdmaPort { port: 1, state: Some("4: ACTIVE".into()), link_layer: None, gids: None };
        info.devices.push(RdmaDevice { name: "rxe0".into(), node_type: None, ports: vec![port] });
        assert!(info.available().unwrap_err().contains("uverbs"));
        info.uverbs.push("/dev/infiniband/uverbs0".into());
        assert_eq!(info.available(), Ok(()));
    }
}

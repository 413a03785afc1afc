//! `ferrite nvmf ...`: friendly verbs over the SPDK-named nvmf RPCs.

use std::path::Path;

use clap::Subcommand;
use serde_json::{json, Value};

use super::{call, print_json, CliResult};

/// NVMe-oF verbs.
#[derive(Debug, Subcommand)]
pub enum NvmfCmd {
    /// Create the TCP transport (done implicitly by a config with subsystems).
    Transport {
        /// Entries per I/O queue.
        #[arg(long)]
        max_queue_depth: Option<u16>,
        /// In-capsule data size, bytes.
        #[arg(long)]
        in_capsule_data_size: Option<u32>,
        /// Largest transfer, bytes.
        #[arg(long)]
        max_io_size: Option<u32>,
    },
    /// Create a subsystem.
    Create {
        /// NQN.
        nqn: String,
        /// Serial number.
        #[arg(long)]
        serial: Option<String>,
        /// Model number.
        #[arg(long)]
        model: Option<String>,
        /// Accept any host NQN.
        #[arg(long)]
        allow_any_host: bool,
    },
    /// Delete a subsystem.
    Delete {
        /// NQN.
        nqn: String,
    },
    /// Export a bdev as a namespace.
    AddNs {
        /// NQN.
        nqn: String,
        /// Bdev name.
        bdev: String,
        /// Namespace id.
        #[arg(long)]
        nsid: Option<u32>,
    },
    /// Listen for hosts on IP:PORT.
    Listen {
        /// NQN (or "discovery").
        nqn: String,
        /// IP:PORT.
        addr: String,
    },
    /// Allow a host NQN.
    AddHost {
        /// Subsystem NQN.
        nqn: String,
        /// Host NQN.
        host: String,
    },
    /// Disallow a host NQN (its controllers are torn down).
    RemoveHost {
        /// Subsystem NQN.
        nqn: String,
        /// Host NQN.
        host: String,
    },
    /// Set the ANA state of a listener.
    Ana {
        /// NQN.
        nqn: String,
        /// IP:PORT of the listener.
        addr: String,
        /// optimized, non_optimized or inaccessible.
        state: String,
    },
    /// List subsystems.
    List,
}

fn listen_address(addr: &str) -> Result<Value, String> {
    let sa: std::net::SocketAddr = addr.parse().map_err(|_| format!("{addr:?} is not IP:PORT"))?;
    Ok(
        json!({"trtype": "tcp", "adrfam": if sa.is_ipv6() {"ipv6"} else {"ipv4"}, "traddr": sa.ip().to_string(), "trsvcid": sa.port().to_string()}),
    )
}

fn request(cmd: NvmfCmd) -> Result<(&'static str, Option<Value>), String> {
    let nqn_of = |n: String| if n == "discovery" { ferrite_discovery() } else { n };
    Ok(match cmd {
        NvmfCmd::Transport { max_queue_depth, in_capsule_data_size, max_io_size } => (
            "nvmf_create_transport",
            Some(
                json!({"trtype": "TCP", "max_queue_depth": max_queue_depth, "in_capsule_data_size": in_capsule_data_size, "max_io_size": max_io_size}),
            ),
        ),
        NvmfCmd::Create { nqn, serial, model, allow_any_host } => (
            "nvmf_create_subsystem",
            Some(
                json!({"nqn": nqn, "serial_number": serial, "model_number": model, "allow_any_host": allow_any_host}),
            ),
        ),
        NvmfCmd::Delete { nqn } => ("nvmf_delete_subsystem", Some(json!({"nqn": nqn}))),
        NvmfCmd::AddNs { nqn, bdev, nsid } => (
            "nvmf_subsystem_add_ns",
            Some(json!({"nqn": nqn, "namespace": {"bdev_name": bdev, "nsid": nsid}})),
        ),
        NvmfCmd::Listen { nqn, addr } => (
            "nvmf_subsystem_add_listener",
            Some(json!({"nqn": nqn_of(nqn), "listen_address": listen_address(&addr)?})),
        ),
        NvmfCmd::AddHost { nqn, host } => {
            ("nvmf_subsystem_add_host", Some(json!({"nqn": nqn, "host": host})))
        }
        NvmfCmd::RemoveHost { nqn, host } => {
            ("nvmf_subsystem_remove_host", Some(json!({"nqn": nqn, "host": host})))
        }
        NvmfCmd::Ana { nqn, addr, state } => (
            "nvmf_subsystem_listener_set_ana_state",
            Some(json!({"nqn": nqn, "ana_state": state, "listen_address": listen_address(&addr)?})),
        ),
        NvmfCmd::List => ("nvmf_get_subsystems", None),
    })
}

fn ferrite_discovery() -> String {
    crate::nvmf::DISCOVERY_NQN.to_string()
}

/// Runs an nvmf verb.
pub fn run(socket: &Path, cmd: NvmfCmd) -> CliResult {
    let (method, params) = request(cmd)?;
    let params = params.map(strip_nulls);
    let v = call(socket, method, params)?;
    if v != json!(true) {
        print_json(&v);
    }
    Ok(())
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect(),
        ),
        other => other,
    }
}

//! `ferrite volume ...`, `ferrite bunker ...`, `ferrite replication ...`: verbs over the
//! replication RPCs.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::{call, print_json, CliResult};

/// Replicated-volume verbs.
#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create (or reopen and recover) a replicated volume over a data bdev and a log bdev.
    Create {
        /// Volume name (also its bdev name).
        name: String,
        /// Data bdev.
        #[arg(long)]
        data: String,
        /// Change-log bdev.
        #[arg(long)]
        log: String,
        /// bunker-sync (default), local-only or sync.
        #[arg(long, default_value = "bunker-sync")]
        mode: String,
        /// Bunker replication address, IP:PORT.
        #[arg(long)]
        bunker: Option<String>,
        /// local-only (default) or stall.
        #[arg(long, default_value = "local-only")]
        on_bunker_loss: String,
        /// Answer writes once durable (default) or once applied to the volume too.
        #[arg(long, default_value = "durable")]
        ack: String,
        /// Format the log even if it holds another volume.
        #[arg(long)]
        force: bool,
    },
    /// List volumes with their status.
    List,
    /// Mode, positions, log fill, bunker link, write latency.
    Status {
        /// Volume name.
        name: String,
    },
    /// Stop and remove a volume (unexport it first).
    Delete {
        /// Volume name.
        name: String,
    },
}

/// Bunker and replication-port verbs.
#[derive(Debug, Subcommand)]
pub enum BunkerCmd {
    /// Hold the change log of VOLUME on LOG_BDEV for its primary.
    Create {
        /// Volume name (as the primary calls it).
        volume: String,
        /// Bdev for the copy.
        log_bdev: String,
    },
    /// Open this node's replication port.
    Listen {
        /// IP:PORT.
        address: String,
    },
    /// List bunker logs.
    List,
}

/// Runs a volume verb.
pub fn run_volume(socket: &Path, cmd: VolumeCmd) -> CliResult {
    let v = match cmd {
        VolumeCmd::Create { name, data, log, mode, bunker, on_bunker_loss, ack, force } => call(
            socket,
            "volume_create",
            Some(json!({"name": name, "data_bdev": data, "log_bdev": log, "mode": mode, "bunker": bunker,
                        "on_bunker_loss": on_bunker_loss, "ack": ack, "force": force})),
        )?,
        VolumeCmd::List => call(socket, "volume_get_volumes", None)?,
        VolumeCmd::Status { name } => call(socket, "volume_status", Some(json!({"name": name})))?,
        VolumeCmd::Delete { name } => call(socket, "volume_delete", Some(json!({"name": name})))?,
    };
    print_json(&v);
    Ok(())
}

/// Runs a bunker verb.
pub fn run_bunker(socket: &Path, cmd: BunkerCmd) -> CliResult {
    let v = match cmd {
        BunkerCmd::Create { volume, log_bdev } => {
            call(socket, "bunker_create", Some(json!({"volume": volume, "log_bdev": log_bdev})))?
        }
        BunkerCmd::Listen { address } => {
            call(socket, "replication_listen", Some(json!({"address": address})))?
        }
        BunkerCmd::List => call(socket, "bunker_get_bunkers", None)?,
    };
    print_json(&v);
    Ok(())
}

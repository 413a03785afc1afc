//! `ferrite secondary ...`, `ferrite replication ...`, `ferrite failover`, `ferrite status`:
//! verbs over the secondary and shipping RPCs.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::{call, print_json, CliResult};

/// Secondary (replica) verbs.
#[derive(Debug, Subcommand)]
pub enum SecondaryCmd {
    /// Hold a replica of VOLUME: data bdev, staging log (same size as the primary's log) and
    /// a change log for when it is promoted.
    Create {
        /// Volume name (as the primary calls it).
        volume: String,
        /// Replica data bdev.
        #[arg(long)]
        data: String,
        /// Staging log bdev.
        #[arg(long)]
        staging: String,
        /// Change-log bdev used after promotion.
        #[arg(long)]
        log: String,
        /// The volume's bunker (pulled from at failover), IP:PORT.
        #[arg(long)]
        bunker: Option<String>,
    },
    /// Hold the replica at a consistent point (a prefix of the primary's writes), or let it go.
    Freeze {
        /// Volume name.
        volume: String,
        /// Release instead of freezing.
        #[arg(long)]
        thaw: bool,
    },
}

/// Shipping verbs on the primary.
#[derive(Debug, Subcommand)]
pub enum ReplicationCmd {
    /// Ship VOLUME asynchronously to a secondary (attach it before the volume's first write).
    Create {
        /// Volume name.
        volume: String,
        /// The secondary's replication address, IP:PORT.
        #[arg(long)]
        secondary: String,
    },
    /// Roles, epochs, positions, lag and links of every volume on the node.
    Status,
}

/// Arguments of `ferrite failover`.
#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Volume name (on the secondary).
    volume: String,
    /// Bunker to pull the log tail from (default: the one given at `secondary create`).
    #[arg(long)]
    bunker: Option<String>,
    /// Export the promoted volume on this subsystem.
    #[arg(long)]
    nqn: Option<String>,
    /// Promote even without the bunker's tail (acknowledged writes may be lost).
    #[arg(long)]
    force: bool,
}

/// Runs a secondary verb.
pub fn run_secondary(socket: &Path, cmd: SecondaryCmd) -> CliResult {
    let v = match cmd {
        SecondaryCmd::Create { volume, data, staging, log, bunker } => call(
            socket,
            "secondary_create",
            Some(
                json!({"volume": volume, "data_bdev": data, "staging_bdev": staging, "log_bdev": log, "bunker": bunker}),
            ),
        )?,
        SecondaryCmd::Freeze { volume, thaw } => {
            call(socket, "secondary_freeze", Some(json!({"volume": volume, "frozen": !thaw})))?
        }
    };
    print_json(&v);
    Ok(())
}

/// Runs a replication verb.
pub fn run_replication(socket: &Path, cmd: ReplicationCmd) -> CliResult {
    let v = match cmd {
        ReplicationCmd::Create { volume, secondary } => {
            call(socket, "replication_create", Some(json!({"volume": volume, "secondary": secondary})))?
        }
        ReplicationCmd::Status => call(socket, "replication_status", None)?,
    };
    print_json(&v);
    Ok(())
}

/// `ferrite failover VOLUME`: the manual update initiation.
pub fn run_failover(socket: &Path, a: FailoverArgs) -> CliResult {
    let p = json!({"volume": a.volume, "bunker": a.bunker, "nqn": a.nqn, "force": a.force});
    print_json(&call(socket, "volume_failover", Some(p))?);
    Ok(())
}

/// Arguments of `ferrite migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Volume name.
    volume: String,
    /// Control socket of the secondary that becomes the primary.
    #[arg(long)]
    to: std::path::PathBuf,
    /// Bdev on this node (the primary) that becomes its staging log.
    #[arg(long)]
    staging: String,
    /// This node's replication address (IP:PORT, already listening), which the new primary
    /// ships to.
    #[arg(long)]
    secondary_addr: String,
    /// Export the volume on the new primary under this subsystem.
    #[arg(long)]
    nqn: Option<String>,
}

/// `ferrite migrate VOLUME`: drain here, promote there, demote here, ship back here.
pub fn run_migrate(socket: &Path, a: MigrateArgs) -> CliResult {
    let t0 = std::time::Instant::now();
    let drained = call(socket, "volume_drain", Some(json!({"volume": a.volume})))?;
    let end = drained["end"].as_u64().ok_or("volume_drain gave no end")?;
    let promoted =
        call(&a.to, "volume_failover", Some(json!({"volume": a.volume, "nqn": a.nqn, "end": end})));
    let promoted = match promoted {
        Ok(v) => v,
        Err(e) => {
            let _ = call(socket, "volume_drain", Some(json!({"volume": a.volume, "drain": false})));
            return Err(format!("promotion failed ({e}); writes resumed on this node"));
        }
    };
    call(socket, "volume_demote", Some(json!({"volume": a.volume, "staging_bdev": a.staging})))?;
    call(&a.to, "replication_create", Some(json!({"volume": a.volume, "secondary": a.secondary_addr})))?;
    print_json(&json!({"volume": a.volume, "drained_at": end, "drain_ms": drained["drain_ms"],
                       "epoch": promoted["epoch"], "total_ms": t0.elapsed().as_millis() as u64}));
    Ok(())
}

/// Arguments of `ferrite failback`.
#[derive(Debug, clap::Args)]
pub struct FailbackArgs {
    /// Volume name.
    volume: String,
    /// Control socket of the new primary (the promoted secondary).
    #[arg(long)]
    primary: std::path::PathBuf,
    /// Bdev on this node (the old primary) that becomes its staging log.
    #[arg(long)]
    staging: String,
    /// This node's replication address (IP:PORT, already listening).
    #[arg(long)]
    secondary_addr: String,
}

/// `ferrite failback VOLUME`, run on the old primary: rejoin as the new primary's secondary,
/// sending back only the blocks that differ.
pub fn run_failback(socket: &Path, a: FailbackArgs) -> CliResult {
    let st = call(&a.primary, "replication_status", None)?;
    let fork = st["secondaries"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["volume"] == a.volume.as_str()))
        .and_then(|s| s["failover"]["end"].as_u64())
        .ok_or("the new primary has no failover on record for this volume")?;
    let plan = call(
        socket,
        "volume_failback",
        Some(json!({"volume": a.volume, "fork_lsn": fork, "staging_bdev": a.staging})),
    )?;
    let p = json!({"volume": a.volume, "secondary": a.secondary_addr, "resync": plan["divergent"]});
    call(&a.primary, "replication_create", Some(p))?;
    print_json(
        &json!({"volume": a.volume, "fork_lsn": fork, "divergent_ranges": plan["divergent"].as_array().map_or(0, |v| v.len()),
                       "divergent_blocks": plan["blocks"]}),
    );
    Ok(())
}

//! `ferrite bdev create|delete|list`: friendly verbs over the SPDK-named bdev RPCs.

use std::path::Path;

use clap::Subcommand;
use serde_json::{json, Value};

use super::{call, print_json, CliResult};

/// Block-device verbs.
#[derive(Debug, Subcommand)]
pub enum BdevCmd {
    /// Create a device.
    Create {
        /// malloc, null or uring.
        #[arg(value_parser = ["malloc", "null", "uring"])]
        kind: String,
        /// Name.
        name: String,
        /// Size in MiB (malloc, null).
        #[arg(long)]
        size_mb: Option<u64>,
        /// Block size in bytes (default 512; uring: the device's).
        #[arg(long)]
        block_size: Option<u32>,
        /// Backing file or block device (uring).
        #[arg(long)]
        file: Option<String>,
        /// Fixed UUID.
        #[arg(long)]
        uuid: Option<String>,
    },
    /// Delete a device.
    Delete {
        /// Name.
        name: String,
    },
    /// List devices.
    List {
        /// JSON output (as `bdev_get_bdevs`).
        #[arg(long)]
        json: bool,
    },
}

fn create_params(
    kind: &str,
    name: &str,
    size_mb: Option<u64>,
    block_size: Option<u32>,
    file: Option<String>,
    uuid: Option<String>,
) -> Result<(String, Value), String> {
    let mut p = json!({"name": name});
    if let Some(u) = uuid {
        p["uuid"] = json!(u);
    }
    if kind == "uring" {
        p["filename"] = json!(file.ok_or("uring needs --file PATH")?);
        if let Some(bs) = block_size {
            p["block_size"] = json!(bs);
        }
        return Ok(("bdev_uring_create".into(), p));
    }
    let size = size_mb.ok_or(format!("{kind} needs --size-mb"))?;
    let bs = block_size.unwrap_or(512);
    p["block_size"] = json!(bs);
    p["num_blocks"] = json!(size * (1 << 20) / u64::from(bs.max(1)));
    Ok((format!("bdev_{kind}_create"), p))
}

/// Runs a bdev verb against the daemon at `socket`.
pub fn run(socket: &Path, cmd: BdevCmd) -> CliResult {
    match cmd {
        BdevCmd::Create { kind, name, size_mb, block_size, file, uuid } => {
            let (method, params) = create_params(&kind, &name, size_mb, block_size, file, uuid)?;
            print_json(&call(socket, &method, Some(params))?);
        }
        BdevCmd::Delete { name } => {
            let list = call(socket, "bdev_get_bdevs", Some(json!({"name": name})))?;
            let product = list[0]["product_name"].as_str().unwrap_or_default();
            let method = match product {
                "Malloc disk" => "bdev_malloc_delete",
                "Null disk" => "bdev_null_delete",
                "URING bdev" => "bdev_uring_delete",
                other => return Err(format!("cannot delete a {other:?} with `bdev delete`")),
            };
            call(socket, method, Some(json!({"name": name})))?;
            println!("deleted {name}");
        }
        BdevCmd::List { json } => {
            let list = call(socket, "bdev_get_bdevs", None)?;
            if json {
                print_json(&list);
            } else {
                print_table(&list);
            }
        }
    }
    Ok(())
}

fn print_table(list: &Value) {
    println!(
        "{:<16} {:<12} {:>10} {:>14} {:>10}  uuid",
        "name", "product", "block_size", "num_blocks", "size_mib"
    );
    for b in list.as_array().into_iter().flatten() {
        let bs = b["block_size"].as_u64().unwrap_or(0);
        let nb = b["num_blocks"].as_u64().unwrap_or(0);
        println!(
            "{:<16} {:<12} {:>10} {:>14} {:>10}  {}",
            b["name"].as_str().unwrap_or("?"),
            b["product_name"].as_str().unwrap_or("?"),
            bs,
            nb,
            (bs * nb) >> 20,
            b["uuid"].as_str().unwrap_or("?")
        );
    }
}

//! Block-device methods, as SPDK names them: `bdev_malloc_create`, `bdev_null_create`,
//! `bdev_uring_create`, their `_delete`s and `bdev_get_bdevs`. Extra keys rpc.py always sends
//! (`md_interleave`, `dif_is_head_of_md`) are accepted; metadata/DIF is refused if asked for.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{params, Handler, RpcError, RpcResult};
use crate::app::{App, AppError};
use crate::bdev::Bdev;
use crate::config::BdevSection;

/// The bdev methods.
pub const METHODS: &[(&str, Handler)] = &[
    ("bdev_malloc_create", malloc_create),
    ("bdev_null_create", null_create),
    ("bdev_uring_create", uring_create),
    ("bdev_malloc_delete", delete::<0>),
    ("bdev_null_delete", delete::<1>),
    ("bdev_uring_delete", delete::<2>),
    ("bdev_get_bdevs", get_bdevs),
];

const PRODUCTS: [&str; 3] = ["Malloc disk", "Null disk", "URING bdev"];

#[derive(Deserialize)]
struct MemCreate {
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<uuid::Uuid>,
    #[serde(default)]
    md_size: u32,
}

fn create_error(e: AppError) -> RpcError {
    match e {
        AppError::Registry(r) => r.into(),
        other => RpcError::invalid(other),
    }
}

fn mem_section(p: MemCreate, null: bool, prefix: &str, app: &App) -> Result<BdevSection, RpcError> {
    if p.md_size != 0 {
        return Err(RpcError::invalid("metadata (md_size) is not supported"));
    }
    let name = p.name.unwrap_or_else(|| next_name(app, prefix));
    Ok(by_blocks(name, p.num_blocks, p.block_size, p.uuid, null))
}

fn by_blocks(
    name: String,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<uuid::Uuid>,
    null: bool,
) -> BdevSection {
    // Callers have checked that the size is a whole number of MiB.
    let size_mb = (num_blocks * u64::from(block_size)).div_ceil(1 << 20);
    if null {
        BdevSection::Null { name, size_mb, block_size, uuid }
    } else {
        BdevSection::Malloc { name, size_mb, block_size, uuid }
    }
}

fn next_name(app: &App, prefix: &str) -> String {
    (0..).map(|i| format!("{prefix}{i}")).find(|n| app.bdevs.get(n).is_err()).expect("a free name exists")
}

fn check_whole_mib(num_blocks: u64, block_size: u32) -> Result<(), RpcError> {
    crate::bdev::backend::Geometry::check_block_size(block_size).map_err(RpcError::invalid)?;
    let bytes =
        num_blocks.checked_mul(u64::from(block_size)).ok_or_else(|| RpcError::invalid("size overflows"))?;
    if num_blocks == 0 {
        return Err(RpcError::invalid("num_blocks must be greater than 0"));
    }
    if bytes % (1 << 20) != 0 {
        return Err(RpcError::invalid(format!("size {bytes} bytes is not a whole number of MiB")));
    }
    Ok(())
}

fn malloc_create(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: MemCreate = params(p)?;
    check_whole_mib(p.num_blocks, p.block_size)?;
    let section = mem_section(p, false, "Malloc", app)?;
    let bdev = app.create_bdev(&section).map_err(create_error)?;
    Ok(json!(bdev.name()))
}

fn null_create(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: MemCreate = params(p)?;
    if p.name.is_none() {
        return Err(RpcError::invalid_params("missing field `name`"));
    }
    check_whole_mib(p.num_blocks, p.block_size)?;
    let section = mem_section(p, true, "Null", app)?;
    let bdev = app.create_bdev(&section).map_err(create_error)?;
    Ok(json!(bdev.name()))
}

#[derive(Deserialize)]
struct UringCreate {
    filename: String,
    name: String,
    block_size: Option<u32>,
    uuid: Option<uuid::Uuid>,
}

fn uring_create(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: UringCreate = params(p)?;
    let section = BdevSection::Uring {
        name: p.name,
        filename: p.filename,
        block_size: p.block_size,
        uuid: p.uuid,
        create_size_mb: None,
    };
    let bdev = app.create_bdev(&section).map_err(create_error)?;
    crate::replication::manager::examine(app);
    Ok(json!(bdev.name()))
}

#[derive(Deserialize)]
struct ByName {
    name: String,
}

fn delete<const KIND: usize>(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: ByName = params(p)?;
    let bdev = app.bdevs.get(&p.name)?;
    if bdev.product_name() != PRODUCTS[KIND] {
        return Err(RpcError::no_device(format!(
            "{} is a {}, not a {}",
            p.name,
            bdev.product_name(),
            PRODUCTS[KIND]
        )));
    }
    app.bdevs.remove(&p.name)?;
    tracing::info!(name = p.name, "bdev deleted");
    Ok(json!(true))
}

#[derive(Deserialize)]
struct GetBdevs {
    name: Option<String>,
    #[allow(dead_code)]
    timeout: Option<u64>,
}

fn get_bdevs(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: GetBdevs = params(p)?;
    let list = match p.name {
        Some(name) => vec![app.bdevs.get(&name)?],
        None => app.bdevs.list(),
    };
    Ok(Value::Array(list.iter().map(|b| describe(app, b.as_ref())).collect()))
}

/// One device in `bdev_get_bdevs` form.
pub fn describe(app: &App, b: &dyn Bdev) -> Value {
    use crate::bdev::IoType::*;
    let uuid = uuid::Uuid::from_bytes(b.uuid()).to_string();
    let claim = app.bdevs.claimed_by(b.name());
    json!({
        "name": b.name(),
        "aliases": [uuid],
        "product_name": b.product_name(),
        "block_size": b.block_size(),
        "num_blocks": b.num_blocks(),
        "uuid": uuid,
        "assigned_rate_limits": {"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0, "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0},
        "claimed": claim.is_some(),
        "claim_type": claim.as_ref().map(|_| "exclusive_write"),
        "zoned": false,
        "supported_io_types": {
            "read": b.supports(Read), "write": b.supports(Write), "unmap": b.supports(Unmap),
            "write_zeroes": b.supports(WriteZeroes), "flush": b.supports(Flush), "reset": false,
            "compare": false, "compare_and_write": false, "abort": false, "nvme_admin": false, "nvme_io": false
        },
        "driver_specific": {"ferrite": {"claimed_by": claim, "volatile_write_cache": b.volatile_write_cache()}},
    })
}

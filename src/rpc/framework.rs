//! Framework methods: `spdk_get_version` and `framework_get_reactors` in SPDK's shapes, plus
//! ferrite's `reactor_stats` (busy/idle per poller and reactor) and `shutdown`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{no_params, Handler, RpcResult};
use crate::app::App;

/// The framework methods.
pub const METHODS: &[(&str, Handler)] = &[
    ("spdk_get_version", version),
    ("framework_get_reactors", get_reactors),
    ("reactor_stats", reactor_stats),
    ("shutdown", shutdown),
];

fn version(_app: &Arc<App>, p: Option<Value>) -> RpcResult {
    no_params("spdk_get_version", &p)?;
    let v = env!("CARGO_PKG_VERSION");
    let mut parts = v.split('.').map(|x| x.parse::<u64>().unwrap_or(0));
    Ok(json!({
        "version": format!("ferrite v{v}"),
        "fields": {"major": parts.next(), "minor": parts.next(), "patch": parts.next(), "suffix": ""},
    }))
}

fn snapshots(app: &App) -> Result<Vec<crate::reactor::stats::ReactorSnapshot>, super::RpcError> {
    app.runtime.handles().iter().map(|h| h.snapshot().map_err(Into::into)).collect()
}

fn get_reactors(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    no_params("framework_get_reactors", &p)?;
    let reactors: Vec<Value> = snapshots(app)?
        .iter()
        .map(|s| {
            let c = &s.counters;
            json!({
                "lcore": s.core,
                "busy": c.busy_ns,
                "idle": c.idle_ns + c.sleep_ns,
                "in_interrupt": s.idle_policy == "adaptive",
                "lw_threads": [{"name": format!("reactor_{}", s.id), "id": s.id, "cpumask": format!("{:x}", 1u64 << s.core.unwrap_or(0)), "elapsed": c.busy_ns + c.idle_ns + c.sleep_ns}],
            })
        })
        .collect();
    Ok(json!({"tick_rate": 1_000_000_000u64, "pid": std::process::id(), "reactors": reactors}))
}

fn reactor_stats(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    no_params("reactor_stats", &p)?;
    let pool = json!({"buf_size": app.pool.buf_size(), "count": app.pool.count(), "free": app.pool.free_count(), "hugepages": app.pool.is_huge()});
    Ok(json!({"reactors": snapshots(app)?, "dma_pool": pool}))
}

fn shutdown(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    no_params("shutdown", &p)?;
    tracing::info!("shutdown requested over RPC");
    app.request_shutdown();
    Ok(json!(true))
}

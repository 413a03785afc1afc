//! `bdev_perf`: runs the in-process load generator on the daemon's reactors (like SPDK
//! bdevperf's `perform_tests`) and returns the report.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{params, Handler, RpcError, RpcResult};
use crate::app::App;
use crate::perf::{run::run_bdev_workload, Workload};

/// The perf methods.
pub const METHODS: &[(&str, Handler)] = &[("bdev_perf", bdev_perf)];

#[derive(Deserialize)]

struct PerfParams {
    bdev: String,
    /// Reactor indices to run jobs on (default: all).
    reactors: Option<Vec<usize>>,
    #[serde(flatten)]
    workload: Workload,
}

fn bdev_perf(app: &Arc<App>, p: Option<Value>) -> RpcResult {
    let p: PerfParams = params(p)?;
    let bdev = app.bdevs.get(&p.bdev)?;
    let all = app.runtime.handles();
    let handles: Vec<_> = match p.reactors {
        None => all.to_vec(),
        Some(ids) => ids
            .iter()
            .map(|&i| all.get(i).cloned().ok_or_else(|| RpcError::invalid(format!("no reactor {i}"))))
            .collect::<Result<_, _>>()?,
    };
    let report = run_bdev_workload(&handles, bdev, &app.pool, &p.workload).map_err(RpcError::invalid)?;
    serde_json::to_value(report).map_err(RpcError::internal)
}

//! The control plane: JSON-RPC 2.0 over a unix socket, with SPDK's method names and parameters
//! where SPDK has the same method, so SPDK's `rpc.py` drives ferrite unchanged.
//!
//! The server runs on its own threads, off the data path; it changes reactor state only by
//! message. Errors follow SPDK's conventions: -32700 parse error, -32600 invalid request,
//! -32601 method not found, -32602 invalid parameters (with the reason), and `-errno` with a
//! message naming the problem for failures such as a missing device (-19) or a name clash
//! (-17). A bad request never stops the daemon.

pub mod bdev;
pub mod client;
pub mod framework;
pub mod nvmf;
pub mod perf;
pub mod replication;
mod secondary;
pub mod server;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::app::App;

/// The default control socket.
pub const DEFAULT_SOCKET: &str = "/var/tmp/ferrite.sock";

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// Error code.
    pub code: i32,
    /// Human message naming the problem.
    pub message: String,
}

impl RpcError {
    /// -32602 with a reason.
    pub fn invalid_params(why: impl std::fmt::Display) -> RpcError {
        RpcError { code: -32602, message: format!("Invalid parameters: {why}") }
    }
    /// -32601.
    pub fn method_not_found(method: &str) -> RpcError {
        RpcError { code: -32601, message: format!("Method not found: {method}") }
    }
    /// -19 (ENODEV).
    pub fn no_device(what: impl std::fmt::Display) -> RpcError {
        RpcError { code: -libc::ENODEV, message: format!("No such device: {what}") }
    }
    /// -17 (EEXIST).
    pub fn exists(what: impl std::fmt::Display) -> RpcError {
        RpcError { code: -libc::EEXIST, message: format!("File exists: {what}") }
    }
    /// -16 (EBUSY).
    pub fn busy(what: impl std::fmt::Display) -> RpcError {
        RpcError { code: -libc::EBUSY, message: format!("Device or resource busy: {what}") }
    }
    /// -22 (EINVAL) with a reason.
    pub fn invalid(what: impl std::fmt::Display) -> RpcError {
        RpcError { code: -libc::EINVAL, message: format!("Invalid argument: {what}") }
    }
    /// -32603 with a reason.
    pub fn internal(what: impl std::fmt::Display) -> RpcError {
        RpcError { code: -32603, message: format!("Internal error: {what}") }
    }
}

impl From<crate::bdev::RegistryError> for RpcError {
    fn from(e: crate::bdev::RegistryError) -> RpcError {
        use crate::bdev::RegistryError as E;
        match e {
            E::Exists(_) => RpcError::exists(&e),
            E::NotFound(_) => RpcError::no_device(&e),
            E::InUse(..) => RpcError::busy(&e),
        }
    }
}

impl From<crate::reactor::runtime::ControlError> for RpcError {
    fn from(e: crate::reactor::runtime::ControlError) -> RpcError {
        RpcError::internal(e)
    }
}

/// What a method returns.
pub type RpcResult = Result<Value, RpcError>;

/// A method handler.
pub type Handler = fn(&Arc<App>, Option<Value>) -> RpcResult;

/// Decodes `params` into `T`; absent params decode as `{}`.
pub fn params<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    serde_json::from_value(params.unwrap_or_else(|| Value::Object(Default::default())))
        .map_err(RpcError::invalid_params)
}

/// Rejects parameters for methods that take none (as SPDK does).
pub fn no_params(method: &str, params: &Option<Value>) -> Result<(), RpcError> {
    match params {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(m)) if m.is_empty() => Ok(()),
        Some(_) => Err(RpcError::invalid_params(format!("{method} takes no parameters"))),
    }
}

/// Every method, by name.
pub fn methods() -> Vec<(&'static str, Handler)> {
    let mut all = Vec::new();
    all.extend_from_slice(bdev::METHODS);
    all.extend_from_slice(framework::METHODS);
    all.extend_from_slice(perf::METHODS);
    all.extend_from_slice(nvmf::METHODS);
    all.extend_from_slice(replication::METHODS);
    all.extend_from_slice(secondary::METHODS);
    all
}

/// Runs one method.
pub fn dispatch(app: &Arc<App>, method: &str, params: Option<Value>) -> RpcResult {
    if method == "rpc_get_methods" {
        let mut names: Vec<&str> = methods().iter().map(|(n, _)| *n).collect();
        names.push("rpc_get_methods");
        names.sort_unstable();
        return Ok(serde_json::json!(names));
    }
    match methods().iter().find(|(name, _)| *name == method) {
        Some((_, handler)) => handler(app, params),
        None => Err(RpcError::method_not_found(method)),
    }
}

//! The JSON-RPC client used by the CLI (`ferrite rpc`, `ferrite bdev ...`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// A call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not reachable.
    #[error("cannot connect to {path}: {source} (is `ferrite serve` running?)")]
    Connect {
        /// Socket path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke.
    #[error("RPC transport: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered with an error.
    #[error("{message} (JSON-RPC error {code})")]
    Rpc {
        /// Code.
        code: i64,
        /// Message.
        message: String,
    },
    /// The answer was not JSON-RPC.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// Calls `method` with `params` on the daemon at `socket`.
pub fn call(
    socket: &Path,
    method: &str,
    params: Option<Value>,
    timeout: Duration,
) -> Result<Value, ClientError> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|source| ClientError::Connect { path: socket.display().to_string(), source })?;
    stream.set_read_timeout(Some(timeout))?;
    let mut req = json!({"jsonrpc": "2.0", "method": method, "id": 1});
    if let Some(p) = params {
        req["params"] = p;
    }
    stream.write_all(&serde_json::to_vec(&req).expect("serialisable"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ClientError::Malformed("connection closed before a full reply".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        match serde_json::from_slice::<Value>(&buf) {
            Ok(v) => return decode(v),
            Err(e) if e.is_eof() => continue,
            Err(e) => return Err(ClientError::Malformed(e.to_string())),
        }
    }
}

fn decode(v: Value) -> Result<Value, ClientError> {
    if let Some(err) = v.get("error") {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = err.get("message").and_then(Value::as_str).unwrap_or("").to_string();
        return Err(ClientError::Rpc { code, message });
    }
    v.get("result").cloned().ok_or_else(|| ClientError::Malformed(v.to_string()))
}

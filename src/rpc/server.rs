//! The JSON-RPC server: a listener thread on a unix socket and a thread per client (the control
//! plane is not a data path). Requests are parsed incrementally from the stream — rpc.py sends
//! pretty-printed JSON without a newline — and each response is one compact JSON line.
//!
//! Invariants: a request is at most [`MAX_REQUEST_BYTES`]; malformed input gets a JSON-RPC
//! error and closes only that connection; the socket file is removed on shutdown.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use super::{dispatch, RpcError};
use crate::app::App;

/// Largest request accepted.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// A running server.
pub struct RpcServer {
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

/// The socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on RPC socket {path}: {source}")]
pub struct ListenError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl RpcServer {
    /// Binds `path` (replacing a stale socket no daemon answers on) and serves `app`.
    pub fn start(app: Arc<App>, path: &Path) -> Result<RpcServer, ListenError> {
        let err = |source| ListenError { path: path.display().to_string(), source };
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another daemon is answering on it",
                )));
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        let thread = std::thread::Builder::new()
            .name("rpc".into())
            .spawn(move || accept_loop(app, listener))
            .map_err(err)?;
        Ok(RpcServer { path: path.to_path_buf(), thread: Some(thread) })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        // The accept loop blocks in accept(); a connection wakes it to see the shutdown flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(app: Arc<App>, listener: UnixListener) {
    while !app.shutdown_requested() {
        match listener.accept() {
            Ok(_) if app.shutdown_requested() => return,
            Ok((stream, _)) => {
                let app = app.clone();
                let _ = std::thread::Builder::new()
                    .name("rpc-client".into())
                    .spawn(move || serve_client(app, stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                tracing::warn!(error = %e, "rpc accept failed");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn serve_client(app: Arc<App>, mut stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    while !app.shutdown_requested() {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                continue
            }
            Err(_) => return,
        }
        match drain_requests(&app, &mut buf) {
            Ok(replies) => {
                if stream.write_all(&replies).is_err() {
                    return;
                }
            }
            Err(fatal) => {
                let _ = stream.write_all(&fatal);
                return;
            }
        }
    }
}

/// Answers every complete request at the front of `buf`; returns the replies, or a final error
/// reply when the stream cannot be parsed.
fn drain_requests(app: &Arc<App>, buf: &mut Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let start = buf.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(buf.len());
        buf.drain(..start);
        if buf.is_empty() {
            return Ok(out);
        }
        let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
        match stream.next() {
            Some(Ok(request)) => {
                let used = stream.byte_offset();
                buf.drain(..used);
                out.extend(reply(app, request));
            }
            Some(Err(e)) if e.is_eof() && buf.len() < super::server::MAX_REQUEST_BYTES => return Ok(out),
            Some(Err(e)) => {
                let msg = if e.is_eof() { "request too large".to_string() } else { e.to_string() };
                out.extend(encode(
                    Value::Null,
                    Err(RpcError { code: -32700, message: format!("Parse error: {msg}") }),
                ));
                return Err(out);
            }
            None => return Ok(out),
        }
    }
}

fn reply(app: &Arc<App>, request: Value) -> Vec<u8> {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request.get("method").and_then(Value::as_str).map(str::to_string);
    let result = match (request.get("jsonrpc").and_then(Value::as_str), method) {
        (Some("2.0"), Some(method)) => {
            let params = request.get("params").cloned();
            tracing::debug!(method, "rpc");
            dispatch(app, &method, params)
        }
        _ => Err(RpcError {
            code: -32600,
            message: "Invalid request: needs \"jsonrpc\": \"2.0\" and a method".into(),
        }),
    };
    encode(id, result)
}

fn encode(id: Value, result: Result<Value, RpcError>) -> Vec<u8> {
    let body = match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}}),
    };
    let mut bytes = serde_json::to_vec(&body).expect("a JSON value serialises");
    bytes.push(b'\n');
    bytes
}

//! The NVMe/TCP acceptor: the generic [`Acceptor`](crate::net::acceptor::Acceptor) on reactor 0
//! per listen address, making each accepted connection (one queue pair) a [`Connection`]
//! poller on a reactor chosen round-robin, so the admin queue and each I/O queue of one
//! controller may run on different reactors.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::conn::Connection;
use crate::net::acceptor::{Acceptor, MakeConn};
use crate::nvmf::target::Target;

/// Binds `addr` for `target`'s NVMe/TCP queue pairs.
pub fn bind(addr: SocketAddr, target: Arc<Target>, stop: Arc<AtomicBool>) -> std::io::Result<Acceptor> {
    let make: MakeConn =
        Arc::new(move |stream, peer, local| match Connection::new(stream, peer, local, target.clone()) {
            Ok(conn) => Some(Box::new(conn)),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "could not set up connection");
                None
            }
        });
    Acceptor::bind(addr, stop, "nvmf_tcp", make)
}

//! Links between nodes. [`Link`] is shaped after RDMA's one-sided semantics — write bytes at an
//! offset of the peer's registered log region, completions polled by the reactor — so an RDMA
//! verbs implementation can drop in; [`tcp`] implements it over TCP with batching (many writes
//! per send), pipelining, heartbeats and reconnect.

pub mod acceptor;
pub mod framed;
pub mod proxy;
pub mod tcp;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use crate::reactor::Nanos;
use crate::replication::wire::Msg;

/// A non-blocking byte stream between two nodes: a TCP socket in production, an in-memory
/// stream in the cluster simulator. Reads and writes return `WouldBlock` instead of waiting.
pub trait Stream: Read + Write + Send {
    /// Whether a connect started by a [`Dialer`] has completed (an error if it failed).
    fn connected(&mut self) -> std::io::Result<bool>;
    /// The descriptor a sleeping reactor watches, if there is one.
    fn raw_fd(&self) -> Option<RawFd>;
}

impl Stream for TcpStream {
    fn connected(&mut self) -> std::io::Result<bool> {
        crate::sys::net::connect_finished(self)
    }
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

/// Starts connections to peers: how links reach the network.
pub trait Dialer: Send + Sync {
    /// Starts a non-blocking connect to `addr`.
    fn dial(&self, addr: SocketAddr) -> std::io::Result<Box<dyn Stream>>;
}

/// The real network: non-blocking TCP connects with no Nagle delay.
#[derive(Debug, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: SocketAddr) -> std::io::Result<Box<dyn Stream>> {
        let s = crate::sys::net::connect_nonblocking(addr)?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
}

/// The dialer links use unless told otherwise.
pub fn tcp() -> Arc<dyn Dialer> {
    Arc::new(TcpDialer)
}

/// The network a volume's links go through (TCP unless a simulator supplies its own).
#[derive(Clone)]
pub struct Net(pub Arc<dyn Dialer>);

impl Default for Net {
    fn default() -> Net {
        Net(tcp())
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Net")
    }
}

/// What a link reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connected and attached; the peer holds log bytes below `durable_end`.
    Up {
        /// The peer's contiguous durable end.
        durable_end: u64,
    },
    /// Lost; writes not acknowledged must be sent again after `Up`.
    Down {
        /// Why.
        why: String,
    },
    /// A write at `lsn` is durable on the peer.
    Acked {
        /// Position.
        lsn: u64,
        /// Sectors.
        sectors: u32,
    },
    /// Any other message from the peer.
    Message(Msg),
}

/// The link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected; retrying.
    Down,
    /// Connecting or handshaking.
    Connecting,
    /// Attached.
    Up,
}

/// A replication link (one-sided writes into the peer's log region).
pub trait Link {
    /// Current state.
    fn state(&self) -> LinkState;
    /// Queues a write of `data` at `lsn`; false when the send queue is full (retry later).
    fn write_at(&mut self, lsn: u64, data: &[u8]) -> bool;
    /// Queues a control message.
    fn send(&mut self, msg: &Msg);
    /// Sends and receives; reports events. Returns whether it did work.
    fn poll(&mut self, now: Nanos, events: &mut Vec<LinkEvent>) -> bool;
    /// The descriptor to watch while idle.
    fn fd(&self) -> Option<std::os::fd::RawFd>;
    /// Round-trip time of the last heartbeat, microseconds.
    fn rtt_us(&self) -> Option<u64>;
}

//! Links between nodes. [`Link`] is shaped after RDMA's one-sided semantics — write bytes at an
//! offset of the peer's registered log region, completions polled by the reactor — so an RDMA
//! verbs implementation can drop in; [`tcp`] implements it over TCP with batching (many writes
//! per send), pipelining, heartbeats and reconnect.

pub mod acceptor;
pub mod framed;
pub mod proxy;
pub mod tcp;

use crate::reactor::Nanos;
use crate::replication::wire::Msg;

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

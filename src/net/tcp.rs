//! The replication link over a stream (TCP, or the simulator's network), client side
//! (primary → bunker, primary → secondary): connects through a [`Dialer`] without blocking,
//! attaches with Hello, pipelines writes (many per send), sends heartbeats, detects loss
//! (errors or silence) and reconnects after a back-off.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::framed::Framed;
use super::{Dialer, Link, LinkEvent, LinkState};
use crate::reactor::time::{NS_PER_MS, NS_PER_S};
use crate::reactor::Nanos;
use crate::replication::wire::Msg;

/// Interval between heartbeats.
pub const HEARTBEAT: Nanos = 200 * NS_PER_MS;
/// Silence after which the peer is declared lost.
pub const PEER_TIMEOUT: Nanos = 3 * NS_PER_S;
/// Wait before reconnecting.
pub const RECONNECT: Nanos = 500 * NS_PER_MS;
/// Largest send backlog before `write_at` pushes back.
pub const SEND_QUEUE_BYTES: usize = 16 << 20;

enum Conn {
    Down { retry_at: Nanos },
    Connecting { framed: Framed, since: Nanos },
    Attaching { framed: Framed, since: Nanos },
    Up { framed: Framed },
}

/// A link to one peer.
pub struct TcpLink {
    addr: SocketAddr,
    dialer: Arc<dyn Dialer>,
    hello: Msg,
    conn: Conn,
    last_heard: Nanos,
    next_heartbeat: Nanos,
    hb_seq: u64,
    hb_sent_at: Nanos,
    rtt_us: Option<u64>,
    msgs: Vec<Msg>,
    /// Asked to drop the connection (and attach afresh), for this reason.
    reset: Option<String>,
    /// Whether to read from the peer (a receiver that cannot keep up pauses it).
    receiving: bool,
    /// After a read that found nothing, the next one waits this long (0: read every poll).
    recv_spacing: Nanos,
    /// No read before this time (see `recv_spacing`).
    next_recv: Nanos,
    /// Writes go out from the caller's slice at once (see [`TcpLink::with_direct_writes`]).
    direct_writes: bool,
}

impl TcpLink {
    /// A link over TCP that will attach with `hello`.
    pub fn new(addr: SocketAddr, hello: Msg) -> TcpLink {
        TcpLink::with_dialer(addr, hello, super::tcp())
    }

    /// A link that reaches its peer through `dialer` and attaches with `hello`.
    pub fn with_dialer(addr: SocketAddr, hello: Msg, dialer: Arc<dyn Dialer>) -> TcpLink {
        TcpLink {
            addr,
            dialer,
            hello,
            conn: Conn::Down { retry_at: 0 },
            last_heard: 0,
            next_heartbeat: 0,
            hb_seq: 0,
            hb_sent_at: 0,
            rtt_us: None,
            msgs: Vec::new(),
            reset: None,
            receiving: true,
            recv_spacing: 0,
            next_recv: 0,
            direct_writes: false,
        }
    }

    /// Reads from the peer at most every `spacing` while reads find nothing, instead of on
    /// every poll: for a link whose answers nobody waits on (the secondary's acknowledgements
    /// only let the log head move), where a `recv` per reactor poll that finds nothing was 12%
    /// of the primary's samples at 4 KiB. Not for the bunker link, whose acks answer the host.
    pub fn with_recv_spacing(mut self, spacing: Nanos) -> TcpLink {
        self.recv_spacing = spacing;
        self
    }

    /// Sends each `write_at` at once from the caller's slice while nothing is queued (one
    /// vectored send, no copy into the send buffer): for a link written in large batches (the
    /// shipper's 64 KiB and more). Not for the bunker link, written entry by entry, whose
    /// writes of one poll go out together in one send.
    pub fn with_direct_writes(mut self) -> TcpLink {
        self.direct_writes = true;
        self
    }

    /// Updates the Hello sent on the next (re)connect.
    pub fn set_hello(&mut self, hello: Msg) {
        self.hello = hello;
    }

    /// Pauses or resumes reading from the peer (back-pressure for a slow consumer of its
    /// messages; keep pauses shorter than the peer timeout).
    pub fn set_receiving(&mut self, on: bool) {
        self.receiving = on;
    }

    /// Drops the connection on the next poll and attaches afresh after the usual back-off.
    pub fn reset(&mut self, why: String) {
        self.reset = Some(why);
    }

    /// Whether the send queue has room (bulk senders wait while it has not).
    pub fn has_room(&self) -> bool {
        match &self.conn {
            Conn::Up { framed } => framed.pending() < SEND_QUEUE_BYTES,
            _ => false,
        }
    }

    /// The peer address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn down(&mut self, now: Nanos, why: String, events: &mut Vec<LinkEvent>) {
        if matches!(self.conn, Conn::Up { .. } | Conn::Attaching { .. }) {
            tracing::warn!(peer = %self.addr, why, "replication link down");
            events.push(LinkEvent::Down { why });
        }
        self.conn = Conn::Down { retry_at: now + RECONNECT };
    }

    fn step_connect(&mut self, now: Nanos) -> bool {
        match std::mem::replace(&mut self.conn, Conn::Down { retry_at: now + RECONNECT }) {
            Conn::Down { retry_at } if now >= retry_at => {
                if let Ok(stream) = self.dialer.dial(self.addr) {
                    self.conn = Conn::Connecting { framed: Framed::over(stream), since: now };
                }
                true
            }
            Conn::Connecting { mut framed, since } => match framed.stream.connected() {
                Ok(true) => {
                    framed.queue(&self.hello);
                    self.conn = Conn::Attaching { framed, since: now };
                    self.last_heard = now;
                    true
                }
                Ok(false) if now - since < PEER_TIMEOUT => {
                    self.conn = Conn::Connecting { framed, since };
                    false
                }
                Ok(false) => false,
                Err(_) => true,
            },
            other => {
                self.conn = other;
                false
            }
        }
    }

    fn handle(&mut self, now: Nanos, msg: Msg, events: &mut Vec<LinkEvent>) -> Result<(), String> {
        match msg {
            Msg::HelloAck { durable_end } => {
                if let Conn::Attaching { .. } = self.conn {
                    let Conn::Attaching { framed, .. } =
                        std::mem::replace(&mut self.conn, Conn::Down { retry_at: 0 })
                    else {
                        unreachable!()
                    };
                    self.conn = Conn::Up { framed };
                    tracing::info!(peer = %self.addr, durable_end, "replication link up");
                    events.push(LinkEvent::Up { durable_end });
                }
            }
            Msg::Ack { lsn, sectors } => events.push(LinkEvent::Acked { lsn, sectors }),
            Msg::HeartbeatAck { seq } if seq == self.hb_seq => {
                self.rtt_us = Some((now - self.hb_sent_at) / 1000)
            }
            Msg::HeartbeatAck { .. } => {}
            Msg::Error { message } => return Err(format!("peer refused: {message}")),
            other => events.push(LinkEvent::Message(other)),
        }
        Ok(())
    }

    fn framed(&mut self) -> Option<&mut Framed> {
        match &mut self.conn {
            Conn::Attaching { framed, .. } | Conn::Up { framed } => Some(framed),
            _ => None,
        }
    }

    fn exchange(&mut self, now: Nanos, events: &mut Vec<LinkEvent>) -> Result<bool, String> {
        let mut msgs = std::mem::take(&mut self.msgs);
        let (receiving, due, spacing) = (self.receiving, now >= self.next_recv, self.recv_spacing);
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + HEARTBEAT;
            self.hb_seq += 1;
            self.hb_sent_at = now;
            let seq = self.hb_seq;
            if let Some(f) = self.framed() {
                f.queue(&Msg::Heartbeat { seq });
            }
        }
        let Some(framed) = self.framed() else { return Ok(false) };
        // Flushed in the same poll it is queued in: the reactor may sleep right after.
        let mut work = framed.flush().map_err(|e| e.to_string())?;
        let mut idle_read = false;
        if receiving && due {
            let got = framed.receive(&mut msgs, 256).map_err(|e| e.to_string())?;
            idle_read = !got;
            work |= got;
        }
        if idle_read {
            self.next_recv = now + spacing;
        }
        if !msgs.is_empty() {
            self.last_heard = now;
        }
        for m in msgs.drain(..) {
            self.handle(now, m, events)?;
        }
        self.msgs = msgs;
        if !self.receiving {
            self.last_heard = now; // paused on purpose: silence is ours, not the peer's
        }
        if now.saturating_sub(self.last_heard) > PEER_TIMEOUT {
            return Err("peer silent beyond the timeout".into());
        }
        Ok(work)
    }
}

impl Link for TcpLink {
    fn state(&self) -> LinkState {
        match self.conn {
            Conn::Down { .. } => LinkState::Down,
            Conn::Connecting { .. } | Conn::Attaching { .. } => LinkState::Connecting,
            Conn::Up { .. } => LinkState::Up,
        }
    }

    fn write_at(&mut self, lsn: u64, data: &[u8]) -> bool {
        match &mut self.conn {
            Conn::Up { framed } if framed.pending() < SEND_QUEUE_BYTES => {
                if self.direct_writes {
                    framed.send_write(lsn, data);
                } else {
                    framed.queue_write(lsn, data);
                }
                true
            }
            _ => false,
        }
    }

    fn send(&mut self, msg: &Msg) {
        if let Conn::Up { framed } = &mut self.conn {
            framed.queue(msg);
        }
    }

    fn poll(&mut self, now: Nanos, events: &mut Vec<LinkEvent>) -> bool {
        if let Some(why) = self.reset.take() {
            self.down(now, why, events);
            return true;
        }
        let mut work = self.step_connect(now);
        if let Conn::Attaching { since, .. } = self.conn {
            if now - since > PEER_TIMEOUT {
                self.down(now, "no answer to Hello".into(), events);
                return true;
            }
        }
        match self.exchange(now, events) {
            Ok(w) => work |= w,
            Err(why) => {
                self.down(now, why, events);
                work = true;
            }
        }
        work
    }

    fn fd(&self) -> Option<RawFd> {
        match &self.conn {
            Conn::Connecting { framed, .. } | Conn::Attaching { framed, .. } | Conn::Up { framed } => {
                framed.stream.raw_fd()
            }
            Conn::Down { .. } => None,
        }
    }

    fn rtt_us(&self) -> Option<u64> {
        self.rtt_us
    }
}

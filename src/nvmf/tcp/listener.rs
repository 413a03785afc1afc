//! The TCP acceptor: a poller on reactor 0 per listen address. Each accepted connection (one
//! queue pair) is handed to a reactor chosen round-robin, where it lives until it closes, so the
//! admin queue and each I/O queue of one controller may run on different reactors.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::conn::Connection;
use crate::nvmf::target::Target;
use crate::reactor::{Message, PollCtx, PollStatus, Poller};

/// Accepts connections on one address.
pub struct Acceptor {
    name: String,
    listener: TcpListener,
    local: SocketAddr,
    target: Arc<Target>,
    stop: Arc<AtomicBool>,
    next_reactor: usize,
    watching: bool,
}

/// Connections accepted per poll at most.
const ACCEPTS_PER_POLL: usize = 16;

impl Acceptor {
    /// Binds `addr` (non-blocking).
    pub fn bind(addr: SocketAddr, target: Arc<Target>, stop: Arc<AtomicBool>) -> std::io::Result<Acceptor> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        Ok(Acceptor {
            name: format!("nvmf_tcp_accept_{local}"),
            listener,
            local,
            target,
            stop,
            next_reactor: 0,
            watching: false,
        })
    }

    fn hand_off(&mut self, cx: &mut PollCtx<'_>, stream: std::net::TcpStream, peer: SocketAddr) {
        let reactor = self.next_reactor % cx.reactor_count();
        self.next_reactor += 1;
        let (target, local) = (self.target.clone(), self.local);
        let spawn = move |cx: &mut PollCtx<'_>| match Connection::new(stream, peer, local, target) {
            Ok(conn) => cx.spawn(Box::new(conn)),
            Err(e) => tracing::warn!(%peer, error = %e, "could not set up connection"),
        };
        if reactor == cx.reactor() {
            spawn(cx);
        } else if let Err((e, _)) = cx.send(reactor, Message::call(spawn)) {
            tracing::warn!(%peer, error = %e, "dropping connection: reactor ring full");
        }
    }
}

impl Poller for Acceptor {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        if self.stop.load(Ordering::Acquire) {
            cx.unwatch_fd(self.listener.as_raw_fd());
            tracing::info!(addr = %self.local, "listener stopped");
            return PollStatus::Done;
        }
        if !self.watching {
            self.watching = cx.watch_fd(self.listener.as_raw_fd()).is_ok();
        }
        let mut accepted = 0;
        while accepted < ACCEPTS_PER_POLL {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    accepted += 1;
                    tracing::debug!(%peer, addr = %self.local, "connection accepted");
                    self.hand_off(cx, stream, peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(addr = %self.local, error = %e, "accept failed");
                    break;
                }
            }
        }
        PollStatus::from_work(accepted > 0)
    }
}

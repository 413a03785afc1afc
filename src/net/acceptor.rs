//! A generic TCP acceptor poller: accepts without blocking and hands each connection, as a new
//! poller, to a reactor chosen round-robin.
//!
//! It tries `accept` at most every [`ACCEPT_EVERY`]: Linux builds (and throws away) a whole
//! socket file for every non-blocking accept that finds nothing, and a reactor polls many
//! thousand times a second; a new connection waits at most that long (a sleeping reactor is
//! woken by the listener becoming readable).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::reactor::time::NS_PER_MS;
use crate::reactor::{Message, Nanos, PollCtx, PollStatus, Poller};

/// How often the listener is asked for new connections.
pub const ACCEPT_EVERY: Nanos = NS_PER_MS;

/// Builds the poller for an accepted connection from (stream, peer, local address); run on the
/// chosen reactor.
pub type MakeConn = Arc<dyn Fn(TcpStream, SocketAddr, SocketAddr) -> Option<Box<dyn Poller>> + Send + Sync>;

/// Accepts connections on one address.
pub struct Acceptor {
    name: String,
    listener: TcpListener,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    make: MakeConn,
    next: usize,
    watching: bool,
    /// No accept before this time.
    next_accept: Nanos,
}

impl Acceptor {
    /// Binds `addr`.
    pub fn bind(
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        label: &str,
        make: MakeConn,
    ) -> std::io::Result<Acceptor> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        Ok(Acceptor {
            name: format!("{label}_accept_{local}"),
            listener,
            local,
            stop,
            make,
            next: 0,
            watching: false,
            next_accept: 0,
        })
    }
}

impl Poller for Acceptor {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        if self.stop.load(Ordering::Acquire) {
            cx.unwatch_fd(self.listener.as_raw_fd());
            return PollStatus::Done;
        }
        if !self.watching {
            self.watching = cx.watch_fd(self.listener.as_raw_fd()).is_ok();
        }
        if cx.now < self.next_accept {
            return PollStatus::Idle;
        }
        self.next_accept = cx.now + ACCEPT_EVERY;
        let mut accepted = false;
        while let Ok((stream, peer)) = self.listener.accept() {
            accepted = true;
            let reactor = self.next % cx.reactor_count();
            self.next += 1;
            let (make, local) = (self.make.clone(), self.local);
            let spawn = move |cx: &mut PollCtx<'_>| {
                if let Some(p) = make(stream, peer, local) {
                    cx.spawn(p);
                }
            };
            if reactor == cx.reactor() {
                spawn(cx);
            } else if let Err((e, _)) = cx.send(reactor, Message::call(spawn)) {
                tracing::warn!(%peer, error = %e, "dropping connection: reactor ring full");
            }
        }
        PollStatus::from_work(accepted)
    }
}

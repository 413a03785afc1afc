//! A non-blocking [`Stream`] carrying [`Msg`] frames: a bounded receive buffer, a send buffer
//! flushed as far as the socket takes it, never blocking.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use super::Stream;
use crate::replication::wire::{Msg, MAX_FRAME};

/// Why a framed stream failed.
#[derive(Debug, thiserror::Error)]
pub enum FramedError {
    /// The peer closed.
    #[error("peer closed the connection")]
    Closed,
    /// Socket error.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// Bad frame.
    #[error("protocol: {0}")]
    Wire(#[from] crate::replication::wire::WireError),
}

/// A framed stream.
pub struct Framed {
    /// The stream.
    pub stream: Box<dyn Stream>,
    inbuf: Vec<u8>,
    rend: usize,
    out: Vec<u8>,
    opos: usize,
}

impl Framed {
    /// Wraps a TCP stream, making it non-blocking.
    pub fn new(stream: TcpStream) -> std::io::Result<Framed> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Framed::over(Box::new(stream)))
    }

    /// Wraps a non-blocking stream.
    pub fn over(stream: Box<dyn Stream>) -> Framed {
        Framed { stream, inbuf: vec![0; MAX_FRAME + 64], rend: 0, out: Vec::with_capacity(1 << 20), opos: 0 }
    }

    /// Queues a message.
    pub fn queue(&mut self, msg: &Msg) {
        msg.encode(&mut self.out);
    }

    /// Bytes queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.out.len() - self.opos
    }

    /// Sends what the socket takes; returns whether anything went.
    pub fn flush(&mut self) -> Result<bool, FramedError> {
        let mut sent = false;
        while self.opos < self.out.len() {
            match self.stream.write(&self.out[self.opos..]) {
                Ok(0) => return Err(FramedError::Closed),
                Ok(n) => {
                    self.opos += n;
                    sent = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        if self.opos == self.out.len() {
            self.out.clear();
            self.opos = 0;
        }
        Ok(sent)
    }

    /// Reads and decodes up to `max` messages into `msgs`; returns whether anything arrived.
    pub fn receive(&mut self, msgs: &mut Vec<Msg>, max: usize) -> Result<bool, FramedError> {
        let mut got = false;
        match self.stream.read(&mut self.inbuf[self.rend..]) {
            Ok(0) => return Err(FramedError::Closed),
            Ok(n) => {
                self.rend += n;
                got = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        let mut pos = 0;
        while msgs.len() < max {
            match Msg::decode(&self.inbuf[pos..self.rend])? {
                Some((m, used)) => {
                    msgs.push(m);
                    pos += used;
                }
                None => break,
            }
        }
        self.inbuf.copy_within(pos..self.rend, 0);
        self.rend -= pos;
        Ok(got || !msgs.is_empty())
    }
}

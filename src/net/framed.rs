//! A non-blocking [`Stream`] carrying [`Msg`] frames: a bounded receive buffer, a send buffer
//! flushed as far as the socket takes it, never blocking.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use super::Stream;
use crate::replication::wire::{Frame, Msg, MAX_FRAME};

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

/// Sent bytes a send buffer that never drains fully drops once they are this many and half of it.
const COMPACT_AT: usize = 1 << 20;

/// A framed stream.
pub struct Framed {
    /// The stream.
    pub stream: Box<dyn Stream>,
    inbuf: Vec<u8>,
    /// Undecoded bytes are `inbuf[rpos..rend]`; they move to the front only when the buffer
    /// is more than half consumed or full, so a burst of small frames is not copied per poll.
    rpos: usize,
    rend: usize,
    out: Vec<u8>,
    opos: usize,
    /// Frames decoded by [`Framed::receive`] on their way to messages.
    scratch: Vec<Frame>,
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
        Framed {
            stream,
            inbuf: vec![0; MAX_FRAME + 64],
            rpos: 0,
            rend: 0,
            out: Vec::with_capacity(1 << 20),
            opos: 0,
            scratch: Vec::new(),
        }
    }

    /// Queues a message.
    pub fn queue(&mut self, msg: &Msg) {
        msg.encode(&mut self.out);
    }

    /// Queues a `Write` of `data` at `lsn`, encoded straight from the slice.
    pub fn queue_write(&mut self, lsn: u64, data: &[u8]) {
        Msg::encode_write(lsn, data, &mut self.out);
    }

    /// Sends a `Write` of `data` at `lsn` from where `data` lies when nothing is queued ahead
    /// of it (one vectored send, no copy into the send buffer), queueing what the socket does
    /// not take; with bytes queued, or on a socket error (the next flush reports it), it is
    /// queued whole as by [`Framed::queue_write`].
    pub fn send_write(&mut self, lsn: u64, data: &[u8]) {
        let header = Msg::write_header(lsn, data);
        let mut sent = 0;
        if self.pending() == 0 {
            let parts = [std::io::IoSlice::new(&header), std::io::IoSlice::new(data)];
            sent = self.stream.write_vectored(&parts).unwrap_or(0);
        }
        if sent < header.len() {
            self.out.extend_from_slice(&header[sent..]);
        }
        self.out.extend_from_slice(&data[sent.saturating_sub(header.len())..]);
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
        } else if self.opos >= COMPACT_AT && self.opos * 2 >= self.out.len() {
            // A stream that never drains fully: drop what went, moving less than it was.
            self.out.drain(..self.opos);
            self.opos = 0;
        }
        Ok(sent)
    }

    /// Reads and decodes up to `max` messages into `msgs`; returns whether anything arrived.
    pub fn receive(&mut self, msgs: &mut Vec<Msg>, max: usize) -> Result<bool, FramedError> {
        let mut frames = std::mem::take(&mut self.scratch);
        let got = self.receive_frames(&mut frames, max);
        msgs.extend(frames.drain(..).map(|f| f.into_msg(&self.inbuf)));
        self.scratch = frames;
        got
    }

    /// Reads and decodes up to `max` frames into `frames`; returns whether anything arrived.
    /// A Write's data stays in the receive buffer ([`Frame::Write`] positions index it, see
    /// [`Framed::take_received`]) until the next call, which is the only one that moves bytes.
    pub fn receive_frames(&mut self, frames: &mut Vec<Frame>, max: usize) -> Result<bool, FramedError> {
        assert!(!self.inbuf.is_empty(), "receive buffer still lent out");
        let mut got = false;
        if self.rpos == self.rend {
            (self.rpos, self.rend) = (0, 0);
        } else if self.rend == self.inbuf.len() || self.rpos * 2 >= self.inbuf.len() {
            self.compact();
        }
        if self.rend < self.inbuf.len() {
            match self.stream.read(&mut self.inbuf[self.rend..]) {
                Ok(0) => return Err(FramedError::Closed),
                Ok(n) => {
                    self.rend += n;
                    got = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        let before = frames.len();
        while frames.len() - before < max {
            match Frame::decode(&self.inbuf[self.rpos..self.rend])? {
                Some((f, used)) => {
                    frames.push(f.offset(self.rpos));
                    self.rpos += used;
                }
                None => break,
            }
        }
        Ok(got || frames.len() > before)
    }

    /// The receive buffer, which the positions of the last [`Framed::receive_frames`] index,
    /// lent out (so its Writes can be handled while the stream queues answers); give it back
    /// with [`Framed::return_received`] before receiving again.
    pub fn take_received(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.inbuf)
    }

    /// Takes back the receive buffer lent by [`Framed::take_received`].
    pub fn return_received(&mut self, buf: Vec<u8>) {
        self.inbuf = buf;
    }

    /// Moves the undecoded bytes to the front of the receive buffer.
    fn compact(&mut self) {
        self.inbuf.copy_within(self.rpos..self.rend, 0);
        self.rend -= self.rpos;
        self.rpos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::RawFd;

    /// A socket in miniature: hands out `bytes` in reads of at most `chunk` bytes (WouldBlock
    /// when empty), and takes at most `take` bytes per write, vectored writes included, into
    /// `sent`, refusing every third write with WouldBlock.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        chunk: usize,
        sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        take: usize,
        writes: usize,
    }

    impl Trickle {
        fn reads(bytes: Vec<u8>, chunk: usize) -> Trickle {
            Trickle { bytes, at: 0, chunk, sent: Default::default(), take: usize::MAX, writes: 0 }
        }

        fn writes(take: usize, sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> Trickle {
            Trickle { bytes: Vec::new(), at: 0, chunk: 0, sent, take, writes: 0 }
        }
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.chunk).min(self.bytes.len() - self.at);
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.write_vectored(&[std::io::IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            self.writes += 1;
            if self.writes % 3 == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(self.take - n);
                self.sent.lock().unwrap().extend_from_slice(&b[..k]);
                n += k;
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Stream for Trickle {
        fn connected(&mut self) -> std::io::Result<bool> {
            Ok(true)
        }
        fn raw_fd(&self) -> Option<RawFd> {
            None
        }
    }

    #[test]
    fn many_frames_of_every_size_arrive_whole_and_in_order() {
        let sizes = [512usize, 4608, 1, 131_072, 9000];
        let size = |i: u64| if i % 100 == 50 { MAX_FRAME - 64 } else { sizes[i as usize % sizes.len()] };
        let sent: Vec<Msg> =
            (0..300u64).map(|i| Msg::Write { lsn: i, data: vec![i as u8; size(i)] }).collect();
        let mut bytes = Vec::new();
        for m in &sent {
            m.encode(&mut bytes);
        }
        for chunk in [1 << 20, 65_536, 7_777] {
            let mut f = Framed::over(Box::new(Trickle::reads(bytes.clone(), chunk)));
            let mut got = Vec::new();
            let mut idle = 0;
            // Every other poll decodes in place: Writes index the lent receive buffer.
            while got.len() < sent.len() && idle < 3 {
                let progress = if got.len() % 2 == 0 {
                    let mut msgs = Vec::new();
                    let p = f.receive(&mut msgs, 64).unwrap();
                    got.extend(msgs);
                    p
                } else {
                    let mut frames = Vec::new();
                    let p = f.receive_frames(&mut frames, 64).unwrap();
                    let buf = f.take_received();
                    got.extend(frames.into_iter().map(|fr| {
                        assert!(matches!(fr, Frame::Write { .. }), "a Write stays in place");
                        fr.into_msg(&buf)
                    }));
                    f.return_received(buf);
                    p
                };
                idle = if progress { 0 } else { idle + 1 };
            }
            assert_eq!(got.len(), sent.len(), "chunk {chunk}");
            assert!(got == sent, "chunk {chunk}: frames changed or reordered");
        }
    }

    #[test]
    fn writes_sent_in_place_arrive_as_the_queued_frames_would() {
        for take in [5, 21, 4096, 70_000, 1 << 20] {
            let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut f = Framed::over(Box::new(Trickle::writes(take, got.clone())));
            let mut want = Vec::new();
            for i in 0..40u64 {
                let data = vec![i as u8; [4096, 512, 65_536, 131_584][i as usize % 4]];
                Msg::Write { lsn: i * 300, data: data.clone() }.encode(&mut want);
                f.send_write(i * 300, &data);
                if i % 5 == 0 {
                    Msg::Heartbeat { seq: i }.encode(&mut want);
                    f.queue(&Msg::Heartbeat { seq: i });
                }
                if i % 2 == 0 {
                    f.flush().unwrap();
                }
            }
            while f.pending() > 0 {
                f.flush().unwrap();
            }
            assert!(*got.lock().unwrap() == want, "take {take}: the bytes differ from the queued frames");
        }
    }
}

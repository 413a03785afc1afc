//! The initiator's pipelined, non-blocking NVMe/TCP I/O queue pair, on the shared PDU codec.
//!
//! It owns one buffer per command slot (the slot index is the command's CID) and never
//! allocates after construction: commands go out as a queue of segments (PDU headers and
//! digests kept in a per-slot header area, data referenced in place in the slot's buffer)
//! written with one `writev` per flush; incoming bytes are parsed incrementally, so a C2HData
//! PDU of any size lands piece by piece in its slot's buffer through a fixed receive buffer.
//!
//! Writes travel in-capsule when they fit the target's in-capsule size (IOCCSZ), otherwise
//! after an R2T as H2CData PDUs of at most MAXH2CDATA bytes. Reads complete on a CapsuleResp or
//! on the last C2HData PDU when it carries the SUCCESS flag.
//!
//! Invariants: a slot is busy from [`TcpQpair::submit`] until its completion is handed out; a
//! slot's header area is only rewritten when none of its segments is still queued (checked);
//! the segment queue never grows past its preallocated bound (checked); a PDU for a slot that is
//! not busy, data out of a command's range, or any malformed PDU ends the connection.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;

use crate::nvmf::spec::{SglDescriptor, Sqe, Status};
use crate::nvmf::tcp::pdu::{
    self, decode_header, encode_capsule_cmd, DataDigest, DecodeParams, Digests, H2CData, Pdu, PduHeader,
    Role, DIGEST_LEN, HEADER_BUF_LEN,
};

/// Bytes of the receive buffer.
const RX_BUF_LEN: usize = 256 * 1024;
/// Socket reads per [`TcpQpair::recv`] call (bounds the work of one poll).
const MAX_READS: usize = 8;
/// Segments gathered into one `writev`.
const MAX_IOV: usize = 64;

/// A queue pair failure: the connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum QpairError {
    /// Socket trouble.
    #[error("transport: {0}")]
    Io(#[from] io::Error),
    /// The target closed the connection.
    #[error("the target closed the connection")]
    Closed,
    /// The target sent a malformed PDU.
    #[error("bad PDU from the target: {0}")]
    Pdu(#[from] pdu::PduError),
    /// The target terminated the connection.
    #[error("target sent C2HTermReq: FES {fes:#x}, FEI {fei:#x}")]
    TermReq {
        /// Fatal error status.
        fes: u16,
        /// Fatal error information.
        fei: u32,
    },
    /// A well-formed PDU that makes no sense here.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// What the connection negotiated and how it is sized.
#[derive(Debug, Clone, Copy)]
pub struct QpairParams {
    /// Digests enabled by ICResp.
    pub digests: Digests,
    /// The controller's PDU data alignment.
    pub cpda: u8,
    /// Largest H2CData payload the target accepts.
    pub maxh2cdata: u32,
    /// Largest in-capsule data on this queue (IOCCSZ * 16 - 64).
    pub icd: u32,
    /// Command slots (the queue depth).
    pub slots: usize,
    /// Bytes per slot buffer (the largest transfer).
    pub buf_len: usize,
}

/// A finished command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Its slot (CID).
    pub slot: u16,
    /// Its status.
    pub status: Status,
}

#[derive(Debug)]
struct Slot {
    buf: Vec<u8>,
    hdr: Vec<u8>,
    hdr_used: usize,
    /// Segments of this slot still in the send queue.
    queued: u32,
    busy: bool,
    write: bool,
    inline: bool,
    len: u32,
    /// Read data received so far.
    received: u32,
    digest_error: bool,
}

#[derive(Debug, Clone, Copy)]
enum Seg {
    Hdr { slot: u16, start: u32, end: u32 },
    Data { slot: u16, start: u32, end: u32 },
}

impl Seg {
    fn slot(self) -> u16 {
        match self {
            Seg::Hdr { slot, .. } | Seg::Data { slot, .. } => slot,
        }
    }

    fn len(self) -> usize {
        match self {
            Seg::Hdr { start, end, .. } | Seg::Data { start, end, .. } => (end - start) as usize,
        }
    }
}

/// The PDU being received: its header and how many of its bytes were consumed.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    hdr: PduHeader,
    pos: usize,
    slot: Option<u16>,
    datao: u32,
    digest: DataDigest,
    ddgst: [u8; DIGEST_LEN],
}

/// One connected I/O queue pair.
pub struct TcpQpair {
    stream: TcpStream,
    p: QpairParams,
    decode: DecodeParams,
    slots: Vec<Slot>,
    tx: VecDeque<Seg>,
    tx_cap: usize,
    /// Bytes of the front segment already written.
    tx_off: usize,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    cur: Option<Cursor>,
}

impl TcpQpair {
    /// Wraps a connected stream (ICReq/ICResp and Connect done) and allocates every buffer.
    pub fn new(stream: TcpStream, p: QpairParams) -> io::Result<TcpQpair> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        assert!(p.slots > 0 && p.slots <= usize::from(u16::MAX), "slot count out of range");
        assert!(p.maxh2cdata > 0, "MAXH2CDATA must be positive");
        let pdus = p.buf_len.div_ceil(p.maxh2cdata as usize) + 1;
        let hdr_len = pdus * (HEADER_BUF_LEN + DIGEST_LEN) + DIGEST_LEN;
        let slots = (0..p.slots)
            .map(|i| Slot {
                buf: (0..p.buf_len).map(|k| (k as u8).wrapping_mul(7).wrapping_add(i as u8)).collect(),
                hdr: vec![0; hdr_len],
                hdr_used: 0,
                queued: 0,
                busy: false,
                write: false,
                inline: false,
                len: 0,
                received: 0,
                digest_error: false,
            })
            .collect();
        let tx_cap = p.slots * (3 * pdus + 3);
        let max_plen = (p.buf_len.max(64 * 1024) + 1024) as u32;
        Ok(TcpQpair {
            stream,
            p,
            decode: DecodeParams::new(Role::Host, max_plen).with_digests(p.digests),
            slots,
            tx: VecDeque::with_capacity(tx_cap),
            tx_cap,
            tx_off: 0,
            rx: vec![0; RX_BUF_LEN],
            rx_start: 0,
            rx_end: 0,
            cur: None,
        })
    }

    /// The socket, for the reactor to watch.
    pub fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.stream)
    }

    /// Slot `slot`'s buffer, to fill before a write (not while the slot is busy).
    pub fn buf_mut(&mut self, slot: u16) -> &mut [u8] {
        let s = &mut self.slots[usize::from(slot)];
        assert!(!s.busy, "slot {slot} is busy");
        &mut s.buf
    }

    /// Slot `slot`'s buffer (read data after a completion).
    pub fn buf(&self, slot: u16) -> &[u8] {
        &self.slots[usize::from(slot)].buf
    }

    /// Whether any send is pending.
    pub fn has_pending_send(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Queues command `sqe` on `slot` moving `len` bytes (out of the slot's buffer for a write,
    /// into it for a read). The CID and the data pointer are set here. Call [`Self::flush`].
    pub fn submit(&mut self, slot: u16, mut sqe: Sqe, len: u32, write: bool) {
        let dg = self.p.digests;
        let s = &mut self.slots[usize::from(slot)];
        assert!(!s.busy && s.queued == 0, "slot {slot} is busy");
        assert!(len as usize <= s.buf.len(), "transfer of {len} bytes exceeds the slot buffer");
        sqe.cid = slot;
        let inline = write && len <= self.p.icd;
        sqe.set_sgl(if inline {
            SglDescriptor::InCapsule { offset: 0, length: len }
        } else {
            SglDescriptor::Transport { length: len }
        });
        let h = encode_capsule_cmd(&sqe, if inline { len } else { 0 }, dg, self.p.cpda);
        (s.busy, s.write, s.inline, s.len) = (true, write, inline, len);
        (s.received, s.digest_error, s.hdr_used) = (0, false, 0);
        self.push_hdr(slot, h.as_bytes());
        if inline && len > 0 {
            self.push_data(slot, 0, len);
            if h.has_ddgst() {
                let d = pdu::ddgst(&[&self.slots[usize::from(slot)].buf[..len as usize]]);
                self.push_hdr(slot, &d);
            }
        }
    }

    fn push_seg(&mut self, seg: Seg) {
        assert!(self.tx.len() < self.tx_cap, "send queue bound exceeded");
        self.slots[usize::from(seg.slot())].queued += 1;
        self.tx.push_back(seg);
    }

    fn push_hdr(&mut self, slot: u16, bytes: &[u8]) {
        let s = &mut self.slots[usize::from(slot)];
        let start = s.hdr_used;
        s.hdr[start..start + bytes.len()].copy_from_slice(bytes);
        s.hdr_used += bytes.len();
        let (start, end) = (start as u32, s.hdr_used as u32);
        self.push_seg(Seg::Hdr { slot, start, end });
    }

    fn push_data(&mut self, slot: u16, start: u32, end: u32) {
        self.push_seg(Seg::Data { slot, start, end });
    }

    /// Writes queued segments until done or the socket is full; true if it wrote anything.
    pub fn flush(&mut self) -> Result<bool, QpairError> {
        let mut wrote = false;
        while !self.tx.is_empty() {
            let Self { stream, slots, tx, tx_off, .. } = self;
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for seg in tx.iter().take(MAX_IOV) {
                let bytes = match *seg {
                    Seg::Hdr { slot, start, end } => {
                        &slots[usize::from(slot)].hdr[start as usize..end as usize]
                    }
                    Seg::Data { slot, start, end } => {
                        &slots[usize::from(slot)].buf[start as usize..end as usize]
                    }
                };
                iov[n] = IoSlice::new(if n == 0 { &bytes[*tx_off..] } else { bytes });
                n += 1;
            }
            match stream.write_vectored(&iov[..n]) {
                Ok(0) => return Err(QpairError::Closed),
                Ok(k) => {
                    wrote = true;
                    self.advance(k);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(wrote)
    }

    fn advance(&mut self, mut k: usize) {
        while k > 0 {
            let seg = *self.tx.front().expect("written bytes belong to queued segments");
            let rest = seg.len() - self.tx_off;
            if k < rest {
                self.tx_off += k;
                return;
            }
            k -= rest;
            self.tx_off = 0;
            self.tx.pop_front();
            self.slots[usize::from(seg.slot())].queued -= 1;
        }
    }

    /// Reads what the socket holds and processes it; completions are appended to `done`.
    /// True if anything was read.
    pub fn recv(&mut self, done: &mut Vec<Done>) -> Result<bool, QpairError> {
        let mut any = false;
        for _ in 0..MAX_READS {
            if self.rx_start == self.rx_end {
                (self.rx_start, self.rx_end) = (0, 0);
            } else if self.rx_start > 0 && self.rx_end + HEADER_BUF_LEN + DIGEST_LEN > self.rx.len() {
                self.rx.copy_within(self.rx_start..self.rx_end, 0);
                (self.rx_start, self.rx_end) = (0, self.rx_end - self.rx_start);
            }
            let space = self.rx.len() - self.rx_end;
            assert!(space > 0, "receive buffer full: a PDU header cannot be that long");
            match self.stream.read(&mut self.rx[self.rx_end..]) {
                Ok(0) => return Err(QpairError::Closed),
                Ok(n) => {
                    any = true;
                    self.rx_end += n;
                    self.process(done)?;
                    if n < space {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(any)
    }

    fn process(&mut self, done: &mut Vec<Done>) -> Result<(), QpairError> {
        loop {
            match self.cur {
                None => {
                    let Some(h) = decode_header(&self.rx[self.rx_start..self.rx_end], &self.decode)? else {
                        return Ok(());
                    };
                    self.rx_start += h.header_len();
                    self.begin(h, done)?;
                }
                Some(_) if self.rx_start == self.rx_end => return Ok(()),
                Some(_) => self.consume_body(done)?,
            }
        }
    }

    /// A header arrived: act on it, or set the cursor to take in the rest of the PDU.
    fn begin(&mut self, h: PduHeader, done: &mut Vec<Done>) -> Result<(), QpairError> {
        let mut cur = Cursor {
            hdr: h,
            pos: h.header_len(),
            slot: None,
            datao: 0,
            digest: DataDigest::new(),
            ddgst: [0; DIGEST_LEN],
        };
        match h.pdu {
            Pdu::CapsuleResp(cqe) => {
                let slot = self.busy_slot(cqe.cid, "CapsuleResp")?;
                let s = &self.slots[usize::from(slot)];
                let mut status = cqe.status;
                if s.queued > 0 {
                    return Err(QpairError::Protocol(format!(
                        "CID {slot} completed before its data was sent"
                    )));
                }
                if status.is_success() && s.digest_error {
                    status = Status::TRANSIENT_TRANSPORT_ERROR;
                } else if status.is_success() && !s.write && s.received != s.len {
                    return Err(QpairError::Protocol(format!(
                        "read CID {slot} completed after {} of {} bytes",
                        s.received, s.len
                    )));
                }
                self.complete(slot, status, done);
            }
            Pdu::R2T(r) => self.r2t(r.cccid, r.ttag, r.r2to, r.r2tl)?,
            Pdu::C2HData(c) => {
                let slot = self.busy_slot(c.cccid, "C2HData")?;
                let s = &self.slots[usize::from(slot)];
                if s.write || c.datao != s.received || c.datao + c.datal > s.len {
                    return Err(QpairError::Protocol(format!(
                        "C2HData for CID {slot}: offset {} + {} bytes, expected offset {} of {}",
                        c.datao, c.datal, s.received, s.len
                    )));
                }
                (cur.slot, cur.datao) = (Some(slot), c.datao);
            }
            Pdu::C2HTermReq(t) => return Err(QpairError::TermReq { fes: t.fes, fei: t.fei }),
            other => return Err(QpairError::Protocol(format!("unexpected {other:?}"))),
        }
        if cur.pos < h.total_len() {
            self.cur = Some(cur);
        } else {
            self.end_pdu(cur, done)?;
        }
        Ok(())
    }

    /// Takes in available bytes of the current PDU: padding, data, data digest.
    fn consume_body(&mut self, done: &mut Vec<Done>) -> Result<(), QpairError> {
        let mut cur = self.cur.take().expect("a PDU is being received");
        let (data_at, data_len) = (cur.hdr.data_offset(), cur.hdr.data_len());
        let total = cur.hdr.total_len();
        while cur.pos < total && self.rx_start < self.rx_end {
            let avail = self.rx_end - self.rx_start;
            let (region_end, kind) = if cur.pos < data_at {
                (data_at, 0)
            } else if cur.pos < data_at + data_len {
                (data_at + data_len, 1)
            } else {
                (total, 2)
            };
            let n = (region_end - cur.pos).min(avail);
            let src = &self.rx[self.rx_start..self.rx_start + n];
            match kind {
                1 => {
                    if let Some(slot) = cur.slot {
                        let at = cur.datao as usize + (cur.pos - data_at);
                        self.slots[usize::from(slot)].buf[at..at + n].copy_from_slice(src);
                    }
                    if cur.hdr.ddgst {
                        cur.digest.update(src);
                    }
                }
                2 => {
                    let at = cur.pos - data_at - data_len;
                    cur.ddgst[at..at + n].copy_from_slice(src);
                }
                _ => {}
            }
            cur.pos += n;
            self.rx_start += n;
        }
        if cur.pos < total {
            self.cur = Some(cur);
        } else {
            self.end_pdu(cur, done)?;
        }
        Ok(())
    }

    /// A whole data PDU is in: check its digest, count it, complete on SUCCESS.
    fn end_pdu(&mut self, cur: Cursor, done: &mut Vec<Done>) -> Result<(), QpairError> {
        let Pdu::C2HData(c) = cur.hdr.pdu else { return Ok(()) };
        let slot = cur.slot.expect("C2HData cursor has a slot");
        let s = &mut self.slots[usize::from(slot)];
        s.received += c.datal;
        if cur.hdr.ddgst && cur.digest.verify(cur.ddgst).is_err() {
            s.digest_error = true;
        }
        if c.success && s.received != s.len {
            return Err(QpairError::Protocol(format!(
                "C2HData SUCCESS for CID {slot} after {} of {} bytes",
                s.received, s.len
            )));
        }
        if c.success {
            let status = if s.digest_error { Status::TRANSIENT_TRANSPORT_ERROR } else { Status::SUCCESS };
            self.complete(slot, status, done);
        }
        Ok(())
    }

    fn busy_slot(&self, cid: u16, what: &str) -> Result<u16, QpairError> {
        match self.slots.get(usize::from(cid)) {
            Some(s) if s.busy => Ok(cid),
            _ => Err(QpairError::Protocol(format!("{what} for CID {cid}, which is not outstanding"))),
        }
    }

    /// Answers an R2T with H2CData PDUs of at most MAXH2CDATA bytes.
    fn r2t(&mut self, cid: u16, ttag: u16, r2to: u32, r2tl: u32) -> Result<(), QpairError> {
        let slot = self.busy_slot(cid, "R2T")?;
        let s = &self.slots[usize::from(slot)];
        if !s.write || s.inline || r2tl == 0 || r2to.checked_add(r2tl).is_none_or(|e| e > s.len) {
            return Err(QpairError::Protocol(format!(
                "R2T for CID {cid}: offset {r2to} + {r2tl} bytes of a {}-byte {}",
                s.len,
                if s.write { "write" } else { "read" }
            )));
        }
        if s.queued > 0 {
            return Err(QpairError::Protocol(format!("R2T for CID {cid} before its previous data was sent")));
        }
        self.slots[usize::from(slot)].hdr_used = 0;
        let (dg, cpda, end) = (self.p.digests, self.p.cpda, r2to + r2tl);
        let mut off = r2to;
        while off < end {
            let n = (end - off).min(self.p.maxh2cdata);
            let h = H2CData { cccid: cid, ttag, datao: off, datal: n, last: off + n == end }.encode(dg, cpda);
            self.push_hdr(slot, h.as_bytes());
            self.push_data(slot, off, off + n);
            if h.has_ddgst() {
                let d = pdu::ddgst(&[&self.slots[usize::from(slot)].buf[off as usize..(off + n) as usize]]);
                self.push_hdr(slot, &d);
            }
            off += n;
        }
        Ok(())
    }

    fn complete(&mut self, slot: u16, status: Status, done: &mut Vec<Done>) {
        let s = &mut self.slots[usize::from(slot)];
        assert!(s.busy, "completing idle slot {slot}");
        s.busy = false;
        done.push(Done { slot, status });
    }
}

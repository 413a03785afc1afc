//! One NVMe/TCP connection (one queue pair) as a poller: it reads the socket, cuts PDUs with the
//! codec, drives each command's [`request`](super::request) state machine, and writes
//! responses back in one batch per poll.
//!
//! Invariants: nothing here blocks; the receive buffer is allocated once and bounded by the
//! largest PDU the connection accepts (`max_plen`); a protocol violation queues a C2HTermReq,
//! stops reading and closes the connection once it is sent; requests still on the bdev are
//! drained before the connection's channels and buffers are released.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::nscache::NsCache;
use super::pdu::{self, DecodeParams, Digests, Fes, IcResp, PduError, PduHeader, Role, TermReq};
use super::request::Requests;
use crate::bdev::IoCompletion;
use crate::nvmf::config::TransportSection;
use crate::nvmf::ctrlr::Ctrlr;
use crate::nvmf::spec::Sqe;
use crate::nvmf::target::Target;
use crate::reactor::time::NS_PER_MS;
use crate::reactor::{Nanos, PollCtx, PollStatus, Poller};

/// Admin queue in-capsule data size (the Linux host needs 8 KiB for Connect and more).
pub const ADMIN_ICD: u32 = 8192;
/// Largest H2CData payload the host may send (MAXH2CDATA).
pub const MAXH2CDATA: u32 = 128 * 1024;
/// PDUs handled per poll, so one busy connection cannot starve its reactor.
const PDUS_PER_POLL: usize = 64;
/// Output queued beyond this stops the connection from taking new PDUs until the host reads.
const MAX_PENDING_OUTPUT: usize = 2 << 20;
/// How long a closing connection tries to deliver its last bytes.
const CLOSE_GRACE: Nanos = 1000 * NS_PER_MS;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for ICReq.
    AwaitIcReq,
    /// ICResp sent; capsules flow.
    Ready,
    /// Sending what is left, then closing.
    Closing,
}

/// What queue this connection became at Connect.
pub enum Qpair {
    /// Before Connect.
    Unbound,
    /// The admin queue of a controller.
    Admin {
        /// The controller.
        ctrlr: Arc<Ctrlr>,
        /// Outstanding AER slots.
        aers: Vec<u16>,
        /// Last Keep Alive (or Connect).
        last_keep_alive: Nanos,
    },
    /// I/O queue `qid` of a controller.
    Io {
        /// The controller.
        ctrlr: Arc<Ctrlr>,
        /// Queue id.
        qid: u16,
    },
}

/// One queue pair over TCP.
pub struct Connection {
    name: String,
    stream: TcpStream,
    /// Host address.
    pub(super) peer: SocketAddr,
    /// Our address (the path, for listener checks and ANA).
    pub(super) local: SocketAddr,
    pub(super) target: Arc<Target>,
    pub(super) transport: TransportSection,
    pub(super) phase: Phase,
    pub(super) digests: Digests,
    pub(super) hpda: u8,
    decode: DecodeParams,
    inbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    pub(super) out: Vec<u8>,
    opos: usize,
    pub(super) qp: Qpair,
    pub(super) reqs: Requests,
    pub(super) sqhd: u16,
    pub(super) sqsize: u16,
    pub(super) sqflow_off: bool,
    pub(super) ns: NsCache,
    pub(super) completions: Vec<IoCompletion>,
    watching: bool,
    closing_since: Option<Nanos>,
    close_reason: String,
    /// A C2HTermReq was queued: nothing may follow it on the wire.
    pub(super) sealed: bool,
}

impl Connection {
    /// Wraps an accepted socket.
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        target: Arc<Target>,
    ) -> std::io::Result<Connection> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let transport = target.transport();
        let max_plen = 256 + ADMIN_ICD.max(transport.in_capsule_data_size).max(MAXH2CDATA);
        let slots = transport.max_queue_depth.max(transport.max_aq_depth);
        Ok(Connection {
            name: format!("nvmf_tcp_qpair_{peer}"),
            stream,
            peer,
            local,
            transport,
            phase: Phase::AwaitIcReq,
            digests: Digests::NONE,
            hpda: 0,
            decode: DecodeParams::new(Role::Controller, max_plen),
            inbuf: vec![0; 2 * max_plen as usize],
            rpos: 0,
            rend: 0,
            out: Vec::with_capacity(256 * 1024),
            opos: 0,
            qp: Qpair::Unbound,
            reqs: Requests::new(slots),
            sqhd: 0,
            sqsize: 0,
            sqflow_off: false,
            ns: NsCache::default(),
            completions: Vec::with_capacity(usize::from(slots)),
            target,
            watching: false,
            closing_since: None,
            close_reason: String::new(),
            sealed: false,
        })
    }

    /// The controller this queue belongs to, once connected.
    pub(super) fn ctrlr(&self) -> Option<&Arc<Ctrlr>> {
        match &self.qp {
            Qpair::Unbound => None,
            Qpair::Admin { ctrlr, .. } | Qpair::Io { ctrlr, .. } => Some(ctrlr),
        }
    }

    /// Queue id (0 before Connect and for the admin queue).
    pub(super) fn qid(&self) -> u16 {
        match self.qp {
            Qpair::Io { qid, .. } => qid,
            _ => 0,
        }
    }

    /// Stops taking input and closes once pending output is sent.
    pub(super) fn begin_close(&mut self, why: impl Into<String>) {
        if self.phase != Phase::Closing {
            self.close_reason = why.into();
            tracing::debug!(peer = %self.peer, why = self.close_reason, "closing qpair");
            self.phase = Phase::Closing;
        }
    }

    /// Sends a C2HTermReq and closes (a fatal transport error).
    pub(super) fn term_req(&mut self, fes: Fes, fei: u32, offending: &[u8], why: String) {
        tracing::warn!(peer = %self.peer, fes = ?fes, fei, why, "terminating connection");
        if !self.sealed {
            TermReq { fes: fes as u16, fei }.encode_c2h(offending).append_pdu(&mut self.out, &[]);
            self.sealed = true;
        }
        self.begin_close(why);
    }

    fn pdu_error(&mut self, e: &PduError) {
        let bytes = pdu::offending_header(&self.inbuf[self.rpos..self.rend]).to_vec();
        let t = TermReq::from_error(e);
        let fes = Fes::from_raw(t.fes).unwrap_or(Fes::InvalidHeaderField);
        self.term_req(fes, t.fei, &bytes, e.to_string());
    }

    fn receive(&mut self, cx: &mut PollCtx<'_>) -> bool {
        // Move the partial PDU to the front only when the space behind it runs short (the
        // buffer holds two of the largest PDUs), not on every read.
        if self.rpos == self.rend {
            (self.rpos, self.rend) = (0, 0);
        } else if self.inbuf.len() - self.rend < self.decode.max_plen as usize {
            self.inbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        let mut work = false;
        match self.stream.read(&mut self.inbuf[self.rend..]) {
            Ok(0) => {
                self.begin_close("host closed the connection");
                return true;
            }
            Ok(n) => {
                self.rend += n;
                work = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => {
                self.begin_close(format!("socket read: {e}"));
                return true;
            }
        }
        for _ in 0..PDUS_PER_POLL {
            if self.phase == Phase::Closing || !self.next_pdu(cx) {
                break;
            }
            work = true;
        }
        work
    }

    /// Handles the PDU at the front of the receive buffer, if it is complete.
    fn next_pdu(&mut self, cx: &mut PollCtx<'_>) -> bool {
        let avail = &self.inbuf[self.rpos..self.rend];
        let hdr = match pdu::decode_header(avail, &self.decode) {
            Ok(Some(h)) if avail.len() >= h.total_len() => h,
            Ok(_) => return false,
            Err(e) => {
                self.pdu_error(&e);
                return false;
            }
        };
        let inbuf = std::mem::take(&mut self.inbuf);
        let bytes = &inbuf[self.rpos..self.rpos + hdr.total_len()];
        self.handle_pdu(cx, &hdr, bytes);
        self.inbuf = inbuf;
        self.rpos += hdr.total_len();
        true
    }

    fn handle_pdu(&mut self, cx: &mut PollCtx<'_>, hdr: &PduHeader, bytes: &[u8]) {
        use pdu::Pdu;
        let data = hdr.data_range().map_or(&[][..], |r| &bytes[r]);
        let digest_ok = hdr.ddgst_offset().is_none_or(|off| {
            let recv: [u8; 4] = bytes[off..off + 4].try_into().expect("4 bytes");
            pdu::verify_ddgst(&[data], recv).is_ok()
        });
        match (self.phase, hdr.pdu) {
            (Phase::AwaitIcReq, Pdu::ICReq(req)) => self.icreq(&req, bytes),
            (Phase::Ready, Pdu::CapsuleCmd(sqe)) => self.capsule(cx, &sqe, data, digest_ok),
            (Phase::Ready, Pdu::H2CData(d)) => self.h2c_data(cx, &d, data, digest_ok, bytes),
            (_, Pdu::H2CTermReq(t)) => self.begin_close(format!("host sent H2CTermReq (FES {:#x})", t.fes)),
            (phase, _) => {
                let why = format!("{:?} PDU not expected while {phase:?}", hdr.pdu_type);
                self.term_req(Fes::PduSequenceError, 0, &bytes[..bytes.len().min(128)], why);
            }
        }
    }

    fn icreq(&mut self, req: &pdu::IcReq, bytes: &[u8]) {
        let head = &bytes[..bytes.len().min(128)];
        if req.pfv != 0 {
            return self.term_req(Fes::UnsupportedParameter, 8, head, format!("ICReq PFV {}", req.pfv));
        }
        if req.hpda > 31 {
            return self.term_req(Fes::InvalidHeaderField, 10, head, format!("ICReq HPDA {}", req.hpda));
        }
        let resp = IcResp { pfv: 0, cpda: 0, dgst: req.dgst, maxh2cdata: MAXH2CDATA };
        resp.encode().append_pdu(&mut self.out, &[]);
        self.digests = req.dgst;
        self.hpda = req.hpda;
        self.decode = self.decode.with_digests(req.dgst);
        self.phase = Phase::Ready;
    }

    /// Writes queued output; returns whether anything was sent.
    fn flush(&mut self) -> bool {
        let mut sent = false;
        while self.opos < self.out.len() {
            match self.stream.write(&self.out[self.opos..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.opos += n;
                    sent = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.out.clear();
                    self.opos = 0;
                    self.begin_close(format!("socket write: {e}"));
                    return sent;
                }
            }
        }
        if self.opos == self.out.len() {
            self.out.clear();
            self.opos = 0;
        }
        sent
    }

    fn check_liveness(&mut self, now: Nanos) {
        let failed = self.ctrlr().is_some_and(|c| c.failed());
        if failed {
            return self.begin_close("controller torn down");
        }
        if let Qpair::Admin { ctrlr, last_keep_alive, .. } = &self.qp {
            let kato = u64::from(ctrlr.kato_ms.load(std::sync::atomic::Ordering::Acquire));
            let grace = u64::from(crate::nvmf::admin::KAS) * 100;
            if kato > 0 && now.saturating_sub(*last_keep_alive) > (kato + grace) * NS_PER_MS {
                ctrlr.fail("keep alive timeout");
                self.begin_close("keep alive timeout");
            }
        }
    }

    fn teardown(&mut self, cx: &mut PollCtx<'_>) {
        cx.unwatch_fd(self.stream.as_raw_fd());
        self.ns.clear(cx);
        let _ = self.stream.shutdown(Shutdown::Both);
        match std::mem::replace(&mut self.qp, Qpair::Unbound) {
            Qpair::Admin { ctrlr, .. } => {
                ctrlr.fail(&self.close_reason);
                self.target.unregister_ctrlr(ctrlr.cntlid);
            }
            Qpair::Io { ctrlr, .. } => ctrlr.io_qpair_removed(),
            Qpair::Unbound => {}
        }
        tracing::debug!(peer = %self.peer, why = self.close_reason, "qpair closed");
    }

    fn closing_done(&mut self, now: Nanos) -> bool {
        let since = *self.closing_since.get_or_insert(now);
        let drained = self.reqs.busy() == 0 || self.ns.in_flight() == 0;
        (self.out.is_empty() || now - since > CLOSE_GRACE) && drained
    }

    /// The command in `sqe` arrived (capsule); see `exec`.
    fn capsule(&mut self, cx: &mut PollCtx<'_>, sqe: &Sqe, data: &[u8], digest_ok: bool) {
        if self.sqsize > 0 {
            self.sqhd = (self.sqhd + 1) % (self.sqsize + 1);
        }
        super::exec::capsule(self, cx, sqe, data, digest_ok);
    }

    fn h2c_data(
        &mut self,
        cx: &mut PollCtx<'_>,
        d: &pdu::H2CData,
        data: &[u8],
        digest_ok: bool,
        bytes: &[u8],
    ) {
        super::exec::h2c_data(self, cx, d, data, digest_ok, &bytes[..bytes.len().min(128)]);
    }
}

impl Poller for Connection {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut PollCtx<'_>) -> PollStatus {
        if !self.watching {
            self.watching = cx.watch_fd(self.stream.as_raw_fd()).is_ok();
        }
        let mut work = false;
        if self.phase != Phase::Closing {
            self.check_liveness(cx.now);
        }
        // Back-pressure: a host that does not read its responses gets no new commands taken.
        if self.phase != Phase::Closing && self.out.len() - self.opos < MAX_PENDING_OUTPUT {
            work |= self.receive(cx);
        }
        work |= super::exec::progress(self, cx);
        work |= self.flush();
        if self.phase == Phase::Closing && self.closing_done(cx.now) {
            self.teardown(cx);
            return PollStatus::Done;
        }
        PollStatus::from_work(work)
    }
}

//! The initiator's control path, blocking and off the reactors: the admin queue (Connect,
//! CC.EN through Property Set and a wait for CSTS.RDY, Identify Controller and Namespace, Set
//! Features Number of Queues, Keep Alive), the discovery log, and the handshake of each I/O
//! queue (ICReq/ICResp, Fabrics Connect) before its socket goes to a reactor.
//!
//! The admin queue is ferrite's one-command-at-a-time [`Host`]; I/O queues disable SQ flow
//! control (CATTR bit 2) so targets may complete reads with a SUCCESS C2HData and no capsule.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::super::trid::TransportId;
use crate::nvmf::host::{ok, Host};
use crate::nvmf::spec::{
    AdminOpcode, ConnectCmd, ConnectData, FeatureId, SglDescriptor, CATTR_DISABLE_SQFLOW,
};
use crate::nvmf::tcp::pdu::{self, DecodeParams, Digests, IcReq, Pdu, PduHeader, Role};

/// The Host Identifier ferrite's [`Host`] sends on the admin queue; I/O queues must match it.
pub const HOSTID: [u8; 16] = [7; 16];
/// Offset of CC and CSTS.
const CC: u32 = 0x14;
const CSTS: u32 = 0x1C;
const CAP: u32 = 0x00;

/// What Identify told us.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Logical block size, bytes.
    pub block_size: u32,
    /// Namespace size, blocks.
    pub blocks: u64,
    /// Largest in-capsule data on I/O queues, bytes.
    pub icd: u32,
    /// Largest transfer (MDTS), bytes; `u32::MAX` when unlimited.
    pub max_transfer: u32,
    /// Largest I/O queue size (CAP.MQES + 1).
    pub max_queue_entries: u32,
}

/// An enabled controller reached through its admin queue.
pub struct Session {
    admin: Host,
    /// Where the subsystem listens.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
    /// Controller ID.
    pub cntlid: u16,
    /// Digests asked for.
    pub digests: Digests,
    /// Keep Alive Timeout, ms.
    pub kato_ms: u32,
}

fn err(what: &str) -> impl Fn(crate::nvmf::host::HostError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Session {
    /// Connects the admin queue to `t` (through discovery if `t` names the discovery service)
    /// and enables the controller.
    pub fn open(t: &TransportId, digests: Digests, kato_ms: u32) -> Result<Session, String> {
        let (addr, subnqn) = if t.is_discovery() { discover(t)? } else { (t.addr()?, t.subnqn.clone()) };
        let mut admin =
            Host::admin_queue(addr, &subnqn, &t.hostnqn, kato_ms, digests).map_err(err("admin Connect"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while admin.property_get(CSTS, false).map_err(err("Property Get CSTS"))? & 1 == 0 {
            if Instant::now() > deadline {
                return Err("controller did not become ready (CSTS.RDY) in 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let cntlid = admin.cntlid;
        Ok(Session { admin, addr, subnqn, hostnqn: t.hostnqn.clone(), cntlid, digests, kato_ms })
    }

    /// Identify Controller, Identify Namespace `nsid` and CAP.
    pub fn identify(&mut self, nsid: u32) -> Result<Geometry, String> {
        let cap = self.admin.property_get(CAP, true).map_err(err("Property Get CAP"))?;
        let ctrlr = self.admin.identify(1, 0).map_err(err("Identify Controller"))?;
        let ns = self.admin.identify(0, nsid).map_err(err(&format!("Identify Namespace {nsid}")))?;
        let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let blocks = u64::from_le_bytes(ns[0..8].try_into().expect("8 bytes"));
        if blocks == 0 {
            return Err(format!("namespace {nsid} is not active on {}", self.subnqn));
        }
        let flbas = usize::from(ns[26] & 0xF) | (usize::from(ns[26] >> 5 & 0x3) << 4);
        let lbaf = u32_at(&ns, 128 + 4 * flbas);
        let (ms, lbads) = (lbaf & 0xFFFF, (lbaf >> 16) & 0xFF);
        if ms != 0 && ns[26] & 0x10 != 0 {
            return Err(format!("namespace {nsid} has {ms}-byte extended-LBA metadata: not supported"));
        }
        if !(9..=16).contains(&lbads) {
            return Err(format!("namespace {nsid} reports LBADS {lbads}"));
        }
        let mps_min = 12 + ((cap >> 48) & 0xF) as u32;
        let mdts = u32::from(ctrlr[77]);
        let max_transfer = if mdts == 0 || mdts + mps_min >= 32 { u32::MAX } else { 1 << (mdts + mps_min) };
        Ok(Geometry {
            block_size: 1 << lbads,
            blocks,
            icd: (u32_at(&ctrlr, 1792) * 16).saturating_sub(64),
            max_transfer,
            max_queue_entries: (cap & 0xFFFF) as u32 + 1,
        })
    }

    /// Set Features Number of Queues: asks for `n` I/O queues, errs if fewer are granted.
    pub fn set_queue_count(&mut self, n: u16) -> Result<(), String> {
        let want = u32::from(n - 1) | (u32::from(n - 1) << 16);
        let (cqe, _) = self
            .admin
            .admin(AdminOpcode::SetFeatures, 0, u32::from(FeatureId::NumberOfQueues.raw()), want, 0)
            .map_err(err("Set Features Number of Queues"))?;
        ok(&cqe).map_err(err("Set Features Number of Queues"))?;
        let granted = (cqe.dw0 & 0xFFFF).min(cqe.dw0 >> 16) + 1;
        if granted < u32::from(n) {
            return Err(format!("the target grants {granted} I/O queues, {n} needed (one per core)"));
        }
        Ok(())
    }

    /// Sends a Keep Alive.
    pub fn keep_alive(&mut self) -> Result<(), String> {
        let (cqe, _) = self.admin.admin(AdminOpcode::KeepAlive, 0, 0, 0, 0).map_err(err("Keep Alive"))?;
        ok(&cqe).map_err(err("Keep Alive"))
    }

    /// Asks for a normal shutdown (CC.SHN = 01b); errors are ignored (the target may be gone).
    pub fn shutdown(mut self) {
        let _ = self.admin.property_set(CC, 1 | (4 << 20) | (6 << 16) | (1 << 14));
    }

    /// Connects I/O queue `qid` with `sqsize` (0's based) and returns its socket and ICResp.
    pub fn connect_io(&self, qid: u16, sqsize: u16) -> Result<(TcpStream, pdu::IcResp), String> {
        let what = |e: String| format!("I/O queue {qid}: {e}");
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| what(format!("connecting to {}: {e}", self.addr)))?;
        s.set_nodelay(true).map_err(|e| what(e.to_string()))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| what(e.to_string()))?;
        let dg = self.digests;
        let ic = IcReq { pfv: 0, hpda: 0, dgst: dg, maxr2t: 0 }.encode();
        s.write_all(ic.as_bytes()).map_err(|e| what(e.to_string()))?;
        let (h, _) = read_pdu(&mut s, &DecodeParams::new(Role::Host, 4096)).map_err(what)?;
        let Pdu::ICResp(resp) = h.pdu else {
            return Err(what(format!("expected ICResp, got {:?}", h.pdu_type)));
        };
        if resp.dgst != dg {
            return Err(what(format!("target enabled digests {:?}, asked {dg:?}", resp.dgst)));
        }
        let cmd = ConnectCmd { recfmt: 0, qid, sqsize, cattr: CATTR_DISABLE_SQFLOW, kato: 0 };
        let data = ConnectData {
            hostid: HOSTID,
            cntlid: self.cntlid,
            subnqn: self.subnqn.clone(),
            hostnqn: self.hostnqn.clone(),
        }
        .encode();
        let mut sqe = cmd.to_sqe(0);
        sqe.set_sgl(SglDescriptor::InCapsule { offset: 0, length: data.len() as u32 });
        let mut out = Vec::new();
        pdu::append_capsule_cmd(&mut out, &sqe, &data, dg, resp.cpda);
        s.write_all(&out).map_err(|e| what(e.to_string()))?;
        let params = DecodeParams::new(Role::Host, 8192).with_digests(dg);
        let (h, _) = read_pdu(&mut s, &params).map_err(what)?;
        match h.pdu {
            Pdu::CapsuleResp(cqe) if cqe.status.is_success() => Ok((s, resp)),
            Pdu::CapsuleResp(cqe) => Err(what(format!("Connect failed: {}", cqe.status))),
            other => Err(what(format!("expected the Connect response, got {other:?}"))),
        }
    }
}

/// Reads exactly one PDU from a blocking socket (handshake only: nothing else is in flight).
pub(super) fn read_pdu(s: &mut TcpStream, p: &DecodeParams) -> Result<(PduHeader, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(h) = pdu::decode_header(&buf, p).map_err(|e| format!("bad PDU: {e}"))? {
            if buf.len() >= h.total_len() {
                buf.truncate(h.total_len());
                return Ok((h, buf));
            }
        }
        let want = (pdu::header_len_hint(&buf, p).max(buf.len() + 1) - buf.len()).min(chunk.len());
        let n = s.read(&mut chunk[..want.max(1)]).map_err(|e| format!("reading: {e}"))?;
        if n == 0 {
            return Err("the target closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads the discovery log at `t` and returns the first NVMe/TCP subsystem it lists.
fn discover(t: &TransportId) -> Result<(SocketAddr, String), String> {
    let addr = t.addr()?;
    let mut d = Host::admin_queue(addr, &t.subnqn, &t.hostnqn, 0, Digests::NONE)
        .map_err(err("discovery controller Connect"))?;
    let page = |d: &mut Host, len: usize| -> Result<Vec<u8>, String> {
        let numdl = (len / 4 - 1) as u32;
        let (cqe, data) =
            d.admin(AdminOpcode::GetLogPage, 0, 0x70 | (numdl << 16), 0, len).map_err(err("Get Log Page"))?;
        ok(&cqe).map_err(err("Get Log Page (discovery)"))?;
        Ok(data)
    };
    let head = page(&mut d, 1024)?;
    let numrec = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")).min(64) as usize;
    let log = page(&mut d, 1024 * (1 + numrec))?;
    let text = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).trim().to_string()
    };
    for e in log.chunks_exact(1024).skip(1).take(numrec) {
        let (trtype, subtype) = (e[0], e[2]);
        if trtype != 3 || subtype != 2 {
            continue;
        }
        let (port, traddr, subnqn) = (text(&e[32..64]), text(&e[512..768]), text(&e[256..512]));
        let port: u16 = port.parse().map_err(|_| format!("discovery entry has TRSVCID {port:?}"))?;
        let found = TransportId { traddr, trsvcid: port, subnqn, ..t.clone() };
        tracing::info!(subnqn = found.subnqn, traddr = found.traddr, port, "discovered");
        return Ok((found.addr()?, found.subnqn));
    }
    Err(format!("the discovery log at {addr} lists no NVMe/TCP subsystem ({numrec} entries)"))
}

//! A small blocking NVMe/TCP host (initiator) on the same codec as the target. It drives the
//! target in tests — including deliberately malformed PDUs — and any other NVMe/TCP target by
//! address, port and NQN. One command at a time; the load generator has its own pipelined
//! initiator.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::spec::{
    AdminOpcode, ConnectCmd, ConnectData, Cqe, IoOpcode, PropertyGet, PropertySet, SglDescriptor, Sqe,
    Status, CNTLID_DYNAMIC,
};
use super::tcp::pdu::{self, DecodeParams, Digests, H2CData, IcReq, Pdu, PduHeader, Role};

/// A host-side failure.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Socket trouble.
    #[error("transport: {0}")]
    Io(#[from] io::Error),
    /// The target sent something the codec rejects.
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
    /// A PDU we did not expect.
    #[error("unexpected PDU: {0}")]
    Unexpected(String),
    /// A command failed.
    #[error("command failed: {0}")]
    Status(Status),
}

/// A connected queue pair, host side.
pub struct Host {
    stream: TcpStream,
    digests: Digests,
    decode: DecodeParams,
    next_cid: u16,
    /// Bytes received but not yet consumed.
    pending: Vec<u8>,
    /// The cntlid from the admin Connect.
    pub cntlid: u16,
    /// Largest H2CData payload the target accepts.
    pub maxh2cdata: u32,
}

impl Host {
    /// Opens a TCP connection and exchanges ICReq/ICResp.
    pub fn connect(addr: SocketAddr, digests: Digests) -> Result<Host, HostError> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut h = Host {
            stream,
            digests,
            decode: DecodeParams::new(Role::Host, 16 << 20),
            next_cid: 1,
            pending: Vec::new(),
            cntlid: 0,
            maxh2cdata: 0,
        };
        h.send(IcReq { pfv: 0, hpda: 0, dgst: digests, maxr2t: 0 }.encode().as_bytes())?;
        let (hdr, _) = h.recv_pdu()?;
        let Pdu::ICResp(resp) = hdr.pdu else {
            return Err(HostError::Unexpected(format!("{:?}", hdr.pdu_type)));
        };
        if resp.dgst != digests {
            return Err(HostError::Unexpected(format!("digests {:?}, asked {digests:?}", resp.dgst)));
        }
        h.maxh2cdata = resp.maxh2cdata;
        h.decode = h.decode.with_digests(digests);
        Ok(h)
    }

    /// Sends raw bytes (tests use this for malformed PDUs).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Receives one PDU: its header and all its bytes.
    pub fn recv_pdu(&mut self) -> Result<(PduHeader, Vec<u8>), HostError> {
        loop {
            if let Some(h) = pdu::decode_header(&self.pending, &self.decode)? {
                if self.pending.len() >= h.total_len() {
                    let bytes: Vec<u8> = self.pending.drain(..h.total_len()).collect();
                    return Ok((h, bytes));
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(
                    io::Error::new(io::ErrorKind::UnexpectedEof, "target closed the connection").into()
                );
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the target closed the connection (reads until EOF or timeout).
    pub fn closed_by_target(&mut self, timeout: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(timeout));
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        self.next_cid
    }

    /// Runs one command: `data_out` goes to the target (in-capsule when it fits `icd`, else by
    /// R2T), `read_len` bytes come back. Returns the completion and the data.
    pub fn command(
        &mut self,
        mut sqe: Sqe,
        data_out: &[u8],
        read_len: usize,
        icd: usize,
    ) -> Result<(Cqe, Vec<u8>), HostError> {
        sqe.cid = self.cid();
        let in_capsule = !data_out.is_empty() && data_out.len() <= icd;
        let len = if data_out.is_empty() { read_len } else { data_out.len() } as u32;
        sqe.set_sgl(if in_capsule {
            SglDescriptor::InCapsule { offset: 0, length: len }
        } else {
            SglDescriptor::Transport { length: len }
        });
        let mut out = Vec::new();
        let capsule_data = if in_capsule { data_out } else { &[][..] };
        pdu::append_capsule_cmd(&mut out, &sqe, capsule_data, self.digests, 0);
        self.send(&out)?;
        self.finish(&sqe, data_out, in_capsule, read_len)
    }

    fn finish(
        &mut self,
        sqe: &Sqe,
        data_out: &[u8],
        in_capsule: bool,
        read_len: usize,
    ) -> Result<(Cqe, Vec<u8>), HostError> {
        let mut data = Vec::with_capacity(read_len);
        loop {
            let (hdr, bytes) = self.recv_pdu()?;
            match hdr.pdu {
                Pdu::CapsuleResp(cqe) => return Ok((cqe, data)),
                Pdu::C2HData(c) => {
                    data.extend_from_slice(&bytes[hdr.data_range().unwrap_or(0..0)]);
                    if c.success {
                        return Ok((Cqe { cid: sqe.cid, ..Cqe::default() }, data));
                    }
                }
                Pdu::R2T(r) if !in_capsule => self.send_h2c(sqe.cid, r.ttag, r.r2to, r.r2tl, data_out)?,
                Pdu::C2HTermReq(t) => return Err(HostError::TermReq { fes: t.fes, fei: t.fei }),
                other => return Err(HostError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    fn send_h2c(&mut self, cid: u16, ttag: u16, r2to: u32, r2tl: u32, data: &[u8]) -> Result<(), HostError> {
        let mut off = r2to;
        let end = r2to + r2tl;
        let mut out = Vec::new();
        while off < end {
            let n = (end - off).min(self.maxh2cdata);
            let h = H2CData { cccid: cid, ttag, datao: off, datal: n, last: off + n == end };
            h.encode(self.digests, 0).append_pdu(&mut out, &data[off as usize..(off + n) as usize]);
            off += n;
        }
        self.send(&out)?;
        Ok(())
    }

    /// Fabrics Connect; for qid 0 records the cntlid.
    pub fn fabrics_connect(
        &mut self,
        qid: u16,
        sqsize: u16,
        subnqn: &str,
        hostnqn: &str,
        cntlid: u16,
        kato: u32,
    ) -> Result<Cqe, HostError> {
        let cmd = ConnectCmd { recfmt: 0, qid, sqsize, cattr: 0, kato };
        let data = ConnectData { hostid: [7; 16], cntlid, subnqn: subnqn.into(), hostnqn: hostnqn.into() };
        let (cqe, _) = self.command(cmd.to_sqe(0), &data.encode(), 0, 8192)?;
        if qid == 0 && cqe.status.is_success() {
            self.cntlid = cqe.dw0 as u16;
        }
        Ok(cqe)
    }

    /// Connects an admin queue and enables the controller (CC.EN = 1).
    pub fn admin_queue(
        addr: SocketAddr,
        subnqn: &str,
        hostnqn: &str,
        kato: u32,
        digests: Digests,
    ) -> Result<Host, HostError> {
        let mut h = Host::connect(addr, digests)?;
        let cqe = h.fabrics_connect(0, 31, subnqn, hostnqn, CNTLID_DYNAMIC, kato)?;
        ok(&cqe)?;
        let cc = 1 | (4 << 20) | (6 << 16);
        ok(&h.property_set(0x14, cc)?)?;
        Ok(h)
    }

    /// Property Set (4 bytes).
    pub fn property_set(&mut self, ofst: u32, value: u64) -> Result<Cqe, HostError> {
        Ok(self.command(PropertySet { attrib: 0, ofst, value }.to_sqe(0), &[], 0, 0)?.0)
    }

    /// Property Get; returns the value.
    pub fn property_get(&mut self, ofst: u32, eight: bool) -> Result<u64, HostError> {
        let (cqe, _) = self.command(PropertyGet { attrib: u8::from(eight), ofst }.to_sqe(0), &[], 0, 0)?;
        ok(&cqe)?;
        Ok(u64::from(cqe.dw0) | (u64::from(cqe.dw1) << 32))
    }

    /// An admin command returning `len` bytes.
    pub fn admin(
        &mut self,
        opcode: AdminOpcode,
        nsid: u32,
        cdw10: u32,
        cdw11: u32,
        len: usize,
    ) -> Result<(Cqe, Vec<u8>), HostError> {
        let sqe = Sqe { opcode: opcode.raw(), nsid, cdw10, cdw11, ..Sqe::default() };
        self.command(sqe, &[], len, 0)
    }

    /// Identify with `cns` for `nsid`.
    pub fn identify(&mut self, cns: u8, nsid: u32) -> Result<Vec<u8>, HostError> {
        let (cqe, data) = self.admin(AdminOpcode::Identify, nsid, u32::from(cns), 0, 4096)?;
        ok(&cqe)?;
        Ok(data)
    }

    /// Writes `data` at `slba` (blocks of `bs` bytes).
    pub fn write(
        &mut self,
        nsid: u32,
        slba: u64,
        data: &[u8],
        bs: usize,
        icd: usize,
    ) -> Result<Cqe, HostError> {
        let nlb = (data.len() / bs) as u32 - 1;
        let sqe = Sqe {
            opcode: IoOpcode::Write.raw(),
            nsid,
            cdw10: slba as u32,
            cdw11: (slba >> 32) as u32,
            cdw12: nlb,
            ..Sqe::default()
        };
        Ok(self.command(sqe, data, 0, icd)?.0)
    }

    /// Reads `blocks` blocks at `slba`.
    pub fn read(
        &mut self,
        nsid: u32,
        slba: u64,
        blocks: u32,
        bs: usize,
    ) -> Result<(Cqe, Vec<u8>), HostError> {
        let sqe = Sqe {
            opcode: IoOpcode::Read.raw(),
            nsid,
            cdw10: slba as u32,
            cdw11: (slba >> 32) as u32,
            cdw12: blocks - 1,
            ..Sqe::default()
        };
        self.command(sqe, &[], blocks as usize * bs, 0)
    }
}

/// Err unless the completion succeeded.
pub fn ok(cqe: &Cqe) -> Result<(), HostError> {
    if cqe.status.is_success() {
        Ok(())
    } else {
        Err(HostError::Status(cqe.status))
    }
}

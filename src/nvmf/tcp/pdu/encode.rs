//! NVMe/TCP PDU encoders. Each returns a [`HeaderBuf`]: the bytes that
//! precede the PDU's data (common header, type-specific header, header
//! digest, padding up to pdo), or the whole PDU for PDUs without data.
//! The caller sends the data itself (from its own buffers) followed by the
//! data digest ([`HeaderBuf::data_len`] / [`HeaderBuf::has_ddgst`] say
//! what is expected; [`super::DataDigest`] computes it).
//!
//! Invariants: every header produced decodes with `decode_header` under
//! the same digests and PDA (the round-trip tests check this); HDGSTF is
//! set iff a header digest is requested and the type has digests; DDGSTF
//! only on PDUs that carry data; pdo is 0 without data, otherwise hlen +
//! HDGST rounded up to the receiver's PDA; plen covers header, digest,
//! padding, data and data digest. Encoders never allocate.

use std::fmt;
use std::ops::Deref;

use super::super::super::spec::wire::{put_u16, put_u32};
use super::super::super::spec::{Cqe, Sqe, CQE_LEN, SQE_LEN};
use super::{
    flags, hdgst, C2HData, Digests, Fes, H2CData, IcReq, IcResp, PduError, PduType, R2t, TermReq,
    COMMON_HEADER_LEN, DIGEST_LEN, MAX_PDA, TERM_REQ_MAX_DATA,
};

/// Capacity of a [`HeaderBuf`]: the largest header part is 255 bytes
/// (pdo is one byte), the largest whole TermReq 152.
pub const HEADER_BUF_LEN: usize = 256;

/// The encoded header part of a PDU (see the module docs).
#[derive(Clone, Copy)]
pub struct HeaderBuf {
    buf: [u8; HEADER_BUF_LEN],
    len: usize,
    data_len: u32,
    ddgst: bool,
}

impl HeaderBuf {
    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Number of encoded bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Never true: every PDU has a header.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The plen written into the header.
    pub fn plen(&self) -> u32 {
        u32::from_le_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }

    /// Data bytes the caller must send after these bytes (0 when the
    /// encoded bytes are the whole PDU).
    pub const fn data_len(&self) -> u32 {
        self.data_len
    }

    /// Whether a 4-byte data digest must follow the data.
    pub const fn has_ddgst(&self) -> bool {
        self.ddgst
    }

    /// Appends the whole PDU to `out`: these bytes, `data`, and the data
    /// digest when required. `data.len()` must equal [`Self::data_len`].
    pub fn append_pdu(&self, out: &mut Vec<u8>, data: &[u8]) {
        debug_assert_eq!(data.len(), self.data_len as usize);
        out.extend_from_slice(self.as_bytes());
        out.extend_from_slice(data);
        if self.ddgst {
            out.extend_from_slice(&super::ddgst(&[data]));
        }
    }
}

impl Deref for HeaderBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for HeaderBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for HeaderBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderBuf")
            .field("bytes", &self.as_bytes())
            .field("data_len", &self.data_len)
            .field("ddgst", &self.ddgst)
            .finish()
    }
}

/// Builds a header: common header, `fill` for bytes 8..hlen, header
/// digest, padding to pdo.
///
/// # Panics
/// If `data_len` is so large that plen overflows `u32` (> 4 GiB - 260).
fn build(
    t: PduType,
    mut fl: u8,
    dg: Digests,
    pda: u8,
    data_len: u32,
    fill: impl FnOnce(&mut [u8]),
) -> HeaderBuf {
    let hlen = usize::from(t.hlen());
    let with_hd = dg.hdgst && t.has_digests();
    let header_len = hlen + if with_hd { DIGEST_LEN } else { 0 };
    let with_dd = dg.ddgst && t.has_digests() && data_len > 0;
    fl &= !(flags::HDGSTF | flags::DDGSTF);
    fl |= if with_hd { flags::HDGSTF } else { 0 } | if with_dd { flags::DDGSTF } else { 0 };
    let (pdo, len) = if data_len > 0 {
        let align = (usize::from(pda.min(MAX_PDA)) + 1) * 4;
        let pdo = header_len.div_ceil(align) * align;
        (pdo, pdo)
    } else {
        (0, header_len)
    };
    let dd = if with_dd { DIGEST_LEN as u32 } else { 0 };
    let plen = (len as u32)
        .checked_add(data_len)
        .and_then(|v| v.checked_add(dd))
        .expect("NVMe/TCP PDU length overflows u32");
    let mut h = HeaderBuf { buf: [0u8; HEADER_BUF_LEN], len, data_len, ddgst: with_dd };
    h.buf[0] = t.raw();
    h.buf[1] = fl;
    h.buf[2] = hlen as u8;
    h.buf[3] = pdo as u8;
    put_u32(&mut h.buf, 4, plen);
    fill(&mut h.buf[..hlen]);
    if with_hd {
        let d = hdgst(&h.buf[..hlen]);
        h.buf[hlen..header_len].copy_from_slice(&d);
    }
    h
}

impl IcReq {
    /// Encodes the 128-byte ICReq (host).
    pub fn encode(&self) -> HeaderBuf {
        build(PduType::ICReq, 0, Digests::NONE, 0, 0, |b| {
            put_u16(b, 8, self.pfv);
            b[10] = self.hpda;
            b[11] = self.dgst.bits();
            put_u32(b, 12, self.maxr2t);
        })
    }
}

impl IcResp {
    /// The controller's answer to `req`: PFV 1.0, CPDA 0, exactly the
    /// digests the host asked for, and `maxh2cdata`.
    pub const fn for_icreq(req: &IcReq, maxh2cdata: u32) -> Self {
        Self { pfv: 0, cpda: 0, dgst: req.dgst, maxh2cdata }
    }

    /// Encodes the 128-byte ICResp (controller).
    pub fn encode(&self) -> HeaderBuf {
        build(PduType::ICResp, 0, Digests::NONE, 0, 0, |b| {
            put_u16(b, 8, self.pfv);
            b[10] = self.cpda;
            b[11] = self.dgst.bits();
            put_u32(b, 12, self.maxh2cdata);
        })
    }
}

impl TermReq {
    /// The TermReq reporting `err` (FES/FEI from [`PduError::term_req`]).
    pub const fn from_error(err: &PduError) -> Self {
        let (fes, fei) = err.term_req();
        Self { fes: fes as u16, fei }
    }

    /// A TermReq with the given FES and FEI.
    pub const fn new(fes: Fes, fei: u32) -> Self {
        Self { fes: fes as u16, fei }
    }

    /// Encodes a whole C2HTermReq (controller) echoing up to 128 bytes of
    /// the offending header (see [`super::offending_header`]).
    pub fn encode_c2h(&self, offending: &[u8]) -> HeaderBuf {
        self.encode(PduType::C2HTermReq, offending)
    }

    /// Encodes a whole H2CTermReq (host).
    pub fn encode_h2c(&self, offending: &[u8]) -> HeaderBuf {
        self.encode(PduType::H2CTermReq, offending)
    }

    fn encode(&self, t: PduType, offending: &[u8]) -> HeaderBuf {
        let data = &offending[..offending.len().min(TERM_REQ_MAX_DATA)];
        let mut h = build(t, 0, Digests::NONE, 0, 0, |b| {
            put_u16(b, 8, self.fes);
            put_u32(b, 10, self.fei);
        });
        let hlen = usize::from(t.hlen());
        h.buf[hlen..hlen + data.len()].copy_from_slice(data);
        h.len = hlen + data.len();
        put_u32(&mut h.buf, 4, h.len as u32);
        h
    }
}

/// Encodes a CapsuleCmd header (host) for `sqe` followed by `data_len`
/// bytes of in-capsule data, aligned to the controller's `cpda`.
pub fn encode_capsule_cmd(sqe: &Sqe, data_len: u32, dg: Digests, cpda: u8) -> HeaderBuf {
    build(PduType::CapsuleCmd, 0, dg, cpda, data_len, |b| {
        let mut s = [0u8; SQE_LEN];
        sqe.encode_into(&mut s);
        b[COMMON_HEADER_LEN..COMMON_HEADER_LEN + SQE_LEN].copy_from_slice(&s);
    })
}

/// Appends a whole CapsuleCmd with in-capsule `data` to `out` (host).
pub fn append_capsule_cmd(out: &mut Vec<u8>, sqe: &Sqe, data: &[u8], dg: Digests, cpda: u8) {
    let len = u32::try_from(data.len()).expect("in-capsule data over 4 GiB");
    encode_capsule_cmd(sqe, len, dg, cpda).append_pdu(out, data);
}

/// Encodes a whole CapsuleResp (controller), with a header digest if `hdgst`.
pub fn encode_capsule_resp(cqe: &Cqe, hdgst: bool) -> HeaderBuf {
    let dg = Digests { hdgst, ddgst: false };
    build(PduType::CapsuleResp, 0, dg, 0, 0, |b| {
        let mut c = [0u8; CQE_LEN];
        cqe.encode(&mut c);
        b[COMMON_HEADER_LEN..COMMON_HEADER_LEN + CQE_LEN].copy_from_slice(&c);
    })
}

impl H2CData {
    /// Encodes an H2CData header (host) for `datal` bytes of data, aligned
    /// to the controller's `cpda`. `datal` must be non-zero.
    pub fn encode(&self, dg: Digests, cpda: u8) -> HeaderBuf {
        let fl = if self.last { flags::LAST_PDU } else { 0 };
        build(PduType::H2CData, fl, dg, cpda, self.datal, |b| {
            put_u16(b, 8, self.cccid);
            put_u16(b, 10, self.ttag);
            put_u32(b, 12, self.datao);
            put_u32(b, 16, self.datal);
        })
    }
}

impl C2HData {
    /// Encodes a C2HData header (controller) for `datal` bytes of data,
    /// aligned to the host's `hpda`. `datal` must be non-zero and
    /// `success` requires `last`.
    pub fn encode(&self, dg: Digests, hpda: u8) -> HeaderBuf {
        debug_assert!(!self.success || self.last, "SUCCESS requires LAST_PDU");
        let fl = if self.last { flags::LAST_PDU } else { 0 } | if self.success { flags::SUCCESS } else { 0 };
        build(PduType::C2HData, fl, dg, hpda, self.datal, |b| {
            put_u16(b, 8, self.cccid);
            put_u32(b, 12, self.datao);
            put_u32(b, 16, self.datal);
        })
    }
}

impl R2t {
    /// Encodes a whole R2T (controller), with a header digest if `hdgst`.
    pub fn encode(&self, hdgst: bool) -> HeaderBuf {
        let dg = Digests { hdgst, ddgst: false };
        build(PduType::R2T, 0, dg, 0, 0, |b| {
            put_u16(b, 8, self.cccid);
            put_u16(b, 10, self.ttag);
            put_u32(b, 12, self.r2to);
            put_u32(b, 16, self.r2tl);
        })
    }
}

//! NVMe/TCP PDU codec (NVMe/TCP Transport Specification 1.0), independent
//! of any connection state: PDU types and flags, the common header
//! (pdu-type, flags, hlen, pdo, plen), an incremental header decoder
//! ([`decode_header`]) producing a typed [`Pdu`], header/data digests
//! (CRC32C, stored little-endian), and (submodule `encode`, re-exported)
//! encoders for every PDU either side sends (controller: ICResp,
//! CapsuleResp, C2HData, R2T, C2HTermReq; host: ICReq, CapsuleCmd,
//! H2CData, H2CTermReq). TermReqs are accepted but never digested (pdo
//! ignored, the echoed header at hlen); IC PDUs ignore pdo.
//!
//! Invariants: the codec never allocates per PDU and never copies data:
//! the decoder only looks at the header (hlen + HDGST bytes) and reports
//! where data, padding and the data digest lie inside the PDU
//! ([`PduHeader::data_range`]), so the caller can read data straight into
//! its own (DMA) buffers and feed it to [`DataDigest`] piece by piece.
//! Every header accepted by `decode_header` satisfies: hlen is the type's
//! fixed length; plen >= hlen + digests and plen <= the caller's maximum;
//! pdo is 0 when there is no data, otherwise pdo >= hlen + HDGST, aligned
//! to the receiver's PDA, with data + DDGST fitting exactly in plen; the
//! header digest matched; data PDUs' datal equals their data length. Every
//! rejection is a [`PduError`] that maps to a TermReq FES/FEI.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::{decode_header, header_len_hint};
pub use encode::*;

use std::ops::Range;

use super::super::spec::wire::wire_enum;
use super::super::spec::{Cqe, Sqe, Status, CQE_LEN, SQE_LEN};

/// Bytes of the common header (pdu-type, flags, hlen, pdo, plen).
pub const COMMON_HEADER_LEN: usize = 8;
/// Bytes of a header or data digest.
pub const DIGEST_LEN: usize = 4;
/// ICReq / ICResp PDU length (hlen and plen).
pub const IC_PDU_LEN: usize = 128;
/// Largest offending-header copy a TermReq carries.
pub const TERM_REQ_MAX_DATA: usize = 128;
/// Smallest MAXH2CDATA an ICResp may advertise.
pub const MIN_MAXH2CDATA: u32 = 4096;
/// Largest HPDA / CPDA value (alignment (PDA + 1) * 4 = 128 bytes).
pub const MAX_PDA: u8 = 31;
/// PDU Format Version 1.0.
pub const PFV_1_0: u16 = 0;

/// Common header flag bits.
pub mod flags {
    /// Header digest present (HDGSTF).
    pub const HDGSTF: u8 = 0x01;
    /// Data digest present (DDGSTF).
    pub const DDGSTF: u8 = 0x02;
    /// Last H2CData / C2HData PDU of the transfer (LAST_PDU).
    pub const LAST_PDU: u8 = 0x04;
    /// C2HData: command completed successfully, no CapsuleResp follows.
    pub const SUCCESS: u8 = 0x08;
}

wire_enum! {
    /// PDU types (common header byte 0).
    pub enum PduType: u8 {
        ICReq = 0x00,
        ICResp = 0x01,
        H2CTermReq = 0x02,
        C2HTermReq = 0x03,
        CapsuleCmd = 0x04,
        CapsuleResp = 0x05,
        H2CData = 0x06,
        C2HData = 0x07,
        R2T = 0x09,
    }
}

wire_enum! {
    /// TermReq Fatal Error Status values.
    pub enum Fes: u16 {
        /// FEI = byte offset of the invalid header field.
        InvalidHeaderField = 0x01,
        PduSequenceError = 0x02,
        HeaderDigestError = 0x03,
        DataTransferOutOfRange = 0x04,
        /// Data Transfer Limit Exceeded (R2T limit / MAXH2CDATA).
        DataTransferLimitExceeded = 0x05,
        /// FEI = byte offset of the unsupported parameter.
        UnsupportedParameter = 0x06,
    }
}

/// Which end of the connection receives a PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The NVM subsystem side (receives ICReq, H2CTermReq, CapsuleCmd, H2CData).
    Controller,
    /// The host side (receives ICResp, C2HTermReq, CapsuleResp, C2HData, R2T).
    Host,
}

impl PduType {
    /// The fixed header length (hlen) of this PDU type.
    pub const fn hlen(self) -> u8 {
        match self {
            Self::ICReq | Self::ICResp => IC_PDU_LEN as u8,
            Self::CapsuleCmd => (COMMON_HEADER_LEN + SQE_LEN) as u8,
            Self::CapsuleResp => (COMMON_HEADER_LEN + CQE_LEN) as u8,
            Self::H2CTermReq | Self::C2HTermReq | Self::H2CData | Self::C2HData | Self::R2T => 24,
        }
    }

    /// The side that receives this PDU type.
    pub const fn receiver(self) -> Role {
        match self {
            Self::ICReq | Self::H2CTermReq | Self::CapsuleCmd | Self::H2CData => Role::Controller,
            _ => Role::Host,
        }
    }

    /// True for the types that carry HDGST/DDGST when negotiated (all but
    /// ICReq, ICResp and the TermReqs).
    pub const fn has_digests(self) -> bool {
        matches!(self, Self::CapsuleCmd | Self::CapsuleResp | Self::H2CData | Self::C2HData | Self::R2T)
    }
}

/// The DGST field of ICReq / ICResp: bit 0 HDGST_ENABLE, bit 1 DDGST_ENABLE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Digests {
    pub hdgst: bool,
    pub ddgst: bool,
}

impl Digests {
    /// No digests.
    pub const NONE: Self = Self { hdgst: false, ddgst: false };

    /// Decodes the DGST byte (reserved bits ignored).
    pub const fn from_bits(b: u8) -> Self {
        Self { hdgst: b & 1 != 0, ddgst: b & 2 != 0 }
    }

    /// Encodes the DGST byte.
    pub const fn bits(self) -> u8 {
        self.hdgst as u8 | ((self.ddgst as u8) << 1)
    }
}

/// What the receiver negotiated, which `decode_header` enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeParams {
    /// The side doing the decoding; PDUs for the other side are rejected.
    pub receiver: Role,
    /// Header digest negotiated (HDGSTF must then be set on every PDU type
    /// that has digests, and clear otherwise).
    pub hdgst: bool,
    /// Data digest negotiated (DDGSTF must match on PDUs carrying data).
    pub ddgst: bool,
    /// The receiver's PDU data alignment: CPDA when decoding as the
    /// controller, HPDA as the host; data must start at a multiple of
    /// (pda + 1) * 4 bytes.
    pub pda: u8,
    /// Largest plen accepted (at least 128 so ICReq/ICResp fit; e.g. the
    /// controller uses hlen + digests + max(in-capsule size, MAXH2CDATA)).
    pub max_plen: u32,
}

impl DecodeParams {
    /// Parameters before connection initialization: no digests, PDA 0.
    pub const fn new(receiver: Role, max_plen: u32) -> Self {
        Self { receiver, hdgst: false, ddgst: false, pda: 0, max_plen }
    }

    /// Copy with the negotiated digests.
    pub const fn with_digests(mut self, d: Digests) -> Self {
        self.hdgst = d.hdgst;
        self.ddgst = d.ddgst;
        self
    }

    /// Copy with the receiver's PDA.
    pub const fn with_pda(mut self, pda: u8) -> Self {
        self.pda = pda;
        self
    }
}

/// ICReq fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcReq {
    /// PDU Format Version (0 = 1.0).
    pub pfv: u16,
    /// Host PDU Data Alignment (0's based dwords).
    pub hpda: u8,
    /// Digests the host asks for.
    pub dgst: Digests,
    /// Maximum outstanding R2Ts per command (0's based).
    pub maxr2t: u32,
}

/// ICResp fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcResp {
    /// PDU Format Version (0 = 1.0).
    pub pfv: u16,
    /// Controller PDU Data Alignment (0's based dwords).
    pub cpda: u8,
    /// Digests enabled for the connection.
    pub dgst: Digests,
    /// Maximum H2CData data length in bytes (>= 4096, multiple of 4).
    pub maxh2cdata: u32,
}

/// H2CTermReq / C2HTermReq fields; the offending header bytes follow the
/// 24-byte header (see [`PduHeader::data_range`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TermReq {
    /// Fatal Error Status (see [`Fes`]).
    pub fes: u16,
    /// Fatal Error Information (bytes 13:10, not dword aligned).
    pub fei: u32,
}

/// H2CData header fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2CData {
    /// Command Capsule CID.
    pub cccid: u16,
    /// Transfer Tag from the R2T.
    pub ttag: u16,
    /// Data Offset within the command's data.
    pub datao: u32,
    /// Data Length of this PDU.
    pub datal: u32,
    /// LAST_PDU flag.
    pub last: bool,
}

/// C2HData header fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct C2HData {
    /// Command Capsule CID.
    pub cccid: u16,
    /// Data Offset within the command's data.
    pub datao: u32,
    /// Data Length of this PDU.
    pub datal: u32,
    /// LAST_PDU flag.
    pub last: bool,
    /// SUCCESS flag (requires `last`; no CapsuleResp will follow).
    pub success: bool,
}

/// R2T fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct R2t {
    /// Command Capsule CID.
    pub cccid: u16,
    /// Transfer Tag the host echoes in its H2CData PDUs.
    pub ttag: u16,
    /// R2T Offset within the command's data.
    pub r2to: u32,
    /// R2T Length (non-zero).
    pub r2tl: u32,
}

/// A decoded PDU header, by type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pdu {
    ICReq(IcReq),
    ICResp(IcResp),
    H2CTermReq(TermReq),
    C2HTermReq(TermReq),
    /// In-capsule data, if any, is at [`PduHeader::data_range`].
    CapsuleCmd(Sqe),
    CapsuleResp(Cqe),
    H2CData(H2CData),
    C2HData(C2HData),
    R2T(R2t),
}

/// A validated PDU header and where the rest of the PDU lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PduHeader {
    pub pdu_type: PduType,
    /// Common header flags as received.
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    /// Total PDU length.
    pub plen: u32,
    /// A header digest follows the header.
    pub hdgst: bool,
    /// A data digest follows the data.
    pub ddgst: bool,
    data_offset: u32,
    data_len: u32,
    /// The typed header.
    pub pdu: Pdu,
}

impl PduHeader {
    /// Bytes of header plus header digest (what `decode_header` needed).
    pub const fn header_len(&self) -> usize {
        self.hlen as usize + if self.hdgst { DIGEST_LEN } else { 0 }
    }

    /// Offset of the data inside the PDU (pdo, or hlen for a TermReq);
    /// bytes between `header_len()` and this are padding to skip.
    pub const fn data_offset(&self) -> usize {
        self.data_offset as usize
    }

    /// Data bytes carried (in-capsule data, H2C/C2H data, TermReq header copy).
    pub const fn data_len(&self) -> usize {
        self.data_len as usize
    }

    /// `data_offset()..data_offset() + data_len()`, `None` without data.
    pub fn data_range(&self) -> Option<Range<usize>> {
        (self.data_len > 0).then(|| self.data_offset()..self.data_offset() + self.data_len())
    }

    /// Offset of the 4-byte data digest, if the PDU has one.
    pub const fn ddgst_offset(&self) -> Option<usize> {
        if self.ddgst {
            Some(self.data_offset() + self.data_len())
        } else {
            None
        }
    }

    /// Total PDU length in bytes.
    pub const fn total_len(&self) -> usize {
        self.plen as usize
    }
}

/// A malformed PDU header. Every variant is fatal for the connection and
/// maps to a TermReq FES/FEI through [`PduError::term_req`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("unknown PDU type {0:#04x}")]
    UnknownType(u8),
    #[error("{0:?} PDU sent in the wrong direction")]
    WrongDirection(PduType),
    #[error("{pdu_type:?}: hlen {hlen}, expected {expected}")]
    InvalidHlen { pdu_type: PduType, hlen: u8, expected: u8 },
    #[error("{pdu_type:?}: invalid pdo {pdo}: {reason}")]
    InvalidPdo { pdu_type: PduType, pdo: u8, reason: &'static str },
    #[error("{pdu_type:?}: invalid plen {plen}: {reason}")]
    InvalidPlen { pdu_type: PduType, plen: u32, reason: &'static str },
    #[error("{pdu_type:?}: plen {plen} exceeds the limit of {max} bytes")]
    PlenTooLarge { pdu_type: PduType, plen: u32, max: u32 },
    #[error("{pdu_type:?}: invalid flags {flags:#04x}: {reason}")]
    InvalidFlags { pdu_type: PduType, flags: u8, reason: &'static str },
    #[error("{pdu_type:?}: header digest mismatch (computed {computed:#010x}, received {received:#010x})")]
    HeaderDigest { pdu_type: PduType, computed: u32, received: u32 },
    #[error("{pdu_type:?}: invalid {field} {value:#x} at byte {offset}")]
    InvalidField { pdu_type: PduType, field: &'static str, offset: u8, value: u32 },
    #[error("{pdu_type:?}: unsupported {field} {value:#x} at byte {offset}")]
    UnsupportedParameter { pdu_type: PduType, field: &'static str, offset: u8, value: u32 },
}

impl PduError {
    /// The TermReq Fatal Error Status and Fatal Error Information to send
    /// before closing: for Invalid Header Field and Unsupported Parameter
    /// the FEI is the byte offset of the offending field, otherwise 0.
    pub const fn term_req(&self) -> (Fes, u32) {
        match *self {
            Self::UnknownType(_) | Self::WrongDirection(_) => (Fes::InvalidHeaderField, 0),
            Self::InvalidFlags { .. } => (Fes::InvalidHeaderField, 1),
            Self::InvalidHlen { .. } => (Fes::InvalidHeaderField, 2),
            Self::InvalidPdo { .. } => (Fes::InvalidHeaderField, 3),
            Self::InvalidPlen { .. } | Self::PlenTooLarge { .. } => (Fes::InvalidHeaderField, 4),
            Self::HeaderDigest { .. } => (Fes::HeaderDigestError, 0),
            Self::InvalidField { offset, .. } => (Fes::InvalidHeaderField, offset as u32),
            Self::UnsupportedParameter { offset, .. } => (Fes::UnsupportedParameter, offset as u32),
        }
    }
}

/// A data digest mismatch. Not a TermReq condition: the command is
/// completed with [`DataDigestMismatch::status`] (Transient Transport Error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("data digest mismatch (computed {computed:#010x}, received {received:#010x})")]
pub struct DataDigestMismatch {
    pub computed: u32,
    pub received: u32,
}

impl DataDigestMismatch {
    /// Status to complete the affected command with.
    pub const fn status(&self) -> Status {
        Status::TRANSIENT_TRANSPORT_ERROR
    }
}

/// CRC32C over data arriving in pieces (`crc32c_append`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataDigest(u32);

impl DataDigest {
    /// An empty digest.
    pub const fn new() -> Self {
        Self(0)
    }

    /// Adds the next piece of data.
    pub fn update(&mut self, data: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, data);
    }

    /// The CRC32C of everything added so far.
    pub const fn value(&self) -> u32 {
        self.0
    }

    /// The digest as sent on the wire (little-endian).
    pub const fn to_bytes(&self) -> [u8; DIGEST_LEN] {
        self.0.to_le_bytes()
    }

    /// Compares with the 4 digest bytes received.
    pub fn verify(&self, received: [u8; DIGEST_LEN]) -> Result<(), DataDigestMismatch> {
        let received = u32::from_le_bytes(received);
        if received == self.0 {
            Ok(())
        } else {
            Err(DataDigestMismatch { computed: self.0, received })
        }
    }
}

/// The data digest of data split across `chunks`, as wire bytes.
pub fn ddgst(chunks: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut d = DataDigest::new();
    chunks.iter().for_each(|c| d.update(c));
    d.to_bytes()
}

/// Checks the data digest of data split across `chunks`.
pub fn verify_ddgst(chunks: &[&[u8]], received: [u8; DIGEST_LEN]) -> Result<(), DataDigestMismatch> {
    let mut d = DataDigest::new();
    chunks.iter().for_each(|c| d.update(c));
    d.verify(received)
}

/// The header digest of `header` (the hlen header bytes), as wire bytes.
pub fn hdgst(header: &[u8]) -> [u8; DIGEST_LEN] {
    crc32c::crc32c(header).to_le_bytes()
}

/// The bytes a TermReq should echo: the start of the offending PDU
/// header, at most its hlen and at most 128 bytes.
pub fn offending_header(buf: &[u8]) -> &[u8] {
    let hlen = buf.get(2).map_or(buf.len(), |&h| usize::from(h).max(COMMON_HEADER_LEN));
    &buf[..buf.len().min(hlen).min(TERM_REQ_MAX_DATA)]
}

//! NVMe Base 2.0 / NVMe-oF 1.1 wire definitions shared by the fabrics
//! target and the initiator: the 64-byte submission queue entry ([`Sqe`]),
//! its SGL data pointer ([`SglDescriptor`]), the 16-byte completion queue
//! entry ([`Cqe`]), completion [`Status`] codes, fabrics commands
//! (Connect, Property Get/Set, Connect data), controller properties, opcode
//! / feature / log page / CNS identifiers and per-command field views.
//!
//! Invariants: all fields are little-endian at their spec offsets; parsing
//! a fixed-size structure never fails (any 64 bytes are an `Sqe`, any 16 a
//! `Cqe`) and `parse(encode(x)) == x`; only semantic accessors such as
//! [`Sqe::sgl`] or [`ConnectData::parse`] return errors, each of which
//! names the NVMe status the controller should complete the command with.
//! Nothing here performs I/O or allocates, except `ConnectData`'s NQNs.

mod cmd;
mod fabrics;
mod ids;
mod regs;
mod status;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

pub use cmd::*;
pub use fabrics::*;
pub use ids::*;
pub use regs::*;
pub use status::*;

use wire::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

/// Size of a submission queue entry.
pub const SQE_LEN: usize = 64;
/// Size of a completion queue entry.
pub const CQE_LEN: usize = 16;

/// SQE byte 1 bits 7:6 (PSDT) value selecting SGLs with a contiguous
/// metadata buffer, the value NVMe-oF hosts use.
pub const PSDT_SGL_MPTR_CONTIG: u8 = 0b01;
/// PSDT value selecting SGLs with an SGL metadata descriptor.
pub const PSDT_SGL_MPTR_SGL: u8 = 0b10;

/// A 64-byte submission queue entry (command), fields as in NVMe Base 2.0
/// Figure "Common Command Format".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sqe {
    /// Opcode (OPC), byte 0.
    pub opcode: u8,
    /// Byte 1: FUSE bits 1:0, PSDT bits 7:6.
    pub flags: u8,
    /// Command Identifier (CID), bytes 3:2.
    pub cid: u16,
    /// Namespace Identifier, bytes 7:4. For fabrics commands byte 4 is
    /// `fctype` (see [`Sqe::fctype`]).
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    /// Metadata Pointer, bytes 23:16.
    pub mptr: u64,
    /// Data Pointer, bytes 39:24 (one SGL descriptor on fabrics).
    pub dptr: [u8; 16],
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

impl Sqe {
    /// Decodes a submission queue entry.
    pub fn parse(b: &[u8; SQE_LEN]) -> Self {
        let mut dptr = [0u8; 16];
        dptr.copy_from_slice(&b[24..40]);
        Self {
            opcode: b[0],
            flags: b[1],
            cid: get_u16(b, 2),
            nsid: get_u32(b, 4),
            cdw2: get_u32(b, 8),
            cdw3: get_u32(b, 12),
            mptr: get_u64(b, 16),
            dptr,
            cdw10: get_u32(b, 40),
            cdw11: get_u32(b, 44),
            cdw12: get_u32(b, 48),
            cdw13: get_u32(b, 52),
            cdw14: get_u32(b, 56),
            cdw15: get_u32(b, 60),
        }
    }

    /// Encodes into `b`.
    pub fn encode_into(&self, b: &mut [u8; SQE_LEN]) {
        b[0] = self.opcode;
        b[1] = self.flags;
        put_u16(b, 2, self.cid);
        put_u32(b, 4, self.nsid);
        put_u32(b, 8, self.cdw2);
        put_u32(b, 12, self.cdw3);
        put_u64(b, 16, self.mptr);
        b[24..40].copy_from_slice(&self.dptr);
        for (i, v) in self.cdws_10_15().into_iter().enumerate() {
            put_u32(b, 40 + 4 * i, v);
        }
    }

    /// Encodes into a new array.
    pub fn encode(&self) -> [u8; SQE_LEN] {
        let mut b = [0u8; SQE_LEN];
        self.encode_into(&mut b);
        b
    }

    fn cdws_10_15(&self) -> [u32; 6] {
        [self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15]
    }

    /// Fused Operation (FUSE, byte 1 bits 1:0): 0 normal, 1 first, 2 second.
    pub const fn fuse(&self) -> u8 {
        self.flags & 0x3
    }

    /// PRP or SGL for Data Transfer (PSDT, byte 1 bits 7:6).
    pub const fn psdt(&self) -> u8 {
        self.flags >> 6
    }

    /// True when PSDT selects SGLs (01b or 10b), as fabrics requires.
    pub const fn uses_sgl(&self) -> bool {
        matches!(self.psdt(), PSDT_SGL_MPTR_CONTIG | PSDT_SGL_MPTR_SGL)
    }

    /// Fabrics Command Type (byte 4); meaningful when `opcode == 0x7F`.
    pub const fn fctype(&self) -> u8 {
        self.nsid as u8
    }

    /// Sets the fabrics opcode and `fctype` (clearing the rest of bytes 7:4).
    pub fn set_fabrics(&mut self, fctype: FabricsType) {
        self.opcode = AdminOpcode::Fabrics.raw();
        self.nsid = u32::from(fctype.raw());
    }

    /// Decodes the data pointer as an NVMe/TCP SGL descriptor.
    pub fn sgl(&self) -> Result<SglDescriptor, SglError> {
        SglDescriptor::parse(&self.dptr)
    }

    /// Stores `sgl` in the data pointer and sets PSDT to SGL (01b).
    pub fn set_sgl(&mut self, sgl: SglDescriptor) {
        self.dptr = sgl.encode();
        self.flags = (self.flags & 0x3F) | (PSDT_SGL_MPTR_CONTIG << 6);
    }
}

/// SGL descriptor type: SGL Data Block.
pub const SGL_TYPE_DATA_BLOCK: u8 = 0x0;
/// SGL descriptor type: Transport SGL Data Block.
pub const SGL_TYPE_TRANSPORT_DATA_BLOCK: u8 = 0x5;
/// SGL subtype: Address field is an offset (in-capsule data).
pub const SGL_SUBTYPE_OFFSET: u8 = 0x1;
/// SGL subtype: transport specific (NVMe/TCP uses 0xA).
pub const SGL_SUBTYPE_TRANSPORT: u8 = 0xA;

/// The single SGL descriptor an NVMe/TCP command carries in DPTR
/// (Address bytes 7:0, Length 11:8, SGL Identifier byte 15 = type 7:4 |
/// subtype 3:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SglDescriptor {
    /// SGL Data Block, subtype Offset (type 0x0, subtype 0x1): data is in
    /// the command capsule at `offset` (relative to ICDOFF).
    InCapsule { offset: u64, length: u32 },
    /// Transport SGL Data Block (type 0x5, subtype 0xA): data moves in
    /// H2CData / C2HData PDUs. A zero length means no data.
    Transport { length: u32 },
}

/// An SGL descriptor NVMe/TCP does not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported SGL descriptor type {sgl_type:#x} subtype {subtype:#x}")]
pub struct SglError {
    pub sgl_type: u8,
    pub subtype: u8,
}

impl SglError {
    /// The completion status for the command (SGL Descriptor Type Invalid, DNR).
    pub const fn status(&self) -> Status {
        Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()
    }
}

impl SglDescriptor {
    /// Decodes a 16-byte SGL descriptor.
    pub fn parse(d: &[u8; 16]) -> Result<Self, SglError> {
        let (sgl_type, subtype) = (d[15] >> 4, d[15] & 0xF);
        let length = get_u32(d, 8);
        match (sgl_type, subtype) {
            (SGL_TYPE_DATA_BLOCK, SGL_SUBTYPE_OFFSET) => {
                Ok(Self::InCapsule { offset: get_u64(d, 0), length })
            }
            (SGL_TYPE_TRANSPORT_DATA_BLOCK, SGL_SUBTYPE_TRANSPORT) => Ok(Self::Transport { length }),
            _ => Err(SglError { sgl_type, subtype }),
        }
    }

    /// Encodes the descriptor (Transport blocks carry address 0).
    pub fn encode(&self) -> [u8; 16] {
        let mut d = [0u8; 16];
        let (addr, len, id) = match *self {
            Self::InCapsule { offset, length } => (offset, length, SGL_SUBTYPE_OFFSET),
            Self::Transport { length } => {
                (0, length, (SGL_TYPE_TRANSPORT_DATA_BLOCK << 4) | SGL_SUBTYPE_TRANSPORT)
            }
        };
        put_u64(&mut d, 0, addr);
        put_u32(&mut d, 8, len);
        d[15] = id;
        d
    }

    /// Data length in bytes.
    pub const fn length(&self) -> u32 {
        match *self {
            Self::InCapsule { length, .. } | Self::Transport { length } => length,
        }
    }
}

/// A 16-byte completion queue entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cqe {
    /// Command specific dword 0 (e.g. CNTLID for Connect, property value).
    pub dw0: u32,
    /// Command specific dword 1 (upper half of an 8-byte property value).
    pub dw1: u32,
    /// SQ Head Pointer.
    pub sqhd: u16,
    /// SQ Identifier.
    pub sqid: u16,
    /// Command Identifier of the completed command.
    pub cid: u16,
    /// Status (SC/SCT/CRD/M/DNR).
    pub status: Status,
    /// Phase Tag (bit 0 of the status field); reserved (0) on fabrics.
    pub phase: bool,
}

impl Cqe {
    /// A completion for `cid` with `status`; other fields zero.
    pub const fn new(cid: u16, status: Status) -> Self {
        Self { dw0: 0, dw1: 0, sqhd: 0, sqid: 0, cid, status, phase: false }
    }

    /// Decodes a completion queue entry.
    pub fn parse(b: &[u8; CQE_LEN]) -> Self {
        let field = get_u16(b, 14);
        Self {
            dw0: get_u32(b, 0),
            dw1: get_u32(b, 4),
            sqhd: get_u16(b, 8),
            sqid: get_u16(b, 10),
            cid: get_u16(b, 12),
            status: Status::from_field(field),
            phase: field & 1 != 0,
        }
    }

    /// Encodes into `b`.
    pub fn encode(&self, b: &mut [u8; CQE_LEN]) {
        put_u32(b, 0, self.dw0);
        put_u32(b, 4, self.dw1);
        put_u16(b, 8, self.sqhd);
        put_u16(b, 10, self.sqid);
        put_u16(b, 12, self.cid);
        put_u16(b, 14, self.status.to_field() | u16::from(self.phase));
    }

    /// Encodes into a new array.
    pub fn to_bytes(&self) -> [u8; CQE_LEN] {
        let mut b = [0u8; CQE_LEN];
        self.encode(&mut b);
        b
    }

    /// The 64-bit result `dw1:dw0` (Property Get of an 8-byte property).
    pub const fn result64(&self) -> u64 {
        self.dw0 as u64 | ((self.dw1 as u64) << 32)
    }

    /// Sets `dw0`/`dw1` from a 64-bit result.
    pub fn set_result64(&mut self, v: u64) {
        self.dw0 = v as u32;
        self.dw1 = (v >> 32) as u32;
    }
}

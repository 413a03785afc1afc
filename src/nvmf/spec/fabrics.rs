//! NVMe-oF 1.1 fabrics commands carried in an [`Sqe`] with opcode 0x7F:
//! Connect (and its 1024-byte Connect data), Property Get and Property
//! Set, plus the Connect completion dword 0 encodings (CNTLID on success,
//! IATTR/IPO on Connect Invalid Parameters).
//!
//! Invariants: the command views read/write only their spec fields
//! (CDW10..CDW13 of the SQE, i.e. bytes 40..56); `from_sqe(x.to_sqe(..))`
//! round-trips. NQNs are NUL-terminated UTF-8 inside 256-byte fields.

use super::wire::{get_cstr, get_u16, put_cstr, put_u16};
use super::{FabricsType, Sqe, Status};

/// Connect: queue attributes bit 2, disable SQ flow control.
pub const CATTR_DISABLE_SQFLOW: u8 = 1 << 2;
/// Connect data length.
pub const CONNECT_DATA_LEN: usize = 1024;
/// Host ID value meaning "dynamic controller" in Connect data CNTLID.
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;
/// Well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// IPO values (byte offsets) for Connect Invalid Parameters.
pub mod connect_ipo {
    /// Offsets inside the Connect SQE (IATTR = 0).
    pub const SQE_RECFMT: u16 = 40;
    pub const SQE_QID: u16 = 42;
    pub const SQE_SQSIZE: u16 = 44;
    pub const SQE_CATTR: u16 = 46;
    pub const SQE_KATO: u16 = 48;
    /// Offsets inside the Connect data (IATTR = 1).
    pub const DATA_HOSTID: u16 = 0;
    pub const DATA_CNTLID: u16 = 16;
    pub const DATA_SUBNQN: u16 = 256;
    pub const DATA_HOSTNQN: u16 = 512;
}

/// Completion dword 0 for Connect Invalid Parameters: IATTR (bits 23:16;
/// bit 16 set when the parameter is in the Connect data rather than the
/// SQE) and IPO (bits 15:0, byte offset of the parameter).
pub const fn connect_invalid_param_dw0(in_data: bool, ipo: u16) -> u32 {
    ((in_data as u32) << 16) | ipo as u32
}

/// Completion dword 0 for a successful Connect: CNTLID in bits 15:0
/// (AUTHREQ bits 17:16 zero: no authentication required).
pub const fn connect_success_dw0(cntlid: u16) -> u32 {
    cntlid as u32
}

/// Connect command fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectCmd {
    /// Record Format (must be 0), byte 40.
    pub recfmt: u16,
    /// Queue ID (0 = admin), byte 42.
    pub qid: u16,
    /// Submission Queue Size (0's based), byte 44.
    pub sqsize: u16,
    /// Connect Attributes, byte 46 (bits 1:0 priority, bit 2 disable SQ flow control).
    pub cattr: u8,
    /// Keep Alive Timeout in milliseconds (admin queue only), byte 48.
    pub kato: u32,
}

impl ConnectCmd {
    /// Reads the Connect fields of `sqe`.
    pub const fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            recfmt: sqe.cdw10 as u16,
            qid: (sqe.cdw10 >> 16) as u16,
            sqsize: sqe.cdw11 as u16,
            cattr: (sqe.cdw11 >> 16) as u8,
            kato: sqe.cdw12,
        }
    }

    /// True when CATTR asks to disable SQ flow control.
    pub const fn sqflow_disabled(&self) -> bool {
        self.cattr & CATTR_DISABLE_SQFLOW != 0
    }

    /// Builds a Connect SQE (fctype 0x01). The caller sets the data
    /// pointer (1024 bytes of Connect data, usually in-capsule).
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        let mut sqe = Sqe {
            cid,
            cdw10: u32::from(self.recfmt) | (u32::from(self.qid) << 16),
            cdw11: u32::from(self.sqsize) | (u32::from(self.cattr) << 16),
            cdw12: self.kato,
            ..Sqe::default()
        };
        sqe.set_fabrics(FabricsType::Connect);
        sqe
    }
}

/// Property Get command fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PropertyGet {
    /// Attributes, byte 40: bits 2:0 size (0 = 4 bytes, 1 = 8 bytes).
    pub attrib: u8,
    /// Offset of the property, byte 44.
    pub ofst: u32,
}

/// Property Set command fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PropertySet {
    /// Attributes, byte 40: bits 2:0 size (0 = 4 bytes, 1 = 8 bytes).
    pub attrib: u8,
    /// Offset of the property, byte 44.
    pub ofst: u32,
    /// Value, bytes 48..56 (only the low 4 bytes for a 4-byte property).
    pub value: u64,
}

/// Property size in bytes from ATTRIB bits 2:0, `None` if reserved.
pub const fn attrib_size(attrib: u8) -> Option<u8> {
    match attrib & 0x7 {
        0 => Some(4),
        1 => Some(8),
        _ => None,
    }
}

/// ATTRIB value for a property of `size` bytes (8 → 1, anything else → 0).
pub const fn attrib_for_size(size: u8) -> u8 {
    (size == 8) as u8
}

impl PropertyGet {
    /// Reads the Property Get fields of `sqe`.
    pub const fn from_sqe(sqe: &Sqe) -> Self {
        Self { attrib: sqe.cdw10 as u8, ofst: sqe.cdw11 }
    }

    /// Property size in bytes, `None` if ATTRIB is reserved.
    pub const fn size(&self) -> Option<u8> {
        attrib_size(self.attrib)
    }

    /// Builds a Property Get SQE.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        let mut sqe = Sqe { cid, cdw10: u32::from(self.attrib), cdw11: self.ofst, ..Sqe::default() };
        sqe.set_fabrics(FabricsType::PropertyGet);
        sqe
    }
}

impl PropertySet {
    /// Reads the Property Set fields of `sqe`.
    pub const fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            attrib: sqe.cdw10 as u8,
            ofst: sqe.cdw11,
            value: sqe.cdw12 as u64 | ((sqe.cdw13 as u64) << 32),
        }
    }

    /// Property size in bytes, `None` if ATTRIB is reserved.
    pub const fn size(&self) -> Option<u8> {
        attrib_size(self.attrib)
    }

    /// Builds a Property Set SQE.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        let mut sqe = Sqe {
            cid,
            cdw10: u32::from(self.attrib),
            cdw11: self.ofst,
            cdw12: self.value as u32,
            cdw13: (self.value >> 32) as u32,
            ..Sqe::default()
        };
        sqe.set_fabrics(FabricsType::PropertySet);
        sqe
    }
}

/// The 1024-byte Connect data (hostid at 0, cntlid at 16, subnqn at 256,
/// hostnqn at 512).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectData {
    /// Host Identifier (128-bit).
    pub hostid: [u8; 16],
    /// Controller ID requested (0xFFFF: dynamic controller model).
    pub cntlid: u16,
    /// NVM Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
}

/// A Connect data buffer that cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectDataError {
    /// Fewer than 1024 bytes of Connect data.
    #[error("connect data is {0} bytes, expected 1024")]
    Truncated(usize),
    /// An NQN field without NUL terminator or not UTF-8.
    #[error("connect data NQN at byte {ipo} is not NUL-terminated UTF-8")]
    BadNqn { ipo: u16 },
}

impl ConnectDataError {
    /// The completion status and dword 0 for the failed Connect:
    /// Data SGL Length Invalid for a short buffer, Connect Invalid
    /// Parameters with IATTR/IPO naming the NQN field otherwise.
    pub const fn completion(&self) -> (Status, u32) {
        match *self {
            Self::Truncated(_) => (Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0),
            Self::BadNqn { ipo } => {
                (Status::CONNECT_INVALID_PARAMETERS.with_dnr(), connect_invalid_param_dw0(true, ipo))
            }
        }
    }
}

impl ConnectData {
    /// Decodes Connect data from at least 1024 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, ConnectDataError> {
        if b.len() < CONNECT_DATA_LEN {
            return Err(ConnectDataError::Truncated(b.len()));
        }
        let nqn = |ipo: u16| {
            let off = usize::from(ipo);
            get_cstr(&b[off..off + 256]).map(str::to_owned).ok_or(ConnectDataError::BadNqn { ipo })
        };
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&b[..16]);
        Ok(Self {
            hostid,
            cntlid: get_u16(b, 16),
            subnqn: nqn(connect_ipo::DATA_SUBNQN)?,
            hostnqn: nqn(connect_ipo::DATA_HOSTNQN)?,
        })
    }

    /// Encodes the Connect data (NQNs truncated to 255 bytes).
    pub fn encode(&self) -> [u8; CONNECT_DATA_LEN] {
        let mut b = [0u8; CONNECT_DATA_LEN];
        b[..16].copy_from_slice(&self.hostid);
        put_u16(&mut b, 16, self.cntlid);
        put_cstr(&mut b[256..512], &self.subnqn);
        put_cstr(&mut b[512..768], &self.hostnqn);
        b
    }
}

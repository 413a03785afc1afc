//! NVMe completion status ([`Status`]) and the named status codes of the
//! NVMe Base 2.0 and NVMe-oF 1.1 specifications.
//!
//! Owns the encoding of the CQE Status Field (CQE dword 3 bits 31:17 plus
//! the phase tag at bit 16, i.e. bits 15:0 of the 16-bit field): P bit 0,
//! SC bits 8:1, SCT bits 11:9, CRD bits 13:12, M bit 14, DNR bit 15.
//! Invariant: `Status::from_field(s.to_field()) == s` for every `Status`
//! whose `sct < 8` and `crd < 4` (the constructors mask both). The named
//! constants carry neither DNR nor More; add them with
//! [`Status::with_dnr`] / [`Status::with_more`].

use std::fmt;

/// Status Code Type values (CQE status bits 11:9).
pub mod sct {
    /// Generic Command Status.
    pub const GENERIC: u8 = 0x0;
    /// Command Specific Status.
    pub const COMMAND_SPECIFIC: u8 = 0x1;
    /// Media and Data Integrity Errors.
    pub const MEDIA_DATA_INTEGRITY: u8 = 0x2;
    /// Path Related Status.
    pub const PATH_RELATED: u8 = 0x3;
    /// Vendor Specific.
    pub const VENDOR_SPECIFIC: u8 = 0x7;
}

/// A completion status: Status Code Type, Status Code, Command Retry Delay
/// index, More and Do Not Retry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Status {
    /// Status Code Type (3 bits).
    pub sct: u8,
    /// Status Code.
    pub sc: u8,
    /// Command Retry Delay (2 bits; index into CRDT1..3, 0 = none).
    pub crd: u8,
    /// More: additional information in the Error Information log page.
    pub more: bool,
    /// Do Not Retry.
    pub dnr: bool,
}

macro_rules! statuses {
    ($( $(#[$m:meta])* $name:ident = ($sct:expr, $sc:literal); )+) => {
        impl Status {
            $( $(#[$m])* pub const $name: Status = Status::new($sct, $sc); )+
        }
        /// (sct, sc, name) for [`Status::name`]; first match wins.
        const NAMES: &[(u8, u8, &str)] = &[ $( ($sct, $sc, stringify!($name)) ),+ ];
    };
}

use sct::{COMMAND_SPECIFIC as CS, GENERIC as G, MEDIA_DATA_INTEGRITY as MD, PATH_RELATED as PR};

statuses! {
    /// Successful Completion.
    SUCCESS = (G, 0x00);
    INVALID_OPCODE = (G, 0x01);
    INVALID_FIELD = (G, 0x02);
    CID_CONFLICT = (G, 0x03);
    DATA_TRANSFER_ERROR = (G, 0x04);
    ABORTED_POWER_LOSS = (G, 0x05);
    INTERNAL_ERROR = (G, 0x06);
    ABORT_REQUESTED = (G, 0x07);
    ABORTED_SQ_DELETION = (G, 0x08);
    ABORTED_FAILED_FUSED = (G, 0x09);
    ABORTED_MISSING_FUSED = (G, 0x0A);
    INVALID_NAMESPACE_OR_FORMAT = (G, 0x0B);
    COMMAND_SEQUENCE_ERROR = (G, 0x0C);
    INVALID_SGL_SEGMENT_DESCRIPTOR = (G, 0x0D);
    INVALID_NUMBER_OF_SGL_DESCRIPTORS = (G, 0x0E);
    DATA_SGL_LENGTH_INVALID = (G, 0x0F);
    METADATA_SGL_LENGTH_INVALID = (G, 0x10);
    /// Returned for an SGL descriptor type/subtype the transport does not
    /// accept (e.g. a keyed data block on TCP).
    SGL_DESCRIPTOR_TYPE_INVALID = (G, 0x11);
    INVALID_USE_OF_CMB = (G, 0x12);
    PRP_OFFSET_INVALID = (G, 0x13);
    ATOMIC_WRITE_UNIT_EXCEEDED = (G, 0x14);
    OPERATION_DENIED = (G, 0x15);
    SGL_OFFSET_INVALID = (G, 0x16);
    HOST_IDENTIFIER_INCONSISTENT_FORMAT = (G, 0x18);
    KEEP_ALIVE_TIMER_EXPIRED = (G, 0x19);
    KEEP_ALIVE_TIMEOUT_INVALID = (G, 0x1A);
    ABORTED_PREEMPT_AND_ABORT = (G, 0x1B);
    SANITIZE_FAILED = (G, 0x1C);
    SANITIZE_IN_PROGRESS = (G, 0x1D);
    SGL_DATA_BLOCK_GRANULARITY_INVALID = (G, 0x1E);
    NAMESPACE_IS_WRITE_PROTECTED = (G, 0x20);
    COMMAND_INTERRUPTED = (G, 0x21);
    TRANSIENT_TRANSPORT_ERROR = (G, 0x22);
    ADMIN_COMMAND_MEDIA_NOT_READY = (G, 0x24);
    LBA_OUT_OF_RANGE = (G, 0x80);
    CAPACITY_EXCEEDED = (G, 0x81);
    NAMESPACE_NOT_READY = (G, 0x82);
    RESERVATION_CONFLICT = (G, 0x83);
    FORMAT_IN_PROGRESS = (G, 0x84);

    COMPLETION_QUEUE_INVALID = (CS, 0x00);
    INVALID_QUEUE_IDENTIFIER = (CS, 0x01);
    INVALID_QUEUE_SIZE = (CS, 0x02);
    ABORT_COMMAND_LIMIT_EXCEEDED = (CS, 0x03);
    ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED = (CS, 0x05);
    INVALID_FIRMWARE_SLOT = (CS, 0x06);
    INVALID_FIRMWARE_IMAGE = (CS, 0x07);
    INVALID_INTERRUPT_VECTOR = (CS, 0x08);
    INVALID_LOG_PAGE = (CS, 0x09);
    INVALID_FORMAT = (CS, 0x0A);
    INVALID_QUEUE_DELETION = (CS, 0x0C);
    /// Feature Identifier Not Saveable.
    FEATURE_NOT_SAVEABLE = (CS, 0x0D);
    FEATURE_NOT_CHANGEABLE = (CS, 0x0E);
    FEATURE_NOT_NAMESPACE_SPECIFIC = (CS, 0x0F);
    /// Fabrics Connect: Connect Incompatible Format.
    CONNECT_INCOMPATIBLE_FORMAT = (CS, 0x80);
    /// Fabrics Connect: Connect Controller Busy.
    CONNECT_CONTROLLER_BUSY = (CS, 0x81);
    /// Fabrics Connect: Connect Invalid Parameters (dw0 = IATTR/IPO, see
    /// [`super::connect_invalid_param_dw0`]).
    CONNECT_INVALID_PARAMETERS = (CS, 0x82);
    /// Fabrics Connect: Connect Restart Discovery.
    CONNECT_RESTART_DISCOVERY = (CS, 0x83);
    /// Fabrics Connect: Connect Invalid Host.
    CONNECT_INVALID_HOST = (CS, 0x84);
    /// Fabrics: Invalid Queue Type.
    INVALID_QUEUE_TYPE = (CS, 0x85);
    /// Fabrics: Discover Restart.
    DISCOVER_RESTART = (CS, 0x90);
    /// Fabrics: Authentication Required.
    AUTHENTICATION_REQUIRED = (CS, 0x91);
    /// NVM command set (Dataset Management): Conflicting Attributes; same
    /// code as CONNECT_INCOMPATIBLE_FORMAT, distinguished by the command.
    CONFLICTING_ATTRIBUTES = (CS, 0x80);
    /// NVM command set: Attempted Write to Read Only Range.
    ATTEMPTED_WRITE_TO_READ_ONLY_RANGE = (CS, 0x82);

    WRITE_FAULT = (MD, 0x80);
    UNRECOVERED_READ_ERROR = (MD, 0x81);
    END_TO_END_GUARD_CHECK_ERROR = (MD, 0x82);
    END_TO_END_APPLICATION_TAG_CHECK_ERROR = (MD, 0x83);
    END_TO_END_REFERENCE_TAG_CHECK_ERROR = (MD, 0x84);
    COMPARE_FAILURE = (MD, 0x85);
    ACCESS_DENIED = (MD, 0x86);
    DEALLOCATED_OR_UNWRITTEN_LOGICAL_BLOCK = (MD, 0x87);

    INTERNAL_PATH_ERROR = (PR, 0x00);
    ASYMMETRIC_ACCESS_PERSISTENT_LOSS = (PR, 0x01);
    ASYMMETRIC_ACCESS_INACCESSIBLE = (PR, 0x02);
    ASYMMETRIC_ACCESS_TRANSITION = (PR, 0x03);
    CONTROLLER_PATHING_ERROR = (PR, 0x60);
    HOST_PATHING_ERROR = (PR, 0x70);
    COMMAND_ABORTED_BY_HOST = (PR, 0x71);
}

impl Status {
    /// A status with the given type and code; CRD 0, More and DNR clear.
    pub const fn new(sct: u8, sc: u8) -> Self {
        Self { sct: sct & 0x7, sc, crd: 0, more: false, dnr: false }
    }

    /// Sets Do Not Retry.
    pub const fn with_dnr(mut self) -> Self {
        self.dnr = true;
        self
    }

    /// Sets More (an Error Information log entry exists).
    pub const fn with_more(mut self) -> Self {
        self.more = true;
        self
    }

    /// Sets the Command Retry Delay index (masked to 2 bits).
    pub const fn with_crd(mut self, crd: u8) -> Self {
        self.crd = crd & 0x3;
        self
    }

    /// True for Successful Completion (SCT 0, SC 0).
    pub const fn is_success(self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// True when `self` and `other` have the same SCT and SC (CRD/M/DNR ignored).
    pub const fn same_code(self, other: Status) -> bool {
        self.sct == other.sct && self.sc == other.sc
    }

    /// The 16-bit CQE Status Field with the phase tag (bit 0) clear, as
    /// NVMe-oF requires.
    pub const fn to_field(self) -> u16 {
        ((self.sc as u16) << 1)
            | (((self.sct & 0x7) as u16) << 9)
            | (((self.crd & 0x3) as u16) << 12)
            | ((self.more as u16) << 14)
            | ((self.dnr as u16) << 15)
    }

    /// Decodes a CQE Status Field; the phase tag (bit 0) is ignored.
    pub const fn from_field(field: u16) -> Self {
        Self {
            sc: (field >> 1) as u8,
            sct: ((field >> 9) & 0x7) as u8,
            crd: ((field >> 12) & 0x3) as u8,
            more: field & (1 << 14) != 0,
            dnr: field & (1 << 15) != 0,
        }
    }

    /// The constant name for this SCT/SC pair, if it has one. Codes that are
    /// shared by several commands (SCT 1, SC 0x80..) report the fabrics name.
    pub fn name(self) -> Option<&'static str> {
        NAMES.iter().find(|(t, c, _)| *t == self.sct && *c == self.sc).map(|(_, _, n)| *n)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}")?,
            None => write!(f, "status")?,
        }
        write!(f, " (sct {:#x} sc {:#04x}", self.sct, self.sc)?;
        if self.dnr {
            write!(f, " dnr")?;
        }
        if self.more {
            write!(f, " more")?;
        }
        write!(f, ")")
    }
}

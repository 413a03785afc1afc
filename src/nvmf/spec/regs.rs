//! Controller properties (the fabrics view of the NVMe controller
//! registers): offsets, sizes, and bit helpers for CAP, VS, CC and CSTS.
//!
//! Invariant: [`Cap`] and the [`Cc`] / [`Csts`] wrappers are pure bit
//! views; `Cap::from_u64(c.to_u64()) == c` for in-range field values
//! (fields are masked to their widths on encode).

/// Property offsets (Property Get/Set `ofst`).
pub mod prop {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version (4 bytes).
    pub const VS: u32 = 0x08;
    /// Interrupt Mask Set (reserved on fabrics).
    pub const INTMS: u32 = 0x0C;
    /// Interrupt Mask Clear (reserved on fabrics).
    pub const INTMC: u32 = 0x10;
    /// Controller Configuration (4 bytes).
    pub const CC: u32 = 0x14;
    /// Controller Status (4 bytes).
    pub const CSTS: u32 = 0x1C;
    /// NVM Subsystem Reset (4 bytes).
    pub const NSSR: u32 = 0x20;
}

/// Size in bytes of the property at `ofst`, or `None` when the offset is
/// not a property a fabrics controller defines.
pub const fn property_size(ofst: u32) -> Option<u8> {
    match ofst {
        prop::CAP => Some(8),
        prop::VS | prop::CC | prop::CSTS | prop::NSSR => Some(4),
        _ => None,
    }
}

/// The VS property value for a version (MJR 31:16, MNR 15:8, TER 7:0).
pub const fn version(major: u16, minor: u8, tertiary: u8) -> u32 {
    ((major as u32) << 16) | ((minor as u32) << 8) | tertiary as u32
}

/// NVMe 1.3.0.
pub const VS_1_3: u32 = version(1, 3, 0);
/// NVMe 1.4.0.
pub const VS_1_4: u32 = version(1, 4, 0);
/// NVMe 2.0.0.
pub const VS_2_0: u32 = version(2, 0, 0);

/// NSSR value that triggers an NVM Subsystem Reset ("NVMe").
pub const NSSR_RESET: u32 = 0x4E56_4D65;

/// CAP.CSS bit 0: NVM command set.
pub const CAP_CSS_NVM: u8 = 1 << 0;
/// CAP.CSS bit 6: one or more I/O command sets.
pub const CAP_CSS_IO_SETS: u8 = 1 << 6;
/// CAP.CSS bit 7: no I/O command set (admin only).
pub const CAP_CSS_ADMIN_ONLY: u8 = 1 << 7;

/// Controller Capabilities (CAP) fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cap {
    /// Maximum Queue Entries Supported (0's based), bits 15:0.
    pub mqes: u16,
    /// Contiguous Queues Required, bit 16.
    pub cqr: bool,
    /// Arbitration Mechanism Supported, bits 18:17.
    pub ams: u8,
    /// Timeout in 500 ms units, bits 31:24.
    pub to: u8,
    /// Doorbell Stride, bits 35:32.
    pub dstrd: u8,
    /// NVM Subsystem Reset Supported, bit 36.
    pub nssrs: bool,
    /// Command Sets Supported, bits 44:37.
    pub css: u8,
    /// Boot Partition Support, bit 45.
    pub bps: bool,
    /// Memory Page Size Minimum (2^(12+n)), bits 51:48.
    pub mpsmin: u8,
    /// Memory Page Size Maximum (2^(12+n)), bits 55:52.
    pub mpsmax: u8,
}

impl Cap {
    /// Encodes the 64-bit CAP property.
    pub const fn to_u64(&self) -> u64 {
        self.mqes as u64
            | ((self.cqr as u64) << 16)
            | (((self.ams & 0x3) as u64) << 17)
            | ((self.to as u64) << 24)
            | (((self.dstrd & 0xF) as u64) << 32)
            | ((self.nssrs as u64) << 36)
            | ((self.css as u64) << 37)
            | ((self.bps as u64) << 45)
            | (((self.mpsmin & 0xF) as u64) << 48)
            | (((self.mpsmax & 0xF) as u64) << 52)
    }

    /// Decodes a CAP property value.
    pub const fn from_u64(v: u64) -> Self {
        Self {
            mqes: v as u16,
            cqr: v & (1 << 16) != 0,
            ams: ((v >> 17) & 0x3) as u8,
            to: (v >> 24) as u8,
            dstrd: ((v >> 32) & 0xF) as u8,
            nssrs: v & (1 << 36) != 0,
            css: (v >> 37) as u8,
            bps: v & (1 << 45) != 0,
            mpsmin: ((v >> 48) & 0xF) as u8,
            mpsmax: ((v >> 52) & 0xF) as u8,
        }
    }
}

/// CC.SHN / CSTS.SHST codes.
pub mod shutdown {
    /// CC.SHN: no notification.
    pub const SHN_NONE: u8 = 0b00;
    /// CC.SHN: normal shutdown notification.
    pub const SHN_NORMAL: u8 = 0b01;
    /// CC.SHN: abrupt shutdown notification.
    pub const SHN_ABRUPT: u8 = 0b10;
    /// CSTS.SHST: normal operation.
    pub const SHST_NORMAL: u8 = 0b00;
    /// CSTS.SHST: shutdown processing occurring.
    pub const SHST_OCCURRING: u8 = 0b01;
    /// CSTS.SHST: shutdown processing complete.
    pub const SHST_COMPLETE: u8 = 0b10;
}

/// Controller Configuration (CC) bit view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cc(pub u32);

impl Cc {
    /// Enable, bit 0.
    pub const fn en(self) -> bool {
        self.0 & 1 != 0
    }
    /// I/O Command Set Selected, bits 6:4.
    pub const fn css(self) -> u8 {
        ((self.0 >> 4) & 0x7) as u8
    }
    /// Memory Page Size (2^(12+n)), bits 10:7.
    pub const fn mps(self) -> u8 {
        ((self.0 >> 7) & 0xF) as u8
    }
    /// Arbitration Mechanism Selected, bits 13:11.
    pub const fn ams(self) -> u8 {
        ((self.0 >> 11) & 0x7) as u8
    }
    /// Shutdown Notification, bits 15:14 (see [`shutdown`]).
    pub const fn shn(self) -> u8 {
        ((self.0 >> 14) & 0x3) as u8
    }
    /// I/O Submission Queue Entry Size (2^n bytes), bits 19:16.
    pub const fn iosqes(self) -> u8 {
        ((self.0 >> 16) & 0xF) as u8
    }
    /// I/O Completion Queue Entry Size (2^n bytes), bits 23:20.
    pub const fn iocqes(self) -> u8 {
        ((self.0 >> 20) & 0xF) as u8
    }
}

/// Controller Status (CSTS) bit view and builder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Csts(pub u32);

impl Csts {
    /// Ready, bit 0.
    pub const fn rdy(self) -> bool {
        self.0 & 1 != 0
    }
    /// Controller Fatal Status, bit 1.
    pub const fn cfs(self) -> bool {
        self.0 & 2 != 0
    }
    /// Shutdown Status, bits 3:2 (see [`shutdown`]).
    pub const fn shst(self) -> u8 {
        ((self.0 >> 2) & 0x3) as u8
    }
    /// Returns a copy with RDY set to `rdy`.
    pub const fn with_rdy(self, rdy: bool) -> Self {
        Self((self.0 & !1) | rdy as u32)
    }
    /// Returns a copy with CFS set to `cfs`.
    pub const fn with_cfs(self, cfs: bool) -> Self {
        Self((self.0 & !2) | ((cfs as u32) << 1))
    }
    /// Returns a copy with SHST set to `shst` (masked to 2 bits).
    pub const fn with_shst(self, shst: u8) -> Self {
        Self((self.0 & !0xC) | (((shst & 0x3) as u32) << 2))
    }
}

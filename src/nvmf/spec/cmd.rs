//! Field views of admin and NVM I/O commands: Get Log Page, Identify,
//! Get/Set Features (including Number of Queues), Read/Write/Write Zeroes
//! and Dataset Management (with its 16-byte range entries).
//!
//! Invariants: views are read-only decodings of CDW10..CDW15 (plus NSID
//! where noted) and never fail; range checks against a namespace or a
//! buffer are the caller's. Counts that the spec defines as 0's based are
//! stored raw and exposed 1-based through helper methods.

use super::wire::{get_u32, get_u64, put_u32, put_u64};
use super::Sqe;

/// Get Log Page command fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetLogPage {
    /// Log Page Identifier, CDW10 bits 7:0.
    pub lid: u8,
    /// Log Specific Parameter, CDW10 bits 14:8 (bit 0 = RGO for the ANA log).
    pub lsp: u8,
    /// Retain Asynchronous Event, CDW10 bit 15.
    pub rae: bool,
    /// Number of Dwords (0's based): NUMDL CDW10 31:16 | NUMDU CDW11 15:0.
    pub numd: u32,
    /// Log Specific Identifier, CDW11 bits 31:16.
    pub lsi: u16,
    /// Log Page Offset in bytes: LPOL CDW12 | LPOU CDW13.
    pub lpo: u64,
    /// UUID Index, CDW14 bits 6:0.
    pub uuid_index: u8,
    /// Offset Type, CDW14 bit 23 (LPO is an index, not bytes).
    pub ot: bool,
    /// Command Set Identifier, CDW14 bits 31:24.
    pub csi: u8,
}

/// LSP bit 0 for the ANA log page: Return Groups Only.
pub const LSP_ANA_RGO: u8 = 1 << 0;

impl GetLogPage {
    /// Reads the Get Log Page fields of `sqe`.
    pub const fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            lid: sqe.cdw10 as u8,
            lsp: ((sqe.cdw10 >> 8) & 0x7F) as u8,
            rae: sqe.cdw10 & (1 << 15) != 0,
            numd: (sqe.cdw10 >> 16) | ((sqe.cdw11 & 0xFFFF) << 16),
            lsi: (sqe.cdw11 >> 16) as u16,
            lpo: sqe.cdw12 as u64 | ((sqe.cdw13 as u64) << 32),
            uuid_index: (sqe.cdw14 & 0x7F) as u8,
            ot: sqe.cdw14 & (1 << 23) != 0,
            csi: (sqe.cdw14 >> 24) as u8,
        }
    }

    /// Transfer length in bytes: `(numd + 1) * 4`.
    pub const fn len_bytes(&self) -> u64 {
        (self.numd as u64 + 1) * 4
    }

    /// Sets `numd` from a byte length (rounded up to dwords, minimum 4).
    pub fn set_len_bytes(&mut self, len: u64) {
        let dwords = len.div_ceil(4).clamp(1, 1 << 32);
        self.numd = (dwords - 1) as u32;
    }

    /// Writes these fields into CDW10..CDW14 of `sqe`.
    pub fn apply(&self, sqe: &mut Sqe) {
        sqe.cdw10 = u32::from(self.lid)
            | (u32::from(self.lsp & 0x7F) << 8)
            | (u32::from(self.rae) << 15)
            | (self.numd << 16);
        sqe.cdw11 = (self.numd >> 16) | (u32::from(self.lsi) << 16);
        sqe.cdw12 = self.lpo as u32;
        sqe.cdw13 = (self.lpo >> 32) as u32;
        sqe.cdw14 =
            u32::from(self.uuid_index & 0x7F) | (u32::from(self.ot) << 23) | (u32::from(self.csi) << 24);
    }
}

/// Identify command fields (NSID is in the SQE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentifyCmd {
    /// Controller or Namespace Structure, CDW10 bits 7:0.
    pub cns: u8,
    /// Controller Identifier, CDW10 bits 31:16.
    pub cntid: u16,
    /// CNS Specific Identifier, CDW11 bits 15:0.
    pub cnssid: u16,
    /// Command Set Identifier, CDW11 bits 31:24.
    pub csi: u8,
}

impl IdentifyCmd {
    /// Reads the Identify fields of `sqe`.
    pub const fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            cns: sqe.cdw10 as u8,
            cntid: (sqe.cdw10 >> 16) as u16,
            cnssid: sqe.cdw11 as u16,
            csi: (sqe.cdw11 >> 24) as u8,
        }
    }

    /// Writes these fields into CDW10/CDW11 of `sqe`.
    pub fn apply(&self, sqe: &mut Sqe) {
        sqe.cdw10 = u32::from(self.cns) | (u32::from(self.cntid) << 16);
        sqe.cdw11 = u32::from(self.cnssid) | (u32::from(self.csi) << 24);
    }
}

/// Get Features SEL values (CDW10 bits 10:8).
pub mod feature_sel {
    pub const CURRENT: u8 = 0b000;
    pub const DEFAULT: u8 = 0b001;
    pub const SAVED: u8 = 0b010;
    pub const SUPPORTED_CAPABILITIES: u8 = 0b011;
}

/// Get/Set Features command fields (the feature value is in CDW11+).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureCmd {
    /// Feature Identifier, CDW10 bits 7:0.
    pub fid: u8,
    /// Get Features Select, CDW10 bits 10:8.
    pub sel: u8,
    /// Set Features Save, CDW10 bit 31.
    pub sv: bool,
    /// Feature specific value, CDW11.
    pub dw11: u32,
}

impl FeatureCmd {
    /// Reads the Get/Set Features fields of `sqe`.
    pub const fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            fid: sqe.cdw10 as u8,
            sel: ((sqe.cdw10 >> 8) & 0x7) as u8,
            sv: sqe.cdw10 & (1 << 31) != 0,
            dw11: sqe.cdw11,
        }
    }
}

/// Number of Queues (feature 0x07) request from Set Features CDW11:
/// `(nsqr, ncqr)`, both 0's based.
pub const fn number_of_queues_requested(dw11: u32) -> (u16, u16) {
    (dw11 as u16, (dw11 >> 16) as u16)
}

/// Number of Queues completion dword 0: NSQA bits 15:0, NCQA 31:16 (0's based).
pub const fn number_of_queues_dw0(nsqa: u16, ncqa: u16) -> u32 {
    nsqa as u32 | ((ncqa as u32) << 16)
}

/// Read / Write / Write Zeroes / Compare / Verify fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RwCmd {
    /// Starting LBA: CDW10 | CDW11 << 32.
    pub slba: u64,
    /// Number of Logical Blocks (0's based), CDW12 bits 15:0.
    pub nlb: u16,
    /// Deallocate (Write Zeroes), CDW12 bit 25.
    pub deac: bool,
    /// Force Unit Access, CDW12 bit 30.
    pub fua: bool,
    /// Limited Retry, CDW12 bit 31.
    pub lr: bool,
}

impl RwCmd {
    /// Reads the LBA range fields of `sqe`.
    pub const fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            slba: sqe.cdw10 as u64 | ((sqe.cdw11 as u64) << 32),
            nlb: sqe.cdw12 as u16,
            deac: sqe.cdw12 & (1 << 25) != 0,
            fua: sqe.cdw12 & (1 << 30) != 0,
            lr: sqe.cdw12 & (1 << 31) != 0,
        }
    }

    /// Number of logical blocks (1-based).
    pub const fn blocks(&self) -> u32 {
        self.nlb as u32 + 1
    }

    /// Writes these fields into CDW10..CDW12 of `sqe`.
    pub fn apply(&self, sqe: &mut Sqe) {
        sqe.cdw10 = self.slba as u32;
        sqe.cdw11 = (self.slba >> 32) as u32;
        sqe.cdw12 = u32::from(self.nlb)
            | (u32::from(self.deac) << 25)
            | (u32::from(self.fua) << 30)
            | (u32::from(self.lr) << 31);
    }
}

/// Dataset Management command fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DsmCmd {
    /// Number of Ranges (0's based), CDW10 bits 7:0.
    pub nr: u8,
    /// Integral Dataset for Read, CDW11 bit 0.
    pub idr: bool,
    /// Integral Dataset for Write, CDW11 bit 1.
    pub idw: bool,
    /// Deallocate, CDW11 bit 2.
    pub ad: bool,
}

/// Size of one Dataset Management range entry.
pub const DSM_RANGE_LEN: usize = 16;

impl DsmCmd {
    /// Reads the Dataset Management fields of `sqe`.
    pub const fn from_sqe(sqe: &Sqe) -> Self {
        Self { nr: sqe.cdw10 as u8, idr: sqe.cdw11 & 1 != 0, idw: sqe.cdw11 & 2 != 0, ad: sqe.cdw11 & 4 != 0 }
    }

    /// Number of ranges (1-based).
    pub const fn ranges(&self) -> usize {
        self.nr as usize + 1
    }

    /// Bytes of range data the command transfers.
    pub const fn data_len(&self) -> usize {
        self.ranges() * DSM_RANGE_LEN
    }
}

/// One Dataset Management range: context attributes, length in logical
/// blocks (1-based), starting LBA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DsmRange {
    pub cattr: u32,
    pub nlb: u32,
    pub slba: u64,
}

impl DsmRange {
    /// Decodes one 16-byte range entry.
    pub fn parse(b: &[u8; DSM_RANGE_LEN]) -> Self {
        Self { cattr: get_u32(b, 0), nlb: get_u32(b, 4), slba: get_u64(b, 8) }
    }

    /// Encodes one 16-byte range entry.
    pub fn encode(&self) -> [u8; DSM_RANGE_LEN] {
        let mut b = [0u8; DSM_RANGE_LEN];
        put_u32(&mut b, 0, self.cattr);
        put_u32(&mut b, 4, self.nlb);
        put_u64(&mut b, 8, self.slba);
        b
    }

    /// Iterates the complete range entries of a DSM data buffer.
    pub fn iter(data: &[u8]) -> impl Iterator<Item = DsmRange> + '_ {
        data.chunks_exact(DSM_RANGE_LEN).map(|c| {
            let mut e = [0u8; DSM_RANGE_LEN];
            e.copy_from_slice(c);
            DsmRange::parse(&e)
        })
    }
}

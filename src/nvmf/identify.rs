//! Builders for the data structures a controller returns to the host:
//! Identify Controller / Namespace / Active Namespace ID list / Namespace
//! Identification Descriptor list (this file), the log pages Error, SMART
//! / Health, Firmware Slot, Changed Namespace List, Commands Supported and
//! Effects, ANA (submodule `log`) and the fabrics Discovery log page
//! (submodule `discovery`), plus [`partial`] for Get Log Page offsets.
//!
//! Invariants: builders take plain values (no sockets, bdevs or controller
//! state), place every field at its NVMe Base 2.0 / NVMe-oF 1.1 offset in
//! little-endian, leave reserved bytes zero, pad ASCII strings (SN, MN, FR)
//! with spaces and NUL-terminate NQNs. Identify structures are 4096 bytes.

mod discovery;
mod log;

#[cfg(test)]
mod tests;

pub use discovery::*;
pub use log::*;

use super::spec::ctrl_bits::{
    CMIC_MULTI_CTRL, CMIC_MULTI_PORT, CNTRLTYPE_DISCOVERY, CNTRLTYPE_IO, CTRATT_HOST_ID_128, LPA_CMD_EFFECTS,
    LPA_EXTENDED_DATA, SGLS_OFFSET, SGLS_SUPPORTED,
};
use super::spec::ns_bits::NSFEAT_OPTPERF;
use super::spec::wire::{put_ascii, put_cstr, put_u16, put_u32, put_u64};
use super::spec::VS_1_4;

/// Size of every Identify data structure.
pub const IDENTIFY_LEN: usize = 4096;

/// Inputs of the Identify Controller data structure (CNS 01h). Field
/// names are the spec's; see [`super::spec::ctrl_bits`] for bit values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifyCtrlrParams {
    /// PCI Vendor ID, byte 0.
    pub vid: u16,
    /// PCI Subsystem Vendor ID, byte 2.
    pub ssvid: u16,
    /// Serial Number (20 ASCII), byte 4.
    pub serial: String,
    /// Model Number (40 ASCII), byte 24.
    pub model: String,
    /// Firmware Revision (8 ASCII), byte 64.
    pub firmware: String,
    /// Recommended Arbitration Burst, byte 72.
    pub rab: u8,
    /// IEEE OUI (24 bits, stored least significant byte first), byte 73.
    pub ieee_oui: u32,
    /// Controller Multi-Path I/O and Namespace Sharing Capabilities, byte 76.
    pub cmic: u8,
    /// Maximum Data Transfer Size (2^n units of CAP.MPSMIN; 0 = no limit), byte 77.
    pub mdts: u8,
    /// Controller ID, byte 78.
    pub cntlid: u16,
    /// Version (same value as the VS property), byte 80.
    pub ver: u32,
    /// RTD3 Resume / Entry Latency (µs), bytes 84 / 88.
    pub rtd3r: u32,
    pub rtd3e: u32,
    /// Optional Asynchronous Events Supported, byte 92.
    pub oaes: u32,
    /// Controller Attributes, byte 96.
    pub ctratt: u32,
    /// Optional Admin Command Support, byte 256.
    pub oacs: u16,
    /// Abort Command Limit (0's based), byte 258.
    pub acl: u8,
    /// Asynchronous Event Request Limit (0's based), byte 259.
    pub aerl: u8,
    /// Firmware Updates, byte 260.
    pub frmw: u8,
    /// Log Page Attributes, byte 261.
    pub lpa: u8,
    /// Error Log Page Entries (0's based), byte 262.
    pub elpe: u8,
    /// Number of Power States Support (0's based), byte 263.
    pub npss: u8,
    /// Warning / Critical Composite Temperature Threshold (K), bytes 266 / 268.
    pub wctemp: u16,
    pub cctemp: u16,
    /// Keep Alive Support granularity in 100 ms units (must be non-zero
    /// on fabrics), byte 320.
    pub kas: u16,
    /// ANA Transition Time (s), byte 342.
    pub anatt: u8,
    /// Asymmetric Namespace Access Capabilities, byte 343.
    pub anacap: u8,
    /// ANA Group Identifier Maximum, byte 344.
    pub anagrpmax: u32,
    /// Number of ANA Group Identifiers, byte 348.
    pub nanagrpid: u32,
    /// Submission / Completion Queue Entry Size (max 7:4, required 3:0), bytes 512 / 513.
    pub sqes: u8,
    pub cqes: u8,
    /// Maximum Outstanding Commands (per queue), byte 514.
    pub maxcmd: u16,
    /// Number of Namespaces (maximum valid NSID), byte 516.
    pub nn: u32,
    /// Optional NVM Command Support, byte 520.
    pub oncs: u16,
    /// Fused Operation Support, byte 522.
    pub fuses: u16,
    /// Format NVM Attributes, byte 524.
    pub fna: u8,
    /// Volatile Write Cache present (VWC bit 0), byte 525.
    pub vwc: bool,
    /// Atomic Write Unit Normal / Power Fail (0's based blocks), bytes 526 / 528.
    pub awun: u16,
    pub awupf: u16,
    /// Atomic Compare & Write Unit (0's based), byte 532.
    pub acwu: u16,
    /// SGL Support, byte 536.
    pub sgls: u32,
    /// Maximum Number of Allowed Namespaces (MNAN), byte 540.
    pub max_namespaces: u32,
    /// NVM Subsystem NVMe Qualified Name, byte 768.
    pub subnqn: String,
    /// I/O Queue Command Capsule Supported Size in 16-byte units
    /// (includes the 64-byte SQE), byte 1792.
    pub ioccsz: u32,
    /// I/O Queue Response Capsule Supported Size in 16-byte units, byte 1796.
    pub iorcsz: u32,
    /// In Capsule Data Offset in 16-byte units (NVMe/TCP: 0), byte 1800.
    pub icdoff: u16,
    /// Fabrics Controller Attributes (bit 0: static controller model), byte 1802.
    pub fcatt: u8,
    /// Maximum SGL Data Block Descriptors, byte 1803.
    pub msdbd: u8,
    /// Discovery controller (CNTRLTYPE 2) instead of I/O controller (1), byte 111.
    pub discovery: bool,
}

impl Default for IdentifyCtrlrParams {
    fn default() -> Self {
        Self {
            vid: 0,
            ssvid: 0,
            serial: String::new(),
            model: String::new(),
            firmware: String::new(),
            rab: 6,
            ieee_oui: 0,
            cmic: CMIC_MULTI_PORT | CMIC_MULTI_CTRL,
            mdts: 5,
            cntlid: 1,
            ver: VS_1_4,
            rtd3r: 0,
            rtd3e: 0,
            oaes: 0,
            ctratt: CTRATT_HOST_ID_128,
            oacs: 0,
            acl: 3,
            aerl: 3,
            frmw: 1 | (1 << 1),
            lpa: LPA_CMD_EFFECTS | LPA_EXTENDED_DATA,
            elpe: 0,
            npss: 0,
            wctemp: 0,
            cctemp: 0,
            kas: 10,
            anatt: 0,
            anacap: 0,
            anagrpmax: 0,
            nanagrpid: 0,
            sqes: 0x66,
            cqes: 0x44,
            maxcmd: 128,
            nn: 1,
            oncs: 0,
            fuses: 0,
            fna: 0,
            vwc: false,
            awun: 0,
            awupf: 0,
            acwu: 0,
            sgls: SGLS_SUPPORTED | SGLS_OFFSET,
            max_namespaces: 1,
            subnqn: String::new(),
            ioccsz: 4,
            iorcsz: 1,
            icdoff: 0,
            fcatt: 0,
            msdbd: 1,
            discovery: false,
        }
    }
}

/// Builds the Identify Controller data structure.
pub fn identify_ctrlr(p: &IdentifyCtrlrParams) -> [u8; IDENTIFY_LEN] {
    let mut b = [0u8; IDENTIFY_LEN];
    ctrlr_general(&mut b, p);
    ctrlr_admin(&mut b, p);
    ctrlr_nvm(&mut b, p);
    ctrlr_fabrics(&mut b, p);
    b
}

/// Bytes 0..255: controller capabilities and features.
fn ctrlr_general(b: &mut [u8; IDENTIFY_LEN], p: &IdentifyCtrlrParams) {
    put_u16(b, 0, p.vid);
    put_u16(b, 2, p.ssvid);
    put_ascii(&mut b[4..24], &p.serial);
    put_ascii(&mut b[24..64], &p.model);
    put_ascii(&mut b[64..72], &p.firmware);
    b[72] = p.rab;
    b[73..76].copy_from_slice(&p.ieee_oui.to_le_bytes()[..3]);
    b[76] = p.cmic;
    b[77] = p.mdts;
    put_u16(b, 78, p.cntlid);
    put_u32(b, 80, p.ver);
    put_u32(b, 84, p.rtd3r);
    put_u32(b, 88, p.rtd3e);
    put_u32(b, 92, p.oaes);
    put_u32(b, 96, p.ctratt);
    b[111] = if p.discovery { CNTRLTYPE_DISCOVERY } else { CNTRLTYPE_IO };
}

/// Bytes 256..511: admin command set attributes.
fn ctrlr_admin(b: &mut [u8; IDENTIFY_LEN], p: &IdentifyCtrlrParams) {
    put_u16(b, 256, p.oacs);
    b[258] = p.acl;
    b[259] = p.aerl;
    b[260] = p.frmw;
    b[261] = p.lpa;
    b[262] = p.elpe;
    b[263] = p.npss;
    put_u16(b, 266, p.wctemp);
    put_u16(b, 268, p.cctemp);
    put_u16(b, 320, p.kas);
    b[342] = p.anatt;
    b[343] = p.anacap;
    put_u32(b, 344, p.anagrpmax);
    put_u32(b, 348, p.nanagrpid);
}

/// Bytes 512..1023: NVM command set attributes and SUBNQN.
fn ctrlr_nvm(b: &mut [u8; IDENTIFY_LEN], p: &IdentifyCtrlrParams) {
    b[512] = p.sqes;
    b[513] = p.cqes;
    put_u16(b, 514, p.maxcmd);
    put_u32(b, 516, p.nn);
    put_u16(b, 520, p.oncs);
    put_u16(b, 522, p.fuses);
    b[524] = p.fna;
    b[525] = u8::from(p.vwc);
    put_u16(b, 526, p.awun);
    put_u16(b, 528, p.awupf);
    put_u16(b, 532, p.acwu);
    put_u32(b, 536, p.sgls);
    put_u32(b, 540, p.max_namespaces);
    put_cstr(&mut b[768..1024], &p.subnqn);
}

/// Bytes 1792..2047: NVMe over Fabrics attributes.
fn ctrlr_fabrics(b: &mut [u8; IDENTIFY_LEN], p: &IdentifyCtrlrParams) {
    put_u32(b, 1792, p.ioccsz);
    put_u32(b, 1796, p.iorcsz);
    put_u16(b, 1800, p.icdoff);
    b[1802] = p.fcatt;
    b[1803] = p.msdbd;
}

/// Inputs of the Identify Namespace data structure (CNS 00h). The
/// namespace has exactly one LBA format (NLBAF 0, FLBAS 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentifyNsParams {
    /// Namespace Size / Capacity / Utilization in logical blocks.
    pub nsze: u64,
    pub ncap: u64,
    pub nuse: u64,
    /// Namespace Features; NSFEAT_OPTPERF is added automatically when any
    /// of npwg/npwa/npdg/npda/nows is non-zero.
    pub nsfeat: u8,
    /// LBA Data Size as a power of two (9 = 512 B, 12 = 4 KiB).
    pub lba_data_size_shift: u8,
    /// Metadata Size per block of LBA format 0.
    pub ms: u16,
    /// Relative Performance of LBA format 0 (0 = best).
    pub rp: u8,
    /// Namespace Multi-path I/O and Sharing Capabilities (bit 0 shared).
    pub nmic: u8,
    /// Reservation Capabilities.
    pub rescap: u8,
    /// Deallocate Logical Block Features (bits 2:0 = 001b: read zeroes).
    pub dlfeat: u8,
    /// Namespace Atomic Write Unit Normal / Power Fail, Atomic Compare &
    /// Write Unit (0's based).
    pub nawun: u16,
    pub nawupf: u16,
    pub nacwu: u16,
    /// Namespace Optimal I/O Boundary (blocks).
    pub noiob: u16,
    /// NVM Capacity in bytes.
    pub nvmcap: u128,
    /// Preferred Write Granularity / Alignment, Deallocate Granularity /
    /// Alignment, Optimal Write Size (0's based blocks).
    pub npwg: u16,
    pub npwa: u16,
    pub npdg: u16,
    pub npda: u16,
    pub nows: u16,
    /// ANA Group Identifier.
    pub anagrpid: u32,
    /// Namespace Attributes (bit 0 write protected).
    pub nsattr: u8,
    /// Namespace Globally Unique Identifier.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
}

/// Builds the Identify Namespace data structure.
pub fn identify_ns(p: &IdentifyNsParams) -> [u8; IDENTIFY_LEN] {
    let mut b = [0u8; IDENTIFY_LEN];
    put_u64(&mut b, 0, p.nsze);
    put_u64(&mut b, 8, p.ncap);
    put_u64(&mut b, 16, p.nuse);
    let optperf = [p.npwg, p.npwa, p.npdg, p.npda, p.nows].iter().any(|&v| v != 0);
    b[24] = p.nsfeat | if optperf { NSFEAT_OPTPERF } else { 0 };
    // b[25] NLBAF = 0 (one format), b[26] FLBAS = 0.
    b[30] = p.nmic;
    b[31] = p.rescap;
    b[33] = p.dlfeat;
    put_u16(&mut b, 34, p.nawun);
    put_u16(&mut b, 36, p.nawupf);
    put_u16(&mut b, 38, p.nacwu);
    put_u16(&mut b, 46, p.noiob);
    b[48..64].copy_from_slice(&p.nvmcap.to_le_bytes());
    put_u16(&mut b, 64, p.npwg);
    put_u16(&mut b, 66, p.npwa);
    put_u16(&mut b, 68, p.npdg);
    put_u16(&mut b, 70, p.npda);
    put_u16(&mut b, 72, p.nows);
    put_u32(&mut b, 92, p.anagrpid);
    b[99] = p.nsattr;
    b[104..120].copy_from_slice(&p.nguid);
    b[120..128].copy_from_slice(&p.eui64);
    // LBA Format 0: MS bytes 1:0, LBADS byte 2, RP byte 3 bits 1:0.
    put_u16(&mut b, 128, p.ms);
    b[130] = p.lba_data_size_shift;
    b[131] = p.rp & 0x3;
    b
}

/// Active Namespace ID list (CNS 02h): the NSIDs in `nsids` greater than
/// `start_nsid`, ascending and de-duplicated, at most 1024, zero filled.
/// (Rejecting `start_nsid` 0xFFFFFFFE/0xFFFFFFFF is the caller's job.)
pub fn active_ns_list(start_nsid: u32, nsids: &[u32]) -> [u8; IDENTIFY_LEN] {
    let mut list: Vec<u32> = nsids.iter().copied().filter(|&n| n > start_nsid).collect();
    list.sort_unstable();
    list.dedup();
    let mut b = [0u8; IDENTIFY_LEN];
    for (i, nsid) in list.into_iter().take(IDENTIFY_LEN / 4).enumerate() {
        put_u32(&mut b, i * 4, nsid);
    }
    b
}

/// Namespace Identifier Types (NIDT).
pub mod nidt {
    pub const EUI64: u8 = 0x1;
    pub const NGUID: u8 = 0x2;
    pub const UUID: u8 = 0x3;
    pub const CSI: u8 = 0x4;
}

/// Namespace Identification Descriptor list (CNS 03h): an NGUID (NIDT 2)
/// and/or UUID (NIDT 3) descriptor, each NIDT, NIDL, 2 reserved bytes and
/// the identifier. `None` or all-zero identifiers are omitted.
pub fn ns_id_descriptors(nguid: Option<[u8; 16]>, uuid: Option<[u8; 16]>) -> [u8; IDENTIFY_LEN] {
    let mut b = [0u8; IDENTIFY_LEN];
    let mut off = 0;
    for (nidt, id) in [(nidt::NGUID, nguid), (nidt::UUID, uuid)] {
        if let Some(id) = id.filter(|id| id.iter().any(|&x| x != 0)) {
            b[off] = nidt;
            b[off + 1] = 16;
            b[off + 4..off + 20].copy_from_slice(&id);
            off += 20;
        }
    }
    b
}

//! Log page builders: Error Information (01h), SMART / Health Information
//! (02h), Firmware Slot Information (03h), Changed Namespace List (04h),
//! Commands Supported and Effects (05h), Asymmetric Namespace Access (0Ch),
//! and [`partial`] / [`copy_partial`] to serve a Get Log Page with an
//! offset (LPO) and length (NUMD).
//!
//! Invariants: each builder returns the whole log page (fixed-size pages
//! as arrays, variable-size ones as `Vec`); only `partial`/`copy_partial`
//! deal with offsets, and they zero-fill whatever lies past the page end.

use super::super::spec::effects::{CSUPP, LBCC};
use super::super::spec::wire::{put_ascii, put_u128, put_u16, put_u32, put_u64};
use super::super::spec::{AdminOpcode, IoOpcode, Status};

/// Size of one Error Information log entry.
pub const ERROR_LOG_ENTRY_LEN: usize = 64;
/// Size of the SMART / Health and Firmware Slot log pages.
pub const SMART_LOG_LEN: usize = 512;
/// Size of the Firmware Slot Information log page.
pub const FIRMWARE_LOG_LEN: usize = 512;
/// Size of the Changed Namespace List and Commands Supported log pages.
pub const LOG_4K: usize = 4096;
/// Changed Namespace List entries before it overflows.
pub const CHANGED_NS_MAX: usize = 1024;

/// Error Information log with `entries` empty (all-zero) entries.
pub fn error_log(entries: usize) -> Vec<u8> {
    vec![0u8; entries * ERROR_LOG_ENTRY_LEN]
}

/// SMART / Health Information inputs. Counters are the spec's: data
/// units are thousands of 512-byte units (see [`data_units`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmartLog {
    /// Critical Warning bits, byte 0.
    pub critical_warning: u8,
    /// Composite Temperature in Kelvin, byte 1.
    pub temperature_k: u16,
    /// Available Spare (%), byte 3.
    pub available_spare: u8,
    /// Available Spare Threshold (%), byte 4.
    pub available_spare_threshold: u8,
    /// Percentage Used, byte 5.
    pub percentage_used: u8,
    /// Data Units Read / Written, bytes 32 / 48.
    pub data_units_read: u128,
    pub data_units_written: u128,
    /// Host Read / Write Commands, bytes 64 / 80.
    pub host_read_commands: u128,
    pub host_write_commands: u128,
    /// Controller Busy Time (minutes), byte 96.
    pub controller_busy_time: u128,
    /// Power Cycles, byte 112.
    pub power_cycles: u128,
    /// Power On Hours, byte 128.
    pub power_on_hours: u128,
    /// Unsafe Shutdowns, byte 144.
    pub unsafe_shutdowns: u128,
    /// Media and Data Integrity Errors, byte 160.
    pub media_errors: u128,
    /// Number of Error Information Log Entries, byte 176.
    pub num_err_log_entries: u128,
}

impl Default for SmartLog {
    fn default() -> Self {
        Self {
            critical_warning: 0,
            temperature_k: 298,
            available_spare: 100,
            available_spare_threshold: 10,
            percentage_used: 0,
            data_units_read: 0,
            data_units_written: 0,
            host_read_commands: 0,
            host_write_commands: 0,
            controller_busy_time: 0,
            power_cycles: 0,
            power_on_hours: 0,
            unsafe_shutdowns: 0,
            media_errors: 0,
            num_err_log_entries: 0,
        }
    }
}

/// Converts bytes to SMART data units (1000 × 512 bytes, rounded up).
pub fn data_units(bytes: u128) -> u128 {
    bytes.div_ceil(512 * 1000)
}

/// Builds the SMART / Health Information log page.
pub fn smart_log(s: &SmartLog) -> [u8; SMART_LOG_LEN] {
    let mut b = [0u8; SMART_LOG_LEN];
    b[0] = s.critical_warning;
    put_u16(&mut b, 1, s.temperature_k);
    b[3] = s.available_spare;
    b[4] = s.available_spare_threshold;
    b[5] = s.percentage_used;
    let counters = [
        s.data_units_read,
        s.data_units_written,
        s.host_read_commands,
        s.host_write_commands,
        s.controller_busy_time,
        s.power_cycles,
        s.power_on_hours,
        s.unsafe_shutdowns,
        s.media_errors,
        s.num_err_log_entries,
    ];
    for (i, v) in counters.into_iter().enumerate() {
        put_u128(&mut b, 32 + 16 * i, v);
    }
    // Temperature Sensor 1 (byte 200) mirrors the composite temperature.
    put_u16(&mut b, 200, s.temperature_k);
    b
}

/// Firmware Slot Information: AFI = slot 1 active, FRS1 = `frs1`.
pub fn firmware_slot_log(frs1: &str) -> [u8; FIRMWARE_LOG_LEN] {
    let mut b = [0u8; FIRMWARE_LOG_LEN];
    b[0] = 1;
    put_ascii(&mut b[8..16], frs1);
    b
}

/// Changed Namespace List: up to 1024 NSIDs; more than that reports the
/// overflow marker 0xFFFFFFFF in the first entry and zeroes after it.
pub fn changed_ns_list(nsids: &[u32]) -> [u8; LOG_4K] {
    let mut b = [0u8; LOG_4K];
    if nsids.len() > CHANGED_NS_MAX {
        put_u32(&mut b, 0, u32::MAX);
    } else {
        for (i, &n) in nsids.iter().enumerate() {
            put_u32(&mut b, 4 * i, n);
        }
    }
    b
}

/// Commands Supported and Effects: ACS entries at `4 * opcode`, IOCS
/// entries at `1024 + 4 * opcode`, each `(opcode, effects)` with the
/// [`super::super::spec::effects`] bits (include CSUPP yourself).
pub fn commands_supported_effects(admin: &[(u8, u32)], io: &[(u8, u32)]) -> [u8; LOG_4K] {
    let mut b = [0u8; LOG_4K];
    for &(op, eff) in admin {
        put_u32(&mut b, 4 * usize::from(op), eff);
    }
    for &(op, eff) in io {
        put_u32(&mut b, 1024 + 4 * usize::from(op), eff);
    }
    b
}

/// Admin opcodes ferrite's I/O controller implements.
pub const SUPPORTED_ADMIN: [AdminOpcode; 7] = [
    AdminOpcode::GetLogPage,
    AdminOpcode::Identify,
    AdminOpcode::Abort,
    AdminOpcode::SetFeatures,
    AdminOpcode::GetFeatures,
    AdminOpcode::AsyncEventRequest,
    AdminOpcode::KeepAlive,
];

/// NVM I/O opcodes ferrite implements, with their effects (LBCC on the
/// commands that change logical block content).
pub const SUPPORTED_IO: [(IoOpcode, u32); 5] = [
    (IoOpcode::Flush, CSUPP),
    (IoOpcode::Write, CSUPP | LBCC),
    (IoOpcode::Read, CSUPP),
    (IoOpcode::WriteZeroes, CSUPP | LBCC),
    (IoOpcode::DatasetManagement, CSUPP | LBCC),
];

/// Commands Supported and Effects for [`SUPPORTED_ADMIN`] and [`SUPPORTED_IO`].
pub fn default_commands_supported_effects() -> [u8; LOG_4K] {
    let admin = SUPPORTED_ADMIN.map(|op| (op.raw(), CSUPP));
    let io = SUPPORTED_IO.map(|(op, eff)| (op.raw(), eff));
    commands_supported_effects(&admin, &io)
}

/// ANA state of a group (descriptor byte 16 bits 3:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AnaState {
    Optimized = 0x1,
    NonOptimized = 0x2,
    Inaccessible = 0x3,
    PersistentLoss = 0x4,
    Change = 0xF,
}

/// One ANA Group Descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnaGroup<'a> {
    /// ANA Group ID.
    pub anagrpid: u32,
    /// Change Count of this group.
    pub change_count: u64,
    /// ANA state of the group.
    pub state: AnaState,
    /// Attached NSIDs in the group (ascending, as the spec requires).
    pub nsids: &'a [u32],
}

/// Builds the ANA log page: 16-byte header (Change Count u64, Number of
/// ANA Group Descriptors u16) then one 32-byte descriptor per group
/// (ANAGRPID, NNSID, Change Count, state) followed by its NSIDs. With
/// `rgo` (LSP bit 0, Return Groups Only) NNSID is 0 and no NSIDs follow.
pub fn ana_log(change_count: u64, groups: &[AnaGroup<'_>], rgo: bool) -> Vec<u8> {
    let nsid_total: usize = if rgo { 0 } else { groups.iter().map(|g| g.nsids.len()).sum() };
    let mut b = vec![0u8; 16 + 32 * groups.len() + 4 * nsid_total];
    put_u64(&mut b, 0, change_count);
    put_u16(&mut b, 8, groups.len() as u16);
    let mut off = 16;
    for g in groups {
        let nsids: &[u32] = if rgo { &[] } else { g.nsids };
        put_u32(&mut b, off, g.anagrpid);
        put_u32(&mut b, off + 4, nsids.len() as u32);
        put_u64(&mut b, off + 8, g.change_count);
        b[off + 16] = g.state as u8;
        off += 32;
        for &n in nsids {
            put_u32(&mut b, off, n);
            off += 4;
        }
    }
    b
}

/// The `len` bytes of `page` starting at `offset` (a Get Log Page with
/// LPO), zero-filled past the end of the page. Fails with Invalid Field
/// when `offset` is not dword aligned or lies beyond the page.
pub fn partial(page: &[u8], offset: u64, len: usize) -> Result<Vec<u8>, Status> {
    let mut out = vec![0u8; len];
    copy_partial(page, offset, &mut out)?;
    Ok(out)
}

/// Like [`partial`] but fills `out` in place (e.g. a DMA buffer); returns
/// how many bytes came from the page (the rest of `out` is zeroed).
pub fn copy_partial(page: &[u8], offset: u64, out: &mut [u8]) -> Result<usize, Status> {
    if offset % 4 != 0 || offset > page.len() as u64 {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    let src = &page[offset as usize..];
    let n = src.len().min(out.len());
    out[..n].copy_from_slice(&src[..n]);
    out[n..].fill(0);
    Ok(n)
}

//! io_uring availability, kernel-reported features and supported opcodes.

use crate::sysfs::read_parse;
use io_uring::{IoUring, Parameters};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Ring size used for the probe ring (it is torn down immediately).
const PROBE_ENTRIES: u32 = 8;

/// Names of io_uring opcodes, indexed by their kernel ABI number (`IORING_OP_*`).
/// Spelled like the `io_uring::opcode` types where one exists.
pub const OPCODE_NAMES: [&str; 63] = [
    "Nop",
    "Readv",
    "Writev",
    "Fsync",
    "ReadFixed",
    "WriteFixed",
    "PollAdd",
    "PollRemove",
    "SyncFileRange",
    "SendMsg",
    "RecvMsg",
    "Timeout",
    "TimeoutRemove",
    "Accept",
    "AsyncCancel",
    "LinkTimeout",
    "Connect",
    "Fallocate",
    "OpenAt",
    "Close",
    "FilesUpdate",
    "Statx",
    "Read",
    "Write",
    "Fadvise",
    "Madvise",
    "Send",
    "Recv",
    "OpenAt2",
    "EpollCtl",
    "Splice",
    "ProvideBuffers",
    "RemoveBuffers",
    "Tee",
    "Shutdown",
    "RenameAt",
    "UnlinkAt",
    "MkDirAt",
    "SymlinkAt",
    "LinkAt",
    "MsgRing",
    "FSetXattr",
    "SetXattr",
    "FGetXattr",
    "GetXattr",
    "Socket",
    "UringCmd",
    "SendZc",
    "SendMsgZc",
    "ReadMulti",
    "WaitId",
    "FutexWait",
    "FutexWake",
    "FutexWaitV",
    "FixedFdInstall",
    "Ftruncate",
    "Bind",
    "Listen",
    "RecvZc",
    "EpollWait",
    "ReadvFixed",
    "WritevFixed",
    "Pipe",
];

/// Accessor for one kernel feature bit on the ring parameters.
type FeatureTest = fn(&Parameters) -> bool;

/// Kernel feature bits (`IORING_FEAT_*`) exposed by the io-uring crate.
const FEATURES: [(&str, FeatureTest); 16] = [
    ("single_mmap", Parameters::is_feature_single_mmap),
    ("nodrop", Parameters::is_feature_nodrop),
    ("submit_stable", Parameters::is_feature_submit_stable),
    ("rw_cur_pos", Parameters::is_feature_rw_cur_pos),
    ("cur_personality", Parameters::is_feature_cur_personality),
    ("fast_poll", Parameters::is_feature_fast_poll),
    ("poll_32bits", Parameters::is_feature_poll_32bits),
    ("sqpoll_nonfixed", Parameters::is_feature_sqpoll_nonfixed),
    ("ext_arg", Parameters::is_feature_ext_arg),
    ("native_workers", Parameters::is_feature_native_workers),
    ("resource_tagging", Parameters::is_feature_resource_tagging),
    ("skip_cqe_on_success", Parameters::is_feature_skip_cqe_on_success),
    ("linked_file", Parameters::is_feature_linked_file),
    ("recvsend_bundle", Parameters::is_feature_recvsend_bundle),
    ("min_timeout", Parameters::is_feature_min_timeout),
    ("no_iowait", Parameters::is_feature_no_iowait),
];

/// The name of an opcode number, if known to this crate.
pub fn opcode_name(code: u8) -> Option<&'static str> {
    OPCODE_NAMES.get(usize::from(code)).copied()
}

/// One opcode the kernel reports as supported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opcode {
    pub code: u8,
    /// `None` for opcodes newer than [`OPCODE_NAMES`].
    pub name: Option<String>,
}

/// What io_uring offers this process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UringInfo {
    /// A ring could be set up.
    pub available: bool,
    /// Why setup failed (EPERM from seccomp/sysctl, ENOSYS, ...).
    pub error: Option<String>,
    /// `/proc/sys/kernel/io_uring_disabled` (0 = on, 1 = privileged only, 2 = off).
    pub disabled_sysctl: Option<u32>,
    pub sq_entries: u32,
    pub cq_entries: u32,
    /// Feature name -> reported by the kernel for the probe ring.
    pub features: BTreeMap<String, bool>,
    /// Supported opcodes, ascending.
    pub opcodes: Vec<Opcode>,
    /// Why `IORING_REGISTER_PROBE` failed (opcodes then unknown).
    pub probe_error: Option<String>,
}

impl UringInfo {
    /// Sets up a small ring and probes it; failures are recorded, never raised.
    pub fn gather() -> Self {
        let mut info = Self {
            disabled_sysctl: read_parse("/proc/sys/kernel/io_uring_disabled").ok(),
            ..Self::default()
        };
        let ring: IoUring = match IoUring::new(PROBE_ENTRIES) {
            Ok(ring) => ring,
            Err(e) => {
                info.error = Some(format!("io_uring_setup: {e}"));
                return info;
            }
        };
        info.available = true;
        let params = ring.params();
        info.sq_entries = params.sq_entries();
        info.cq_entries = params.cq_entries();
        info.features = FEATURES.iter().map(|(name, test)| (name.to_string(), test(params))).collect();
        let mut probe = io_uring::Probe::new();
        match ring.submitter().register_probe(&mut probe) {
            Ok(()) => {
                info.opcodes = (0..=u8::MAX).filter(|&c| probe.is_supported(c)).map(Opcode::new).collect()
            }
            Err(e) => info.probe_error = Some(format!("IORING_REGISTER_PROBE: {e}")),
        }
        info
    }

    /// Whether the kernel reported opcode `code` as supported.
    pub fn supports(&self, code: u8) -> bool {
        self.opcodes.iter().any(|o| o.code == code)
    }

    /// Names of the features the kernel reported, in name order.
    pub fn enabled_features(&self) -> impl Iterator<Item = &str> {
        self.features.iter().filter(|(_, on)| **on).map(|(n, _)| n.as_str())
    }
}

impl Opcode {
    fn new(code: u8) -> Self {
        Self { code, name: opcode_name(code).map(str::to_string) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    #[test]
    fn names_match_crate_codes() {
        let pairs = [
            (opcode::Nop::CODE, "Nop"),
            (opcode::Fsync::CODE, "Fsync"),
            (opcode::ReadFixed::CODE, "ReadFixed"),
            (opcode::WriteFixed::CODE, "WriteFixed"),
            (opcode::Accept::CODE, "Accept"),
            (opcode::Read::CODE, "Read"),
            (opcode::Write::CODE, "Write"),
            (opcode::Send::CODE, "Send"),
            (opcode::Recv::CODE, "Recv"),
            (opcode::MsgRingData::CODE, "MsgRing"),
            (opcode::UringCmd16::CODE, "UringCmd"),
            (opcode::SendZc::CODE, "SendZc"),
            (opcode::SendMsgZc::CODE, "SendMsgZc"),
            (opcode::Ftruncate::CODE, "Ftruncate"),
            (opcode::Pipe::CODE, "Pipe"),
        ];
        for (code, name) in pairs {
            assert_eq!(opcode_name(code), Some(name), "opcode {code}");
        }
    }

    #[test]
    fn probe_lists_read_write() {
        let info = UringInfo::gather();
        assert!(info.available, "{:?}", info.error);
        assert!(info.probe_error.is_none(), "{:?}", info.probe_error);
        assert!(info.supports(opcode::Read::CODE));
        assert!(info.supports(opcode::Write::CODE));
        assert!(info.supports(opcode::Nop::CODE));
        assert!(info.sq_entries >= PROBE_ENTRIES);
    }
}

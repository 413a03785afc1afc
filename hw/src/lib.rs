//! `ferrite-hw`: ferrite's run-time hardware probe.
//!
//! This crate owns the question "what does this machine offer, right now?":
//! CPU topology and affinity, hugepage pools, io_uring (setup, kernel feature
//! bits, supported opcodes), NVMe block/char devices, RDMA verbs devices, loop
//! devices and the kernel release. Backends use it to choose an I/O path and
//! tests use it to skip with a printable reason instead of failing.
//!
//! Invariants:
//! - **Read-only.** Probing only reads sysfs/procfs, lists `/dev`, and makes
//!   side-effect-free syscalls (`uname`, `sched_getaffinity`, `access`, and a
//!   throw-away 8-entry io_uring). It never opens devices, loads modules or
//!   writes anywhere.
//! - **Never fails hard.** [`Probe::gather`] always returns; every part that
//!   cannot be read is left empty/`None` and the reason is recorded in that
//!   section's `errors` (or `error`) field, so it shows up in the report.
//! - A [`Probe`] is a snapshot: plain data, `Serialize`/`Deserialize`, and
//!   cheap to clone. Gather again to observe changes.

mod cpu;
mod devices;
mod hugepage;
mod kernel;
mod rdma;
mod report;
mod sysfs;
mod uring;

pub use cpu::{CpuInfo, CpuTopology};
pub use devices::{LoopDevice, LoopInfo, NvmeInfo, NvmeNamespace};
pub use hugepage::{HugepageSize, Hugepages};
pub use kernel::KernelInfo;
pub use rdma::{RdmaDevice, RdmaInfo, RdmaPort};
pub use uring::{opcode_name, Opcode, UringInfo, OPCODE_NAMES};

use serde::{Deserialize, Serialize};

/// Snapshot of the hardware and kernel facilities visible to this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub kernel: KernelInfo,
    pub cpus: CpuTopology,
    pub hugepages: Hugepages,
    pub io_uring: UringInfo,
    pub nvme: NvmeInfo,
    pub rdma: RdmaInfo,
    #[serde(rename = "loop")]
    pub loops: LoopInfo,
}

impl Probe {
    /// Reads everything. Never panics and never fails; see the crate docs.
    pub fn gather() -> Probe {
        Probe {
            kernel: KernelInfo::gather(),
            cpus: CpuTopology::gather(),
            hugepages: Hugepages::gather(),
            io_uring: UringInfo::gather(),
            nvme: NvmeInfo::gather(),
            rdma: RdmaInfo::gather(),
            loops: LoopInfo::gather(),
        }
    }

    /// An io_uring instance could be created.
    pub fn has_io_uring(&self) -> bool {
        self.io_uring.available
    }

    /// The kernel reports `opcode` (an `IORING_OP_*` / `io_uring::opcode::*::CODE`).
    pub fn supports_opcode(&self, opcode: u8) -> bool {
        self.io_uring.supports(opcode)
    }

    /// `Ok` if an RDMA device with an active port and a uverbs node exists;
    /// otherwise the reason, for printing when skipping.
    pub fn rdma_available(&self) -> Result<(), String> {
        self.rdma.available()
    }

    /// NVMe block namespaces (partitions excluded).
    pub fn nvme_devices(&self) -> &[NvmeNamespace] {
        &self.nvme.namespaces
    }

    /// Free pages in the 2 MiB hugepage pool (0 if the pool does not exist).
    pub fn hugepages_free_2m(&self) -> u64 {
        self.hugepages.size(2048).map_or(0, |s| s.free)
    }

    /// Pretty-printed JSON, for `ferrite probe --json`.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Unreachable for these plain structs; still never panic.
            serde_json::json!({ "error": format!("serialize probe: {e}") }).to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_on_this_machine() {
        let p = Probe::gather();
        assert!(p.kernel.error.is_none(), "{:?}", p.kernel.error);
        assert!(!p.kernel.release.is_empty());
        assert!(!p.cpus.cpus.is_empty(), "{:?}", p.cpus.errors);
        assert!(p.has_io_uring(), "{:?}", p.io_uring.error);
        assert!(p.supports_opcode(io_uring::opcode::Read::CODE));
        assert!(p.supports_opcode(io_uring::opcode::Write::CODE));
        assert!(!p.supports_opcode(255));
        let text = p.to_string();
        for section in ["kernel", "cpus", "hugepages", "io_uring", "nvme", "rdma", "loop"] {
            assert!(text.contains(section), "missing {section} in:\n{text}");
        }
        println!("{text}");
    }

    #[test]
    fn rdma_absent_here_gives_reason() {
        // This machine has no RDMA hardware; the reason must be printable.
        let p = Probe::gather();
        if p.rdma.devices.is_empty() {
            let reason = p.rdma_available().unwrap_err();
            assert!(!reason.is_empty());
        }
    }

    #[test]
    fn json_round_trips() {
        let p = Probe::gather();
        let json = p.to_json_pretty();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        for key in ["kernel", "cpus", "hugepages", "io_uring", "nvme", "rdma", "loop"] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        assert_eq!(value, serde_json::to_value(&p).unwrap());
        let back: Probe = serde_json::from_value(value).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn hugepage_free_2m_matches_pool() {
        let p = Probe::gather();
        let pool = p.hugepages.sizes.iter().find(|s| s.size_kb == 2048);
        assert_eq!(p.hugepages_free_2m(), pool.map_or(0, |s| s.free));
    }
}

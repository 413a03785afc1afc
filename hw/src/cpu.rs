//! CPU topology from sysfs plus the calling process's affinity mask.

use crate::sysfs::{list_dir, parse_cpu_list, read_parse, read_str};
use serde::{Deserialize, Serialize};
use std::io;

const CPU_ROOT: &str = "/sys/devices/system/cpu";

/// Largest affinity mask we ask the kernel for, in 64-bit words (1M cpus).
const MAX_MASK_WORDS: usize = 1 << 14;

/// Placement of one online cpu. `None` means sysfs did not say (or said -1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    pub cpu: u32,
    pub core_id: Option<u32>,
    pub package_id: Option<u32>,
    pub numa_node: Option<u32>,
}

/// Online cpus, their topology, and the cpus this process may run on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTopology {
    /// From `/sys/devices/system/cpu/online`.
    pub online: Vec<u32>,
    /// One entry per online cpu, in `online` order.
    pub cpus: Vec<CpuInfo>,
    /// From `sched_getaffinity(0)`.
    pub allowed: Vec<u32>,
    /// Why any of the above could not be (fully) read.
    pub errors: Vec<String>,
}

impl CpuTopology {
    /// Reads the topology; failures are recorded in `errors`, never raised.
    pub fn gather() -> Self {
        let mut errors = Vec::new();
        let online =
            read_str(&format!("{CPU_ROOT}/online")).and_then(|s| parse_cpu_list(&s)).unwrap_or_else(|e| {
                errors.push(e);
                Vec::new()
            });
        let cpus = online.iter().map(|&c| cpu_info(c, &mut errors)).collect();
        let allowed = allowed_cpus().unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        });
        Self { online, cpus, allowed, errors }
    }

    /// Number of cpus this process can use (allowed ∩ online, or whichever is known).
    pub fn usable(&self) -> usize {
        match (self.online.is_empty(), self.allowed.is_empty()) {
            (false, false) => self.allowed.iter().filter(|c| self.online.contains(c)).count(),
            (true, _) => self.allowed.len(),
            (false, true) => self.online.len(),
        }
    }

    /// Distinct NUMA nodes seen among online cpus.
    pub fn numa_nodes(&self) -> Vec<u32> {
        let mut nodes: Vec<u32> = self.cpus.iter().filter_map(|c| c.numa_node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
}

fn cpu_info(cpu: u32, errors: &mut Vec<String>) -> CpuInfo {
    let dir = format!("{CPU_ROOT}/cpu{cpu}");
    CpuInfo {
        cpu,
        core_id: read_id(&format!("{dir}/topology/core_id"), errors),
        package_id: read_id(&format!("{dir}/topology/physical_package_id"), errors),
        numa_node: numa_node(&dir),
    }
}

/// Topology ids are signed in the kernel; -1 means "unknown".
fn read_id(path: &str, errors: &mut Vec<String>) -> Option<u32> {
    match read_parse::<i64>(path) {
        Ok(v) => u32::try_from(v).ok(),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// The `nodeN` link in a cpu's sysfs dir; absent on kernels without NUMA.
fn numa_node(cpu_dir: &str) -> Option<u32> {
    list_dir(cpu_dir).ok()?.iter().find_map(|n| n.strip_prefix("node")?.parse().ok())
}

/// The process affinity mask, growing the buffer for machines with >1024 cpus.
fn allowed_cpus() -> Result<Vec<u32>, String> {
    let mut words = 16usize;
    loop {
        let mut mask = vec![0u64; words];
        let bytes = words * std::mem::size_of::<u64>();
        // SAFETY: `mask` is a live, writable, 8-byte-aligned buffer of exactly
        // `bytes` bytes; cpu_set_t is a plain bit array of c_ulong words, so the
        // kernel (told `bytes`) writes only within it.
        let rc = unsafe { libc::sched_getaffinity(0, bytes, mask.as_mut_ptr().cast::<libc::cpu_set_t>()) };
        if rc == 0 {
            return Ok(mask_to_cpus(&mask));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) && words < MAX_MASK_WORDS {
            words *= 2;
            continue;
        }
        return Err(format!("sched_getaffinity: {err}"));
    }
}

fn mask_to_cpus(mask: &[u64]) -> Vec<u32> {
    let mut cpus = Vec::new();
    for (i, word) in mask.iter().enumerate() {
        for bit in 0..64u32 {
            if word >> bit & 1 == 1 {
                cpus.push(i as u32 * 64 + bit);
            }
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_bits() {
        assert_eq!(mask_to_cpus(&[0b101, 1]), vec![0, 2, 64]);
    }

    #[test]
    fn this_machine_has_cpus() {
        let t = CpuTopology::gather();
        assert!(!t.online.is_empty(), "{:?}", t.errors);
        assert!(!t.allowed.is_empty(), "{:?}", t.errors);
        assert_eq!(t.cpus.len(), t.online.len());
        assert!(t.usable() >= 1);
    }
}

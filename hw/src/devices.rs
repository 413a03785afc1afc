//! NVMe namespaces/char devices and loop devices.

use crate::sysfs::{list_dir, read_opt, read_str};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

const CLASS_BLOCK: &str = "/sys/class/block";
const SYS_BLOCK: &str = "/sys/block";
const LOOP_CONTROL: &str = "/dev/loop-control";

/// One NVMe block namespace (`/sys/class/block/nvmeXnY`, partitions skipped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeNamespace {
    /// Kernel name, e.g. `nvme0n1`; the device node is `/dev/<name>`.
    pub name: String,
    pub size_bytes: Option<u64>,
    pub logical_block_size: Option<u32>,
    /// Controller model string, when sysfs exposes it.
    pub model: Option<String>,
}

/// NVMe devices visible to this process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeInfo {
    pub namespaces: Vec<NvmeNamespace>,
    /// Character devices: `/dev/nvmeX` controllers, `/dev/ngXnY` generic
    /// namespaces (io_uring passthrough), `/dev/nvme-fabrics`.
    pub char_devices: Vec<String>,
    pub errors: Vec<String>,
}

impl NvmeInfo {
    /// Lists NVMe devices; failures are recorded in `errors`, never raised.
    pub fn gather() -> Self {
        let mut errors = Vec::new();
        let names = list_dir(CLASS_BLOCK).unwrap_or_else(|e| {
            errors.push(format!("{CLASS_BLOCK}: {e}"));
            Vec::new()
        });
        let namespaces = names
            .iter()
            .filter(|n| n.starts_with("nvme"))
            .filter(|n| !Path::new(&format!("{CLASS_BLOCK}/{n}/partition")).exists())
            .map(|n| namespace(n, &mut errors))
            .collect();
        let char_devices = dev_chars(|n| n.starts_with("nvme") || n.starts_with("ng"), &mut errors);
        Self { namespaces, char_devices, errors }
    }
}

fn namespace(name: &str, errors: &mut Vec<String>) -> NvmeNamespace {
    let dir = format!("{CLASS_BLOCK}/{name}");
    let sectors: Option<u64> = read_opt(&format!("{dir}/size"), errors);
    NvmeNamespace {
        name: name.to_string(),
        // sysfs `size` is always in 512-byte units.
        size_bytes: sectors.and_then(|s| s.checked_mul(512)),
        logical_block_size: read_opt(&format!("{dir}/queue/logical_block_size"), errors),
        model: read_str(&format!("{dir}/device/model")).ok(),
    }
}

/// `/dev/<name>` character devices whose name passes `keep`.
fn dev_chars(keep: impl Fn(&str) -> bool, errors: &mut Vec<String>) -> Vec<String> {
    let names = list_dir("/dev").unwrap_or_else(|e| {
        errors.push(format!("/dev: {e}"));
        Vec::new()
    });
    names
        .into_iter()
        .filter(|n| keep(n))
        .map(|n| format!("/dev/{n}"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device()))
        .collect()
}

/// A loop device bound to a backing file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopDevice {
    /// Kernel name, e.g. `loop0`.
    pub name: String,
    pub backing_file: Option<String>,
}

/// Loop device support.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopInfo {
    /// `/dev/loop-control` exists.
    pub control: bool,
    /// `access(/dev/loop-control, W_OK)` succeeds (needed to allocate loops).
    pub control_writable: bool,
    /// Loops with a backing file (`/sys/block/loopN/loop/` present).
    pub configured: Vec<LoopDevice>,
    /// Loop block devices that exist but are unbound.
    pub unbound: Vec<String>,
    pub errors: Vec<String>,
}

impl LoopInfo {
    /// Lists loop devices; failures are recorded in `errors`, never raised.
    pub fn gather() -> Self {
        let mut info = Self {
            control: Path::new(LOOP_CONTROL).exists(),
            control_writable: writable(LOOP_CONTROL),
            ..Self::default()
        };
        let names = list_dir(SYS_BLOCK).unwrap_or_else(|e| {
            info.errors.push(format!("{SYS_BLOCK}: {e}"));
            Vec::new()
        });
        for name in names.into_iter().filter(|n| n.starts_with("loop")) {
            let dir = format!("{SYS_BLOCK}/{name}/loop");
            if !Path::new(&dir).exists() {
                info.unbound.push(name);
                continue;
            }
            let backing_file = read_str(&format!("{dir}/backing_file")).map_err(|e| info.errors.push(e)).ok();
            info.configured.push(LoopDevice { name, backing_file });
        }
        info
    }
}

/// Whether the process may open `path` for writing (no open is attempted).
pub(crate) fn writable(path: &str) -> bool {
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

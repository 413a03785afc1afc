//! Kernel identity from uname(2).

use serde::{Deserialize, Serialize};
use std::io;

/// `uname` fields; empty strings if the call failed (see `error`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub sysname: String,
    pub release: String,
    pub version: String,
    pub machine: String,
    pub error: Option<String>,
}

impl KernelInfo {
    /// Calls uname(2); a failure is recorded in `error`, never raised.
    pub fn gather() -> Self {
        // SAFETY: utsname consists only of c_char arrays, for which all-zero
        // bytes are a valid value.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `uts` is a valid, writable utsname owned by this frame.
        if unsafe { libc::uname(&mut uts) } != 0 {
            let error = Some(format!("uname: {}", io::Error::last_os_error()));
            return Self { error, ..Self::default() };
        }
        Self {
            sysname: field(&uts.sysname),
            release: field(&uts.release),
            version: field(&uts.version),
            machine: field(&uts.machine),
            error: None,
        }
    }
}

/// A NUL-terminated (or full-length) c_char array as a lossy UTF-8 string.
fn field(raw: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = raw.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

//! The daemon's configuration file (TOML), applied at start-up. Every section is optional; the
//! embedded default ([`DEFAULT_CONFIG`]) runs with nothing but a temporary directory.
//!
//! Invariant: a config that parses is checked as a whole (`validate`) before anything starts,
//! so a bad file stops the daemon with a message naming the problem, never half-applies.

use std::path::Path;

use serde::Deserialize;

use crate::reactor::{IdlePolicy, RuntimeConfig};

/// The configuration `ferrite serve` uses when given none.
pub const DEFAULT_CONFIG: &str = r#"
# ferrite's embedded default: two reactors sleeping when idle, one 64 MiB RAM disk.
[reactor]
idle_policy = "adaptive"

[rpc]
socket = "/var/tmp/ferrite.sock"

[[bdev]]
type = "malloc"
name = "Malloc0"
size_mb = 64
block_size = 512
"#;

/// Reactor settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReactorSection {
    /// Cores to run reactors on (default: every allowed core).
    pub cores: Option<Vec<usize>>,
    /// `adaptive` (default) or `busy`.
    pub idle_policy: IdlePolicy,
    /// Idle time before an adaptive reactor sleeps.
    pub idle_spell_us: u64,
    /// Longest sleep.
    pub max_sleep_ms: u64,
    /// Pin reactor threads.
    pub pin: bool,
}

impl Default for ReactorSection {
    fn default() -> Self {
        let d = RuntimeConfig::default();
        ReactorSection {
            cores: None,
            idle_policy: d.idle_policy,
            idle_spell_us: d.idle_spell_us,
            max_sleep_ms: d.max_sleep_ms,
            pin: d.pin,
        }
    }
}

/// DMA buffer pool settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    /// Bytes per I/O buffer: the largest I/O (128 KiB) plus a change-log entry header.
    pub buf_size: usize,
    /// Number of buffers.
    pub buf_count: u32,
    /// Try 2 MiB hugepages first.
    pub hugepages: bool,
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection { buf_size: 132 * 1024, buf_count: 1024, hugepages: true }
    }
}

/// Control-socket settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcSection {
    /// Unix socket path.
    pub socket: String,
}

impl Default for RpcSection {
    fn default() -> Self {
        RpcSection { socket: crate::rpc::DEFAULT_SOCKET.to_string() }
    }
}

/// One block device to create at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BdevSection {
    /// A RAM disk.
    Malloc {
        /// Name.
        name: String,
        /// Size in MiB.
        size_mb: u64,
        /// Block size (default 512).
        #[serde(default = "default_block_size")]
        block_size: u32,
        /// Fixed identity.
        uuid: Option<uuid::Uuid>,
    },
    /// A device that stores nothing.
    Null {
        /// Name.
        name: String,
        /// Size in MiB.
        size_mb: u64,
        /// Block size (default 512).
        #[serde(default = "default_block_size")]
        block_size: u32,
        /// Fixed identity.
        uuid: Option<uuid::Uuid>,
    },
    /// A file or block device.
    Uring {
        /// Name.
        name: String,
        /// Path.
        filename: String,
        /// Block size (default: the device's).
        block_size: Option<u32>,
        /// Fixed identity.
        uuid: Option<uuid::Uuid>,
        /// Create the file with this size in MiB if it does not exist.
        create_size_mb: Option<u64>,
    },
}

fn default_block_size() -> u32 {
    512
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Reactors.
    pub reactor: ReactorSection,
    /// DMA memory.
    pub memory: MemorySection,
    /// Control socket.
    pub rpc: RpcSection,
    /// Block devices.
    pub bdev: Vec<BdevSection>,
    /// NVMe-oF target.
    pub nvmf: crate::nvmf::config::NvmfSection,
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Bad TOML or a bad field.
    #[error("config file {path}: {message}")]
    Parse {
        /// The path.
        path: String,
        /// What is wrong (line and field included).
        message: String,
    },
    /// Fields that parse but do not make sense together.
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: origin.to_string(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Config::parse(&text, &shown)
    }

    /// The embedded default.
    pub fn embedded_default() -> Config {
        Config::parse(DEFAULT_CONFIG, "<embedded default>").expect("embedded default config is valid")
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cores = self.runtime().cores;
        let available = crate::sys::affinity::available_cores();
        if let Some(c) = cores.iter().find(|c| !available.contains(c)) {
            return Err(ConfigError::Invalid(format!(
                "reactor core {c} is not available (cores: {available:?})"
            )));
        }
        if cores.is_empty() {
            return Err(ConfigError::Invalid("reactor.cores is empty".into()));
        }
        let m = &self.memory;
        if m.buf_size == 0 || m.buf_size % 4096 != 0 || m.buf_size > 16 << 20 {
            return Err(ConfigError::Invalid(format!(
                "memory.buf_size {} must be a multiple of 4096 up to 16 MiB",
                m.buf_size
            )));
        }
        if m.buf_count == 0 {
            return Err(ConfigError::Invalid("memory.buf_count must be positive".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for b in &self.bdev {
            if !names.insert(b.name()) {
                return Err(ConfigError::Invalid(format!("bdev {:?} is defined twice", b.name())));
            }
        }
        self.nvmf.validate(&names).map_err(ConfigError::Invalid)
    }

    /// Reactor settings as the runtime takes them.
    pub fn runtime(&self) -> RuntimeConfig {
        let r = &self.reactor;
        RuntimeConfig {
            cores: r.cores.clone().unwrap_or_else(crate::sys::affinity::available_cores),
            idle_policy: r.idle_policy,
            idle_spell_us: r.idle_spell_us,
            max_sleep_ms: r.max_sleep_ms,
            pin: r.pin,
        }
    }
}

impl BdevSection {
    /// The device's name.
    pub fn name(&self) -> &str {
        match self {
            BdevSection::Malloc { name, .. }
            | BdevSection::Null { name, .. }
            | BdevSection::Uring { name, .. } => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses() {
        let c = Config::embedded_default();
        assert_eq!(c.bdev.len(), 1);
        assert_eq!(c.reactor.idle_policy, IdlePolicy::Adaptive);
    }

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn bad_configs_say_why() {
        assert!(err("[reactor]\nidle_policy = \"lazy\"").contains("unknown variant `lazy`"));
        assert!(err("[reactor]\ncores = [99]").contains("core 99 is not available"));
        assert!(err("[memory]\nbuf_size = 1000").contains("multiple of 4096"));
        assert!(err("[bogus]\n").contains("unknown field `bogus`"));
        let dup = "[[bdev]]\ntype=\"null\"\nname=\"a\"\nsize_mb=1\n[[bdev]]\ntype=\"null\"\nname=\"a\"\nsize_mb=1\n";
        assert!(err(dup).contains("defined twice"));
        assert!(err("[[bdev]]\ntype=\"floppy\"\nname=\"a\"").contains("floppy"));
        assert!(err("[[bdev]]\ntype=\"malloc\"\nname=\"a\"").contains("missing field `size_mb`"));
    }
}

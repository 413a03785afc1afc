//! What a load generator does: pattern, mix, queue depth, size and duration, in spdk_nvme_perf's
//! terms, and the offsets it picks. Shared by the in-process bdev runner and the NVMe/TCP
//! initiator.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Access pattern (`-w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Sequential mix (`-M` % reads).
    Rw,
    /// Random mix (`-M` % reads).
    Randrw,
}

impl Pattern {
    /// Whether offsets are random.
    pub fn is_random(self) -> bool {
        matches!(self, Pattern::Randread | Pattern::Randwrite | Pattern::Randrw)
    }

    /// Percentage of reads, given `-M` for mixes.
    pub fn read_percent(self, mix: u8) -> u8 {
        match self {
            Pattern::Read | Pattern::Randread => 100,
            Pattern::Write | Pattern::Randwrite => 0,
            Pattern::Rw | Pattern::Randrw => mix.min(100),
        }
    }
}

/// A workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Outstanding I/O per job (`-q`).
    pub queue_depth: u32,
    /// Bytes per I/O (`-o`).
    pub io_size: u32,
    /// Pattern (`-w`).
    pub pattern: Pattern,
    /// Reads in a mix, percent (`-M`).
    #[serde(default = "half")]
    pub read_percent: u8,
    /// Measured duration in seconds (`-t`).
    pub time_s: f64,
    /// Stop after this many I/Os per job instead (0: no limit).
    #[serde(default)]
    pub io_count: u64,
    /// Unmeasured warm-up before the measured time.
    #[serde(default)]
    pub warmup_s: f64,
    /// Write self-describing blocks and check every read.
    #[serde(default)]
    pub verify: bool,
    /// Seed for offsets.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Every write with Force Unit Access: durable when it completes.
    #[serde(default)]
    pub fua: bool,
}

fn half() -> u8 {
    50
}

fn default_seed() -> u64 {
    0x5EED
}

impl Workload {
    /// Checks the workload against a device of `block_size` bytes and `num_blocks` blocks.
    pub fn validate(&self, block_size: u32, num_blocks: u64, max_io: usize) -> Result<(), String> {
        if self.queue_depth == 0 || self.queue_depth > 4096 {
            return Err(format!("queue depth {} must be 1..=4096", self.queue_depth));
        }
        if self.io_size == 0 || self.io_size % block_size != 0 {
            return Err(format!(
                "I/O size {} is not a multiple of the block size {block_size}",
                self.io_size
            ));
        }
        if self.io_size as usize > max_io {
            return Err(format!("I/O size {} exceeds the largest buffer ({max_io} bytes)", self.io_size));
        }
        if u64::from(self.io_size / block_size) > num_blocks {
            return Err("I/O size is larger than the device".into());
        }
        if !(self.time_s > 0.0 || self.io_count > 0) {
            return Err("give a duration (-t) or an I/O count".into());
        }
        if self.verify && self.pattern.read_percent(self.read_percent) == 100 {
            return Err("--verify needs writes (use -w randrw/rw/randwrite/write)".into());
        }
        Ok(())
    }
}

/// Picks offsets for one job inside its own range of blocks.
#[derive(Debug, Clone)]
pub struct OffsetGen {
    first_block: u64,
    slots: u64,
    blocks_per_io: u64,
    next_seq: u64,
    random: bool,
    rng: Rng,
}

impl OffsetGen {
    /// Offsets in `[first_block, first_block + range_blocks)`, aligned to the I/O size.
    pub fn new(
        w: &Workload,
        first_block: u64,
        range_blocks: u64,
        blocks_per_io: u64,
        seed: u64,
    ) -> OffsetGen {
        assert!(blocks_per_io > 0 && range_blocks >= blocks_per_io, "range smaller than one I/O");
        OffsetGen {
            first_block,
            slots: range_blocks / blocks_per_io,
            blocks_per_io,
            next_seq: 0,
            random: w.pattern.is_random(),
            rng: Rng::new(seed),
        }
    }

    /// The next I/O's first block.
    pub fn next_block(&mut self) -> u64 {
        let slot = if self.random {
            self.rng.below(self.slots)
        } else {
            let s = self.next_seq;
            self.next_seq = (s + 1) % self.slots;
            s
        };
        self.first_block + slot * self.blocks_per_io
    }

    /// Whether the next I/O is a read.
    pub fn is_read(&mut self, read_percent: u8) -> bool {
        match read_percent {
            0 => false,
            100 => true,
            p => self.rng.percent(p),
        }
    }
}

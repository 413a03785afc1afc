//! Load generation: `ferrite perf`. The in-process runner drives a bdev from the reactors
//! ([`bdev`]); the NVMe/TCP initiator ([`tcp`]) drives any NVMe/TCP target by address, like
//! spdk_nvme_perf, and can log every acknowledged write ([`ack_log`]) to prove later that none
//! was lost; [`pingpong`] measures the loopback TCP floor under both. The workload model,
//! `--verify` stamps and the report are shared.

pub mod ack_log;
pub mod bdev;
pub mod pingpong;
pub mod report;
pub mod run;
pub mod tcp;
pub mod trid;
pub mod verify;
pub mod workload;

pub use report::Report;
pub use workload::{Pattern, Workload};

//! Load generation: `ferrite perf`. The in-process runner drives a bdev from the reactors
//! ([`bdev`]); the workload model, `--verify` stamps and the report are shared with the
//! NVMe/TCP initiator.

pub mod bdev;
pub mod report;
pub mod run;
pub mod verify;
pub mod workload;

pub use report::Report;
pub use workload::{Pattern, Workload};

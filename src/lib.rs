//! ferrite: a polled, run-to-completion userspace block storage target that exports volumes
//! over NVMe-over-Fabrics/TCP and protects writes with a replicated change log.
//!
//! Layers point one way: [`sys`] and [`ring`] (the only `unsafe`) → [`reactor`] → [`bdev`] →
//! the transports and replication → [`rpc`] → the thin `ferrite` binary.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod bdev;
pub mod reactor;
pub mod ring;
pub mod sys;

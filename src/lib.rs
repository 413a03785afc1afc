//! ferrite: a polled, run-to-completion userspace block storage target that exports volumes
//! over NVMe-over-Fabrics/TCP and protects writes with a replicated change log.
//!
//! Layers point one way: [`sys`] and [`ring`] (the only `unsafe`) → [`reactor`] → [`bdev`] →
//! [`nvmf`] → [`rpc`] and [`app`] → the thin `ferrite` binary ([`cli`]).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod app;
pub mod bdev;
pub mod cli;
pub mod config;
pub mod net;
pub mod nvmf;
pub mod perf;
pub mod reactor;
pub mod replication;
pub mod ring;
pub mod rng;
pub mod rpc;
pub mod sys;

//! Operating-system primitives with `unsafe` inside: CPU pinning, memory regions on 2 MiB
//! hugepages (with a logged fallback to normal pages), the DMA buffer pool, eventfd and epoll.
//!
//! Invariants: every region here is allocated once, at start-up, and lives until its owner is
//! dropped; nothing on the data path allocates. Higher layers see only safe types.

pub mod affinity;
pub mod dma;
pub mod event;
pub mod net;
pub mod region;
pub mod signal;

pub use dma::{DmaBuf, DmaPool};
pub use region::{Memory, Region};

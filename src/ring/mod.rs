//! Bounded lock-free rings for traffic between reactors.
//!
//! [`spsc`] is a single-producer single-consumer ring whose two indices sit on separate
//! 128-byte lines (no false sharing between the cores); one exists per ordered reactor pair.
//! Multi-producer traffic from the control plane uses `crossbeam_queue::ArrayQueue`.
//! Invariant: every ring is allocated once with a fixed capacity and never grows; a full ring
//! is reported to the sender, who decides (retry on its next poll, or drop and count).

pub mod spsc;

pub use spsc::{spsc, Consumer, Producer};

//! NVMe over Fabrics: the target side (subsystems, controllers, the discovery controller) and
//! the TCP transport.

pub mod admin;
pub mod config;
pub mod ctrlr;
pub mod host;
pub mod identify;
pub mod setup;
pub mod spec;
pub mod subsystem;
pub mod target;
pub mod tcp;

pub use spec::DISCOVERY_NQN;

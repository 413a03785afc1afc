//! NVMe over Fabrics: the target side (subsystems, controllers, the discovery controller) and
//! the TCP transport.

pub mod config;
pub mod subsystem;

/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

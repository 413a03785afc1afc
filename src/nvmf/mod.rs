//! NVMe over Fabrics: the target side (subsystems, controllers, the discovery controller) and
//! the TCP transport.

pub mod config;

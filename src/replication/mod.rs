//! Replication: the change log ([`log`], [`format`], [`recovery`], the in-memory ring of recent
//! entries [`memlog`]), replicated volumes
//! ([`volume`]), the bunker role ([`bunker`]), the secondary role and failover ([`secondary`]) and
//! the wire protocol between nodes ([`wire`]).
//!
//! Words follow BRIEF.md: primary, bunker, secondary, change log, epoch; positions tail,
//! committed (durable locally and on the bunker), applied, head.

pub mod bunker;
pub mod dirty;
pub mod format;
pub mod log;
pub mod manager;
pub mod memlog;
pub mod migrate;
pub mod recovery;
pub mod secondary;
pub mod volume;
pub mod wire;

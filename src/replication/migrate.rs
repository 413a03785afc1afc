//! Planned role changes (migration: primary and secondary swap on purpose, nothing lost, no
//! stale read). Control plane, blocking:
//!
//! 1. `drain` on the primary: new writes are held (queued, not refused) and the call returns
//!    once every write answered so far is committed, shipped and applied by the secondary;
//! 2. `volume_failover` on the secondary with the drained end (`end`): it refuses unless it
//!    holds everything up to there, pulls nothing, bumps the epoch and serves;
//! 3. `demote` on the old primary: its namespaces are removed (held writes are aborted, so
//!    hosts retry on the new primary), the volume stops, and the node becomes a secondary of
//!    the same volume on its data bdev, a staging bdev and its old log bdev;
//! 4. `replication_create` on the new primary, towards the old one.
//!
//! `ferrite migrate` runs the four steps against two nodes' control sockets.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::volume::{SecondaryRequest, VolumeShared};
use super::{manager, secondary};
use crate::app::App;
use crate::bdev::{sync, Bdev, Channel, IoType};
use crate::sys::DmaPool;

/// How long a drain may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a drained volume stands.
#[derive(Debug, Clone, Serialize)]
pub struct Drained {
    /// Every write below is committed and applied on the secondary.
    pub end: u64,
    /// The primary's epoch.
    pub epoch: u64,
    /// How long the drain took (ms).
    pub drain_ms: u64,
}

/// Holds new writes on `name` (or, with `on == false`, lets them go again) and waits until
/// the secondary has applied everything written so far.
pub fn drain(app: &Arc<App>, name: &str, on: bool) -> Result<Option<Drained>, String> {
    let v = app.replication.volume(name).ok_or_else(|| format!("volume {name:?} not found"))?;
    v.draining.store(on, Ordering::Release);
    v.wake_home();
    if !on {
        return Ok(None);
    }
    let started = Instant::now();
    loop {
        let drained = drained(&v);
        if let Ok(Some((end, epoch))) = drained {
            let drain_ms = started.elapsed().as_millis() as u64;
            return Ok(Some(Drained { end, epoch, drain_ms }));
        }
        if let Err(e) = drained {
            v.draining.store(false, Ordering::Release);
            return Err(e);
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            v.draining.store(false, Ordering::Release);
            let st = v.status.lock().expect("status lock").clone();
            let sec = st.secondary.as_ref().map(|s| (s.applied, s.link.clone()));
            return Err(format!(
                "drain timed out: committed {} of {}, secondary (applied, link) {sec:?}",
                st.committed,
                v.log.tail()
            ));
        }
        v.wake_home();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One look at a draining volume: `(end, epoch)` once every write answered so far is
/// committed, shipped and applied by the secondary.
pub fn drained(v: &VolumeShared) -> Result<Option<(u64, u64)>, String> {
    let (tail, committed) = (v.log.tail(), v.log.committed());
    let st = v.status.lock().expect("status lock").clone();
    let sec =
        st.secondary.as_ref().ok_or_else(|| format!("volume {:?} has no secondary to migrate to", v.name))?;
    let done = tail == committed && sec.synced && sec.applied >= committed && st.committed == committed;
    Ok(done.then_some((committed, st.epoch)))
}

/// What `replication_create` asks of volume `v` (whose change log is `log`, of
/// `volume_blocks` blocks): ship to `to`.
/// A failback (`divergent`: the old primary's tail after the fork, to be rolled back) or a
/// volume whose log no longer holds everything since it was formatted resends blocks through
/// the dirty-block map: the divergent ranges plus every block written since the log's origin
/// (read from the log while it is whole, else the whole volume), with a floor taken before
/// reading, so that writes meanwhile are resent too; otherwise the log ships from its origin.
/// A promoted volume adds the ranges its failover pulled from the bunker ([`VolumeShared::pulled`]).
pub fn secondary_request(
    v: &VolumeShared,
    log: &Arc<dyn Bdev>,
    volume_blocks: u64,
    pool: &DmaPool,
    to: SocketAddr,
    divergent: Vec<(u64, u64)>,
) -> Result<SecondaryRequest, String> {
    // Everything below `committed` is durable in the log, so the scan below reads it whole.
    let floor = v.log.committed();
    let intact = v.log.tail() - v.origin_lsn <= v.log.geometry().ring_sectors / 2;
    let plain = SecondaryRequest { addr: to, resync: Vec::new(), resend: None };
    let mut divergent = divergent;
    match v.pulled.lock().expect("pulled ranges").as_ref() {
        Some(pulled) => divergent.extend(pulled.iter().copied()),
        None => divergent.push((0, volume_blocks)),
    }
    if !v.dirty_map.load(Ordering::Acquire) {
        if !intact {
            return Err(format!(
                "volume {} has been written beyond what its log still holds, and its log (formatted by an older ferrite) has no dirty-block map to synchronise a secondary from; attach the secondary to a volume with a new log",
                v.name
            ));
        }
        return Ok(SecondaryRequest { resync: divergent, ..plain });
    }
    if divergent.is_empty() && intact {
        return Ok(plain);
    }
    let mut ranges = divergent;
    if intact {
        ranges.extend(super::volume::open::ranges_since(log, pool, v.origin_lsn)?);
    } else {
        ranges.push((0, volume_blocks));
    }
    Ok(SecondaryRequest { resend: Some((ranges, floor)), ..plain })
}

/// After a demoted volume's home poller ended: its last writes to the data bdev are made
/// durable before the bdev serves as a replica (whose applier flushes only its own writes).
pub fn flush_data(v: &VolumeShared, data: &Arc<dyn Bdev>) -> Result<(), String> {
    if !v.closed.load(Ordering::Acquire) {
        return Err(format!("volume {:?} is still closing", v.name));
    }
    let mut ch = Channel::new(data.clone()).map_err(|e| e.to_string())?;
    sync::op(&mut ch, IoType::Flush, 0, 0).map_err(|e| format!("flushing {}: {e}", data.name()))
}

/// What a failback found on the old primary.
#[derive(Debug, Clone, Serialize)]
pub struct FailbackPlan {
    /// Volume ranges `[lba, blocks]` its log holds beyond the fork: they must be rolled back
    /// to the new primary's content.
    pub divergent: Vec<(u64, u64)>,
    /// Volume blocks in them.
    pub blocks: u64,
}

/// Failback, on the old primary (fenced, or never confirmed since its restart): finds what it
/// wrote after `fork` (the end its successor applied at failover), and rejoins as a secondary
/// whose log is held until the new primary has resent those blocks.
pub fn failback(app: &Arc<App>, name: &str, fork: u64, staging_bdev: &str) -> Result<FailbackPlan, String> {
    let v = app.replication.volume(name).ok_or_else(|| format!("volume {name:?} not found"))?;
    if !v.fenced.load(Ordering::Acquire) && v.serving.load(Ordering::Acquire) {
        return Err(format!("volume {name:?} is serving: only a fenced old primary fails back"));
    }
    let log = app.bdevs.get(&v.log_bdev).map_err(|e| e.to_string())?;
    let divergent = super::volume::open::ranges_since(&log, &app.pool, fork)?;
    let blocks = divergent.iter().map(|r| r.1).sum();
    tracing::info!(volume = name, fork, ranges = divergent.len(), blocks, "failback: divergent tail found");
    demote(app, name, staging_bdev, !divergent.is_empty())?;
    Ok(FailbackPlan { divergent, blocks })
}

/// Turns a drained (or fenced) primary into a secondary of the same volume; with `resync` its
/// log waits for the new primary's resync blocks.
pub fn demote(app: &Arc<App>, name: &str, staging_bdev: &str, resync: bool) -> Result<(), String> {
    let v = app.replication.volume(name).ok_or_else(|| format!("volume {name:?} not found"))?;
    let stale = v.fenced.load(Ordering::Acquire) || !v.serving.load(Ordering::Acquire);
    if !v.draining.load(Ordering::Acquire) && !stale {
        return Err(format!("volume {name:?} is neither drained nor fenced: drain it first"));
    }
    let staging = app.bdevs.get(staging_bdev).map_err(|e| e.to_string())?;
    let data = app.bdevs.get(&v.data_bdev).map_err(|e| e.to_string())?;
    let log = app.bdevs.get(&v.log_bdev).map_err(|e| e.to_string())?;
    unexport(app, name);
    manager::delete_volume(app, name)?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while !v.closed.load(Ordering::Acquire) && Instant::now() < deadline {
        v.wake_home();
        std::thread::sleep(Duration::from_millis(1));
    }
    flush_data(&v, &data)?;
    secondary::create(app, name, data, staging, log, None, resync).map(|_| ())
}

/// Removes every namespace backed by `bdev` (hosts are told; their I/O moves elsewhere).
fn unexport(app: &App, bdev: &str) {
    for s in app.nvmf.subsystems() {
        let nsids: Vec<u32> =
            s.config().namespaces.values().filter(|n| n.bdev.name() == bdev).map(|n| n.nsid).collect();
        for nsid in &nsids {
            if let Ok(ns) = s.remove_namespace(*nsid) {
                app.bdevs.release(ns.bdev.name());
            }
        }
        if !nsids.is_empty() {
            app.nvmf.namespaces_changed(&s.nqn, &nsids);
        }
    }
}

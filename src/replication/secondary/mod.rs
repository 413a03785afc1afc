//! The secondary role: a replica volume fed by the primary's asynchronous shipping.
//!
//! A secondary holds three bdevs: the replica **data** bdev, a **staging** log and its own
//! change **log** (used once it is promoted). The primary writes batches of its log into the
//! staging log through a [`BunkerConn`](super::bunker::BunkerConn) in staging mode (strictly in
//! LSN order; each write acknowledged once durable); the [`apply::Applier`] reads the staging
//! log back and applies its entries to the data bdev in LSN order, checking every checksum,
//! and reports how far it has applied (after flushing the data bdev) so the primary may trim.
//!
//! Invariants: an entry is applied only after every entry before it was issued, and an entry
//! overlapping one still in flight waits for it; a damaged entry stops applying (with the
//! reason in status and logs), and nothing at or after it is applied. The replica only moves
//! between points that are prefixes of the primary's write order once the in-flight applies of
//! a batch land; `secondary_freeze` waits for such a point and holds it.
//!
//! Failover ([`failover`]): pull every entry after the staging end from the bunker, apply all
//! of it, and promote the replica to a primary volume with the same identity and a higher
//! epoch; the bunker learns the new epoch first, so the old primary is fenced there.

pub mod apply;
pub mod auto;
pub mod failover;
pub mod pull;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::bunker::{BunkerState, BunkerVolume};
use super::format::Superblock;
use crate::app::App;
use crate::bdev::Bdev;
use crate::reactor::Message;

/// Superblock role of a staging log.
pub const ROLE_STAGING: u8 = 2;

/// One replica volume on this node.
#[derive(Debug)]
pub struct Secondary {
    /// Volume name.
    pub name: String,
    /// The staging log, written by the primary's shipping.
    pub staging: Arc<BunkerVolume>,
    /// The replica volume.
    pub data: Arc<dyn Bdev>,
    /// Its own change log, formatted at promotion.
    pub log: Arc<dyn Bdev>,
    /// The bunker to pull from at failover.
    pub bunker: Mutex<Option<SocketAddr>>,
    /// Role and last failover.
    pub state: Mutex<SecondaryState>,
    /// Asks the applier to stop taking new entries (freeze or failover).
    pub hold: AtomicBool,
    /// The applier has stopped at a consistent point (nothing in flight).
    pub held: AtomicBool,
    /// Promoted or replaced: the applier ends.
    pub retired: AtomicBool,
}

/// Builds a secondary from its bdevs (data, staging, log): registers the staging log with
/// `bunkers` in staging mode, resuming from its superblock if it held this volume. The caller
/// starts its [`apply::Applier`].
pub fn assemble(
    bunkers: &super::bunker::Bunkers,
    pool: &crate::sys::DmaPool,
    name: &str,
    (data, staging, log): (Arc<dyn Bdev>, Arc<dyn Bdev>, Arc<dyn Bdev>),
    bunker: Option<SocketAddr>,
    resync: bool,
) -> Result<Arc<Secondary>, String> {
    let resumed = super::volume::open::read_superblock(&staging, pool)?
        .filter(|sb| sb.role == ROLE_STAGING && sb.volume_name == name);
    bunkers.absent(name)?;
    let mut st = match &resumed {
        Some(sb) => resume_staging(&staging, pool, sb)?,
        None => BunkerState::default(),
    };
    st.resync_pending |= resync;
    let vol = bunkers.create_as(name, staging.clone(), Some(data.clone()), st)?;
    Ok(Arc::new(Secondary {
        name: name.into(),
        staging: vol,
        data,
        log,
        bunker: Mutex::new(bunker),
        state: Mutex::new(SecondaryState { role: "replica".into(), ..Default::default() }),
        hold: AtomicBool::new(false),
        held: AtomicBool::new(false),
        retired: AtomicBool::new(false),
    }))
}

/// The state a staging log resumes with: what its superblock says, and (unless it was
/// resynchronising) every entry received before a crash, which the applier may have applied in
/// part: it re-applies them all before the replica is consistent.
fn resume_staging(
    staging: &Arc<dyn Bdev>,
    pool: &crate::sys::DmaPool,
    sb: &Superblock,
) -> Result<BunkerState, String> {
    let mut st = BunkerState::resumed(sb);
    if !sb.out_of_sync {
        let found = super::bunker::inventory::scan(staging, pool, sb)?;
        st.durable_end = super::bunker::inventory::contiguous_end(&found, st.applied);
        st.consistent_at = st.consistent_at.max(st.durable_end);
    }
    tracing::info!(
        volume = sb.volume_name,
        applied = sb.checkpoint_lsn,
        received = st.durable_end,
        epoch = sb.epoch,
        "staging log resumed"
    );
    Ok(st)
}

/// The staging log's superblock for state `st`, recording `applied` as applied (and whether a
/// resync is under way); takes the next superblock generation.
pub fn staging_superblock(st: &mut BunkerState, name: &str, data: &dyn Bdev, applied: u64) -> Superblock {
    st.sb_generation = st.sb_generation.max(2) + 1;
    Superblock {
        generation: st.sb_generation,
        volume_uuid: st.uuid_raw(),
        volume_name: name.into(),
        role: ROLE_STAGING,
        epoch: st.epoch,
        sector_size: st.sector,
        ring_start: 2,
        ring_sectors: st.ring_sectors,
        volume_block_size: data.block_size(),
        volume_blocks: data.num_blocks(),
        checkpoint_lsn: applied,
        head_lsn: applied,
        max_inflight_sectors: 0,
        clean_shutdown: false,
        out_of_sync: st.resync_pending,
        resync_floor: st.consistent_at,
        setup: Default::default(),
    }
}

impl Secondary {
    /// Rings the applier's reactor (after the control plane moved the staging end).
    pub fn wake_applier(&self) {
        if let Some(w) = self.staging.waker.lock().expect("waker").as_ref() {
            w.ring_doorbell_if_sleeping();
        }
    }
}

/// What `replication_status` shows of a secondary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SecondaryState {
    /// "replica", "failing-over", "primary".
    pub role: String,
    /// Entries applied since start.
    pub entries_applied: u64,
    /// Bytes received into staging since start.
    pub bytes_applied: u64,
    /// Stretches of the staging log the applier took from memory (handed over by the staging
    /// connection) and read back from the log, since start.
    pub staging_from_memory: u64,
    pub staging_reads: u64,
    /// Why applying stopped, if it did.
    pub apply_error: Option<String>,
    /// The last failover, if any.
    pub failover: Option<failover::FailoverReport>,
}

/// The secondaries of this node.
#[derive(Debug, Default)]
pub struct Secondaries {
    map: Mutex<BTreeMap<String, Arc<Secondary>>>,
}

impl Secondaries {
    /// Looks one up.
    pub fn get(&self, name: &str) -> Option<Arc<Secondary>> {
        self.map.lock().expect("secondaries lock").get(name).cloned()
    }

    /// All of them.
    pub fn list(&self) -> Vec<Arc<Secondary>> {
        self.map.lock().expect("secondaries lock").values().cloned().collect()
    }
}

/// `secondary_create`: registers the staging log (as a staging-mode bunker volume, so the
/// primary ships into it), resumes from its superblock if it held this volume, and starts the
/// applier.
pub fn create(
    app: &Arc<App>,
    name: &str,
    data: Arc<dyn Bdev>,
    staging: Arc<dyn Bdev>,
    log: Arc<dyn Bdev>,
    bunker: Option<SocketAddr>,
    resync: bool,
) -> Result<Arc<Secondary>, String> {
    let promoted = app.secondaries.get(name).filter(|s| s.retired.load(Ordering::Acquire));
    if (app.secondaries.get(name).is_some() && promoted.is_none()) || app.replication.volume(name).is_some() {
        return Err(format!("volume {name:?} already exists on this node"));
    }
    if staging.block_size() as usize > app.pool.buf_size() {
        return Err(format!("staging bdev {} has blocks larger than a DMA buffer", staging.name()));
    }
    let owner = format!("secondary {name}");
    let claimed: Vec<String> = [&data, &staging, &log].iter().map(|b| b.name().to_string()).collect();
    for (i, b) in claimed.iter().enumerate() {
        if let Err(e) = app.bdevs.claim(b, &owner) {
            claimed[..i].iter().for_each(|c| app.bdevs.release(c));
            return Err(e.to_string());
        }
    }
    let release = || claimed.iter().for_each(|c| app.bdevs.release(c));
    let sec = assemble(&app.bunkers, &app.pool, name, (data, staging, log), bunker, resync)
        .inspect_err(|_| release())?;
    start_applier(app, &sec).inspect_err(|_| {
        app.bunkers.remove(name);
        release();
    })?;
    app.secondaries.map.lock().expect("secondaries lock").insert(name.into(), sec.clone());
    tracing::info!(volume = name, "secondary ready for shipping");
    Ok(sec)
}

fn start_applier(app: &Arc<App>, sec: &Arc<Secondary>) -> Result<(), String> {
    let handles = app.runtime.handles();
    let home = &handles[(app.secondaries.list().len() + 1) % handles.len()];
    *sec.staging.waker.lock().expect("waker") = Some(home.mailbox().clone());
    let (s, pool) = (sec.clone(), app.pool.clone());
    home.send(Message::call(move |cx| match apply::Applier::new(s, pool) {
        Ok(a) => cx.spawn(Box::new(a)),
        Err(e) => tracing::error!(error = %e, "secondary applier could not start"),
    }))
    .map_err(|e| e.to_string())
}

/// Holds the applier at a consistent point (`true`) or lets it go on; returns the applied
/// end once held.
pub fn freeze(sec: &Secondary, on: bool) -> Result<u64, String> {
    sec.hold.store(on, Ordering::Release);
    if !on {
        return Ok(sec.staging.state.lock().expect("bunker state").applied);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !sec.held.load(Ordering::Acquire) {
        if let Some(e) = sec.staging.state.lock().expect("bunker state").apply_error.clone() {
            sec.hold.store(false, Ordering::Release);
            return Err(format!("the replica stopped applying and is not consistent: {e}"));
        }
        sec.wake_applier();
        if std::time::Instant::now() > deadline {
            sec.hold.store(false, Ordering::Release);
            return Err("the applier did not reach a consistent point within 30 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(sec.staging.state.lock().expect("bunker state").applied)
}

/// What `replication_status` shows for one secondary.
pub fn describe(sec: &Secondary) -> serde_json::Value {
    let st = sec.state.lock().expect("secondary state").clone();
    let staging = sec.staging.state.lock().expect("bunker state").clone();
    serde_json::json!({
        "volume": sec.name,
        "role": st.role,
        "epoch": staging.epoch,
        "primary_attached": staging.attached,
        "received": staging.durable_end,
        "applied": staging.applied,
        "frozen": sec.held.load(Ordering::Acquire),
        "consistent": staging.consistent(),
        "resynchronising": staging.resync_pending,
        "resync_blocks": staging.resync_blocks,
        "entries_applied": st.entries_applied,
        "bytes_applied": st.bytes_applied,
        "staging_from_memory": st.staging_from_memory,
        "staging_reads": st.staging_reads,
        "apply_error": staging.apply_error.or(st.apply_error),
        "bunker": sec.bunker.lock().expect("bunker addr").map(|a| a.to_string()),
        "failover": st.failover,
    })
}

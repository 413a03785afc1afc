//! Creating, listing and deleting replicated volumes and bunker logs on a running daemon (what
//! the `volume_*`, `bunker_create` and `replication_listen` RPCs do).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::bunker::BunkerConn;
use super::log::ChangeLog;
use super::volume::open::{self, Opened};
use super::volume::{ReplVolume, VolumeConfig, VolumeCore, VolumeShared};
use crate::app::App;
use crate::bdev::Channel;
use crate::net::acceptor::{Acceptor, MakeConn};
use crate::reactor::{Mailbox, Message};
use crate::sys::DmaPool;

/// Live volumes and replication ports of a daemon.
#[derive(Default)]
pub struct Replication {
    volumes: Mutex<Vec<Arc<VolumeShared>>>,
    ports: Mutex<Vec<(SocketAddr, Arc<AtomicBool>)>>,
}

impl Replication {
    /// Volumes.
    pub fn volumes(&self) -> Vec<Arc<VolumeShared>> {
        self.volumes.lock().expect("volumes lock").clone()
    }

    /// One volume.
    pub fn volume(&self, name: &str) -> Option<Arc<VolumeShared>> {
        self.volumes().into_iter().find(|v| v.name == name)
    }

    /// Replication listen addresses.
    pub fn ports(&self) -> Vec<SocketAddr> {
        self.ports.lock().expect("ports lock").iter().map(|(a, _)| *a).collect()
    }
}

/// Opens the replication port (bunker service) on `addr`.
pub fn listen(app: &Arc<App>, addr: SocketAddr) -> Result<(), String> {
    if app.replication.ports().contains(&addr) {
        return Err(format!("already listening on {addr}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (bunkers, pool) = (app.bunkers.clone(), app.pool.clone());
    let make: MakeConn = Arc::new(move |stream, peer, _local| {
        match BunkerConn::new(stream, peer, bunkers.clone(), pool.clone()) {
            Ok(c) => Some(Box::new(c)),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "replication connection setup failed");
                None
            }
        }
    });
    let acceptor = Acceptor::bind(addr, stop.clone(), "replication", make)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    app.runtime.handles()[0]
        .send(Message::call(move |cx| cx.spawn(Box::new(acceptor))))
        .map_err(|e| e.to_string())?;
    tracing::info!(%addr, "replication port open");
    app.replication.ports.lock().expect("ports lock").push((addr, stop));
    Ok(())
}

/// Creates (formatting or recovering the log) and starts a replicated volume.
pub fn create_volume(app: &Arc<App>, cfg: VolumeConfig) -> Result<Opened, String> {
    if app.replication.volume(&cfg.name).is_some() || app.bdevs.get(&cfg.name).is_ok() {
        return Err(format!("a bdev or volume named {:?} already exists", cfg.name));
    }
    if cfg.mode == super::volume::Mode::Sync {
        return Err("mode \"sync\" needs a secondary, which this node cannot attach yet".into());
    }
    if cfg.bunker.is_none() && cfg.mode == super::volume::Mode::BunkerSync {
        return Err("mode \"bunker-sync\" needs \"bunker\": \"IP:PORT\" (or use mode \"local-only\")".into());
    }
    let owner = format!("volume {}", cfg.name);
    app.bdevs.claim(cfg.data.name(), &owner).map_err(|e| e.to_string())?;
    if let Err(e) = app.bdevs.claim(cfg.log.name(), &owner) {
        app.bdevs.release(cfg.data.name());
        return Err(e.to_string());
    }
    let release = || {
        app.bdevs.release(cfg.data.name());
        app.bdevs.release(cfg.log.name());
    };
    let max_io = (app.pool.buf_size() as u32 - cfg.log.block_size()).min(128 * 1024);
    let opened = open::open(&cfg, &app.pool, max_io).map_err(|e| {
        release();
        e.to_string()
    })?;
    start(app, &cfg, &opened).inspect_err(|_| release())?;
    Ok(opened)
}

/// The shared state of an opened volume whose home reactor has `home` as mailbox.
pub fn assemble(cfg: &VolumeConfig, opened: &Opened, home: Arc<Mailbox>) -> Arc<VolumeShared> {
    let log = Arc::new(ChangeLog::new(opened.geo, opened.end, opened.sb.head_lsn.min(opened.end)));
    let shared = VolumeShared::new(
        &cfg.name,
        opened.sb.volume_uuid,
        log,
        home,
        opened.sb.setup.origin_lsn,
        (cfg.data.name(), cfg.log.name()),
    );
    // A promoted volume that restarted before any secondary attached no longer knows what its
    // failover pulled: the failback resends the whole volume.
    if opened.sb.epoch > 1 && opened.sb.setup.secondary.is_empty() && !opened.formatted {
        *shared.pulled.lock().expect("pulled ranges") = None;
    }
    Arc::new(shared)
}

/// The home-reactor poller of an assembled volume (call on that reactor: it opens channels).
pub fn home_poller(
    cfg: &VolumeConfig,
    shared: Arc<VolumeShared>,
    opened: &Opened,
    pool: DmaPool,
) -> Result<VolumeCore, String> {
    let log_ch = Channel::new(cfg.log.clone()).map_err(|e| e.to_string())?;
    let data_ch = Channel::new(cfg.data.clone()).map_err(|e| e.to_string())?;
    let (sb, dirty) = (opened.sb.clone(), opened.dirty.clone());
    Ok(VolumeCore::new(shared, pool, log_ch, data_ch, sb, dirty, cfg))
}

fn start(app: &Arc<App>, cfg: &VolumeConfig, opened: &Opened) -> Result<(), String> {
    let handles = app.runtime.handles();
    let home = &handles[app.replication.volumes().len() % handles.len()];
    let shared = assemble(cfg, opened, home.mailbox().clone());
    let (c, s, o, pool) = (cfg.clone(), shared.clone(), opened.clone(), app.pool.clone());
    home.call(move |cx| {
        cx.spawn(Box::new(home_poller(&c, s, &o, pool)?));
        Ok::<(), String>(())
    })
    .map_err(|e| e.to_string())??;
    app.bdevs
        .insert(Arc::new(ReplVolume::new(cfg.data.clone(), shared.clone())))
        .map_err(|e| e.to_string())?;
    app.replication.volumes.lock().expect("volumes lock").push(shared);
    tracing::info!(volume = cfg.name, mode = ?cfg.mode, bunker = ?cfg.bunker, home = home.id(), "volume serving");
    Ok(())
}

/// Stops and removes a volume (its bdev must not be exported).
pub fn delete_volume(app: &Arc<App>, name: &str) -> Result<(), String> {
    let v = app.replication.volume(name).ok_or_else(|| format!("volume {name:?} not found"))?;
    app.bdevs.remove(name).map_err(|e| e.to_string())?;
    v.stopped.store(true, Ordering::Release);
    v.deleted.store(true, Ordering::Release);
    v.wake_home();
    app.replication.volumes.lock().expect("volumes lock").retain(|x| x.name != name);
    let owner = format!("volume {name}");
    for b in app.bdevs.list() {
        if app.bdevs.claimed_by(b.name()).as_deref() == Some(owner.as_str()) {
            app.bdevs.release(b.name());
        }
    }
    Ok(())
}

/// Like SPDK's examine: every unclaimed bdev holding a primary's change-log superblock whose
/// data bdev is present reopens its volume (recovering it). Returns the volumes reopened.
pub fn examine(app: &Arc<App>) -> Vec<String> {
    let mut opened = Vec::new();
    for bdev in app.bdevs.list() {
        if bdev.product_name() == "ferrite replicated volume" || app.bdevs.claimed_by(bdev.name()).is_some() {
            continue;
        }
        let sb = match open::read_superblock(&bdev, &app.pool) {
            Ok(Some(sb)) => sb,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(
                    bdev = bdev.name(),
                    error = e,
                    "examine: cannot read a superblock; not reopened"
                );
                continue;
            }
        };
        if sb.role != 0 || app.replication.volume(&sb.volume_name).is_some() {
            continue;
        }
        let Ok(data) = app.bdevs.get(&sb.setup.data_bdev) else { continue };
        if app.bdevs.claimed_by(data.name()).is_some() {
            continue;
        }
        let cfg = VolumeConfig {
            name: sb.volume_name.clone(),
            data,
            log: bdev.clone(),
            mode: match sb.setup.mode {
                0 => super::volume::Mode::BunkerSync,
                2 => super::volume::Mode::Sync,
                _ => super::volume::Mode::LocalOnly,
            },
            bunker: sb.setup.bunker.parse().ok(),
            on_bunker_loss: if sb.setup.on_bunker_loss == 1 {
                super::volume::OnBunkerLoss::Stall
            } else {
                super::volume::OnBunkerLoss::LocalOnly
            },
            ack: if sb.setup.ack == 1 { super::volume::Ack::Applied } else { super::volume::Ack::Durable },
            force: false,
            secondary: sb.setup.secondary.parse().ok(),
            identity: None,
            net: Default::default(),
        };
        match create_volume(app, cfg) {
            Ok(o) => {
                tracing::info!(
                    volume = sb.volume_name,
                    log = bdev.name(),
                    replayed = o.replayed,
                    "volume found on examine and reopened"
                );
                opened.push(sb.volume_name);
            }
            Err(e) => tracing::error!(
                volume = sb.volume_name,
                log = bdev.name(),
                error = e,
                "volume found on examine could not reopen"
            ),
        }
    }
    opened
}

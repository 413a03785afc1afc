//! Operations that join the target to the rest of the daemon (bdev claims, RPC and config
//! share them): create a subsystem, add a namespace, add a listener, with the checks users
//! expect.

use std::sync::Arc;

use super::config::{parse_listen_address, NvmfSection, SubsystemSection, TransportSection};
use super::subsystem::{AnaState, Subsystem};
use super::target::TargetError;
use crate::app::App;

/// A failure with a message naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Target-level failure.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A bdev problem.
    #[error(transparent)]
    Bdev(#[from] crate::bdev::RegistryError),
    /// Anything else.
    #[error("{0}")]
    Invalid(String),
}

/// Adds a namespace backed by `bdev_name`, claiming the bdev.
pub fn add_namespace(
    app: &App,
    nqn: &str,
    bdev_name: &str,
    nsid: Option<u32>,
    uuid: Option<[u8; 16]>,
    nguid: Option<[u8; 16]>,
) -> Result<u32, SetupError> {
    let subsys = app.nvmf.subsystem(nqn)?;
    if subsys.kind != super::subsystem::SubsystemKind::Nvme {
        return Err(TargetError::Discovery.into());
    }
    let bdev = app.bdevs.get(bdev_name)?;
    app.bdevs.claim(bdev_name, &format!("subsystem {nqn}"))?;
    match subsys.add_namespace(bdev, nsid, uuid, nguid) {
        Ok(id) => {
            app.nvmf.namespaces_changed(nqn, &[id]);
            Ok(id)
        }
        Err(e) => {
            app.bdevs.release(bdev_name);
            Err(TargetError::from(e).into())
        }
    }
}

/// Deletes a subsystem and releases its bdevs.
pub fn delete_subsystem(app: &App, nqn: &str) -> Result<(), SetupError> {
    let s = app.nvmf.delete_subsystem(nqn)?;
    for ns in s.config().namespaces.values() {
        app.bdevs.release(ns.bdev.name());
    }
    Ok(())
}

fn add_subsystem(app: &Arc<App>, s: &SubsystemSection) -> Result<(), SetupError> {
    let subsys = Subsystem::new(&s.nqn, s.serial_number.as_deref(), s.model_number.as_deref())
        .map_err(TargetError::from)?;
    subsys
        .update(|c| {
            c.allow_any_host = s.allow_any_host;
            c.hosts.extend(s.hosts.iter().cloned());
            Ok(())
        })
        .map_err(TargetError::from)?;
    app.nvmf.add_subsystem(subsys)?;
    for ns in &s.namespaces {
        add_namespace(app, &s.nqn, &ns.bdev, ns.nsid, ns.uuid.map(|u| *u.as_bytes()), None)?;
    }
    for l in &s.listeners {
        let addr = parse_listen_address(l).map_err(SetupError::Invalid)?;
        app.nvmf.add_listener(&s.nqn, addr, AnaState::Optimized)?;
    }
    Ok(())
}

/// Applies the `[nvmf]` config section at start-up.
pub fn apply_config(app: &Arc<App>, section: &NvmfSection) -> Result<(), String> {
    let needs_transport = !section.subsystem.is_empty() || !section.discovery.is_empty();
    if let Some(t) = section.transport.clone().or_else(|| needs_transport.then(TransportSection::default)) {
        check_transport(app, &t).map_err(|e| e.to_string())?;
        app.nvmf.create_transport("tcp", t).map_err(|e| e.to_string())?;
    }
    for s in &section.subsystem {
        add_subsystem(app, s).map_err(|e| format!("subsystem {:?}: {e}", s.nqn))?;
    }
    for d in &section.discovery {
        let addr = parse_listen_address(d)?;
        app.nvmf.add_discovery_listener(addr).map_err(|e| format!("discovery listener: {e}"))?;
    }
    Ok(())
}

/// Checks transport limits against the daemon's memory.
pub fn check_transport(app: &App, t: &TransportSection) -> Result<(), SetupError> {
    if t.max_io_size < 4096
        || t.max_io_size as usize > app.pool.buf_size()
        || !t.max_io_size.is_power_of_two()
    {
        return Err(SetupError::Invalid(format!(
            "max_io_size {} must be a power of two from 4096 up to the DMA buffer size {}",
            t.max_io_size,
            app.pool.buf_size()
        )));
    }
    let admin_icd = crate::nvmf::tcp::conn::ADMIN_ICD as usize;
    if app.pool.buf_size() < admin_icd.max(t.in_capsule_data_size as usize) {
        return Err(SetupError::Invalid(format!(
            "the DMA buffer size {} must hold the in-capsule data ({} bytes on I/O queues, {admin_icd} on the admin queue)",
            app.pool.buf_size(),
            t.in_capsule_data_size
        )));
    }
    if t.in_capsule_data_size % 16 != 0 || t.in_capsule_data_size > 65536 {
        return Err(SetupError::Invalid(format!(
            "in_capsule_data_size {} must be a multiple of 16 up to 65536",
            t.in_capsule_data_size
        )));
    }
    if t.max_queue_depth < 2 || t.max_aq_depth < 2 || t.max_queue_depth > 4096 {
        return Err(SetupError::Invalid("queue depths must be between 2 and 4096".into()));
    }
    if t.max_io_qpairs_per_ctrlr == 0 {
        return Err(SetupError::Invalid("max_io_qpairs_per_ctrlr must be positive".into()));
    }
    Ok(())
}

//! Admin commands of a controller (I/O or discovery): Identify, Get Log Page, Set/Get
//! Features, Keep Alive, Asynchronous Event Request, and the Fabrics Property Get/Set that
//! drive enable and shutdown. Connect is the transport's (it creates the controller).
//!
//! Every command ends in a [`Completion`] carrying an NVMe status (never a Rust error); data
//! for the host is built here and cut to the length the host asked for by the transport.

use std::net::SocketAddr;

use super::config::TransportSection;
use super::ctrlr::Ctrlr;
use super::identify::{self, AnaGroup, DiscoveryEntry, IdentifyCtrlrParams, IdentifyNsParams, SmartLog};
use super::spec::{
    ctrl_bits as cb, ns_bits, prop, shutdown, version, AdminOpcode, Cap, Cc, FabricsType, FeatureCmd,
    FeatureId, GetLogPage, IdentifyCmd, IdentifyCns, LogPageId, PropertyGet, PropertySet, Sqe, Status,
};
use super::subsystem::{AnaState, SubsystemKind};
use super::target::Target;

/// The result of an admin command.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Complete now.
    Done(Completion),
    /// An Asynchronous Event Request: held until an event or teardown.
    Aer,
}

/// A completion: status, dword 0, and data for the host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// Status.
    pub status: Status,
    /// Command-specific dword 0.
    pub dw0: u32,
    /// Command-specific dword 1 (the high half of an 8-byte property).
    pub dw1: u32,
    /// Controller-to-host data.
    pub data: Option<Vec<u8>>,
}

impl Completion {
    /// Success with no data.
    pub fn ok(dw0: u32) -> Completion {
        Completion { status: Status::SUCCESS, dw0, dw1: 0, data: None }
    }
    /// Success with data.
    pub fn data(data: Vec<u8>) -> Completion {
        Completion { status: Status::SUCCESS, dw0: 0, dw1: 0, data: Some(data) }
    }
    /// An error status.
    pub fn err(status: Status) -> Completion {
        Completion { status, dw0: 0, dw1: 0, data: None }
    }
}

/// What an admin command runs against.
pub struct AdminCtx<'a> {
    /// The controller.
    pub ctrlr: &'a Ctrlr,
    /// The target (for discovery and namespaces).
    pub target: &'a Target,
    /// Transport limits.
    pub transport: &'a TransportSection,
}

/// Version reported by I/O controllers (ANA needs 1.4).
pub const IO_VS: u32 = version(1, 4, 0);
/// Version reported by discovery controllers.
pub const DISCOVERY_VS: u32 = version(1, 3, 0);
/// Asynchronous Event Request Limit (0's based).
pub const AERL: u8 = 3;
/// Keep Alive Support granularity, 100 ms units.
pub const KAS: u16 = 10;

/// Runs one admin command.
pub fn execute(cx: &AdminCtx<'_>, sqe: &Sqe, data_in: &[u8]) -> Outcome {
    let discovery = cx.ctrlr.is_discovery();
    let Some(op) = AdminOpcode::from_raw(sqe.opcode) else {
        return Outcome::Done(Completion::err(Status::INVALID_OPCODE.with_dnr()));
    };
    let done = match op {
        AdminOpcode::Fabrics => fabrics(cx, sqe),
        AdminOpcode::Identify => identify_cmd(cx, sqe),
        AdminOpcode::GetLogPage => get_log_page(cx, sqe),
        AdminOpcode::SetFeatures => set_features(cx, sqe, data_in),
        AdminOpcode::GetFeatures => get_features(cx, sqe),
        AdminOpcode::KeepAlive => Completion::ok(0),
        AdminOpcode::AsyncEventRequest => return Outcome::Aer,
        AdminOpcode::Abort if !discovery => Completion::ok(1),
        _ => Completion::err(Status::INVALID_OPCODE.with_dnr()),
    };
    Outcome::Done(done)
}

fn fabrics(cx: &AdminCtx<'_>, sqe: &Sqe) -> Completion {
    match FabricsType::from_raw(sqe.fctype()) {
        Some(FabricsType::PropertyGet) => property_get(cx, &PropertyGet::from_sqe(sqe)),
        Some(FabricsType::PropertySet) => property_set(cx, &PropertySet::from_sqe(sqe)),
        Some(FabricsType::Connect) => Completion::err(Status::COMMAND_SEQUENCE_ERROR.with_dnr()),
        _ => Completion::err(Status::INVALID_OPCODE.with_dnr()),
    }
}

/// CAP as this target reports it.
pub fn cap(t: &TransportSection) -> Cap {
    Cap {
        mqes: t.max_queue_depth.saturating_sub(1),
        cqr: true,
        to: 30,
        css: super::spec::CAP_CSS_NVM,
        ..Cap::default()
    }
}

fn property_get(cx: &AdminCtx<'_>, p: &PropertyGet) -> Completion {
    let regs = cx.ctrlr.regs();
    let vs = if cx.ctrlr.is_discovery() { DISCOVERY_VS } else { IO_VS };
    let value: u64 = match p.ofst {
        prop::CAP => cap(cx.transport).to_u64(),
        prop::VS => u64::from(vs),
        prop::CC => u64::from(regs.cc.0),
        prop::CSTS => u64::from(regs.csts.0),
        _ => return Completion::err(Status::INVALID_FIELD.with_dnr()),
    };
    Completion { dw1: (value >> 32) as u32, ..Completion::ok(value as u32) }
}

fn property_set(cx: &AdminCtx<'_>, p: &PropertySet) -> Completion {
    if p.ofst != prop::CC {
        return Completion::err(Status::INVALID_FIELD.with_dnr());
    }
    let new = Cc(p.value as u32);
    let mut regs = cx.ctrlr.regs();
    let old = regs.cc;
    regs.cc = new;
    if new.en() && !old.en() {
        regs.csts = regs.csts.with_rdy(true).with_shst(shutdown::SHST_NORMAL);
    } else if !new.en() && old.en() {
        regs.csts = regs.csts.with_rdy(false);
    }
    if new.shn() != shutdown::SHN_NONE && old.shn() == shutdown::SHN_NONE {
        regs.csts = regs.csts.with_shst(shutdown::SHST_COMPLETE);
    }
    Completion::ok(0)
}

fn identify_cmd(cx: &AdminCtx<'_>, sqe: &Sqe) -> Completion {
    let id = IdentifyCmd::from_sqe(sqe);
    let cns = IdentifyCns::from_raw(id.cns);
    if cx.ctrlr.is_discovery() && cns != Some(IdentifyCns::Controller) {
        return Completion::err(Status::INVALID_FIELD.with_dnr());
    }
    match cns {
        Some(IdentifyCns::Controller) => {
            Completion::data(identify::identify_ctrlr(&ctrlr_params(cx)).to_vec())
        }
        Some(IdentifyCns::Namespace) => identify_ns(cx, sqe.nsid),
        Some(IdentifyCns::ActiveNsList) => {
            let nsids: Vec<u32> = cx.ctrlr.subsys.config().namespaces.keys().copied().collect();
            if sqe.nsid >= 0xFFFF_FFFE {
                return Completion::err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
            }
            Completion::data(identify::active_ns_list(sqe.nsid, &nsids).to_vec())
        }
        Some(IdentifyCns::NsIdDescriptorList) => match cx.ctrlr.subsys.namespace(sqe.nsid) {
            Some(ns) => Completion::data(identify::ns_id_descriptors(Some(ns.nguid), Some(ns.uuid)).to_vec()),
            None => Completion::err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr()),
        },
        _ => Completion::err(Status::INVALID_FIELD.with_dnr()),
    }
}

fn identify_ns(cx: &AdminCtx<'_>, nsid: u32) -> Completion {
    let cfg = cx.ctrlr.subsys.config();
    let Some(ns) = cfg.namespaces.get(&nsid) else {
        // An inactive but valid id gets an all-zero structure; anything else is an error.
        return if nsid != 0 && nsid <= cfg.max_namespaces {
            Completion::data(vec![0; identify::IDENTIFY_LEN])
        } else {
            Completion::err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr())
        };
    };
    let blocks = ns.bdev.num_blocks();
    let p = IdentifyNsParams {
        nsze: blocks,
        ncap: blocks,
        nuse: blocks,
        lba_data_size_shift: ns.bdev.block_size().trailing_zeros() as u8,
        nmic: ns_bits::NMIC_SHARED,
        dlfeat: ns_bits::DLFEAT_READ_ZEROES | ns_bits::DLFEAT_WRITE_ZEROES_DEAC,
        nguid: ns.nguid,
        anagrpid: ns.anagrpid,
        ..IdentifyNsParams::default()
    };
    Completion::data(identify::identify_ns(&p).to_vec())
}

fn ctrlr_params(cx: &AdminCtx<'_>) -> IdentifyCtrlrParams {
    let c = cx.ctrlr;
    let cfg = c.subsys.config();
    let discovery = c.is_discovery();
    let vwc = cfg.namespaces.values().any(|ns| ns.bdev.volatile_write_cache());
    let icd = cx.transport.in_capsule_data_size;
    IdentifyCtrlrParams {
        serial: cfg.serial.clone(),
        model: cfg.model.clone(),
        firmware: env!("CARGO_PKG_VERSION").to_string(),
        cmic: if discovery { 0 } else { cb::CMIC_MULTI_PORT | cb::CMIC_MULTI_CTRL | cb::CMIC_ANA },
        mdts: (cx.transport.max_io_size / 4096).max(1).ilog2() as u8,
        cntlid: c.cntlid,
        ver: if discovery { DISCOVERY_VS } else { IO_VS },
        oaes: if discovery { cb::OAES_DISC_LOG_CHANGE } else { cb::OAES_NS_ATTR | cb::OAES_ANA_CHANGE },
        aerl: AERL,
        kas: KAS,
        anatt: if discovery { 0 } else { 10 },
        anacap: if discovery { 0 } else { 0x1F | cb::ANACAP_GRPID_NOT_CHANGED },
        anagrpmax: u32::from(!discovery),
        nanagrpid: u32::from(!discovery),
        maxcmd: cx.transport.max_queue_depth,
        nn: if discovery { 0 } else { cfg.max_namespaces },
        max_namespaces: if discovery { 0 } else { cfg.max_namespaces },
        oncs: if discovery { 0 } else { cb::ONCS_DSM | cb::ONCS_WRITE_ZEROES },
        vwc: vwc && !discovery,
        subnqn: c.subsys.nqn.clone(),
        ioccsz: (64 + icd) / 16,
        iorcsz: 1,
        discovery,
        ..IdentifyCtrlrParams::default()
    }
}

fn get_log_page(cx: &AdminCtx<'_>, sqe: &Sqe) -> Completion {
    let lp = GetLogPage::from_sqe(sqe);
    let page = match (LogPageId::from_raw(lp.lid), cx.ctrlr.is_discovery()) {
        (Some(LogPageId::Discovery), true) => discovery_log(cx),
        (Some(LogPageId::Error), _) => identify::error_log(1),
        (Some(LogPageId::Smart), false) => identify::smart_log(&smart(cx.ctrlr)).to_vec(),
        (Some(LogPageId::FirmwareSlot), false) => {
            identify::firmware_slot_log(env!("CARGO_PKG_VERSION")).to_vec()
        }
        (Some(LogPageId::ChangedNsList), false) => {
            identify::changed_ns_list(&cx.ctrlr.changed_ns(lp.rae)).to_vec()
        }
        (Some(LogPageId::CommandsSupported), false) => {
            identify::default_commands_supported_effects().to_vec()
        }
        (Some(LogPageId::Ana), false) => ana_log(cx, lp.lsp & 1 != 0),
        _ => return Completion::err(Status::INVALID_LOG_PAGE.with_dnr()),
    };
    let Ok(len) = usize::try_from(lp.len_bytes()) else {
        return Completion::err(Status::INVALID_FIELD.with_dnr());
    };
    match identify::partial(&page, lp.lpo, len.min(1 << 20)) {
        Ok(data) => Completion::data(data),
        Err(status) => Completion::err(status.with_dnr()),
    }
}

fn smart(c: &Ctrlr) -> SmartLog {
    use std::sync::atomic::Ordering::Relaxed;
    let n = &c.counters;
    SmartLog {
        critical_warning: 0,
        temperature_k: 273 + 30,
        available_spare: 100,
        available_spare_threshold: 10,
        percentage_used: 0,
        data_units_read: identify::data_units(u128::from(n.bytes_read.load(Relaxed))),
        data_units_written: identify::data_units(u128::from(n.bytes_written.load(Relaxed))),
        host_read_commands: u128::from(n.reads.load(Relaxed)),
        host_write_commands: u128::from(n.writes.load(Relaxed)),
        controller_busy_time: 0,
        power_cycles: 1,
        power_on_hours: 0,
        unsafe_shutdowns: 0,
        media_errors: 0,
        num_err_log_entries: 0,
    }
}

fn ana_log(cx: &AdminCtx<'_>, rgo: bool) -> Vec<u8> {
    let state = cx.ctrlr.subsys.listener_state(cx.ctrlr.local_addr).unwrap_or(AnaState::Inaccessible);
    let nsids: Vec<u32> = cx.ctrlr.subsys.config().namespaces.keys().copied().collect();
    let state = match state {
        AnaState::Optimized => identify::AnaState::Optimized,
        AnaState::NonOptimized => identify::AnaState::NonOptimized,
        AnaState::Inaccessible => identify::AnaState::Inaccessible,
        AnaState::PersistentLoss => identify::AnaState::PersistentLoss,
        AnaState::Change => identify::AnaState::Change,
    };
    let count = cx.ctrlr.ana_change_count();
    let group = AnaGroup { anagrpid: 1, change_count: count, state, nsids: &nsids };
    identify::ana_log(count, &[group], rgo)
}

/// The discovery log page as this controller's host may see it.
pub fn discovery_log(cx: &AdminCtx<'_>) -> Vec<u8> {
    let local = cx.ctrlr.local_addr;
    let mut entries = Vec::new();
    let mut current = DiscoveryEntry::tcp(
        super::DISCOVERY_NQN,
        &local.ip().to_string(),
        &local.port().to_string(),
        local.is_ipv6(),
        32,
    );
    current.subtype = identify::subtype::CURRENT_DISCOVERY;
    entries.push(current);
    for s in cx.target.subsystems() {
        if s.kind != SubsystemKind::Nvme || !s.host_allowed(&cx.ctrlr.hostnqn) {
            continue;
        }
        for l in s.config().listeners.iter() {
            entries.push(DiscoveryEntry::tcp(
                &s.nqn,
                &traddr(l.addr, local),
                &l.addr.port().to_string(),
                l.addr.is_ipv6(),
                cx.transport.max_aq_depth,
            ));
        }
    }
    identify::discovery_log(cx.target.genctr(), &entries)
}

/// The address to advertise for a listener: never a wildcard (the host could not use it), so a
/// listener on 0.0.0.0 is advertised as the address the host reached us on.
fn traddr(listener: SocketAddr, local: SocketAddr) -> String {
    if listener.ip().is_unspecified() {
        local.ip().to_string()
    } else {
        listener.ip().to_string()
    }
}

fn set_features(cx: &AdminCtx<'_>, sqe: &Sqe, _data_in: &[u8]) -> Completion {
    let f = FeatureCmd::from_sqe(sqe);
    if f.sv {
        return Completion::err(Status::FEATURE_NOT_SAVEABLE.with_dnr());
    }
    let c = cx.ctrlr;
    let mut regs = c.regs();
    match FeatureId::from_raw(f.fid) {
        Some(FeatureId::NumberOfQueues) if !c.is_discovery() => {
            if c.io_qpair_count() > 0 {
                return Completion::err(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
            }
            let (nsqr, ncqr) = super::spec::number_of_queues_requested(f.dw11);
            if nsqr == 0xFFFF || ncqr == 0xFFFF {
                return Completion::err(Status::INVALID_FIELD.with_dnr());
            }
            let granted = (nsqr.min(ncqr) + 1).min(c.max_io_queues);
            regs.io_queues = granted;
            Completion::ok(super::spec::number_of_queues_dw0(granted - 1, granted - 1))
        }
        Some(FeatureId::AsyncEventConfig) => {
            regs.aec = f.dw11;
            Completion::ok(0)
        }
        Some(FeatureId::KeepAliveTimer) => {
            c.kato_ms.store(f.dw11, std::sync::atomic::Ordering::Release);
            Completion::ok(0)
        }
        Some(FeatureId::VolatileWriteCache) if !c.is_discovery() => {
            c.vwc_enabled.store(f.dw11 & 1 != 0, std::sync::atomic::Ordering::Release);
            Completion::ok(0)
        }
        Some(FeatureId::HostIdentifier) => Completion::err(Status::COMMAND_SEQUENCE_ERROR.with_dnr()),
        Some(
            FeatureId::Arbitration
            | FeatureId::PowerManagement
            | FeatureId::TemperatureThreshold
            | FeatureId::ErrorRecovery
            | FeatureId::InterruptCoalescing
            | FeatureId::WriteAtomicityNormal,
        ) if !c.is_discovery() => {
            regs.stored[usize::from(f.fid)] = f.dw11;
            Completion::ok(0)
        }
        _ => Completion::err(Status::INVALID_FIELD.with_dnr()),
    }
}

fn get_features(cx: &AdminCtx<'_>, sqe: &Sqe) -> Completion {
    let f = FeatureCmd::from_sqe(sqe);
    let c = cx.ctrlr;
    let regs = c.regs();
    let acquire = std::sync::atomic::Ordering::Acquire;
    match FeatureId::from_raw(f.fid) {
        Some(FeatureId::NumberOfQueues) if !c.is_discovery() => {
            Completion::ok(super::spec::number_of_queues_dw0(regs.io_queues - 1, regs.io_queues - 1))
        }
        Some(FeatureId::AsyncEventConfig) => Completion::ok(regs.aec),
        Some(FeatureId::KeepAliveTimer) => Completion::ok(c.kato_ms.load(acquire)),
        Some(FeatureId::VolatileWriteCache) if !c.is_discovery() => {
            Completion::ok(u32::from(c.vwc_enabled.load(acquire)))
        }
        Some(FeatureId::HostIdentifier) => Completion::data(c.hostid.to_vec()),
        Some(
            FeatureId::Arbitration
            | FeatureId::PowerManagement
            | FeatureId::TemperatureThreshold
            | FeatureId::ErrorRecovery
            | FeatureId::InterruptCoalescing
            | FeatureId::WriteAtomicityNormal,
        ) if !c.is_discovery() => Completion::ok(regs.stored[usize::from(f.fid)]),
        _ => Completion::err(Status::INVALID_FIELD.with_dnr()),
    }
}

//! A controller: what one host's association with one subsystem shares across its queue pairs
//! (which may run on different reactors): controller id, host identity, registers (CC/CSTS),
//! features, queued asynchronous events and I/O counters.
//!
//! The admin queue pair owns the controller's lifetime: it creates it at Connect, and when it
//! closes (disconnect, keep-alive timeout, transport error) the controller fails; I/O qpairs
//! see `failed()` on their next poll and close. Admin-path state sits behind mutexes (admin
//! commands are not the data path); I/O qpairs touch only atomics.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::spec::{aer_dw0, aer_notice, aer_type, Cc, Csts};
use super::subsystem::{Subsystem, SubsystemKind};

/// Async Event Configuration bit for namespace attribute notices.
pub const AEC_NS_ATTR: u32 = 1 << 8;
/// Async Event Configuration bit for ANA change notices.
pub const AEC_ANA_CHANGE: u32 = 1 << 11;
/// Async Event Configuration bit for discovery log change notices.
pub const AEC_DISC_LOG_CHANGE: u32 = 1 << 31;

/// Controller registers and features, changed only by admin commands.
#[derive(Debug, Clone)]
pub struct CtrlrRegs {
    /// Controller Configuration.
    pub cc: Cc,
    /// Controller Status.
    pub csts: Csts,
    /// Async Event Configuration (feature 0x0B).
    pub aec: u32,
    /// I/O queues granted (Number of Queues feature), 1-based.
    pub io_queues: u16,
    /// Other features with a plain stored value, by feature id.
    pub stored: [u32; 32],
}

#[derive(Debug, Default)]
struct Events {
    pending: VecDeque<u32>,
    changed_ns: Vec<u32>,
    ana_change_count: u64,
}

/// Counters for the SMART log.
#[derive(Debug, Default)]
pub struct IoCounters {
    /// Read commands completed.
    pub reads: AtomicU64,
    /// Write commands completed.
    pub writes: AtomicU64,
    /// Bytes read.
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
}

/// A controller.
#[derive(Debug)]
pub struct Ctrlr {
    /// Controller id.
    pub cntlid: u16,
    /// Its subsystem.
    pub subsys: Arc<Subsystem>,
    /// Host NQN.
    pub hostnqn: String,
    /// Host identifier.
    pub hostid: [u8; 16],
    /// The target address the host connected to (its path, for ANA).
    pub local_addr: SocketAddr,
    /// Keep-alive timeout, milliseconds (0: none).
    pub kato_ms: AtomicU32,
    /// Largest number of I/O queues this controller may have.
    pub max_io_queues: u16,
    /// I/O statistics.
    pub counters: IoCounters,
    /// Volatile write cache enabled (feature 0x06).
    pub vwc_enabled: AtomicBool,
    regs: Mutex<CtrlrRegs>,
    events: Mutex<Events>,
    events_ready: AtomicBool,
    failed: AtomicBool,
    io_qpairs: AtomicU32,
}

impl Ctrlr {
    /// A new controller in the reset state.
    pub fn new(
        cntlid: u16,
        subsys: Arc<Subsystem>,
        hostnqn: String,
        hostid: [u8; 16],
        local_addr: SocketAddr,
        kato_ms: u32,
        max_io_queues: u16,
    ) -> Ctrlr {
        let regs = CtrlrRegs { cc: Cc(0), csts: Csts(0), aec: 0, io_queues: max_io_queues, stored: [0; 32] };
        Ctrlr {
            cntlid,
            subsys,
            hostnqn,
            hostid,
            local_addr,
            kato_ms: AtomicU32::new(kato_ms),
            max_io_queues,
            counters: IoCounters::default(),
            vwc_enabled: AtomicBool::new(true),
            regs: Mutex::new(regs),
            events: Mutex::new(Events::default()),
            events_ready: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            io_qpairs: AtomicU32::new(0),
        }
    }

    /// Whether this is a discovery controller.
    pub fn is_discovery(&self) -> bool {
        self.subsys.kind == SubsystemKind::Discovery
    }

    /// Locks the registers (admin path only).
    pub fn regs(&self) -> std::sync::MutexGuard<'_, CtrlrRegs> {
        self.regs.lock().expect("ctrlr regs lock poisoned")
    }

    /// Whether CC.EN and CSTS.RDY are set.
    pub fn enabled(&self) -> bool {
        self.regs().csts.rdy()
    }

    /// Tears the controller down; its qpairs close on their next poll.
    pub fn fail(&self, why: &str) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::info!(
                cntlid = self.cntlid,
                subnqn = self.subsys.nqn,
                hostnqn = self.hostnqn,
                why,
                "controller torn down"
            );
        }
    }

    /// Whether the controller was torn down.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// An I/O qpair joined.
    pub fn io_qpair_added(&self) {
        self.io_qpairs.fetch_add(1, Ordering::AcqRel);
    }

    /// An I/O qpair left.
    pub fn io_qpair_removed(&self) {
        self.io_qpairs.fetch_sub(1, Ordering::AcqRel);
    }

    /// Live I/O qpairs.
    pub fn io_qpair_count(&self) -> u32 {
        self.io_qpairs.load(Ordering::Acquire)
    }

    fn push_event(&self, mask: u32, dw0: u32, f: impl FnOnce(&mut Events)) {
        let mut ev = self.events.lock().expect("events lock poisoned");
        f(&mut ev);
        if self.regs().aec & mask != 0 && !ev.pending.contains(&dw0) {
            ev.pending.push_back(dw0);
            self.events_ready.store(true, Ordering::Release);
        }
    }

    /// Namespaces were attached, detached or resized.
    pub fn notify_ns_change(&self, nsids: &[u32]) {
        let dw0 = aer_dw0(aer_type::NOTICE, aer_notice::NAMESPACE_ATTRIBUTE_CHANGED, 0x04);
        self.push_event(AEC_NS_ATTR, dw0, |ev| {
            for n in nsids {
                if !ev.changed_ns.contains(n) {
                    ev.changed_ns.push(*n);
                }
            }
        });
    }

    /// The ANA state of a path changed.
    pub fn notify_ana_change(&self) {
        let dw0 = aer_dw0(aer_type::NOTICE, aer_notice::ANA_CHANGE, 0x0C);
        self.push_event(AEC_ANA_CHANGE, dw0, |ev| ev.ana_change_count += 1);
    }

    /// Whether an event waits for an AER (one atomic load).
    pub fn has_event(&self) -> bool {
        self.events_ready.load(Ordering::Acquire)
    }

    /// The next event's completion dword 0.
    pub fn take_event(&self) -> Option<u32> {
        let mut ev = self.events.lock().expect("events lock poisoned");
        let e = ev.pending.pop_front();
        self.events_ready.store(!ev.pending.is_empty(), Ordering::Release);
        e
    }

    /// The changed-namespace list; cleared unless `retain`.
    pub fn changed_ns(&self, retain: bool) -> Vec<u32> {
        let mut ev = self.events.lock().expect("events lock poisoned");
        if retain {
            ev.changed_ns.clone()
        } else {
            std::mem::take(&mut ev.changed_ns)
        }
    }

    /// The ANA change count.
    pub fn ana_change_count(&self) -> u64 {
        self.events.lock().expect("events lock poisoned").ana_change_count
    }
}

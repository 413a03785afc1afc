//! The NVMe-oF target: subsystems (with the discovery subsystem), the TCP transport settings,
//! listening ports and live controllers. Changed by the control plane; read by qpairs at
//! connect time.
//!
//! Invariants: a port is listened on while any subsystem (or the discovery service) uses it;
//! cntlids are unique across the target and never 0 or ≥ 0xFFF0; the discovery generation
//! counter changes whenever what a discovery log page would show changes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::config::TransportSection;
use super::ctrlr::Ctrlr;
use super::subsystem::{AnaState, Listener, Subsystem, SubsystemError, SubsystemKind};
use super::DISCOVERY_NQN;
use crate::reactor::{Message, ReactorHandle};
use crate::sys::DmaPool;

/// A target operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No such subsystem.
    #[error("subsystem {0:?} not found")]
    NoSubsystem(String),
    /// Name taken.
    #[error("subsystem {0:?} already exists")]
    Exists(String),
    /// The TCP transport has not been created.
    #[error("the TCP transport does not exist (call nvmf_create_transport first)")]
    NoTransport,
    /// Transport exists.
    #[error("transport TCP already exists")]
    TransportExists,
    /// Only TCP is offered.
    #[error("transport type {0:?} is not supported (only TCP)")]
    BadTransport(String),
    /// A port could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A subsystem rule.
    #[error(transparent)]
    Subsystem(#[from] SubsystemError),
    /// The operation does not apply to the discovery subsystem.
    #[error("not allowed on the discovery subsystem")]
    Discovery,
}

struct Port {
    stop: Arc<AtomicBool>,
    users: usize,
}

/// The target.
pub struct Target {
    subsystems: RwLock<BTreeMap<String, Arc<Subsystem>>>,
    transport: RwLock<Option<TransportSection>>,
    ports: Mutex<BTreeMap<SocketAddr, Port>>,
    discovery_ports: Mutex<Vec<SocketAddr>>,
    ctrlrs: Mutex<BTreeMap<u16, Arc<Ctrlr>>>,
    next_cntlid: AtomicU16,
    genctr: AtomicU64,
    /// I/O buffers.
    pub pool: DmaPool,
    reactors: Vec<ReactorHandle>,
}

impl Target {
    /// An empty target with the discovery subsystem.
    pub fn new(pool: DmaPool, reactors: Vec<ReactorHandle>) -> Arc<Target> {
        let mut subs = BTreeMap::new();
        subs.insert(DISCOVERY_NQN.to_string(), Arc::new(Subsystem::discovery()));
        Arc::new(Target {
            subsystems: RwLock::new(subs),
            transport: RwLock::new(None),
            ports: Mutex::new(BTreeMap::new()),
            discovery_ports: Mutex::new(Vec::new()),
            ctrlrs: Mutex::new(BTreeMap::new()),
            next_cntlid: AtomicU16::new(1),
            genctr: AtomicU64::new(1),
            pool,
            reactors,
        })
    }

    /// Creates the TCP transport.
    pub fn create_transport(&self, trtype: &str, t: TransportSection) -> Result<(), TargetError> {
        if !trtype.eq_ignore_ascii_case("tcp") {
            return Err(TargetError::BadTransport(trtype.to_string()));
        }
        let mut cur = self.transport.write().expect("transport lock");
        if cur.is_some() {
            return Err(TargetError::TransportExists);
        }
        *cur = Some(t);
        Ok(())
    }

    /// Transport settings (defaults if not created: only used by qpairs after a listener, which
    /// needs the transport, accepted them).
    pub fn transport(&self) -> TransportSection {
        self.transport.read().expect("transport lock").clone().unwrap_or_default()
    }

    fn require_transport(&self) -> Result<(), TargetError> {
        self.transport.read().expect("transport lock").as_ref().map(|_| ()).ok_or(TargetError::NoTransport)
    }

    /// Looks a subsystem up.
    pub fn subsystem(&self, nqn: &str) -> Result<Arc<Subsystem>, TargetError> {
        let subs = self.subsystems.read().expect("subsystems lock");
        subs.get(nqn).cloned().ok_or_else(|| TargetError::NoSubsystem(nqn.to_string()))
    }

    /// All subsystems, discovery first.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        let subs = self.subsystems.read().expect("subsystems lock");
        let mut v: Vec<_> = subs.values().cloned().collect();
        v.sort_by_key(|s| s.kind != SubsystemKind::Discovery);
        v
    }

    /// Adds a subsystem.
    pub fn add_subsystem(&self, s: Subsystem) -> Result<Arc<Subsystem>, TargetError> {
        let mut subs = self.subsystems.write().expect("subsystems lock");
        if subs.contains_key(&s.nqn) {
            return Err(TargetError::Exists(s.nqn));
        }
        let s = Arc::new(s);
        subs.insert(s.nqn.clone(), s.clone());
        drop(subs);
        self.bump_genctr();
        Ok(s)
    }

    /// Deletes a subsystem: stops its ports (if unused elsewhere) and tears its controllers down.
    pub fn delete_subsystem(&self, nqn: &str) -> Result<Arc<Subsystem>, TargetError> {
        if nqn == DISCOVERY_NQN {
            return Err(TargetError::Discovery);
        }
        let s = self.subsystems.write().expect("subsystems lock").remove(nqn);
        let s = s.ok_or_else(|| TargetError::NoSubsystem(nqn.to_string()))?;
        for l in s.config().listeners.clone() {
            self.release_port(l.addr);
        }
        for c in self.ctrlrs_of(nqn) {
            c.fail("subsystem deleted");
        }
        self.bump_genctr();
        Ok(s)
    }

    /// Adds a listener to a subsystem, opening the port if needed.
    pub fn add_listener(
        self: &Arc<Self>,
        nqn: &str,
        addr: SocketAddr,
        ana: AnaState,
    ) -> Result<(), TargetError> {
        self.require_transport()?;
        if nqn == DISCOVERY_NQN {
            return self.add_discovery_listener(addr);
        }
        let s = self.subsystem(nqn)?;
        if s.listener_state(addr).is_some() {
            return Err(SubsystemError::ListenerExists(addr).into());
        }
        self.acquire_port(addr)?;
        s.update(|c| {
            c.listeners.push(Listener { addr, ana_state: ana });
            Ok(())
        })?;
        self.bump_genctr();
        Ok(())
    }

    /// Removes a listener.
    pub fn remove_listener(&self, nqn: &str, addr: SocketAddr) -> Result<(), TargetError> {
        let s = self.subsystem(nqn)?;
        s.update(|c| {
            let before = c.listeners.len();
            c.listeners.retain(|l| l.addr != addr);
            if c.listeners.len() == before {
                return Err(SubsystemError::NoListener(addr));
            }
            Ok(())
        })?;
        self.release_port(addr);
        self.bump_genctr();
        Ok(())
    }

    /// Serves discovery on `addr`.
    pub fn add_discovery_listener(self: &Arc<Self>, addr: SocketAddr) -> Result<(), TargetError> {
        let mut d = self.discovery_ports.lock().expect("discovery lock");
        if d.contains(&addr) {
            return Err(SubsystemError::ListenerExists(addr).into());
        }
        self.acquire_port(addr)?;
        d.push(addr);
        Ok(())
    }

    /// Whether `addr` serves discovery (explicitly, or as any NVM listener port).
    pub fn serves_discovery(&self, addr: SocketAddr) -> bool {
        self.discovery_ports.lock().expect("discovery lock").contains(&addr)
            || self.ports.lock().expect("ports lock").contains_key(&addr)
    }

    fn acquire_port(self: &Arc<Self>, addr: SocketAddr) -> Result<(), TargetError> {
        let mut ports = self.ports.lock().expect("ports lock");
        if let Some(p) = ports.get_mut(&addr) {
            p.users += 1;
            return Ok(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = super::tcp::listener::bind(addr, self.clone(), stop.clone())
            .map_err(|source| TargetError::Listen { addr, source })?;
        let reactor = self.reactors.first().expect("a target has reactors");
        reactor
            .send(Message::call(move |cx| cx.spawn(Box::new(acceptor))))
            .map_err(|e| TargetError::Listen { addr, source: std::io::Error::other(e.to_string()) })?;
        tracing::info!(%addr, "NVMe/TCP listening");
        ports.insert(addr, Port { stop, users: 1 });
        Ok(())
    }

    fn release_port(&self, addr: SocketAddr) {
        let mut ports = self.ports.lock().expect("ports lock");
        if let Some(p) = ports.get_mut(&addr) {
            p.users -= 1;
            if p.users == 0 {
                p.stop.store(true, Ordering::Release);
                ports.remove(&addr);
                self.wake_all();
            }
        }
    }

    /// Changes the ANA state of a subsystem's listener and tells its controllers.
    pub fn set_ana_state(&self, nqn: &str, addr: SocketAddr, ana: AnaState) -> Result<(), TargetError> {
        let s = self.subsystem(nqn)?;
        s.update(|c| {
            let l =
                c.listeners.iter_mut().find(|l| l.addr == addr).ok_or(SubsystemError::NoListener(addr))?;
            l.ana_state = ana;
            Ok(())
        })?;
        for c in self.ctrlrs_of(nqn) {
            c.notify_ana_change();
        }
        self.wake_all();
        Ok(())
    }

    /// Tells a subsystem's controllers that namespaces changed.
    pub fn namespaces_changed(&self, nqn: &str, nsids: &[u32]) {
        for c in self.ctrlrs_of(nqn) {
            c.notify_ns_change(nsids);
        }
        self.wake_all();
    }

    /// Allocates a controller id.
    pub fn alloc_cntlid(&self) -> Option<u16> {
        let ctrlrs = self.ctrlrs.lock().expect("ctrlrs lock");
        (0..0xFFEFu32).find_map(|_| {
            let id = self.next_cntlid.fetch_add(1, Ordering::Relaxed);
            let id = if id == 0 || id >= 0xFFF0 {
                self.next_cntlid.store(2, Ordering::Relaxed);
                1
            } else {
                id
            };
            (!ctrlrs.contains_key(&id)).then_some(id)
        })
    }

    /// Registers a new controller.
    pub fn register_ctrlr(&self, c: Arc<Ctrlr>) {
        self.ctrlrs.lock().expect("ctrlrs lock").insert(c.cntlid, c);
    }

    /// Forgets a controller (its admin queue closed).
    pub fn unregister_ctrlr(&self, cntlid: u16) {
        self.ctrlrs.lock().expect("ctrlrs lock").remove(&cntlid);
    }

    /// A live controller by id.
    pub fn ctrlr(&self, cntlid: u16) -> Option<Arc<Ctrlr>> {
        self.ctrlrs.lock().expect("ctrlrs lock").get(&cntlid).cloned()
    }

    /// Controllers of a subsystem.
    pub fn ctrlrs_of(&self, nqn: &str) -> Vec<Arc<Ctrlr>> {
        let ctrlrs = self.ctrlrs.lock().expect("ctrlrs lock");
        ctrlrs.values().filter(|c| c.subsys.nqn == nqn).cloned().collect()
    }

    /// Number of live controllers.
    pub fn ctrlr_count(&self) -> usize {
        self.ctrlrs.lock().expect("ctrlrs lock").len()
    }

    /// The discovery generation counter.
    pub fn genctr(&self) -> u64 {
        self.genctr.load(Ordering::Acquire)
    }

    /// Records a change visible in discovery log pages.
    pub fn bump_genctr(&self) {
        self.genctr.fetch_add(1, Ordering::AcqRel);
    }

    /// Wakes every reactor so sleeping qpairs notice control-plane changes at once.
    pub fn wake_all(&self) {
        for r in &self.reactors {
            let _ = r.send(Message::call(|_| {}));
        }
    }
}

//! Failover on the secondary (the seeds' "manual update initiation"): fence the old primary,
//! pull from the bunker every log block after the staging end, apply everything in order, and
//! promote the replica to a primary volume with the same UUID (so the same NGUID/UUID over
//! NVMe/TCP) and a higher epoch. Control plane: runs on the RPC thread, blocking.
//!
//! Order matters for fencing: the staging log's epoch is bumped first (the old primary's
//! shipping is refused from then on), and the bunker learns the new epoch in the pull's Hello
//! (the old primary is refused there too, and told it is fenced).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Secondary;
use crate::app::App;
use std::collections::BTreeMap;

use crate::bdev::{BdevIo, Channel, IoType};
use crate::replication::log::LogGeometry;
use crate::replication::manager;
use crate::replication::volume::{Mode, OnBunkerLoss, VolumeConfig};
use crate::replication::wire::Msg;

/// How long the bunker may stay silent during the pull.
const PULL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long applying the pulled tail may take.
const APPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// What a failover did, with timings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FailoverReport {
    /// The epoch the volume now serves at.
    pub epoch: u64,
    /// The staging end before the pull (what shipping had delivered).
    pub received_before: u64,
    /// The log end after the pull: everything below is applied.
    pub end: u64,
    /// Bytes pulled from the bunker.
    pub bytes_from_bunker: u64,
    /// The bunker pulled from, or why not.
    pub bunker: Option<String>,
    /// Time to pull, to apply, and in all (ms).
    pub pull_ms: u64,
    pub apply_ms: u64,
    pub total_ms: u64,
    /// The subsystem the volume was exported on, if asked.
    pub exported_on: Option<String>,
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct FailoverRequest {
    /// Bunker to pull from (else the one given at `secondary_create`).
    pub bunker: Option<SocketAddr>,
    /// Export the promoted volume on this subsystem.
    pub nqn: Option<String>,
    /// Promote even if the bunker cannot be reached (acknowledged writes may be lost).
    pub force: bool,
    /// Planned (migration): the primary drained up to this LSN, which this secondary must
    /// hold already; the bunker is then only told the new epoch.
    pub end: Option<u64>,
}

/// Runs a failover of `sec` to completion.
pub fn failover(
    app: &Arc<App>,
    sec: &Arc<Secondary>,
    req: &FailoverRequest,
) -> Result<FailoverReport, String> {
    let started = Instant::now();
    {
        let mut st = sec.state.lock().expect("secondary state");
        if st.role != "replica" {
            return Err(format!("volume {:?} is {}, not a replica", sec.name, st.role));
        }
        st.role = "failing-over".into();
    }
    let result = run(app, sec, req, started);
    let mut st = sec.state.lock().expect("secondary state");
    match &result {
        Ok(r) => {
            st.role = "primary".into();
            st.failover = Some(r.clone());
        }
        Err(_) => st.role = "replica".into(),
    }
    result
}

fn run(
    app: &Arc<App>,
    sec: &Arc<Secondary>,
    req: &FailoverRequest,
    started: Instant,
) -> Result<FailoverReport, String> {
    let mut report = FailoverReport::default();
    let (epoch, geo, uuid, from) = {
        let mut st = sec.staging.state.lock().expect("bunker state");
        if st.ring_sectors == 0 {
            return Err("no primary ever shipped to this secondary: nothing to fail over".into());
        }
        if st.resync_pending && !req.force {
            return Err("the replica is being resynchronised (it fell out of step with the primary) and is \
                        not a consistent image: promoting it would serve a mix of old and new blocks; \
                        pass \"force\": true to promote it anyway"
                .into());
        }
        if let Some(end) = req.end.filter(|&e| st.durable_end < e) {
            return Err(format!(
                "planned failover: the primary drained to LSN {end} but this secondary holds only up to {}",
                st.durable_end
            ));
        }
        st.epoch += 1;
        let geo = LogGeometry { sector: st.sector, ring_start: 2, ring_sectors: st.ring_sectors };
        (st.epoch, geo, st.uuid_raw(), st.durable_end)
    };
    tracing::warn!(volume = sec.name, epoch, "failover: the old primary is fenced from here on");
    report.epoch = epoch;
    report.received_before = from;
    let bunker = req.bunker.or(*sec.bunker.lock().expect("bunker addr"));
    match bunker.map(|addr| pull(app, sec, addr, epoch, geo, uuid, from)) {
        Some(Ok(bytes)) => {
            report.bytes_from_bunker = bytes;
            report.bunker = bunker.map(|a| a.to_string());
        }
        Some(Err(e)) if !req.force => return Err(format!("{e}; the volume is fenced at epoch {epoch}: retry, or pass \"force\": true to promote without the bunker's tail")),
        Some(Err(e)) => report.bunker = Some(format!("not reached ({e}); promoted without its tail")),
        None if req.end.is_some() => report.bunker = None,
        None if !req.force => return Err("no bunker known: give \"bunker\": \"IP:PORT\", or \"force\": true to promote without it".into()),
        None => report.bunker = None,
    }
    report.pull_ms = started.elapsed().as_millis() as u64;
    report.end = apply_all(sec)?;
    report.apply_ms = started.elapsed().as_millis() as u64 - report.pull_ms;
    promote(app, sec, uuid, epoch)?;
    if let Some(nqn) = &req.nqn {
        crate::nvmf::setup::add_namespace(app, nqn, &sec.name, None, None, None)
            .map_err(|e| e.to_string())?;
        report.exported_on = Some(nqn.clone());
    }
    report.total_ms = started.elapsed().as_millis() as u64;
    tracing::info!(volume = sec.name, ?report, "failover complete: serving as primary");
    Ok(report)
}

/// Streams `[from, bunker's end)` of the bunker's copy into the staging log; returns bytes.
fn pull(
    app: &App,
    sec: &Secondary,
    addr: SocketAddr,
    epoch: u64,
    geo: LogGeometry,
    uuid: [u8; 16],
    from: u64,
) -> Result<u64, String> {
    let mut s = TcpStream::connect_timeout(&addr, PULL_TIMEOUT).map_err(|e| format!("bunker {addr}: {e}"))?;
    s.set_read_timeout(Some(PULL_TIMEOUT)).map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let hello = Msg::Hello {
        volume: sec.name.clone(),
        uuid,
        epoch,
        sector: geo.sector,
        ring_sectors: geo.ring_sectors,
        head: from,
    };
    let mut inbox = Vec::new();
    send(&mut s, &hello)?;
    let to = match recv(&mut s, &mut inbox)? {
        Msg::HelloAck { durable_end } => durable_end,
        other => return Err(format!("bunker {addr} refused the pull: {other:?}")),
    };
    if to <= from {
        return Ok(0);
    }
    send(&mut s, &Msg::Read { from, to })?;
    let mut w = Pipeline::new(Channel::new(sec.staging.log.clone()).map_err(|e| e.to_string())?, from);
    let mut pos = from;
    loop {
        match recv(&mut s, &mut inbox)? {
            Msg::ReadData { data, .. } if data.is_empty() => break,
            Msg::ReadData { lsn, data } if lsn == pos && data.len() % geo.sector as usize == 0 => {
                let n = (data.len() / geo.sector as usize) as u64;
                w.write(&app.pool, geo.block_of(lsn), lsn, n, &data)?;
                pos += n;
            }
            Msg::HeartbeatAck { .. } | Msg::Ack { .. } => {}
            other => {
                return Err(format!("bunker {addr} sent {other:?} during the pull (expected LSN {pos})"))
            }
        }
        w.reap()?;
        w.publish(sec);
    }
    w.finish(sec)?;
    let bytes = (pos - from) * u64::from(geo.sector);
    tracing::info!(volume = sec.name, from, to = pos, bytes, "pulled the log tail from the bunker");
    Ok(bytes)
}

/// Writes of the pulled log, several in flight (made durable by one flush at the end); the
/// applier may apply what has been written meanwhile.
struct Pipeline {
    ch: Channel,
    inflight: BTreeMap<u64, (u64, u64)>,
    durable: BTreeMap<u64, u64>,
    end: u64,
    tag: u64,
    done: Vec<crate::bdev::IoCompletion>,
}

/// Pulled chunks being written at once.
const PULL_WRITES: usize = 16;

impl Pipeline {
    fn new(ch: Channel, from: u64) -> Pipeline {
        Pipeline {
            ch,
            inflight: BTreeMap::new(),
            durable: BTreeMap::new(),
            end: from,
            tag: 0,
            done: Vec::new(),
        }
    }

    fn write(
        &mut self,
        pool: &crate::sys::DmaPool,
        block: u64,
        lsn: u64,
        n: u64,
        data: &[u8],
    ) -> Result<(), String> {
        while self.inflight.len() >= PULL_WRITES {
            self.reap()?;
        }
        let mut buf = pool.alloc().ok_or("out of DMA buffers for the pull")?;
        buf.set_len(data.len());
        buf.as_mut_slice().copy_from_slice(data);
        self.tag += 1;
        let io = BdevIo {
            ty: IoType::Write,
            offset_blocks: block,
            num_blocks: n as u32,
            buf: Some(buf),
            fua: false,
            tag: self.tag,
        };
        self.ch.submit(io).map_err(|_| "staging queue full during the pull".to_string())?;
        self.inflight.insert(self.tag, (lsn, n));
        Ok(())
    }

    fn reap(&mut self) -> Result<(), String> {
        let mut done = std::mem::take(&mut self.done);
        if self.ch.poll(&mut done) == 0 {
            std::thread::yield_now();
        }
        for c in done.drain(..) {
            let (lsn, n) = self.inflight.remove(&c.tag).ok_or("unknown pull completion")?;
            if !c.status.is_success() {
                return Err(format!("writing the pulled log at LSN {lsn}: {}", c.status));
            }
            self.durable.insert(lsn, n);
        }
        self.done = done;
        while let Some(n) = self.durable.remove(&self.end) {
            self.end += n;
        }
        Ok(())
    }

    /// Lets the applier see what is durable so far.
    fn publish(&mut self, sec: &Secondary) {
        let mut st = sec.staging.state.lock().expect("bunker state");
        st.durable_end = st.durable_end.max(self.end);
        drop(st);
        sec.wake_applier();
    }

    fn finish(mut self, sec: &Secondary) -> Result<(), String> {
        let deadline = Instant::now() + PULL_TIMEOUT;
        while !self.inflight.is_empty() {
            self.reap()?;
            if Instant::now() > deadline {
                return Err("the pulled log did not become durable in time".into());
            }
        }
        // One flush makes the whole pulled tail durable (a crash before it re-runs the pull).
        crate::bdev::sync::op(&mut self.ch, IoType::Flush, 0, 0)
            .map_err(|e| format!("flushing the staging log: {e}"))?;
        self.publish(sec);
        Ok(())
    }
}

fn send(s: &mut TcpStream, m: &Msg) -> Result<(), String> {
    let mut out = Vec::new();
    m.encode(&mut out);
    s.write_all(&out).map_err(|e| format!("sending to the bunker: {e}"))
}

fn recv(s: &mut TcpStream, inbox: &mut Vec<u8>) -> Result<Msg, String> {
    loop {
        match Msg::decode(inbox) {
            Ok(Some((m, used))) => {
                inbox.drain(..used);
                return Ok(m);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("bad frame from the bunker: {e}")),
        }
        let mut chunk = [0u8; 64 << 10];
        match s.read(&mut chunk) {
            Ok(0) => return Err("the bunker closed the connection".into()),
            Ok(n) => inbox.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from the bunker: {e}")),
        }
    }
}

/// Waits until the applier has applied (and made durable) everything staged, then holds it.
fn apply_all(sec: &Secondary) -> Result<u64, String> {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    loop {
        let st = sec.staging.state.lock().expect("bunker state").clone();
        if let Some(e) = st.apply_error {
            return Err(format!("the replica cannot be brought up to date: {e}"));
        }
        if st.applied >= st.durable_end {
            break;
        }
        sec.wake_applier();
        if Instant::now() > deadline {
            return Err(format!("applying did not finish: applied {} of {}", st.applied, st.durable_end));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let end = super::freeze(sec, true)?;
    Ok(end)
}

/// Turns the replica into a primary volume: its own change log, the volume's UUID, the new
/// epoch; no bunker yet (the old one sits by the old primary).
fn promote(app: &Arc<App>, sec: &Secondary, uuid: [u8; 16], epoch: u64) -> Result<(), String> {
    sec.retired.store(true, Ordering::Release);
    sec.wake_applier();
    app.bunkers.remove(&sec.name);
    sec.staging.state.lock().expect("bunker state").attached = false;
    for b in [&sec.data, &sec.log] {
        app.bdevs.release(b.name());
    }
    let cfg = VolumeConfig {
        name: sec.name.clone(),
        data: sec.data.clone(),
        log: sec.log.clone(),
        mode: Mode::LocalOnly,
        bunker: None,
        on_bunker_loss: OnBunkerLoss::LocalOnly,
        force: true,
        secondary: None,
        identity: Some((uuid, epoch)),
        net: Default::default(),
    };
    manager::create_volume(app, cfg).map(|_| ())
}

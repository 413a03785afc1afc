//! A userspace TCP fault proxy for tests (the kernel here has no netem): it owns a listening
//! socket, one upstream connection per accepted client, and the faults applied between them —
//! a one-way delay, a bandwidth limit (token bucket per direction), a stall (`pause`) and a
//! partition (`cut`). Driven from Rust ([`Proxy`]) or over a line-oriented control port
//! ([`ControlCmd`]; `ferrite proxy --control`).
//!
//! This is a test tool, not the data path: plain threads and blocking sockets. Each connection
//! has, per direction, a reader that stamps every chunk with its read time and queues it (bounded
//! by [`ProxyConfig::queue_limit`]: the reader blocks when full) and a writer that holds each
//! chunk until `read_time + delay`, then paces it through the token bucket. A peer closing its
//! side is forwarded as a half-close; an error on either side closes the pair.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// How long waits sleep before looking at the settings again.
const TICK: Duration = Duration::from_millis(5);
/// Timeout for connecting upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest control line accepted.
const MAX_LINE: usize = 4096;

/// Megabits per second as bytes per second (`rate` on the control port and CLI).
pub fn mbit(n: f64) -> u64 {
    (n * 125_000.0) as u64
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect (port 0: any free port; see [`Proxy::local_addr`]).
    pub listen: SocketAddr,
    /// Where each connection is forwarded.
    pub to: SocketAddr,
    /// One-way delay added to every chunk, each direction.
    pub delay: Duration,
    /// Bandwidth limit per direction, bytes per second; `None`: unlimited.
    pub rate: Option<u64>,
    /// Control port address, if any.
    pub control: Option<SocketAddr>,
    /// Bytes queued per direction before the reader blocks (back-pressure).
    pub queue_limit: usize,
}

impl ProxyConfig {
    /// Forwards `listen` to `to` with no faults and no control port.
    pub fn new(listen: SocketAddr, to: SocketAddr) -> ProxyConfig {
        ProxyConfig { listen, to, delay: Duration::ZERO, rate: None, control: None, queue_limit: 64 << 20 }
    }
}

/// Counters and state, as `stats` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    /// Connections open now.
    pub connections: usize,
    /// Connections accepted since start (including refused ones while cut).
    pub accepted: u64,
    /// Bytes forwarded client → upstream.
    pub bytes_up: u64,
    /// Bytes forwarded upstream → client.
    pub bytes_down: u64,
    /// Bytes read but not yet forwarded, both directions.
    pub queued: u64,
    /// `open`, `paused` or `cut`.
    pub state: String,
    /// Current delay, milliseconds.
    pub delay_ms: u64,
    /// Current rate limit, bytes per second (0: unlimited).
    pub rate_bytes_per_sec: u64,
}

/// A control-port command (one per line).
#[derive(Debug, Clone, PartialEq)]
pub enum ControlCmd {
    /// `delay MS`.
    Delay(Duration),
    /// `rate MBIT` (0: unlimited); held as bytes per second.
    Rate(Option<u64>),
    /// `cut`.
    Cut,
    /// `heal`.
    Heal,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `stats`.
    Stats,
}

const USAGE: &str = "commands: delay MS, rate MBIT, cut, heal, pause, resume, stats";

impl ControlCmd {
    /// Parses one line.
    pub fn parse(line: &str) -> Result<ControlCmd, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let cmd = match words.as_slice() {
            ["delay", ms] => ControlCmd::Delay(Duration::from_millis(parse_num(ms, "milliseconds")?)),
            ["rate", m] => ControlCmd::Rate(parse_rate(m)?),
            ["cut"] => ControlCmd::Cut,
            ["heal"] => ControlCmd::Heal,
            ["pause"] => ControlCmd::Pause,
            ["resume"] => ControlCmd::Resume,
            ["stats"] => ControlCmd::Stats,
            [] => return Err(format!("empty command; {USAGE}")),
            [w @ ("delay" | "rate"), ..] => return Err(format!("{w} takes exactly one number")),
            [w @ ("cut" | "heal" | "pause" | "resume" | "stats"), ..] => {
                return Err(format!("{w} takes no argument"))
            }
            [w, ..] => return Err(format!("unknown command '{w}'; {USAGE}")),
        };
        Ok(cmd)
    }
}

fn parse_num(s: &str, what: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("'{s}' is not a whole number of {what}"))
}

fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    let m: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of Mbit/s"))?;
    if !m.is_finite() || m < 0.0 {
        return Err(format!("rate must be a number of Mbit/s ≥ 0, not '{s}'"));
    }
    let bytes = mbit(m);
    Ok(if m == 0.0 { None } else { Some(bytes.max(1)) })
}

/// A running proxy; dropping it closes everything and stops its threads.
pub struct Proxy {
    shared: Arc<Shared>,
    local: SocketAddr,
    control: Option<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Binds the listening (and control) sockets and starts forwarding.
    pub fn start(cfg: ProxyConfig) -> std::io::Result<Proxy> {
        let listener = nonblocking_listener(cfg.listen)?;
        let local = listener.local_addr()?;
        let control = cfg.control.map(nonblocking_listener).transpose()?;
        let control_addr = control.as_ref().map(TcpListener::local_addr).transpose()?;
        let shared = Arc::new(Shared::new(&cfg));
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(&s, &listener))?,
        );
        if let Some(control) = control {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("proxy-control".into())
                    .spawn(move || control_loop(&s, &control))?,
            );
        }
        Ok(Proxy { shared, local, control: control_addr, threads })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The control port's address, if one was asked for.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control
    }

    /// Closes every proxied connection and closes new ones on accept until [`Proxy::heal`];
    /// returns how many were closed.
    pub fn cut(&self) -> usize {
        self.shared.cut()
    }

    /// Lets new connections through again.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Stops forwarding, connections kept open: data queues up (a stalled link).
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Forwards again after [`Proxy::pause`].
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Sets the one-way delay (applies to data already queued too).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay_us.store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Sets the bandwidth limit per direction in bytes per second ([`mbit`] converts); `None`:
    /// unlimited.
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.shared.rate.store(bytes_per_sec.unwrap_or(0), Ordering::SeqCst);
    }

    /// Counters and state.
    pub fn stats(&self) -> ProxyStats {
        self.shared.stats()
    }

    /// Applies a control command; returns the answer line (`ok ...`).
    pub fn apply(&self, cmd: &ControlCmd) -> String {
        self.shared.apply(cmd)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.close_all();
        self.shared.close_controls();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.shared.conns.lock().map(|c| !c.is_empty()).unwrap_or(false) && Instant::now() < deadline {
            std::thread::sleep(TICK);
        }
    }
}

fn nonblocking_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// State shared by every thread of one proxy.
struct Shared {
    to: SocketAddr,
    queue_limit: usize,
    delay_us: AtomicU64,
    /// Bytes per second; 0: unlimited.
    rate: AtomicU64,
    paused: AtomicBool,
    cut: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    controls: Mutex<HashMap<u64, TcpStream>>,
}

impl Shared {
    fn new(cfg: &ProxyConfig) -> Shared {
        Shared {
            to: cfg.to,
            queue_limit: cfg.queue_limit.max(CHUNK),
            delay_us: AtomicU64::new(cfg.delay.as_micros() as u64),
            rate: AtomicU64::new(cfg.rate.unwrap_or(0)),
            paused: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
        }
    }

    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cut(&self) -> usize {
        let conns = self.conns();
        self.cut.store(true, Ordering::SeqCst);
        conns.values().for_each(|c| c.close());
        conns.len()
    }

    fn close_all(&self) {
        self.conns().values().for_each(|c| c.close());
    }

    fn close_controls(&self) {
        let controls = self.controls.lock().unwrap_or_else(|p| p.into_inner());
        controls.values().for_each(|s| {
            let _ = s.shutdown(Shutdown::Both);
        });
    }

    /// Registers a new connection unless the proxy is cut or stopping.
    fn register(&self, conn: &Arc<Conn>) -> bool {
        let mut conns = self.conns();
        if self.cut.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) {
            return false;
        }
        conns.insert(conn.id, conn.clone());
        true
    }

    fn stats(&self) -> ProxyStats {
        let conns = self.conns();
        let queued = conns.values().map(|c| c.up.bytes() + c.down.bytes()).sum::<usize>() as u64;
        let state = if self.cut.load(Ordering::SeqCst) {
            "cut"
        } else if self.paused.load(Ordering::SeqCst) {
            "paused"
        } else {
            "open"
        };
        ProxyStats {
            connections: conns.len(),
            accepted: self.accepted.load(Ordering::SeqCst),
            bytes_up: self.bytes_up.load(Ordering::SeqCst),
            bytes_down: self.bytes_down.load(Ordering::SeqCst),
            queued,
            state: state.into(),
            delay_ms: self.delay().as_millis() as u64,
            rate_bytes_per_sec: self.rate.load(Ordering::SeqCst),
        }
    }

    fn apply(&self, cmd: &ControlCmd) -> String {
        match cmd {
            ControlCmd::Delay(d) => {
                self.delay_us.store(d.as_micros() as u64, Ordering::SeqCst);
                format!("ok delay {} ms", d.as_millis())
            }
            ControlCmd::Rate(r) => {
                self.rate.store(r.unwrap_or(0), Ordering::SeqCst);
                r.map_or("ok rate unlimited".into(), |b| format!("ok rate {b} bytes/s"))
            }
            ControlCmd::Cut => format!("ok cut {} connections", self.cut()),
            ControlCmd::Heal => {
                self.cut.store(false, Ordering::SeqCst);
                "ok healed".into()
            }
            ControlCmd::Pause => {
                self.paused.store(true, Ordering::SeqCst);
                "ok paused".into()
            }
            ControlCmd::Resume => {
                self.paused.store(false, Ordering::SeqCst);
                "ok resumed".into()
            }
            ControlCmd::Stats => {
                format!("ok {}", serde_json::to_string(&self.stats()).unwrap_or_else(|e| e.to_string()))
            }
        }
    }
}

// ---- accepting -------------------------------------------------------------------------------

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                if shared.cut.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let s = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("proxy-conn".into())
                    .spawn(move || connect_and_forward(&s, client));
                if let Err(e) = spawned {
                    tracing::warn!("proxy: cannot start a connection thread: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) => {
                tracing::warn!("proxy: accept: {e}");
                std::thread::sleep(TICK);
            }
        }
    }
}

/// Connects upstream, registers the pair and runs its four forwarding threads (this one is the
/// client → upstream reader).
fn connect_and_forward(shared: &Arc<Shared>, client: TcpStream) {
    let server = match TcpStream::connect_timeout(&shared.to, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("proxy: connect {}: {e}", shared.to);
            return;
        }
    };
    let Some(conn) = Conn::new(shared, client, server) else { return };
    if !shared.register(&conn) {
        conn.close();
        return;
    }
    let spawn = |dir: Dir, write: bool| {
        let (s, c) = (shared.clone(), conn.clone());
        std::thread::Builder::new().name("proxy-io".into()).spawn(move || c.run(&s, dir, write))
    };
    for (dir, write) in [(Dir::Up, true), (Dir::Down, false), (Dir::Down, true)] {
        if spawn(dir, write).is_err() {
            conn.close();
            conn.thread_done(shared);
        }
    }
    conn.run(shared, Dir::Up, false);
}

// ---- one proxied connection ------------------------------------------------------------------

/// A direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client → upstream.
    Up,
    /// Upstream → client.
    Down,
}

/// A client and its upstream connection.
struct Conn {
    id: u64,
    client: TcpStream,
    server: TcpStream,
    closed: AtomicBool,
    /// Forwarding threads still running; the last one out deregisters the pair.
    running: AtomicUsize,
    up: Queue,
    down: Queue,
}

impl Conn {
    fn new(shared: &Shared, client: TcpStream, server: TcpStream) -> Option<Arc<Conn>> {
        let setup = |s: &TcpStream| s.set_nonblocking(false).and_then(|_| s.set_nodelay(true));
        if let Err(e) = setup(&client).and_then(|_| setup(&server)) {
            tracing::debug!("proxy: socket setup: {e}");
            return None;
        }
        Some(Arc::new(Conn {
            id: shared.next_id.fetch_add(1, Ordering::SeqCst),
            client,
            server,
            closed: AtomicBool::new(false),
            running: AtomicUsize::new(4),
            up: Queue::new(shared.queue_limit),
            down: Queue::new(shared.queue_limit),
        }))
    }

    /// Source, destination and queue of a direction.
    fn ends(&self, dir: Dir) -> (&TcpStream, &TcpStream, &Queue) {
        match dir {
            Dir::Up => (&self.client, &self.server, &self.up),
            Dir::Down => (&self.server, &self.client, &self.down),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Closes both sockets and wakes every thread of the pair.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
        self.up.wake();
        self.down.wake();
    }

    /// Runs the reader or the writer of `dir`, then leaves.
    fn run(&self, shared: &Shared, dir: Dir, write: bool) {
        if write {
            self.write_loop(shared, dir);
        } else {
            self.read_loop(dir);
        }
        self.thread_done(shared);
    }

    fn thread_done(&self, shared: &Shared) {
        if self.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.conns().remove(&self.id);
        }
    }

    fn read_loop(&self, dir: Dir) {
        let (mut src, _, queue) = self.ends(dir);
        let mut buf = vec![0u8; CHUNK];
        loop {
            match src.read(&mut buf) {
                Ok(0) => return queue.push(Item::Eof, self),
                Ok(n) => queue.push(Item::Data(Instant::now(), buf[..n].to_vec()), self),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(),
            }
            if self.is_closed() {
                return;
            }
        }
    }

    fn write_loop(&self, shared: &Shared, dir: Dir) {
        let (_, dst, queue) = self.ends(dir);
        let counter = if dir == Dir::Up { &shared.bytes_up } else { &shared.bytes_down };
        let mut bucket = Bucket::new();
        while let Some(item) = queue.pop(self) {
            match item {
                Item::Eof => {
                    let _ = dst.shutdown(Shutdown::Write);
                    return;
                }
                Item::Data(at, data) => {
                    let sent = self.send_paced(shared, &mut bucket, at, &data, dst, counter);
                    queue.done(data.len());
                    if !sent {
                        return self.close();
                    }
                }
            }
        }
    }

    /// Writes `data` read at `at`: after the delay, while not paused, within the rate.
    fn send_paced(
        &self,
        shared: &Shared,
        bucket: &mut Bucket,
        at: Instant,
        data: &[u8],
        mut dst: &TcpStream,
        counter: &AtomicU64,
    ) -> bool {
        let mut rest = data;
        while !rest.is_empty() {
            if !self.wait_sendable(shared, at) {
                return false;
            }
            let rate = shared.rate.load(Ordering::Relaxed);
            let n = rest.len().min(Bucket::slice(rate));
            bucket.take(rate, n);
            counter.fetch_add(n as u64, Ordering::SeqCst); // before: a peer that got it sees it
            if dst.write_all(&rest[..n]).is_err() {
                return false;
            }
            rest = &rest[n..];
        }
        true
    }

    /// Waits until a chunk read at `at` is due and the proxy is not paused; false if closed.
    fn wait_sendable(&self, shared: &Shared, at: Instant) -> bool {
        loop {
            if self.is_closed() {
                return false;
            }
            let now = Instant::now();
            let due = at + shared.delay();
            if shared.paused.load(Ordering::SeqCst) {
                std::thread::sleep(TICK);
            } else if now < due {
                std::thread::sleep((due - now).min(TICK));
            } else {
                return true;
            }
        }
    }
}

// ---- per-direction queue ---------------------------------------------------------------------

/// What a reader hands its writer.
enum Item {
    /// Bytes read at an instant.
    Data(Instant, Vec<u8>),
    /// The source closed its side.
    Eof,
}

/// A bounded FIFO of chunks; bytes stay counted until written.
struct Queue {
    inner: Mutex<(VecDeque<Item>, usize)>,
    cv: Condvar,
    limit: usize,
}

impl Queue {
    fn new(limit: usize) -> Queue {
        Queue { inner: Mutex::new((VecDeque::new(), 0)), cv: Condvar::new(), limit }
    }

    fn lock(&self) -> MutexGuard<'_, (VecDeque<Item>, usize)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bytes(&self) -> usize {
        self.lock().1
    }

    /// Queues `item`, blocking while the queue is full (unless `conn` closes).
    fn push(&self, item: Item, conn: &Conn) {
        let len = if let Item::Data(_, d) = &item { d.len() } else { 0 };
        let mut g = self.lock();
        while g.1 + len > self.limit && !conn.is_closed() {
            g = self.cv.wait_timeout(g, TICK * 10).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        g.1 += len;
        g.0.push_back(item);
        self.cv.notify_all();
    }

    /// The next item, waiting for one; `None` once `conn` is closed.
    fn pop(&self, conn: &Conn) -> Option<Item> {
        let mut g = self.lock();
        loop {
            if conn.is_closed() {
                return None;
            }
            if let Some(item) = g.0.pop_front() {
                return Some(item);
            }
            g = self.cv.wait_timeout(g, TICK * 10).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// `n` bytes popped earlier were written (or dropped).
    fn done(&self, n: usize) {
        let mut g = self.lock();
        g.1 = g.1.saturating_sub(n);
        self.cv.notify_all();
    }

    fn wake(&self) {
        let _g = self.lock();
        self.cv.notify_all();
    }
}

// ---- bandwidth -------------------------------------------------------------------------------

/// A token bucket in bytes; the balance may go negative, the debt is slept off.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket { tokens: 0.0, last: Instant::now() }
    }

    /// Bytes written at once at `rate` (bytes/s, 0: unlimited): about 20 ms worth, 1–64 KiB.
    fn slice(rate: u64) -> usize {
        if rate == 0 {
            usize::MAX
        } else {
            ((rate / 50) as usize).clamp(1024, CHUNK)
        }
    }

    /// Takes `n` bytes' worth, sleeping while in debt.
    fn take(&mut self, rate: u64, n: usize) {
        let now = Instant::now();
        if rate == 0 {
            self.tokens = 0.0;
            self.last = now;
            return;
        }
        let cap = Bucket::slice(rate) as f64;
        let refill = now.duration_since(self.last).as_secs_f64() * rate as f64;
        self.tokens = (self.tokens + refill).min(cap) - n as f64;
        self.last = now;
        if self.tokens < 0.0 {
            std::thread::sleep(Duration::from_secs_f64(-self.tokens / rate as f64));
        }
    }
}

// ---- control port ----------------------------------------------------------------------------

fn control_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => start_control_session(shared, stream),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) => {
                tracing::warn!("proxy: control accept: {e}");
                std::thread::sleep(TICK);
            }
        }
    }
}

fn start_control_session(shared: &Arc<Shared>, stream: TcpStream) {
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let Ok(clone) = stream.try_clone() else { return };
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    shared.controls.lock().unwrap_or_else(|p| p.into_inner()).insert(id, clone);
    let s = shared.clone();
    let spawned = std::thread::Builder::new().name("proxy-ctl".into()).spawn(move || {
        control_session(&s, stream);
        s.controls.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    });
    if let Err(e) = spawned {
        tracing::warn!("proxy: cannot start a control thread: {e}");
    }
}

/// Answers one line per command line until the peer closes.
fn control_session(shared: &Shared, stream: TcpStream) {
    let Ok(mut out) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let (answer, keep) = control_answer(shared, &line);
        if writeln!(out, "{answer}").is_err() || !keep {
            return;
        }
    }
}

/// The answer to one raw line, and whether the session may go on.
fn control_answer(shared: &Shared, line: &[u8]) -> (String, bool) {
    if line.len() > MAX_LINE && !line.ends_with(b"\n") {
        return (format!("err line longer than {MAX_LINE} bytes"), false);
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return ("err not UTF-8 text".into(), true);
    };
    match ControlCmd::parse(text) {
        Ok(cmd) => (shared.apply(&cmd), true),
        Err(e) => (format!("err {e}"), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(ControlCmd::parse("delay 50\n"), Ok(ControlCmd::Delay(Duration::from_millis(50))));
        assert_eq!(ControlCmd::parse("rate 8"), Ok(ControlCmd::Rate(Some(1_000_000))));
        assert_eq!(ControlCmd::parse("rate 0"), Ok(ControlCmd::Rate(None)));
        assert_eq!(ControlCmd::parse("  cut  "), Ok(ControlCmd::Cut));
        for cmd in ["heal", "pause", "resume", "stats"] {
            assert!(ControlCmd::parse(cmd).is_ok(), "{cmd}");
        }
    }

    #[test]
    fn rejects_bad_commands_with_a_reason() {
        for (line, want) in [
            ("", "empty"),
            ("delay", "exactly one number"),
            ("delay x", "not a whole number"),
            ("delay -1", "not a whole number"),
            ("rate -3", "≥ 0"),
            ("rate nan", "≥ 0"),
            ("cut now", "no argument"),
            ("explode", "unknown command 'explode'"),
        ] {
            let err = ControlCmd::parse(line).expect_err(line);
            assert!(err.contains(want), "{line:?}: {err}");
        }
    }

    #[test]
    fn bucket_slices_follow_the_rate() {
        assert_eq!(Bucket::slice(0), usize::MAX);
        assert_eq!(Bucket::slice(1000), 1024);
        assert_eq!(Bucket::slice(1_000_000), 20_000);
        assert_eq!(Bucket::slice(1 << 40), CHUNK);
    }

    #[test]
    fn bucket_paces_to_the_rate() {
        let mut b = Bucket::new();
        let start = Instant::now();
        for _ in 0..10 {
            b.take(100_000, 2_000); // 20 KB at 100 KB/s: ~0.2 s
        }
        let t = start.elapsed();
        assert!(t >= Duration::from_millis(180) && t < Duration::from_millis(400), "{t:?}");
    }

    #[test]
    fn oversized_and_binary_control_lines_are_refused() {
        let shared = Shared::new(&ProxyConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            "127.0.0.1:1".parse().expect("addr"),
        ));
        let (a, keep) = control_answer(&shared, &vec![b'x'; MAX_LINE + 1]);
        assert!(a.starts_with("err") && !keep, "{a}");
        let (a, keep) = control_answer(&shared, &[0xff, 0xfe, b'\n']);
        assert!(a.starts_with("err") && keep, "{a}");
        let (a, _) = control_answer(&shared, b"stats\n");
        assert!(a.starts_with("ok {\"connections\":0"), "{a}");
    }
}

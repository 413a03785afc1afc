//! A simulated network of byte streams between nodes: ordered delivery per direction with a
//! seeded delay (a stream transport never reorders), bounded buffers, one-way and two-way
//! partitions (bytes wait; connects are not answered), clogged links (a directed link slowed to
//! a bandwidth of its own, so bytes queue and buffers fill), connection resets, and nodes that
//! go dark when they crash (their streams reset when they come back).
//!
//! Links reach it through ferrite's `Dialer`/`Stream` seam, so `TcpLink` and `BunkerConn` run
//! over it unchanged.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, Weak};

use ferrite::net::{Dialer, Stream};
use ferrite::reactor::Nanos;
use ferrite::rng::Rng;

use crate::Clock;

/// Bytes one direction of a stream buffers before writes block.
const STREAM_BUFFER: usize = 1 << 20;

#[derive(Default)]
struct Dir {
    chunks: VecDeque<(Nanos, Vec<u8>)>,
    bytes: usize,
    last: Nanos,
}

struct Pipe {
    nodes: [usize; 2],
    dir: [Dir; 2],
    closed: [bool; 2],
    reset: bool,
    established: bool,
}

struct NetState {
    clock: Clock,
    rng: Rng,
    listeners: BTreeMap<SocketAddr, usize>,
    accepts: BTreeMap<usize, VecDeque<(SimStream, SocketAddr)>>,
    /// Directed cuts: bytes from `.0` to `.1` are held.
    cut: BTreeSet<(usize, usize)>,
    /// Directed clogs: bytes from `.0` to `.1` flow at this many bytes per second at most.
    clog: BTreeMap<(usize, usize), u64>,
    down: BTreeSet<usize>,
    pipes: Vec<Weak<Mutex<Pipe>>>,
}

/// The network.
#[derive(Clone)]
pub struct SimNet {
    st: Arc<Mutex<NetState>>,
}

/// One end of a stream.
pub struct SimStream {
    pipe: Arc<Mutex<Pipe>>,
    side: usize,
    net: Arc<Mutex<NetState>>,
}

/// A node's way onto the network.
pub struct SimDialer {
    net: SimNet,
    from: usize,
}

/// The replication address of node `n`.
pub fn addr(n: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n as u8 + 1], 7000))
}

impl SimNet {
    /// An empty network.
    pub fn new(seed: u64, clock: Clock) -> SimNet {
        let st = NetState {
            clock,
            rng: Rng::new(seed),
            listeners: BTreeMap::new(),
            accepts: BTreeMap::new(),
            cut: BTreeSet::new(),
            clog: BTreeMap::new(),
            down: BTreeSet::new(),
            pipes: Vec::new(),
        };
        SimNet { st: Arc::new(Mutex::new(st)) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.st.lock().expect("sim net")
    }

    /// The dialer of node `from`.
    pub fn dialer(&self, from: usize) -> Arc<dyn Dialer> {
        Arc::new(SimDialer { net: self.clone(), from })
    }

    /// Node `n` listens on its replication address.
    pub fn listen(&self, n: usize) {
        self.state().listeners.insert(addr(n), n);
    }

    /// Streams accepted for node `n` since the last call.
    pub fn accepted(&self, n: usize) -> Vec<(SimStream, SocketAddr)> {
        self.state().accepts.remove(&n).map(Vec::from).unwrap_or_default()
    }

    /// Holds (or releases) bytes from `a` to `b`.
    pub fn set_cut(&self, a: usize, b: usize, on: bool) {
        let mut st = self.state();
        if on {
            st.cut.insert((a, b));
        } else {
            st.cut.remove(&(a, b));
        }
    }

    /// Slows bytes from `a` to `b` to `bytes_per_s` (or, with `None`, lets them flow again).
    pub fn set_clog(&self, a: usize, b: usize, bytes_per_s: Option<u64>) {
        let mut st = self.state();
        match bytes_per_s {
            Some(bw) => st.clog.insert((a, b), bw.max(1)),
            None => st.clog.remove(&(a, b)),
        };
    }

    /// Releases every cut and clog.
    pub fn heal(&self) {
        let mut st = self.state();
        st.cut.clear();
        st.clog.clear();
    }

    /// Node `n` crashed: it stops listening and its streams go silent.
    pub fn crash(&self, n: usize) {
        let mut st = self.state();
        st.listeners.retain(|_, v| *v != n);
        st.accepts.remove(&n);
        st.down.insert(n);
    }

    /// Node `n` is back: streams from before its crash are reset (the peer learns on its next
    /// read or write).
    pub fn restart(&self, n: usize) {
        let mut st = self.state();
        st.down.remove(&n);
        st.pipes.retain(|w| w.strong_count() > 0);
        for p in st.pipes.iter().filter_map(Weak::upgrade) {
            let mut p = p.lock().expect("pipe");
            if p.nodes.contains(&n) {
                p.reset = true;
            }
        }
    }

    /// Resets one live stream chosen at random (a lost connection).
    pub fn reset_one(&self) {
        let mut st = self.state();
        st.pipes.retain(|w| w.strong_count() > 0);
        if st.pipes.is_empty() {
            return;
        }
        let len = st.pipes.len() as u64;
        let i = st.rng.below(len) as usize;
        if let Some(p) = st.pipes[i].upgrade() {
            p.lock().expect("pipe").reset = true;
        }
    }

    /// The earliest time a held byte becomes deliverable.
    pub fn next_due(&self) -> Option<Nanos> {
        let st = self.state();
        st.pipes
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|p| {
                let p = p.lock().expect("pipe");
                p.dir.iter().filter_map(|d| d.chunks.front().map(|c| c.0)).min()
            })
            .min()
    }
}

impl NetState {
    fn blocked(&self, from: usize, to: usize) -> bool {
        self.cut.contains(&(from, to)) || self.down.contains(&from) || self.down.contains(&to)
    }

    fn delay(&mut self) -> Nanos {
        crate::delay(&mut self.rng, (20_000, 100_000), 50, 20_000_000)
    }
}

impl Dialer for SimDialer {
    fn dial(&self, to: SocketAddr) -> io::Result<Box<dyn Stream>> {
        let mut st = self.net.state();
        let target = st.listeners.get(&to).copied();
        let reachable = target.is_some_and(|t| !st.blocked(self.from, t) && !st.blocked(t, self.from));
        let pipe = Arc::new(Mutex::new(Pipe {
            nodes: [self.from, target.unwrap_or(usize::MAX)],
            dir: [Dir::default(), Dir::default()],
            closed: [false; 2],
            reset: target.is_none(),
            established: reachable,
        }));
        st.pipes.push(Arc::downgrade(&pipe));
        if let (Some(t), true) = (target, reachable) {
            let server = SimStream { pipe: pipe.clone(), side: 1, net: self.net.st.clone() };
            st.accepts.entry(t).or_default().push_back((server, addr(self.from)));
        }
        Ok(Box::new(SimStream { pipe, side: 0, net: self.net.st.clone() }))
    }
}

impl Read for SimStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let st = self.net.lock().expect("sim net");
        let mut p = self.pipe.lock().expect("pipe");
        if p.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let (from, to) = (p.nodes[1 - self.side], p.nodes[self.side]);
        if st.blocked(from, to) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let now = st.clock.now();
        let peer_closed = p.closed[1 - self.side];
        let d = &mut p.dir[1 - self.side];
        let mut n = 0;
        while n < buf.len() {
            let Some((t, chunk)) = d.chunks.front_mut() else { break };
            if *t > now {
                break;
            }
            let k = chunk.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&chunk[..k]);
            chunk.drain(..k);
            n += k;
            if chunk.is_empty() {
                d.chunks.pop_front();
            }
        }
        d.bytes -= n;
        match n {
            0 if peer_closed && d.chunks.is_empty() => Ok(0),
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl Write for SimStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.net.lock().expect("sim net");
        let mut p = self.pipe.lock().expect("pipe");
        if p.reset || p.closed[1 - self.side] {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let room = STREAM_BUFFER - p.dir[self.side].bytes;
        if room == 0 || !p.established {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(room);
        let clog = st.clog.get(&(p.nodes[self.side], p.nodes[1 - self.side])).copied();
        let d = &mut p.dir[self.side];
        // A clogged link delivers one write after another at its bandwidth.
        let paced = clog.map_or(0, |bw| d.last + n as u64 * 1_000_000_000 / bw);
        let at = d.last.max(st.clock.now() + st.delay()).max(paced);
        d.last = at;
        d.chunks.push_back((at, buf[..n].to_vec()));
        d.bytes += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for SimStream {
    fn connected(&mut self) -> io::Result<bool> {
        let p = self.pipe.lock().expect("pipe");
        if p.reset {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        Ok(p.established)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pipe.lock() {
            p.closed[self.side] = true;
        }
    }
}

//! `ferrite perf --pingpong SIZE`: the floor under any NVMe/TCP round trip on this machine. An
//! echo server pinned to one core and a client pinned to another exchange `SIZE`-byte messages
//! over loopback TCP, both busy-polling non-blocking sockets (as the target's and the
//! initiator's reactors do under load); the client times every round trip.
//!
//! The report has the same shape as an I/O run: `iops` is round trips per second.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::report::{JobResult, Report};
use crate::sys::affinity::pin_current_thread;

/// A ping-pong run.
#[derive(Debug, Clone)]
pub struct PingPong {
    /// Message size, bytes.
    pub size: usize,
    /// Measured seconds.
    pub time_s: f64,
    /// Unmeasured seconds first.
    pub warmup_s: f64,
    /// Core of the echo server.
    pub server_core: usize,
    /// Core of the client.
    pub client_core: usize,
}

fn spin_write(s: &mut TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes, spinning; `Ok(false)` on a clean EOF before any byte.
fn spin_read(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn serve(listener: TcpListener, size: usize, core: usize) -> io::Result<()> {
    pin_current_thread(core);
    let (mut s, _) = listener.accept()?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    let mut buf = vec![0u8; size];
    while spin_read(&mut s, &mut buf)? {
        spin_write(&mut s, &buf)?;
    }
    Ok(())
}

fn client(addr: std::net::SocketAddr, p: &PingPong) -> io::Result<JobResult> {
    pin_current_thread(p.client_core);
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    let msg: Vec<u8> = (0..p.size).map(|i| i as u8).collect();
    let mut back = vec![0u8; p.size];
    let mut r = JobResult::new(p.client_core);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(p.warmup_s);
    let end = measure_from + Duration::from_secs_f64(p.time_s);
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        spin_write(&mut s, &msg)?;
        if !spin_read(&mut s, &mut back)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if t0 >= measure_from {
            let ns = t0.elapsed().as_nanos() as u64;
            r.ios += 1;
            r.bytes += p.size as u64;
            let _ = r.latency_ns.record(ns.max(1));
        }
    }
    r.elapsed_ns = end.saturating_duration_since(measure_from).as_nanos() as u64;
    Ok(r)
}

/// Runs the ping-pong and reports round trips.
pub fn run(p: &PingPong) -> Result<Report, String> {
    assert!(p.size > 0, "message size must be positive");
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("ping-pong listener: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (size, core) = (p.size, p.server_core);
    let server = std::thread::Builder::new()
        .name("pingpong_server".into())
        .spawn(move || serve(listener, size, core))
        .map_err(|e| e.to_string())?;
    let pc = p.clone();
    let result = std::thread::Builder::new()
        .name("pingpong_client".into())
        .spawn(move || client(addr, &pc))
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "ping-pong client panicked".to_string())?
        .map_err(|e| format!("ping-pong client: {e}"))?;
    server
        .join()
        .map_err(|_| "ping-pong server panicked".to_string())?
        .map_err(|e| format!("ping-pong server: {e}"))?;
    Ok(Report::merge(&[result]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_are_timed() {
        let cores = crate::sys::affinity::available_cores();
        let (server_core, client_core) = (cores[0], *cores.last().unwrap());
        let p = PingPong { size: 64, time_s: 0.2, warmup_s: 0.0, server_core, client_core };
        let r = run(&p).unwrap();
        assert!(r.ios > 10, "{r:?}");
        assert!(r.latency_us.p50 > 0.0);
    }
}

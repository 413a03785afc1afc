//! The TCP fault proxy (`ferrite::net::proxy`, `ferrite proxy`) in front of an echo server: data
//! passes intact, delay and rate limits shape the traffic, `cut` partitions and `heal` reopens,
//! `pause` stalls without closing, and the control port answers bad commands with `err`.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrite::net::proxy::{mbit, Proxy, ProxyConfig};
use ferrite::rng::Rng;

/// An echo server on loopback: echoes until EOF, then closes its side.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || echo(stream));
        }
    });
    addr
}

fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

fn proxy_to(to: SocketAddr) -> Proxy {
    let mut cfg = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), to);
    cfg.control = Some("127.0.0.1:0".parse().unwrap());
    Proxy::start(cfg).unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `msg` and reads it back; the round-trip time.
fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let start = Instant::now();
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
    start.elapsed()
}

/// Writes `data` from a thread while reading the echo here; the echo and the time taken.
fn pump(s: &TcpStream, data: Vec<u8>) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut w = s.try_clone().unwrap();
    let n = data.len();
    let writer = std::thread::spawn(move || w.write_all(&data).unwrap());
    let mut back = vec![0u8; n];
    (&*s).read_exact(&mut back).unwrap();
    writer.join().unwrap();
    (back, start.elapsed())
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..n / 8).flat_map(|_| rng.next_u64().to_le_bytes()).collect()
}

/// Whether `s` is closed by the peer (EOF or reset) within a second.
fn sees_close(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// A line-oriented control client.
struct Control {
    out: TcpStream,
    input: BufReader<TcpStream>,
}

impl Control {
    fn connect(addr: SocketAddr) -> Control {
        let out = TcpStream::connect(addr).unwrap();
        out.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Control { input: BufReader::new(out.try_clone().unwrap()), out }
    }

    fn send(&mut self, line: &str) -> String {
        writeln!(self.out, "{line}").unwrap();
        let mut answer = String::new();
        self.input.read_line(&mut answer).unwrap();
        answer.trim_end().to_string()
    }

    fn ok(&mut self, line: &str) -> String {
        let a = self.send(line);
        assert!(a.starts_with("ok"), "{line}: {a}");
        a
    }

    fn stats(&mut self) -> serde_json::Value {
        let a = self.ok("stats");
        serde_json::from_str(a.trim_start_matches("ok ")).unwrap()
    }
}

#[test]
fn data_passes_intact_both_ways() {
    let proxy = proxy_to(echo_server());
    let s = connect(proxy.local_addr());
    let data = random_bytes(8 << 20, 7);
    let (back, _) = pump(&s, data.clone());
    assert!(back == data, "8 MiB came back altered");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!((&s).read(&mut [0u8; 8]).unwrap(), 0, "half-close forwarded, and the echo's back");
    let st = proxy.stats();
    assert_eq!((st.bytes_up, st.bytes_down), (8 << 20, 8 << 20), "{st:?}");
    assert_eq!((st.accepted, st.state.as_str()), (1, "open"), "{st:?}");
}

#[test]
fn delay_holds_each_direction() {
    let proxy = proxy_to(echo_server());
    let mut s = connect(proxy.local_addr());
    assert!(round_trip(&mut s, b"warm") < Duration::from_millis(50));
    proxy.set_delay(Duration::from_millis(50));
    for _ in 0..3 {
        let rtt = round_trip(&mut s, b"ping");
        assert!(rtt >= Duration::from_millis(100) && rtt < Duration::from_millis(400), "{rtt:?}");
    }
    proxy.set_delay(Duration::ZERO);
    assert!(round_trip(&mut s, b"fast") < Duration::from_millis(50));
}

#[test]
fn rate_limits_bandwidth() {
    let proxy = proxy_to(echo_server());
    proxy.set_rate(Some(mbit(8.0)));
    let s = connect(proxy.local_addr());
    let data = random_bytes(2 << 20, 8);
    let (back, took) = pump(&s, data.clone());
    assert!(back == data);
    assert!(took >= Duration::from_millis(1800) && took < Duration::from_millis(4000), "{took:?}");
    proxy.set_rate(None);
    let (_, took) = pump(&s, data);
    assert!(took < Duration::from_millis(1000), "unlimited again: {took:?}");
}

#[test]
fn cut_closes_connections_until_healed() {
    let proxy = proxy_to(echo_server());
    let mut a = connect(proxy.local_addr());
    let mut b = connect(proxy.local_addr());
    round_trip(&mut a, b"a");
    round_trip(&mut b, b"b");
    assert_eq!(proxy.stats().connections, 2);
    assert_eq!(proxy.cut(), 2);
    assert!(sees_close(&mut a) && sees_close(&mut b), "existing connections closed");
    let mut refused = connect(proxy.local_addr());
    let _ = refused.write_all(b"x");
    assert!(sees_close(&mut refused), "new connections closed while cut");
    assert_eq!(proxy.stats().state, "cut");
    proxy.heal();
    let mut c = connect(proxy.local_addr());
    round_trip(&mut c, b"healed");
    let st = proxy.stats();
    assert_eq!((st.connections, st.state.as_str()), (1, "open"), "{st:?}");
}

#[test]
fn pause_stalls_without_closing_and_resume_delivers() {
    let proxy = proxy_to(echo_server());
    let mut s = connect(proxy.local_addr());
    round_trip(&mut s, b"before");
    proxy.pause();
    s.write_all(b"queued").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 6];
    let e = s.read(&mut buf).expect_err("nothing may pass while paused");
    assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e}");
    let st = proxy.stats();
    assert_eq!((st.state.as_str(), st.connections, st.queued), ("paused", 1, 6), "{st:?}");
    proxy.resume();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"queued");
}

#[test]
fn queues_are_bounded_while_paused() {
    let mut cfg = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), echo_server());
    cfg.queue_limit = 1 << 20;
    let proxy = Proxy::start(cfg).unwrap();
    let s = connect(proxy.local_addr());
    proxy.pause();
    // Far more than the loopback socket buffers on both sides can absorb (autotuned to several
    // MiB each), so the sender is held back by the proxy's bounded queue.
    let data = random_bytes(48 << 20, 9);
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let st = proxy.stats();
    assert!(st.queued > 0 && st.queued <= 1 << 20, "{st:?}");
    assert!(!writer.is_finished(), "the sender is held back");
    proxy.resume();
    let mut back = vec![0u8; data.len()];
    (&s).read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data);
}

#[test]
fn control_port_drives_the_proxy_and_answers_errors() {
    let proxy = proxy_to(echo_server());
    let mut ctl = Control::connect(proxy.control_addr().unwrap());
    for bad in ["", "bogus", "delay", "delay fifty", "delay 1 2", "rate -1", "rate x", "cut now"] {
        let a = ctl.send(bad);
        assert!(a.starts_with("err ") && a.len() > 4, "{bad:?}: {a}");
    }
    ctl.out.write_all(&[0xff, 0xfe, b'\n']).unwrap();
    let mut a = String::new();
    ctl.input.read_line(&mut a).unwrap();
    assert_eq!(a, "err not UTF-8 text\n");
    assert_eq!(ctl.ok("delay 20"), "ok delay 20 ms");
    assert_eq!(ctl.ok("rate 8"), "ok rate 1000000 bytes/s");
    let st = ctl.stats();
    assert_eq!((st["delay_ms"].as_u64(), st["rate_bytes_per_sec"].as_u64()), (Some(20), Some(1_000_000)));
    assert_eq!(ctl.ok("rate 0"), "ok rate unlimited");
    let mut s = connect(proxy.local_addr());
    assert!(round_trip(&mut s, b"x") >= Duration::from_millis(40));
    assert_eq!(ctl.ok("cut"), "ok cut 1 connections");
    assert!(sees_close(&mut s));
    assert_eq!(ctl.stats()["state"], "cut");
    ctl.ok("heal");
    ctl.ok("pause");
    assert_eq!(ctl.stats()["state"], "paused");
    ctl.ok("resume");
    let mut s = connect(proxy.local_addr());
    round_trip(&mut s, b"y");
}

/// Kills the child on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn proxy_binary_is_driven_over_its_control_port() {
    let echo = echo_server();
    let mut child = Running(
        Command::new(common::bin())
            .args(["proxy", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--delay-ms", "30"])
            .args(["--to", &echo.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    // "ferrite proxy: listen ADDR to ADDR control ADDR"
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((words.len(), words[2], words[6]), (8, "listen", "control"), "{line}");
    let (listen, control): (SocketAddr, SocketAddr) = (words[3].parse().unwrap(), words[7].parse().unwrap());
    let mut s = connect(listen);
    let rtt = round_trip(&mut s, b"hello");
    assert!(rtt >= Duration::from_millis(60), "--delay-ms 30 each way: {rtt:?}");
    let mut ctl = Control::connect(control);
    ctl.ok("delay 0");
    assert!(round_trip(&mut s, b"again") < Duration::from_millis(50));
    assert!(ctl.send("frobnicate").starts_with("err unknown command"));
    let st = ctl.stats();
    assert_eq!((st["connections"].as_u64(), st["bytes_up"].as_u64()), (Some(1), Some(10)), "{st}");
    ctl.ok("cut");
    assert!(sees_close(&mut s));
    ctl.ok("heal");
    round_trip(&mut connect(listen), b"after heal");
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
}

#[test]
fn proxy_binary_rejects_bad_flags() {
    let out = Command::new(common::bin())
        .args(["proxy", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--rate-mbit=-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate-mbit must be"));
    let out = Command::new(common::bin())
        .args(["proxy", "--listen", "nowhere", "--to", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--listen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! The network-namespace harness (`common::netns`): nodes reach each other by address, a link
//! cut makes connections time out and restoring it heals them, `ferrite serve` runs inside a
//! namespace as the spawned process itself, and everything is deleted on drop. Skips (with the
//! reason) when not root or without `ip`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Net, Netns};
use common::Daemon;

macro_rules! probe_or_skip {
    () => {
        if let Err(why) = Netns::probe() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

const ECHO_SERVER: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
def echo(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"#;

const ECHO_CLIENT: &str = r#"
import socket, sys
t = float(sys.argv[3])
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=t)
    c.settimeout(t)
    c.sendall(b"ping")
    d = b""
    while len(d) < 4:
        x = c.recv(4)
        if not x:
            break
        d += x
except socket.timeout:
    sys.exit(2)
except OSError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
sys.exit(0 if d == b"ping" else 1)
"#;

/// How the echo client ended.
#[derive(Debug, PartialEq, Eq)]
enum Echo {
    Works,
    TimedOut,
    Failed(String),
}

/// Kills the child on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python_available() -> bool {
    std::process::Command::new("python3").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// A python echo server on `port` inside `node`, once it listens.
fn echo_server(net: &Net, node: &str, port: u16) -> Running {
    let mut child = Running(
        net.command(node, "python3")
            .args(["-c", ECHO_SERVER, &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

/// Whether a client in `from` gets an echo from `to`:`port` within `timeout_s`.
fn echo(net: &Net, from: &str, to: &str, port: u16, timeout_s: f64) -> Echo {
    let out = net
        .command(from, "python3")
        .args(["-c", ECHO_CLIENT, &net.addr(to).to_string(), &port.to_string(), &timeout_s.to_string()])
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => Echo::Works,
        Some(2) => Echo::TimedOut,
        _ => Echo::Failed(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())),
    }
}

fn netns_list() -> String {
    let out = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nodes_reach_each_other_until_a_link_goes_down() {
    probe_or_skip!();
    if !python_available() {
        eprintln!("skipping: no python3");
        return;
    }
    let net = Net::new(&["a", "b"]);
    let names = net.namespaces();
    assert!(names.iter().all(|n| netns_list().contains(n.as_str())), "{names:?}");
    assert_ne!(net.addr("a"), net.addr("b"));
    let _server = echo_server(&net, "a", 7000);
    assert_eq!(echo(&net, "b", "a", 7000, 2.0), Echo::Works, "b reaches a");
    assert_eq!(echo(&net, "a", "a", 7000, 2.0), Echo::Works, "a reaches itself");
    net.link_down("a");
    assert_eq!(echo(&net, "b", "a", 7000, 0.5), Echo::TimedOut, "a is cut off");
    net.link_up("a");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match echo(&net, "b", "a", 7000, 1.0) {
            Echo::Works => break,
            other => assert!(Instant::now() < deadline, "a unreachable after link_up: {other:?}"),
        }
    }
    drop(net);
    let left = netns_list();
    assert!(names.iter().all(|n| !left.contains(n.as_str())), "left behind: {left}");
}

#[test]
fn ferrite_serve_runs_inside_a_namespace() {
    probe_or_skip!();
    let net = Net::new(&["p"]);
    let mut d = Daemon::start_in(net.ns("p"), "[reactor]\ncores = [0]\n[memory]\nbuf_count = 64\n");
    let pid = d.child.id();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, std::fs::canonicalize(common::bin()).unwrap(), "ip netns exec execs ferrite");
    let ns_of = |p: String| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    let inside = ns_of(format!("/proc/{pid}/ns/net"));
    assert_eq!(inside, ns_of(format!("/run/netns/{}", net.ns("p"))));
    assert_ne!(inside, ns_of("/proc/self/ns/net".into()));
    assert!(d.rpc("spdk_get_version", None).is_ok(), "RPC over the socket file from outside");
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "ferrite itself was killed");
    let pids = std::process::Command::new("ip").args(["netns", "pids", net.ns("p")]).output().unwrap();
    assert!(pids.stdout.is_empty(), "nothing left in the namespace");
}

#[test]
fn leftovers_of_a_dead_process_are_deleted() {
    probe_or_skip!();
    // A name as a crashed run with a pid that is not alive would have left.
    let dead = (4_000_000..).find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()).unwrap();
    let stale = format!("fe{dead}-0-a");
    let ok = std::process::Command::new("ip").args(["netns", "add", &stale]).status().unwrap();
    assert!(ok.success());
    let net = Net::new(&["x"]);
    assert!(!netns_list().contains(&stale), "stale namespace deleted");
    drop(net);
}

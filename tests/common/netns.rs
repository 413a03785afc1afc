//! Network namespaces for multi-node tests: one namespace per node, all joined by a bridge in a
//! dedicated "switch" namespace (a veth from the bridge into each node, `eth0` there, address
//! 10.77.0.<k+1>/24), link cuts by setting a node's bridge port down, and `ferrite serve` run
//! inside a node ([`Daemon::start_in`]). Needs root and `ip` (iproute2); [`Netns::probe`] says why
//! not so tests skip. Nothing is created in the test's own namespace: deleting the namespaces
//! removes every link. Names are `fe<pid>-<seq>-<node>`, so leftovers of a crashed run (a pid no
//! longer alive) are found and deleted by the next [`Net::new`].

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Daemon;

/// Numbers the namespaces of this process (tests run in parallel threads).
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Whether namespaces can be used here.
pub struct Netns;

impl Netns {
    /// Ok when running as root with a working `ip netns add`; else the reason to skip.
    pub fn probe() -> Result<(), String> {
        if !is_root() {
            return Err("network namespaces need root".into());
        }
        Command::new("ip")
            .arg("-V")
            .output()
            .map_err(|e| format!("`ip` not found ({e}); apt-get install iproute2"))?;
        let name = format!("{}probe", prefix());
        ip(&["netns", "add", &name]).map_err(|e| format!("`ip netns add` fails: {e}"))?;
        ip(&["netns", "del", &name]).map_err(|e| format!("`ip netns del` fails: {e}"))
    }
}

/// A set of nodes, each in its own namespace, all reachable from each other.
pub struct Net {
    switch: String,
    /// (node, namespace), in the order given.
    nodes: Vec<(String, String)>,
}

impl Net {
    /// Creates one namespace per node (names of letters, digits and `_`) and the switch.
    pub fn new(names: &[&str]) -> Net {
        assert!(names.len() < 250, "at most 249 nodes");
        delete_stale();
        let prefix = prefix();
        let mut net = Net { switch: format!("{prefix}sw"), nodes: Vec::new() };
        add_ns(&net.switch);
        must(&["-n", &net.switch, "link", "add", "br0", "type", "bridge"]);
        must(&["-n", &net.switch, "link", "set", "br0", "up"]);
        for (k, name) in names.iter().enumerate() {
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad node name {name:?}"
            );
            assert!(net.nodes.iter().all(|(n, _)| n != name), "node {name} twice");
            let ns = format!("{prefix}{name}");
            add_ns(&ns);
            net.nodes.push((name.to_string(), ns.clone()));
            net.plug(k, &ns);
        }
        net
    }

    /// Joins node `k` (namespace `ns`) to the bridge.
    fn plug(&self, k: usize, ns: &str) {
        let (sw, port) = (self.switch.as_str(), format!("v{k}"));
        must(&["-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        must(&["-n", sw, "link", "set", &port, "master", "br0"]);
        must(&["-n", sw, "link", "set", &port, "up"]);
        must(&["-n", ns, "addr", "add", &format!("{}/24", node_addr(k)), "dev", "eth0"]);
        must(&["-n", ns, "link", "set", "eth0", "up"]);
    }

    fn index(&self, node: &str) -> usize {
        self.nodes.iter().position(|(n, _)| n == node).unwrap_or_else(|| panic!("no node {node}"))
    }

    /// The namespace of `node` (for `ip netns exec`).
    pub fn ns(&self, node: &str) -> &str {
        &self.nodes[self.index(node)].1
    }

    /// The address of `node`, reachable from every other node.
    pub fn addr(&self, node: &str) -> IpAddr {
        IpAddr::V4(node_addr(self.index(node)))
    }

    /// Cuts `node` off: its bridge port goes down, so packets to and from it are dropped
    /// (connections time out; nothing is reset).
    pub fn link_down(&self, node: &str) {
        must(&["-n", &self.switch, "link", "set", &format!("v{}", self.index(node)), "down"]);
    }

    /// Reconnects `node` after [`Net::link_down`].
    pub fn link_up(&self, node: &str) {
        must(&["-n", &self.switch, "link", "set", &format!("v{}", self.index(node)), "up"]);
    }

    /// `program` to run inside `node`'s namespace.
    pub fn command(&self, node: &str, program: impl AsRef<OsStr>) -> Command {
        exec_in(self.ns(node), program)
    }

    /// Every namespace of this net, switch last.
    pub fn namespaces(&self) -> Vec<String> {
        self.nodes.iter().map(|(_, ns)| ns.clone()).chain([self.switch.clone()]).collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            delete_ns(&ns);
        }
    }
}

impl Daemon {
    /// Starts `ferrite serve` inside namespace `ns` (`ip netns exec NS ferrite serve ...`: ip
    /// execs, so the child is ferrite itself). RPC works from the test: the socket is a file.
    pub fn start_in(ns: &str, config: &str) -> Daemon {
        Daemon::start_prefixed(&["ip", "netns", "exec", ns], config, &[])
    }
}

/// `program` to run inside namespace `ns`.
pub fn exec_in(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// `fe<pid>-<seq>-`: unique to this net in this process.
fn prefix() -> String {
    format!("fe{}-{}-", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}

fn node_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, k as u8 + 1)
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"));
    uid.and_then(|u| u.split_whitespace().nth(1)) == Some("0")
}

/// Runs `ip ARGS`; the error output when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("netns setup: {e}");
    }
}

/// Creates `ns` with its loopback up.
fn add_ns(ns: &str) {
    let _ = ip(&["netns", "del", ns]);
    must(&["netns", "add", ns]);
    must(&["-n", ns, "link", "set", "lo", "up"]);
}

/// Kills what still runs in `ns` and deletes it (its links go with it).
fn delete_ns(ns: &str) {
    let pids = Command::new("ip").args(["netns", "pids", ns]).output();
    let pids = pids.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    for pid in pids.split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    if let Err(e) = ip(&["netns", "del", ns]) {
        eprintln!("netns cleanup: {e}");
    }
}

/// Deletes namespaces named by this harness for a process that no longer runs.
fn delete_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix("fe").and_then(|r| r.split('-').next()) else { continue };
        let ours = pid.parse::<u32>().is_ok() && name.starts_with(&format!("fe{pid}-"));
        if ours && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_ns(name);
        }
    }
}

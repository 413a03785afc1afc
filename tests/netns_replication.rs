//! End to end replication with every node in its own network namespace (`common::netns`):
//! primary, bunker, secondary and the host running `ferrite perf`, joined by a bridge, each
//! `ferrite serve` listening on its own namespace address. A link cut is a real partition
//! (packets dropped, nothing reset), so the replication links find out by their own timeouts.
//!
//! A: the secondary is cut off under a verified writer; the primary keeps acknowledging writes
//! (bunker-sync with the bunker still reachable) and reports the secondary link down; after the
//! link returns shipping resumes and catches up; then the primary is SIGKILLed and the secondary
//! fails over with every acknowledged write (`ferrite perf --check-ack-log`).
//! B: the primary is SIGKILLed while the secondary is still cut off (its tail lives only on the
//! primary and the bunker); the secondary comes back, fails over pulling megabytes from the
//! bunker, and loses no acknowledged write.
//!
//! Skips (with the reason) when namespaces are unavailable (not root, no `ip`).

mod common;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::netns::{Net, Netns};
use common::{bin, Daemon};
use serde_json::{json, Value};

const NQN: &str = "nqn.2026-11.io.ferrite:vol0";
const HOST: &str = "nqn.2026-11.io.ferrite:h";
/// Replication port on every node (each node has its own address).
const RPORT: u16 = 7700;
/// NVMe/TCP port on the primary and the secondary.
const NPORT: u16 = 4420;
/// Data bdev size, MiB.
const DATA_MB: u64 = 16;
/// Log, staging and bunker log size, MiB: holds the whole tail written while the secondary is
/// cut off (a secondary more than 90% of the log behind is dropped).
const LOG_MB: u64 = 512;

const BASE: &str = "[reactor]\ncores = [0, 1]\n[memory]\nbuf_count = 512\n";

/// The scenarios share the two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

macro_rules! probe_or_skip {
    () => {
        if let Err(why) = Netns::probe() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

/// A uring bdev on a file of `mb` MiB (sparse: reads of unwritten blocks return zeros).
fn uring(name: &str, path: &Path, mb: u64) -> String {
    if !path.exists() {
        std::fs::File::create(path).unwrap().set_len(mb << 20).unwrap();
    }
    format!(
        "[[bdev]]\ntype = \"uring\"\nname = \"{name}\"\nfilename = \"{}\"\nblock_size = 512\n",
        path.display()
    )
}

/// Kills the child on drop (perf left running by a failed assertion).
struct Running(Option<Child>);

impl Running {
    fn alive(&mut self) -> bool {
        self.0.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    fn wait(mut self, secs: u64) -> Output {
        let mut child = self.0.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The trio, the host, and where everything listens.
struct Cluster {
    net: Net,
    dir: tempfile::TempDir,
    _bunker: Daemon,
    secondary: Daemon,
    primary: Daemon,
    started: Instant,
}

impl Cluster {
    fn new() -> Cluster {
        let started = Instant::now();
        let net = Net::new(&["primary", "bunker", "secondary", "host"]);
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let d = dir.path();
        let raddr = |node: &str| format!("{}:{RPORT}", net.addr(node));

        let bunker =
            Daemon::start_in(net.ns("bunker"), &format!("{BASE}{}", uring("BLog", &d.join("b-log"), LOG_MB)));
        bunker.rpc("replication_listen", Some(json!({"address": raddr("bunker")}))).unwrap();
        bunker.rpc("bunker_create", Some(json!({"volume": "vol0", "log_bdev": "BLog"}))).unwrap();

        let cfg = format!(
            "{BASE}{}{}{}",
            uring("SData", &d.join("s-data.img"), DATA_MB),
            uring("SStage", &d.join("s-stage.log"), LOG_MB),
            uring("SLog", &d.join("s-log.log"), LOG_MB)
        );
        let secondary = Daemon::start_in(net.ns("secondary"), &cfg);
        secondary.rpc("replication_listen", Some(json!({"address": raddr("secondary")}))).unwrap();
        let s = json!({"volume": "vol0", "data_bdev": "SData", "staging_bdev": "SStage", "log_bdev": "SLog",
                       "bunker": raddr("bunker")});
        secondary.rpc("secondary_create", Some(s)).unwrap();
        export(&secondary, &net.addr("secondary").to_string(), None);

        let cfg = format!(
            "{BASE}{}{}",
            uring("Data", &d.join("p-data.img"), DATA_MB),
            uring("Log", &d.join("p-log.log"), LOG_MB)
        );
        let primary = Daemon::start_in(net.ns("primary"), &cfg);
        let v = json!({"name": "vol0", "data_bdev": "Data", "log_bdev": "Log", "mode": "bunker-sync",
                       "bunker": raddr("bunker"), "on_bunker_loss": "local-only"});
        primary.rpc("volume_create", Some(v)).unwrap();
        primary
            .rpc("replication_create", Some(json!({"volume": "vol0", "secondary": raddr("secondary")})))
            .unwrap();
        export(&primary, &net.addr("primary").to_string(), Some("vol0"));

        let c = Cluster { net, dir, _bunker: bunker, secondary, primary, started };
        c.wait("the shipping link up", 10, |c| c.ship()["link"] == "up");
        c.wait("the bunker link up", 10, |c| c.volume()["status"]["bunker_link"] == "up");
        c.say("trio up");
        c
    }

    fn say(&self, what: &str) {
        eprintln!("[{:6.2} s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// The primary's view of the secondary (`replication_status`).
    fn ship(&self) -> Value {
        self.primary.rpc("replication_status", None).unwrap()["primaries"][0]["secondary"].clone()
    }

    /// The primary's `volume_status`.
    fn volume(&self) -> Value {
        self.primary.rpc("volume_status", Some(json!({"name": "vol0"}))).unwrap()
    }

    fn writes(&self) -> u64 {
        self.volume()["status"]["writes"].as_u64().unwrap()
    }

    fn committed(&self) -> u64 {
        self.primary.rpc("replication_status", None).unwrap()["primaries"][0]["committed"].as_u64().unwrap()
    }

    /// Waits for `f`; panics with both ends' status and logs after `secs`. Returns the wait.
    fn wait(&self, what: &str, secs: u64, f: impl Fn(&Cluster) -> bool) -> Duration {
        let t = Instant::now();
        while !f(self) {
            if t.elapsed() > Duration::from_secs(secs) {
                let p = self.primary.rpc("replication_status", None).ok();
                let s = self.secondary.rpc("replication_status", None).ok();
                panic!(
                    "timed out after {secs} s waiting for {what}\nprimary status: {p:?}\nsecondary status: {s:?}\n\
                     primary log:\n{}\nsecondary log:\n{}",
                    self.primary.log(),
                    self.secondary.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        t.elapsed()
    }

    fn trid(&self, node: &str) -> String {
        format!("trtype:tcp traddr:{} trsvcid:{NPORT} subnqn:{NQN} hostnqn:{HOST}", self.net.addr(node))
    }

    /// A verified random writer on the primary from the host namespace, logging every ack.
    fn writer(&self, ack: &Path) -> Running {
        let child = self
            .net
            .command("host", bin())
            .args(["perf", "-r", &self.trid("primary"), "-q", "16", "-o", "4096", "-w", "randwrite"])
            .args(["--verify", "-t", "60", "--ack-log", ack.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Running(Some(child))
    }

    /// SIGKILLs the primary.
    fn kill_primary(&mut self) {
        self.primary.child.kill().unwrap();
        self.primary.child.wait().unwrap();
    }

    /// Fails over to the secondary; the report.
    fn failover(&self) -> Value {
        let t = Instant::now();
        let r = self
            .secondary
            .rpc("volume_failover", Some(json!({"volume": "vol0", "nqn": NQN})))
            .unwrap_or_else(|e| panic!("failover: {e:?}\nsecondary log:\n{}", self.secondary.log()));
        self.say(&format!("failover in {} ms (RPC): {r}", t.elapsed().as_millis()));
        r
    }

    /// `ferrite perf --check-ack-log` against the secondary, from the host namespace.
    fn check_ack_log(&self, ack: &Path) {
        let out = self
            .net
            .command("host", bin())
            .args(["perf", "--check-ack-log", ack.to_str().unwrap(), "-r", &self.trid("secondary"), "--json"])
            .output()
            .unwrap();
        let text =
            format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "acknowledged writes lost after failover:\n{text}\nsecondary log:\n{}",
            self.secondary.log()
        );
        self.say(&format!("ack log checked on the secondary: {}", text.trim().replace('\n', " ")));
    }
}

fn export(d: &Daemon, addr: &str, ns: Option<&str>) {
    d.rpc("nvmf_create_transport", Some(json!({"trtype": "TCP"}))).unwrap();
    d.rpc("nvmf_create_subsystem", Some(json!({"nqn": NQN, "allow_any_host": true}))).unwrap();
    if let Some(b) = ns {
        d.rpc("nvmf_subsystem_add_ns", Some(json!({"nqn": NQN, "namespace": {"bdev_name": b}}))).unwrap();
    }
    let la = json!({"trtype": "tcp", "traddr": addr, "trsvcid": NPORT.to_string()});
    d.rpc("nvmf_subsystem_add_listener", Some(json!({"nqn": NQN, "listen_address": la}))).unwrap();
}

/// The secondary is partitioned away under load: writes go on, the link is reported down,
/// shipping catches up after the partition, and a failover after SIGKILL loses nothing.
#[test]
fn partition_then_failover_loses_no_acknowledged_write() {
    probe_or_skip!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::new();
    let ack = c.dir.path().join("ack.log");
    let mut run = c.writer(&ack);
    std::thread::sleep(Duration::from_secs(1));
    assert!(run.alive(), "perf ended early: {:?}", run.wait(1));
    let w0 = c.writes();
    assert!(w0 > 0, "no write acknowledged in the first second");

    c.net.link_down("secondary");
    let cut = Instant::now();
    c.say(&format!("secondary cut off, {w0} writes so far, lag {}", c.ship()["lag_bytes"]));
    let seen = c.wait("the primary to report the secondary link lost", 15, |c| {
        let s = c.ship();
        s["link"] != "up" || !s["alarm"].is_null()
    });
    let s = c.ship();
    c.say(&format!("link loss reported after {} ms: {s}", seen.as_millis()));
    assert!(s["link"] != "up" && s["alarm"].as_str().is_some_and(|a| a.contains("unreachable")), "{s}");
    let w1 = c.writes();
    std::thread::sleep(Duration::from_millis(500));
    let w2 = c.writes();
    assert!(w2 > w1 && w1 > w0, "the primary stopped acknowledging writes: {w0} {w1} {w2}");
    assert!(run.alive(), "perf ended while the secondary was cut off: {:?}", run.wait(1));
    let lag_cut = c.ship()["lag_bytes"].as_u64().unwrap();
    c.say(&format!("writes still acknowledged ({w1} -> {w2} in 0.5 s), lag {lag_cut} B"));

    c.net.link_up("secondary");
    let healed = Instant::now();
    let target = c.committed();
    let up = c.wait("the shipping link to come back", 20, |c| c.ship()["link"] == "up");
    c.say(&format!(
        "link up again {} ms after link_up (cut for {} ms)",
        up.as_millis(),
        cut.elapsed().as_millis()
    ));
    let caught = c.wait("the secondary to apply what was written during the cut", 20, |c| {
        c.ship()["applied"].as_u64() >= Some(target)
    });
    c.say(&format!(
        "the cut's tail (>= {} B) applied {} ms after link_up",
        lag_cut,
        (caught + up).as_millis()
    ));
    // Under a writer that never pauses, `lag_bytes` is exactly 0 only when a sample falls between
    // an Applied and the next commit (seconds apart at QD16); caught up means back to the
    // steady lag of a few batches, under a second old, with no alarm.
    c.wait("the lag to drain to its steady state", 20, |c| {
        let s = c.ship();
        s["lag_bytes"].as_u64() < Some(1 << 20)
            && s["lag_seconds"].as_f64() < Some(0.5)
            && s["alarm"].is_null()
    });
    c.say(&format!("lag drained {} ms after link_up: {}", healed.elapsed().as_millis(), c.ship()));
    assert!(run.alive(), "perf ended before the kill: {:?}", run.wait(1));

    c.kill_primary();
    c.say("primary killed");
    let out = run.wait(30);
    assert!(!out.status.success(), "perf must fail when the primary dies");
    let report = c.failover();
    c.check_ack_log(&ack);
    assert!(report["epoch"].as_u64() > Some(0), "{report}");
    c.say("scenario A done");
}

/// The primary dies while the secondary is cut off: its tail is only on the bunker, and the
/// failover pulls it from there.
#[test]
fn failover_of_a_lagging_secondary_pulls_the_tail_from_the_bunker() {
    probe_or_skip!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::new();
    let ack = c.dir.path().join("ack.log");
    let mut run = c.writer(&ack);
    std::thread::sleep(Duration::from_secs(1));
    assert!(run.alive(), "perf ended early: {:?}", run.wait(1));
    c.net.link_down("secondary");
    let w0 = c.writes();
    c.say(&format!("secondary cut off, {w0} writes so far"));
    std::thread::sleep(Duration::from_secs(2));
    let s = c.ship();
    assert!(c.writes() > w0, "the primary stopped acknowledging writes while the secondary is cut off");
    c.say(&format!("killing the primary: {s}"));
    c.kill_primary();
    let out = run.wait(30);
    assert!(!out.status.success(), "perf must fail when the primary dies");
    c.net.link_up("secondary");
    c.say("secondary link restored");
    let report = c.failover();
    c.check_ack_log(&ack);
    let pulled = report["bytes_from_bunker"].as_u64().unwrap();
    let sectors = report["end"].as_u64().unwrap() - report["received_before"].as_u64().unwrap();
    c.say(&format!("the secondary lacked {sectors} log sectors (~{} 4 KiB writes)", sectors / 9));
    assert!(pulled > 1 << 20, "the tail should come from the bunker: {report}");
    c.say("scenario B done");
}

//! Primary, bunker and secondary as three `ferrite serve` processes: asynchronous shipping
//! keeps the replica a prefix of the primary's writes; SIGKILL of the primary and
//! `volume_failover` on the secondary (pulling the tail from the bunker, with shipping
//! throttled by the fault proxy so the secondary lags) lose no acknowledged write, checked by
//! `ferrite perf --check-ack-log`; a restarted old primary is fenced and accepts no write.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, Daemon};
use ferrite::net::proxy::{mbit, Proxy, ProxyConfig};
use serde_json::{json, Value};

const NQN: &str = "nqn.2026-11.io.ferrite:vol0";
const HOST: &str = "nqn.2026-11.io.ferrite:h";

/// Log sizes (MiB): room for the ~1.6 s of writes a test runs before it kills the primary with
/// a throttled secondary, so the secondary is never dropped for a full log (which trims what
/// a failover needs from the bunker) however fast this machine writes that day.
const LOG_MB: u64 = 256;

fn uring(name: &str, path: &Path, mb: u64) -> String {
    if !path.exists() {
        // Sparse: reads of what was never written see zeros, and a large log costs nothing.
        std::fs::File::create(path).unwrap().set_len(mb << 20).unwrap();
    }
    format!(
        "[[bdev]]\ntype = \"uring\"\nname = \"{name}\"\nfilename = \"{}\"\nblock_size = 512\n",
        path.display()
    )
}

const BASE: &str = "[reactor]\ncores = [0, 1]\n[memory]\nbuf_count = 512\n";

fn export(d: &Daemon, port: u16, ns: Option<&str>) {
    d.rpc("nvmf_create_transport", Some(json!({"trtype": "TCP"}))).unwrap();
    d.rpc("nvmf_create_subsystem", Some(json!({"nqn": NQN, "allow_any_host": true}))).unwrap();
    if let Some(b) = ns {
        d.rpc("nvmf_subsystem_add_ns", Some(json!({"nqn": NQN, "namespace": {"bdev_name": b}}))).unwrap();
    }
    let la = json!({"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
    d.rpc("nvmf_subsystem_add_listener", Some(json!({"nqn": NQN, "listen_address": la}))).unwrap();
}

/// Ports and files of one trio.
struct Trio {
    dir: PathBuf,
    bport: u16,
    sport: u16,
    pport: u16,
    snport: u16,
}

impl Trio {
    fn new(dir: &Path) -> Trio {
        Trio {
            dir: dir.into(),
            bport: free_port(),
            sport: free_port(),
            pport: free_port(),
            snport: free_port(),
        }
    }

    fn bunker(&self) -> Daemon {
        let d = Daemon::start(&format!("{BASE}{}", uring("BLog", &self.dir.join("bunker.log"), LOG_MB)));
        d.rpc("replication_listen", Some(json!({"address": format!("127.0.0.1:{}", self.bport)}))).unwrap();
        d.rpc("bunker_create", Some(json!({"volume": "vol0", "log_bdev": "BLog"}))).unwrap();
        d
    }

    fn secondary(&self) -> Daemon {
        self.secondary_with(json!({}))
    }

    /// The secondary, with extra `secondary_create` parameters.
    fn secondary_with(&self, extra: Value) -> Daemon {
        let cfg = format!(
            "{BASE}{}{}{}",
            uring("SData", &self.dir.join("s-data.img"), 16),
            uring("SStage", &self.dir.join("s-stage.log"), LOG_MB),
            uring("SLog", &self.dir.join("s-log.log"), LOG_MB)
        );
        let d = Daemon::start(&cfg);
        d.rpc("replication_listen", Some(json!({"address": format!("127.0.0.1:{}", self.sport)}))).unwrap();
        let mut p = json!({"volume": "vol0", "data_bdev": "SData", "staging_bdev": "SStage", "log_bdev": "SLog",
                           "bunker": format!("127.0.0.1:{}", self.bport)});
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        d.rpc("secondary_create", Some(p)).unwrap();
        export(&d, self.snport, None);
        d
    }

    /// The primary; ships to `ship_to` (the secondary, or a proxy in front of it) when new.
    fn primary(&self, ship_to: u16) -> Daemon {
        let cfg = format!(
            "{BASE}{}{}",
            uring("Data", &self.dir.join("p-data.img"), 16),
            uring("Log", &self.dir.join("p-log.log"), LOG_MB)
        );
        let d = Daemon::start(&cfg);
        if d.rpc("volume_get_volumes", None).unwrap().as_array().unwrap().is_empty() {
            let v = json!({"name": "vol0", "data_bdev": "Data", "log_bdev": "Log", "mode": "bunker-sync",
                           "bunker": format!("127.0.0.1:{}", self.bport), "on_bunker_loss": "local-only"});
            d.rpc("volume_create", Some(v)).unwrap();
            let r = json!({"volume": "vol0", "secondary": format!("127.0.0.1:{ship_to}")});
            d.rpc("replication_create", Some(r)).unwrap();
        }
        export(&d, self.pport, Some("vol0"));
        d
    }
}

fn status(d: &Daemon) -> Value {
    d.rpc("replication_status", None).unwrap()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_link(p: &Daemon, s: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while primary_view(p)["secondary"]["link"] != "up" {
        assert!(
            Instant::now() < deadline,
            "secondary link not up: {}\nprimary log:\n{}\nsecondary log:\n{}",
            primary_view(p),
            p.log(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn trid(port: u16) -> String {
    format!("trtype:tcp traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN} hostnqn:{HOST}")
}

fn perf(port: u16, extra: &[&str]) -> std::process::Child {
    Command::new(bin())
        .args(["perf", "-r", &trid(port), "-q", "16", "-o", "4096", "-w", "randwrite", "--verify"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn check_ack_log(port: u16, log: &Path) -> (bool, String) {
    let out = Command::new(bin())
        .args(["perf", "--check-ack-log", log.to_str().unwrap(), "-r", &trid(port), "--json"])
        .output()
        .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn secondary_view(s: &Daemon) -> Value {
    status(s)["secondaries"][0].clone()
}

fn primary_view(p: &Daemon) -> Value {
    status(p)["primaries"][0].clone()
}

/// Shipping keeps up, the replica reaches the primary's exact contents, and a frozen replica
/// equals the primary's volume after the prefix it reports applied.
#[test]
fn shipping_keeps_the_replica_identical() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = Trio::new(dir.path());
    let (_b, s) = (t.bunker(), t.secondary());
    let p = t.primary(t.sport);
    wait_for_link(&p, &s);
    let out = perf(t.pport, &["-t", "2"]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let landed = || {
        let st = p.rpc("volume_status", Some(json!({"name": "vol0"}))).unwrap()["status"].clone();
        (st["committed"] == st["tail"]).then(|| st["committed"].as_u64().unwrap())
    };
    wait_for("the primary's writes to land", 30, || landed().is_some());
    let committed = landed().unwrap();
    wait_for("the replica to apply everything", 30, || {
        secondary_view(&s)["applied"].as_u64() >= Some(committed)
    });
    wait_for("the primary to see no lag", 5, || primary_view(&p)["secondary"]["lag_bytes"] == 0);
    let r = s.rpc("secondary_freeze", Some(json!({"volume": "vol0"}))).unwrap();
    assert!(r["applied"].as_u64() >= Some(committed), "{r}");
    let (a, b) =
        (std::fs::read(t.dir.join("p-data.img")).unwrap(), std::fs::read(t.dir.join("s-data.img")).unwrap());
    assert!(a == b, "replica differs from the primary after applying everything");
    s.rpc("secondary_freeze", Some(json!({"volume": "vol0", "frozen": false}))).unwrap();
    // The replica got there by applying entries (how many depends on how busy the machine is).
    assert!(secondary_view(&s)["entries_applied"].as_u64() > Some(100), "{}", secondary_view(&s));
}

/// One kill + failover: returns bytes pulled from the bunker.
fn kill_and_fail_over(iter: u32, throttle: bool, rng: &mut ferrite::rng::Rng) -> u64 {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = Trio::new(dir.path());
    let (_b, s) = (t.bunker(), t.secondary());
    let mut cfg =
        ProxyConfig::new("127.0.0.1:0".parse().unwrap(), format!("127.0.0.1:{}", t.sport).parse().unwrap());
    if throttle {
        cfg.rate = Some(mbit(4.0));
    }
    let proxy = Proxy::start(cfg).unwrap();
    let mut p = t.primary(proxy.local_addr().port());
    wait_for_link(&p, &s);
    let ack = t.dir.join("ack.log");
    let run = perf(t.pport, &["-t", "60", "--ack-log", ack.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(400 + rng.below(1200)));
    let lag = primary_view(&p)["secondary"]["lag_bytes"].as_u64().unwrap_or(0);
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(!out.status.success(), "perf must fail when the primary dies");
    let f = json!({"volume": "vol0", "nqn": NQN});
    let report = s
        .rpc("volume_failover", Some(f))
        .unwrap_or_else(|e| panic!("iteration {iter}: failover: {e:?}\n{}", s.log()));
    let (ok, text) = check_ack_log(t.snport, &ack);
    assert!(ok, "iteration {iter}: acknowledged writes lost after failover ({report}):\n{text}");
    let v = s.rpc("volume_get_volumes", None).unwrap();
    assert_eq!(v[0]["status"]["epoch"], report["epoch"], "{v}");
    eprintln!("iteration {iter}: lag at kill {lag} B, failover {report}");
    drop(proxy);
    report["bytes_from_bunker"].as_u64().unwrap()
}

/// SIGKILL the primary at random moments, fail over through the bunker, every acknowledged
/// write is on the new primary; half the runs throttle shipping so the tail comes from the
/// bunker.
#[test]
fn failover_through_the_bunker_loses_no_acknowledged_write() {
    let iterations: u32 =
        std::env::var("FERRITE_FAILOVER_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut rng = ferrite::rng::Rng::new(0xFA11_0BE5);
    let mut pulled = 0;
    for iter in 0..iterations {
        pulled += kill_and_fail_over(iter, iter % 2 == 1, &mut rng);
    }
    assert!(pulled > 1 << 20, "throttled runs should pull their tail from the bunker (pulled {pulled} B)");
}

/// After a failover the old primary comes back on its old epoch: the bunker fences it and it
/// accepts no write (nor read).
#[test]
fn a_stale_primary_never_accepts_a_write() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = Trio::new(dir.path());
    let (_b, s) = (t.bunker(), t.secondary());
    let mut p = t.primary(t.sport);
    wait_for_link(&p, &s);
    let out = perf(t.pport, &["-t", "1"]).wait_with_output().unwrap();
    assert!(out.status.success());
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    s.rpc("volume_failover", Some(json!({"volume": "vol0", "nqn": NQN}))).unwrap();
    let p2 = t.primary(t.sport);
    wait_for("the old primary to learn it is fenced", 10, || primary_view(&p2)["fenced"] == true);
    let out = perf(t.pport, &["-t", "1"]).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the stale primary served I/O:\n{text}");
    assert!(primary_view(&p2)["alarm"].as_str().unwrap_or("").contains("fenced"), "{}", primary_view(&p2));
    let st = p2.rpc("volume_status", Some(json!({"name": "vol0"}))).unwrap();
    assert_eq!(st["status"]["writes"], 0, "the stale primary acknowledged writes: {st}");
}

/// Applies the staging log's entries in `[from, to)` (read from the file) onto `image`.
fn apply_staged(stage: &Path, ring: u64, from: u64, to: u64, image: &mut [u8]) {
    use ferrite::replication::format::{EntryHeader, EntryKind};
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(stage).unwrap();
    let mut lsn = from;
    while lsn < to {
        let mut sector = vec![0u8; 512];
        f.read_exact_at(&mut sector, (2 + lsn % ring) * 512).unwrap();
        let h =
            EntryHeader::decode(&sector, lsn, 512).unwrap_or_else(|e| panic!("staged entry at {lsn}: {e}"));
        if h.kind == EntryKind::Write {
            let mut data = vec![0u8; h.data_len as usize];
            f.read_exact_at(&mut data, (2 + lsn % ring + 1) * 512).unwrap();
            let at = (h.lba * 512) as usize;
            image[at..at + data.len()].copy_from_slice(&data);
        }
        lsn += u64::from(h.sectors);
    }
}

/// Frozen at random moments under load, the replica always equals the previous frozen state
/// plus the staged entries between the two applied ends, in order: by induction, a prefix of
/// the primary's writes applied in order, never a half-applied batch.
#[test]
fn a_frozen_replica_is_always_a_prefix_of_the_primary() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = Trio::new(dir.path());
    let (_b, s) = (t.bunker(), t.secondary());
    let p = t.primary(t.sport);
    wait_for_link(&p, &s);
    let mut head = vec![0u8; 1024];
    std::io::Read::read_exact(&mut std::fs::File::open(t.dir.join("p-log.log")).unwrap(), &mut head).unwrap();
    let ring = ferrite::replication::format::Superblock::choose(&head[..512], &head[512..1024])
        .unwrap()
        .ring_sectors;
    let freeze = |on: bool| s.rpc("secondary_freeze", Some(json!({"volume": "vol0", "frozen": on}))).unwrap();
    let mut applied = freeze(true)["applied"].as_u64().unwrap();
    let mut image = std::fs::read(t.dir.join("s-data.img")).unwrap();
    freeze(false);
    let mut run = perf(t.pport, &["-t", "3"]);
    let mut rng = ferrite::rng::Rng::new(7);
    let mut checked = 0;
    // Freeze at random moments while the writer runs (at least eight times), then once more
    // after the secondary has applied everything the run wrote, however slow the machine.
    let mut rounds = 0;
    loop {
        rounds += 1;
        std::thread::sleep(Duration::from_millis(50 + rng.below(300)));
        let last = rounds > 8 && run.try_wait().unwrap().is_some();
        if last {
            let committed = primary_view(&p)["committed"].as_u64().unwrap();
            wait_for("the secondary to apply everything", 60, || {
                secondary_view(&s)["applied"].as_u64() >= Some(committed)
            });
        }
        let now = freeze(true)["applied"].as_u64().unwrap();
        apply_staged(&t.dir.join("s-stage.log"), ring, applied, now, &mut image);
        let disk = std::fs::read(t.dir.join("s-data.img")).unwrap();
        assert!(disk == image, "frozen replica at LSN {now} is not the prefix up to it");
        checked += now - applied;
        applied = now;
        freeze(false);
        if last {
            break;
        }
    }
    assert!(run.wait_with_output().unwrap().status.success());
    assert!(checked > 1_000, "too little was checked ({checked} sectors)");
}

/// A node that can play either role: Data, Stage and Log bdevs, its replication port, and an
/// NVMe/TCP listener on the subsystem.
fn either(dir: &Path, tag: &str, rport: u16, nport: u16) -> Daemon {
    let cfg = format!(
        "{BASE}{}{}{}",
        uring("Data", &dir.join(format!("{tag}-data.img")), 16),
        uring("Stage", &dir.join(format!("{tag}-stage.log")), LOG_MB),
        uring("Log", &dir.join(format!("{tag}-log.log")), LOG_MB)
    );
    let d = Daemon::start(&cfg);
    d.rpc("replication_listen", Some(json!({"address": format!("127.0.0.1:{rport}")}))).unwrap();
    export(&d, nport, None);
    d
}

/// Primary and secondary swap roles five times with `ferrite migrate` while a verified writer
/// runs: every acknowledged write is on the new primary each time, and the volumes end equal.
#[test]
fn migration_back_and_forth_loses_nothing() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (ra, rb, na, nb) = (free_port(), free_port(), free_port(), free_port());
    let a = either(dir.path(), "a", ra, na);
    let b = either(dir.path(), "b", rb, nb);
    let v = json!({"name": "vol0", "data_bdev": "Data", "log_bdev": "Log", "mode": "local-only"});
    a.rpc("volume_create", Some(v)).unwrap();
    a.rpc("replication_create", Some(json!({"volume": "vol0", "secondary": format!("127.0.0.1:{rb}")})))
        .unwrap();
    b.rpc(
        "secondary_create",
        Some(json!({"volume": "vol0", "data_bdev": "Data", "staging_bdev": "Stage", "log_bdev": "Log"})),
    )
    .unwrap();
    a.rpc("nvmf_subsystem_add_ns", Some(json!({"nqn": NQN, "namespace": {"bdev_name": "vol0"}}))).unwrap();
    let nodes = [(&a, ra, na), (&b, rb, nb)];
    for round in 0..5usize {
        let (from, from_r, from_n) = nodes[round % 2];
        let (to, _, to_n) = nodes[(round + 1) % 2];
        wait_for("shipping link up", 10, || primary_view(from)["secondary"]["link"] == "up");
        let ack = dir.path().join(format!("ack-{round}.log"));
        let run = perf(from_n, &["-t", "2", "--ack-log", ack.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(700));
        let out = from.cli(&[
            "migrate",
            "vol0",
            "--to",
            to.socket.to_str().unwrap(),
            "--staging",
            "Stage",
            "--secondary-addr",
            &format!("127.0.0.1:{from_r}"),
            "--nqn",
            NQN,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "round {round}: migrate failed:\n{text}\n{}", from.log());
        let _ = run.wait_with_output().unwrap();
        let (ok, check) = check_ack_log(to_n, &ack);
        assert!(ok, "round {round}: acknowledged writes lost in the migration ({text}):\n{check}");
        eprintln!("round {round}: {}", text.trim());
    }
    // B is primary after five swaps; once A has applied everything the volumes are equal.
    wait_for("link", 10, || primary_view(&b)["secondary"]["link"] == "up");
    let committed = primary_view(&b)["committed"].as_u64().unwrap();
    wait_for("A to apply everything", 30, || secondary_view(&a)["applied"].as_u64() >= Some(committed));
    a.rpc("secondary_freeze", Some(json!({"volume": "vol0"}))).unwrap();
    let (x, y) = (
        std::fs::read(dir.path().join("a-data.img")).unwrap(),
        std::fs::read(dir.path().join("b-data.img")).unwrap(),
    );
    assert!(x == y, "the volumes differ after five migrations");
}

/// Failback: the old primary wrote a tail that reached neither the bunker (dead) nor the
/// secondary (shipping paused); after a forced failover and new writes on the new primary, the
/// old primary rejoins as secondary. Only the differing blocks are resent (its divergent
/// blocks and the new primary's writes since the promotion, through the dirty-block map, so a
/// restart cannot lose them), and the volumes end identical.
#[test]
fn failback_resends_only_the_differing_blocks() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = Trio::new(dir.path());
    let (mut b, s) = (t.bunker(), t.secondary());
    let proxy = Proxy::start(ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        format!("127.0.0.1:{}", t.sport).parse().unwrap(),
    ))
    .unwrap();
    let (rp, proxy_port) = (free_port(), proxy.local_addr().port());
    let primary = |fresh: bool| {
        let cfg = format!(
            "{BASE}{}{}{}",
            uring("Data", &t.dir.join("p-data.img"), 16),
            uring("Log", &t.dir.join("p-log.log"), LOG_MB),
            uring("Stage", &t.dir.join("p-stage.log"), LOG_MB)
        );
        let d = Daemon::start(&cfg);
        d.rpc("replication_listen", Some(json!({"address": format!("127.0.0.1:{rp}")}))).unwrap();
        if fresh {
            let v = json!({"name": "vol0", "data_bdev": "Data", "log_bdev": "Log", "mode": "bunker-sync",
                           "bunker": format!("127.0.0.1:{}", t.bport), "on_bunker_loss": "local-only"});
            d.rpc("volume_create", Some(v)).unwrap();
            let r = json!({"volume": "vol0", "secondary": format!("127.0.0.1:{proxy_port}")});
            d.rpc("replication_create", Some(r)).unwrap();
            export(&d, t.pport, Some("vol0"));
        }
        d
    };
    let mut p = primary(true);
    wait_for_link(&p, &s);
    assert!(perf(t.pport, &["-t", "1"]).wait_with_output().unwrap().status.success());
    let committed = primary_view(&p)["committed"].as_u64().unwrap();
    wait_for("the secondary to catch up", 20, || secondary_view(&s)["applied"].as_u64() >= Some(committed));
    // The divergent tail: shipping stalls, the bunker dies, the primary goes on alone.
    proxy.pause();
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let out = perf(t.pport, &["--io-count", "500"]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    drop(proxy);
    let report =
        s.rpc("volume_failover", Some(json!({"volume": "vol0", "nqn": NQN, "force": true}))).unwrap();
    assert_eq!(report["bytes_from_bunker"], 0, "{report}");
    // New writes on the new primary (NEW_WRITES blocks at most), then the old primary comes
    // back (unconfirmed: its bunker is gone) and fails back.
    const NEW_WRITES: u64 = 300;
    let n = NEW_WRITES.to_string();
    assert!(perf(t.snport, &["--io-count", &n]).wait_with_output().unwrap().status.success());
    let p2 = primary(false);
    let out = p2.cli(&[
        "failback",
        "vol0",
        "--primary",
        s.socket.to_str().unwrap(),
        "--staging",
        "Stage",
        "--secondary-addr",
        &format!("127.0.0.1:{rp}"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failback failed:\n{text}\n{}", p2.log());
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let divergent = plan["divergent_blocks"].as_u64().unwrap();
    assert!(divergent > 0, "the test should leave a divergent tail: {plan}");
    let sv = || s.rpc("replication_status", None).unwrap()["primaries"][0]["secondary"].clone();
    wait_for("the resync to complete", 30, || sv()["resync_done"] == true);
    let landed = || {
        let st = s.rpc("volume_status", Some(json!({"name": "vol0"}))).unwrap()["status"].clone();
        (st["committed"] == st["tail"]).then(|| st["committed"].as_u64().unwrap())
    };
    wait_for("the new primary's writes to land", 30, || landed().is_some());
    let committed = landed().unwrap();
    wait_for("the old primary to apply the new primary's log", 30, || {
        p2.rpc("replication_status", None).unwrap()["secondaries"][0]["applied"].as_u64() >= Some(committed)
    });
    // Resent: the divergent blocks and the blocks the new primary wrote since its promotion.
    let v = sv();
    let sent = v["resync_blocks_sent"].as_u64().unwrap();
    assert!(
        (divergent..=divergent + NEW_WRITES).contains(&sent),
        "only the differing blocks are resent: {sent} ({v} {plan})"
    );
    assert!(sent < 4096, "a full copy is not a failback: {sent} blocks");
    p2.rpc("secondary_freeze", Some(json!({"volume": "vol0"}))).unwrap();
    let (x, y) =
        (std::fs::read(t.dir.join("p-data.img")).unwrap(), std::fs::read(t.dir.join("s-data.img")).unwrap());
    assert!(x == y, "the volumes differ after failback ({plan})");
    eprintln!("failback: {plan}, then the log from the new primary");
}

/// auto_failover: cutting the secondary off the primary alone does nothing (the bunker still
/// hears the primary); killing the primary promotes the secondary by itself, losing nothing.
#[test]
fn auto_failover_needs_both_witnesses_and_loses_nothing() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = Trio::new(dir.path());
    let b = t.bunker();
    let s = t.secondary_with(json!({"auto_failover_ms": 800, "nqn": NQN}));
    let proxy = Proxy::start(ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        format!("127.0.0.1:{}", t.sport).parse().unwrap(),
    ))
    .unwrap();
    let mut p = t.primary(proxy.local_addr().port());
    wait_for_link(&p, &s);
    let ack = t.dir.join("ack.log");
    let run = perf(t.pport, &["-t", "60", "--ack-log", ack.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(500));
    proxy.cut();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        secondary_view(&s)["role"],
        "replica",
        "a partition from the secondary alone must not promote it\nsecondary:\n{}\nbunker:\n{}",
        s.log(),
        b.log()
    );
    proxy.heal();
    wait_for_link(&p, &s);
    // The cut may have filled the log and dropped the secondary: it must be back in step (a
    // replica being resynchronised is no consistent image, and is rightly not promoted).
    wait_for("the secondary back in step", 60, || {
        let v = primary_view(&p);
        v["secondary"]["out_of_sync"] == false && v["secondary"]["synced"] == true
    });
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let _ = run.wait_with_output().unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    while secondary_view(&s)["role"] != "primary" {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the automatic failover\nsecondary:\n{}\nbunker:\n{}",
            s.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let (ok, text) = check_ack_log(t.snport, &ack);
    assert!(ok, "acknowledged writes lost in the automatic failover:\n{text}");
    eprintln!(
        "automatic failover {} ms after the kill: {}",
        took.as_millis(),
        secondary_view(&s)["failover"]
    );
    eprintln!("{}", s.log().lines().filter(|l| l.contains("failover")).collect::<Vec<_>>().join("\n"));
    drop(b);
}

/// Writes `ios` 4 KiB random writes confined to the first `mb` MiB of the volume.
fn write_confined(port: u16, mb: u64, ios: u64) {
    let (mb, ios) = (mb.to_string(), ios.to_string());
    let out = perf(port, &["--size-mb", &mb, "--io-count", &ios, "-t", "60"]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Waits until the secondary is in step and has applied everything, then compares volumes.
fn wait_identical(t: &Trio, p: &Daemon, s: &Daemon) {
    wait_for("the secondary to be back in step", 60, || {
        let v = primary_view(p);
        v["secondary"]["out_of_sync"] == false && v["secondary"]["synced"] == true
    });
    let committed = primary_view(p)["committed"].as_u64().unwrap();
    wait_for("the replica to apply everything", 60, || {
        secondary_view(s)["applied"].as_u64() >= Some(committed)
    });
    let (a, b) =
        (std::fs::read(t.dir.join("p-data.img")).unwrap(), std::fs::read(t.dir.join("s-data.img")).unwrap());
    let first = a.chunks(512).zip(b.chunks(512)).position(|(x, y)| x != y);
    assert!(first.is_none(), "replica differs from the primary at block {first:?}\n{}", s.log());
}

/// The secondary is down while the primary's log fills: it is dropped (the host never
/// stalls), the dirty-block map records what changed, and when the secondary returns only
/// those blocks are resent before shipping goes on; the volumes end identical.
#[test]
fn a_dropped_secondary_resyncs_only_what_changed() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = Trio::new(dir.path());
    let (_b, mut s) = (t.bunker(), t.secondary());
    let p = t.primary(t.sport);
    wait_for_link(&p, &s);
    write_confined(t.pport, 16, 2000);
    wait_identical(&t, &p, &s);
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    // 1 MiB (2048 blocks of 512 B) written over and over: far more log than the ring holds.
    while primary_view(&p)["secondary"]["dropped"] != true {
        write_confined(t.pport, 1, 4000);
    }
    let view = primary_view(&p);
    assert_eq!(view["secondary"]["out_of_sync"], true, "{view}");
    let dirty = view["secondary"]["dirty_blocks"].as_u64().unwrap();
    assert!(dirty > 0 && dirty <= 2048, "dirty blocks {dirty} should be within the 1 MiB written: {view}");
    assert!(view["alarm"].is_null() || !view["alarm"].as_str().unwrap().contains("initial"), "{view}");
    let s = t.secondary();
    write_confined(t.pport, 1, 500); // writes go on during the resync
    wait_identical(&t, &p, &s);
    let sent = secondary_view(&s)["resync_blocks"].as_u64().unwrap();
    eprintln!("dropped secondary: {dirty} blocks dirty of 32768, {sent} resent");
    assert!(
        sent > 0 && sent <= 2048,
        "resent {sent} blocks; only the 1 MiB written may differ\nprimary:\n{}\nsecondary:\n{}",
        p.log(),
        s.log()
    );
}

/// A volume written before any secondary was attached gets a full initial synchronisation
/// from its dirty-block map (every granule), while writes continue.
#[test]
fn a_used_volume_gets_an_initial_synchronisation() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = Trio::new(dir.path());
    let _b = t.bunker();
    let cfg = format!(
        "{BASE}{}{}",
        uring("Data", &t.dir.join("p-data.img"), 16),
        uring("Log", &t.dir.join("p-log.log"), 64) // a small log (the peers' are larger)
    );
    let p = Daemon::start(&cfg);
    let v = json!({"name": "vol0", "data_bdev": "Data", "log_bdev": "Log", "mode": "bunker-sync",
                   "bunker": format!("127.0.0.1:{}", t.bport), "on_bunker_loss": "local-only"});
    p.rpc("volume_create", Some(v)).unwrap();
    export(&p, t.pport, Some("vol0"));
    write_confined(t.pport, 16, 20_000); // beyond half the ring: the log alone cannot seed it
    let s = t.secondary();
    let r = json!({"volume": "vol0", "secondary": format!("127.0.0.1:{}", t.sport)});
    p.rpc("replication_create", Some(r)).unwrap();
    write_confined(t.pport, 16, 1000);
    wait_identical(&t, &p, &s);
    assert_eq!(secondary_view(&s)["resync_blocks"], 32768, "{}", secondary_view(&s));
}

//! A primary and a bunker as two `ferrite serve` processes on loopback: writes through NVMe/TCP
//! to a replicated volume, the bunker's log compared byte for byte with the primary's, SIGKILL
//! of the primary and recovery with no acknowledged write lost, and bunker loss handled per
//! `on_bunker_loss` with catch-up when it returns.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{free_port, Daemon};
use ferrite::nvmf::host::{ok, Host};
use ferrite::nvmf::tcp::pdu::Digests;
use ferrite::replication::format::Superblock;
use ferrite::replication::log::LogGeometry;
use ferrite::replication::recovery::{scan, LogReader};
use serde_json::json;

const NQN: &str = "nqn.2026-11.io.ferrite:vol0";
const HOST: &str = "nqn.2026-11.io.ferrite:h";

fn bunker(dir: &std::path::Path, port: u16) -> Daemon {
    let cfg = format!(
        "[reactor]\ncores = [0, 1]\n[memory]\nbuf_count = 512\n[[bdev]]\ntype = \"uring\"\nname = \"BLog\"\nfilename = \"{}/bunker.log\"\ncreate_size_mb = 64\nblock_size = 512\n",
        dir.display()
    );
    let d = Daemon::start(&cfg);
    d.rpc("replication_listen", Some(json!({"address": format!("127.0.0.1:{port}")}))).unwrap();
    d.rpc("bunker_create", Some(json!({"volume": "vol0", "log_bdev": "BLog"}))).unwrap();
    d
}

fn primary(dir: &std::path::Path, bport: u16, nport: u16, on_loss: &str) -> Daemon {
    let log = dir.join("primary.log");
    if !log.exists() {
        std::fs::write(&log, vec![0u8; 64 << 20]).unwrap();
    }
    primary_with_log(dir, log.to_str().unwrap(), bport, nport, on_loss)
}

/// The volume's published status.
fn status(p: &Daemon) -> serde_json::Value {
    p.rpc("volume_status", Some(json!({"name": "vol0"}))).unwrap()["status"].clone()
}

/// A bunker and a primary whose link to it is up.
fn linked_pair(dir: &std::path::Path, on_loss: &str) -> (Daemon, Daemon, u16, u16) {
    let (bport, nport) = (free_port(), free_port());
    let b = bunker(dir, bport);
    let p = primary(dir, bport, nport, on_loss);
    wait_for("bunker link up", || status(&p)["bunker_link"] == "up");
    (b, p, bport, nport)
}

fn connect(nport: u16) -> (Host, Host) {
    let addr: SocketAddr = format!("127.0.0.1:{nport}").parse().unwrap();
    let admin = Host::admin_queue(addr, NQN, HOST, 0, Digests::NONE).unwrap();
    let mut io = Host::connect(addr, Digests::NONE).unwrap();
    ok(&io.fabrics_connect(1, 63, NQN, HOST, admin.cntlid, 0).unwrap()).unwrap();
    (admin, io)
}

fn block(lba: u64, gen: u64) -> Vec<u8> {
    (0..4096u64).map(|i| (lba.wrapping_mul(31) ^ gen.wrapping_mul(131) ^ i) as u8).collect()
}

struct FileLog(File, LogGeometry);

impl LogReader for FileLog {
    fn read(&mut self, lsn: u64, sectors: u32) -> std::io::Result<Vec<u8>> {
        let mut v = vec![0u8; sectors as usize * 512];
        self.0.read_exact_at(&mut v, self.1.block_of(lsn) * 512)?;
        Ok(v)
    }
}

fn superblock(path: &std::path::Path) -> Superblock {
    let f = File::open(path).unwrap();
    let mut two = vec![0u8; 1024];
    f.read_exact_at(&mut two, 0).unwrap();
    Superblock::choose(&two[..512], &two[512..]).unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bunker_copy_matches_and_primary_crash_loses_nothing() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (b, p, bport, nport) = linked_pair(dir.path(), "local-only");
    let start = status(&p)["tail"].as_u64().unwrap();
    let (_admin, mut io) = connect(nport);
    let mut acked = std::collections::BTreeMap::new();
    for gen in 0..300u64 {
        let lba = (gen * 7919) % 2000 * 8;
        let data = block(lba, gen);
        ok(&io.write(1, lba, &data, 512, 8192).unwrap()).unwrap();
        acked.insert(lba, gen);
    }
    // The bunker's copy equals the primary's log for every acknowledged entry.
    let sb = superblock(&dir.path().join("primary.log"));
    let geo = LogGeometry { sector: 512, ring_start: 2, ring_sectors: sb.ring_sectors };
    let mut plog = FileLog(File::open(dir.path().join("primary.log")).unwrap(), geo);
    let scanned = scan(&mut plog, &geo, start, sb.max_inflight_sectors).unwrap();
    assert_eq!(scanned.entries.len(), 300, "the primary's log holds every write");
    let mut blog = FileLog(File::open(dir.path().join("bunker.log")).unwrap(), geo);
    let mut compared = 0;
    for e in &scanned.entries {
        let n = e.header.sectors;
        assert_eq!(
            plog.read(e.header.lsn, n).unwrap(),
            blog.read(e.header.lsn, n).unwrap(),
            "entry at LSN {} differs on the bunker",
            e.header.lsn
        );
        compared += 1;
    }
    assert!(compared > 0);
    // SIGKILL the primary, restart it on the same files: every acknowledged write is there.
    let mut p = p;
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    drop(io);
    let p2 = primary(dir.path(), bport, nport, "local-only");
    let (_a2, mut io2) = connect(nport);
    for (&lba, &gen) in &acked {
        let (cqe, data) = io2.read(1, lba, 8, 512).unwrap();
        ok(&cqe).unwrap();
        assert!(data == block(lba, gen), "LBA {lba}: acknowledged write {gen} lost after SIGKILL");
    }
    drop((b, p2));
}

#[test]
fn bunker_loss_follows_policy_and_bunker_catches_up() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (b, p, bport, nport) = linked_pair(dir.path(), "local-only");
    let (_admin, mut io) = connect(nport);
    for gen in 0..20u64 {
        ok(&io.write(1, gen * 8, &block(gen * 8, gen), 512, 8192).unwrap()).unwrap();
    }
    drop(b);
    // local-only: writes go on while the bunker is away, with an alarm.
    for gen in 20..60u64 {
        ok(&io.write(1, gen * 8, &block(gen * 8, gen), 512, 8192).unwrap()).unwrap();
    }
    wait_for("alarm", || !status(&p)["alarm"].is_null());
    let b2 = bunker(dir.path(), bport);
    wait_for("bunker catch-up", || {
        let st = &status(&p);
        st["bunker_link"] == "up" && st["bunker_durable"] == st["committed"] && st["alarm"].is_null()
    });
    drop(b2);
}

fn primary_with_log(dir: &std::path::Path, log_path: &str, bport: u16, nport: u16, on_loss: &str) -> Daemon {
    let cfg = format!(
        "[reactor]\ncores = [0, 1]\n[memory]\nbuf_count = 512\n\
         [[bdev]]\ntype = \"uring\"\nname = \"Data\"\nfilename = \"{d}/data.img\"\ncreate_size_mb = 16\nblock_size = 512\n\
         [[bdev]]\ntype = \"uring\"\nname = \"Log\"\nfilename = \"{log_path}\"\nblock_size = 512\n",
        d = dir.display()
    );
    let d = Daemon::start(&cfg);
    let v = json!({"name": "vol0", "data_bdev": "Data", "log_bdev": "Log", "mode": "bunker-sync",
                   "bunker": format!("127.0.0.1:{bport}"), "on_bunker_loss": on_loss});
    // On a restart the volume is back already (examine found its log); else create it.
    if d.rpc("volume_get_volumes", None).unwrap().as_array().unwrap().is_empty() {
        d.rpc("volume_create", Some(v)).unwrap();
    }
    d.rpc("nvmf_create_transport", Some(json!({"trtype": "TCP"}))).unwrap();
    d.rpc("nvmf_create_subsystem", Some(json!({"nqn": NQN, "allow_any_host": true}))).unwrap();
    d.rpc("nvmf_subsystem_add_ns", Some(json!({"nqn": NQN, "namespace": {"bdev_name": "vol0"}}))).unwrap();
    let la = json!({"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": nport.to_string()});
    d.rpc("nvmf_subsystem_add_listener", Some(json!({"nqn": NQN, "listen_address": la}))).unwrap();
    d
}

fn trid(nport: u16) -> String {
    format!("trtype:tcp traddr:127.0.0.1 trsvcid:{nport} subnqn:{NQN} hostnqn:{HOST}")
}

/// `ferrite perf --check-ack-log LOG` against the primary: every acknowledged write is there.
fn check_ack_log(nport: u16, log: &std::path::Path, iter: u32) {
    let out = std::process::Command::new(common::bin())
        .args(["perf", "--check-ack-log", log.to_str().unwrap(), "-r", &trid(nport), "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert!(
        out.status.success(),
        "iteration {iter}: acknowledged writes lost:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(v["blocks_exact"].as_u64().unwrap_or(0) + v["blocks_newer"].as_u64().unwrap_or(0) > 0, "{v}");
}

/// `ferrite perf --verify --ack-log LOG` on two queues, 4 KiB random writes, until the target dies.
fn start_perf(nport: u16, log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(common::bin())
        .args(["perf", "-r", &trid(nport), "-c", "0,1", "-q", "16", "-o", "4096", "-w", "randwrite"])
        .args(["-t", "60", "--verify", "--ack-log"])
        .arg(log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Each iteration: restart the primary (recovery), check the previous run's ack log, start a
/// new verified run, SIGKILL the primary at a random moment, and let perf notice.
fn kill_loop(log_path: &str, iterations: u32) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (bport, nport) = (free_port(), free_port());
    let _b = bunker(dir.path(), bport);
    let mut rng = ferrite::rng::Rng::new(0xC0FFEE);
    let mut last_start: Option<Instant> = None;
    for iter in 0..iterations {
        let mut p = primary_with_log(dir.path(), log_path, bport, nport, "local-only");
        let log = dir.path().join(format!("ack-{iter}.log"));
        if iter > 0 {
            check_ack_log(nport, &dir.path().join(format!("ack-{}.log", iter - 1)), iter);
        }
        // Run ids are Unix seconds: keep runs at least a second apart.
        if let Some(t) = last_start {
            std::thread::sleep(Duration::from_millis(1100).saturating_sub(t.elapsed()));
        }
        last_start = Some(Instant::now());
        let perf = start_perf(nport, &log);
        std::thread::sleep(Duration::from_millis(300 + rng.below(900)));
        p.child.kill().unwrap();
        p.child.wait().unwrap();
        let out = perf.wait_with_output().unwrap();
        assert!(!out.status.success(), "perf must fail when its target dies");
        let records = (std::fs::metadata(&log).unwrap().len().saturating_sub(64)) / 32;
        assert!(
            records > 0,
            "iteration {iter}: nothing acknowledged: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let p = primary_with_log(dir.path(), log_path, bport, nport, "local-only");
    check_ack_log(nport, &dir.path().join(format!("ack-{}.log", iterations - 1)), iterations);
    drop(p);
}

/// SIGKILL the primary at random moments while `ferrite perf --verify --ack-log` writes on two
/// queues; after every restart `--check-ack-log` finds every acknowledged write (20 kills).
#[test]
fn primary_sigkill_loop_on_a_file_log() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let log = dir.path().join("loop-primary.log");
    std::fs::write(&log, vec![0u8; 64 << 20]).unwrap();
    kill_loop(log.to_str().unwrap(), 20);
}

/// The same with the log on a loop block device (skips where loop devices are unavailable).
#[test]
fn primary_sigkill_loop_on_a_loop_device() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let backing = dir.path().join("loopdev.img");
    std::fs::write(&backing, vec![0u8; 64 << 20]).unwrap();
    let out = std::process::Command::new("losetup").args(["-f", "--show"]).arg(&backing).output();
    let dev = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => return eprintln!("skipping: losetup failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => return eprintln!("skipping: losetup unavailable: {e}"),
    };
    let result = std::panic::catch_unwind(|| kill_loop(&dev, 20));
    let _ = std::process::Command::new("losetup").args(["-d", &dev]).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Overlapping writes from several queues all complete, and the block ends up holding one of
/// them, whole.
#[test]
fn overlapping_writes_from_several_queues_complete() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (bport, nport) = (free_port(), free_port());
    let _b = bunker(dir.path(), bport);
    let p = primary(dir.path(), bport, nport, "local-only");
    let (admin, _io) = connect(nport);
    let gens: Vec<u64> = (0..4).collect();
    let threads: Vec<_> = gens
        .iter()
        .map(|&t| {
            let cntlid = admin.cntlid;
            std::thread::spawn(move || {
                let addr: SocketAddr = format!("127.0.0.1:{nport}").parse().unwrap();
                let mut io = Host::connect(addr, Digests::NONE).unwrap();
                ok(&io.fabrics_connect(2 + t as u16, 63, NQN, HOST, cntlid, 0).unwrap()).unwrap();
                for i in 0..50u64 {
                    ok(&io.write(1, 64, &block(64, t * 1000 + i), 512, 8192).unwrap()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_a, mut io) = connect(nport);
    let (cqe, data) = io.read(1, 64, 8, 512).unwrap();
    ok(&cqe).unwrap();
    assert!(
        (0..4u64).any(|t| (0..50).any(|i| data == block(64, t * 1000 + i))),
        "the block holds a torn mix"
    );
    wait_for("200 writes counted", || status(&p)["writes"].as_u64() >= Some(200));
}

/// After a restart, re-creating the bdevs (here from the config file) brings the volume back by
/// itself — recovered — and the config's `[nvmf]` section exports it again.
#[test]
fn volume_reopens_on_examine_after_restart() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (bport, nport) = (free_port(), free_port());
    let _b = bunker(dir.path(), bport);
    let mut p = primary(dir.path(), bport, nport, "local-only");
    let (_admin, mut io) = connect(nport);
    for gen in 0..50u64 {
        ok(&io.write(1, gen * 8, &block(gen * 8, gen), 512, 8192).unwrap()).unwrap();
    }
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let cfg = format!(
        "[reactor]\ncores = [0, 1]\n[memory]\nbuf_count = 512\n\
         [[bdev]]\ntype = \"uring\"\nname = \"Data\"\nfilename = \"{d}/data.img\"\nblock_size = 512\n\
         [[bdev]]\ntype = \"uring\"\nname = \"Log\"\nfilename = \"{d}/primary.log\"\nblock_size = 512\n\
         [nvmf]\n[[nvmf.subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\nnamespaces = [{{ bdev = \"vol0\" }}]\nlisteners = [\"127.0.0.1:{nport}\"]\n",
        d = dir.path().display()
    );
    let p2 = Daemon::start(&cfg);
    let vols = p2.rpc("volume_get_volumes", None).unwrap();
    assert_eq!(vols[0]["name"], "vol0", "{vols}");
    let (_a, mut io2) = connect(nport);
    for gen in 0..50u64 {
        let (cqe, data) = io2.read(1, gen * 8, 8, 512).unwrap();
        ok(&cqe).unwrap();
        assert!(data == block(gen * 8, gen), "LBA {} lost after restart", gen * 8);
    }
}

/// Many laps of a small log at queue depth 32, verified: pads at the ring's end reach the
/// bunker whole, so its contiguous end keeps up and the log never fills for good.
#[test]
fn log_wraps_many_times_with_the_bunker_keeping_up() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (bport, nport) = (free_port(), free_port());
    let _b = bunker(dir.path(), bport);
    let log = dir.path().join("small.log");
    std::fs::write(&log, vec![0u8; 34 << 20]).unwrap();
    let p = primary_with_log(dir.path(), log.to_str().unwrap(), bport, nport, "local-only");
    let w = json!({"bdev": "vol0", "queue_depth": 32, "io_size": 4096, "pattern": "randrw",
                   "read_percent": 30, "time_s": 0.0, "io_count": 25000, "verify": true});
    let report = p.rpc("bdev_perf", Some(w));
    let report = report.unwrap_or_else(|e| panic!("{e:?}; status {}\n{}", status(&p), p.log()));
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["verify_failures"].as_array().unwrap().is_empty(), "{report}");
    wait_for("bunker at the committed position", || {
        let st = &status(&p);
        st["bunker_durable"].as_u64() >= st["committed"].as_u64() && st["writes"].as_u64() >= Some(17_000)
    });
}

/// Reads of blocks whose volume write is still running are answered from the entries in
/// memory: a verified mix of reads and writes over 1 MiB through NVMe/TCP checks every read
/// against what was last written, and some reads did meet such blocks.
#[test]
fn reads_of_just_written_blocks_come_from_memory() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (_b, p, _bport, nport) = linked_pair(dir.path(), "local-only");
    let out = std::process::Command::new(common::bin())
        .args(["perf", "-r", &trid(nport), "-q", "16", "-o", "4096", "-w", "randrw", "-M", "50"])
        .args(["--size-mb", "1", "--io-count", "20000", "-t", "60", "--verify", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}\n{}", String::from_utf8_lossy(&out.stderr), p.log());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["verify_failures"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["verified_blocks"].as_u64().unwrap() > 1000, "{v}");
    let vol = p.rpc("volume_status", Some(json!({"name": "vol0"}))).unwrap();
    assert!(vol["reads_from_memory"].as_u64().unwrap() > 0, "{vol}");
}

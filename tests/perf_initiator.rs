//! `ferrite perf` as an NVMe/TCP initiator: against a ferrite target (malloc and uring bdevs)
//! with `--verify`, with and without digests, in-capsule and R2T writes, two I/O queues, the
//! discovery service; `--ack-log` and `--check-ack-log`, including after a SIGKILL of the target
//! and with a block damaged behind the target's back; and against the Linux kernel target
//! (nvmet-tcp) in the guest harness, which skips with the reason when the guest is unavailable.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, Daemon};
use serde_json::Value;

const NQN: &str = "nqn.2026-11.io.ferrite:perf";
const HOST: &str = "nqn.2026-11.io.ferrite:perf-host";

struct Target {
    d: Daemon,
    port: u16,
    dport: u16,
}

/// A target on core 0 exporting `bdev_toml` (one `[[bdev]]` named Dev0) as namespace 1.
fn start(bdev_toml: &str) -> Target {
    let (port, dport) = (free_port(), free_port());
    let config = format!(
        r#"
[reactor]
cores = [0]
[memory]
buf_count = 256
buf_size = 131072
{bdev_toml}
[nvmf]
discovery = ["127.0.0.1:{dport}"]
[[nvmf.subsystem]]
nqn = "{NQN}"
hosts = ["{HOST}"]
namespaces = [{{ bdev = "Dev0" }}]
listeners = ["127.0.0.1:{port}"]
"#
    );
    Target { d: Daemon::start(&config), port, dport }
}

const MALLOC: &str = "[[bdev]]\ntype = \"malloc\"\nname = \"Dev0\"\nsize_mb = 32\nblock_size = 512\n";

fn uring(path: &Path) -> String {
    format!(
        "[[bdev]]\ntype = \"uring\"\nname = \"Dev0\"\nfilename = \"{}\"\nblock_size = 4096\n",
        path.display()
    )
}

impl Target {
    fn trid(&self) -> String {
        format!("trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:{} subnqn:{NQN} hostnqn:{HOST}", self.port)
    }
}

fn perf(args: &[&str]) -> Output {
    Command::new(bin()).arg("perf").args(args).output().unwrap()
}

/// Runs `ferrite perf ... --json`, asserts success and returns the report.
fn perf_ok(args: &[&str]) -> Value {
    let out = perf(&[args, &["--json"]].concat());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ferrite perf {args:?} failed:\n{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{stdout}\n{stderr}"))
}

fn assert_clean(r: &Value, verified: bool) {
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["verify_failures"].as_array().unwrap().len(), 0, "{r}");
    assert!(r["ios"].as_u64().unwrap() > 0, "{r}");
    assert!(r["iops"].as_f64().unwrap() > 0.0, "{r}");
    for k in ["p50", "p90", "p99", "p999", "p9999", "max", "mean"] {
        assert!(r["latency_us"][k].as_f64().unwrap() > 0.0, "latency_us.{k}: {r}");
    }
    if verified {
        assert!(r["verified_blocks"].as_u64().unwrap() > 0, "nothing verified: {r}");
    }
}

#[test]
fn verify_against_ferrite() {
    let t = start(MALLOC);
    let trid = t.trid();
    let r = perf_ok(&["-r", &trid, "-c", "0x1", "-q", "16", "-w", "randrw", "--verify", "-t", "2", "-L"]);
    assert_clean(&r, true);
    // 128 KiB: beyond the 8 KiB in-capsule size, so writes go by R2T/H2CData; with digests.
    let r = perf_ok(&[
        "-r",
        &trid,
        "-c",
        "0x1",
        "-q",
        "4",
        "-o",
        "131072",
        "-w",
        "randrw",
        "--verify",
        "-t",
        "2",
        "--hdr-digest",
        "--data-digest",
    ]);
    assert_clean(&r, true);
    // Two cores, two I/O queues, disjoint slices; sequential mix of 64 KiB.
    let r = perf_ok(&["-r", &trid, "-c", "0,1", "-q", "8", "-o", "65536", "-w", "rw", "--verify", "-t", "2"]);
    assert_clean(&r, true);
    assert_eq!(r["per_core"].as_array().unwrap().len(), 2, "{r}");
    // A fixed I/O count instead of a duration, and the report's JSON shape.
    let r = perf_ok(&["-r", &trid, "-q", "8", "-w", "randwrite", "--io-count", "2000"]);
    assert_clean(&r, false);
    assert_eq!(r["ios"], 2000, "{r}");
    assert!(t.d.log().contains("controller created"));
}

#[test]
fn discovery_and_errors() {
    let t = start(MALLOC);
    let disc = format!("trtype:tcp traddr:127.0.0.1 trsvcid:{} hostnqn:{HOST}", t.dport);
    let r = perf_ok(&["-r", &disc, "-q", "4", "-w", "randrw", "--verify", "-t", "1"]);
    assert_clean(&r, true);
    let fails = |args: &[&str], why: &str| {
        let out = perf(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{args:?}: expected {why:?}, got:\n{err}");
    };
    let stranger = format!("traddr:127.0.0.1 trsvcid:{} subnqn:{NQN} hostnqn:nqn.x:stranger", t.port);
    fails(&["-r", &stranger, "-t", "1"], "admin Connect");
    fails(&["-r", &t.trid(), "--nsid", "9", "-t", "1"], "namespace 9 is not active");
    fails(&["-r", &t.trid(), "-o", "1000", "-t", "1"], "not a multiple of the block size");
    fails(&["-r", "trtype:rdma traddr:1.2.3.4", "-t", "1"], "only tcp");
}

fn check(trid: &str, log: &Path, digests: bool) -> (bool, Value, String) {
    let mut args = vec!["--check-ack-log", log.to_str().unwrap(), "-r", trid, "--json"];
    if digests {
        args.extend(["--hdr-digest", "--data-digest"]);
    }
    let out = perf(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.success(), v, format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn ack_log_round_trip_with_and_without_digests() {
    let t = start(MALLOC);
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let trid = t.trid();
    for digests in [false, true] {
        let log = dir.path().join(format!("ack-{digests}.log"));
        let mut args = vec!["-r", &trid, "-q", "16", "-w", "randrw", "-t", "2"];
        args.extend(["--ack-log", log.to_str().unwrap()]);
        if digests {
            args.extend(["--hdr-digest", "--data-digest"]);
        }
        assert_clean(&perf_ok(&args), true);
        let (ok, v, text) = check(&trid, &log, digests);
        assert!(ok, "check failed:\n{text}");
        assert!(v["records"].as_u64().unwrap() > 100, "{v}");
        assert!(v["blocks_exact"].as_u64().unwrap() > 100, "{v}");
        assert_eq!(v["blocks_lost"], 0, "{v}");
    }
}

#[test]
fn ack_log_survives_a_target_kill_and_catches_a_lost_write() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("dev0.img");
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let log = dir.path().join("ack.log");
    let mut t = start(&uring(&img));
    let mut run = Command::new(bin())
        .arg("perf")
        .args(["-r", &t.trid(), "-q", "16", "-w", "randwrite", "-t", "60", "--ack-log"])
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    t.d.child.kill().unwrap(); // SIGKILL: writes in flight are neither acknowledged nor logged
    t.d.child.wait().unwrap();
    let started = Instant::now();
    let out = loop {
        if let Some(_status) = run.try_wait().unwrap() {
            break run.wait_with_output().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(40), "perf did not notice the dead target");
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "perf must fail when its target dies:\n{err}");
    drop(t);

    let t = start(&uring(&img));
    let (ok, v, text) = check(&t.trid(), &log, false);
    assert!(ok, "acknowledged writes lost after SIGKILL:\n{text}");
    assert!(v["blocks_exact"].as_u64().unwrap() > 100, "{v}");
    drop(t);

    // Damage one acknowledged block behind the target's back: the check must say so.
    let first = {
        let bytes = std::fs::read(&log).unwrap();
        u64::from_le_bytes(bytes[64..72].try_into().unwrap())
    };
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 4096], first * 4096).unwrap();
    f.sync_all().unwrap();
    let t = start(&uring(&img));
    let (ok, v, text) = check(&t.trid(), &log, false);
    assert!(!ok, "a zeroed acknowledged block went unnoticed:\n{text}");
    assert!(v["blocks_lost"].as_u64().unwrap() >= 1, "{v}");
    assert!(text.contains(&format!("LBA {first}")), "{text}");
}

#[test]
fn verify_against_the_linux_kernel_target_in_the_guest() {
    if let Err(why) = common::guest_available() {
        eprintln!("skipping: {why} (scripts/install-deps.sh builds the guest)");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let started = Instant::now();
    let out = Command::new(format!("{root}/scripts/guest/run.sh"))
        .arg(format!("{root}/scripts/guest/t-perf-nvmet.sh"))
        .arg(bin())
        .env("VM_TIMEOUT", "900")
        .env("VM_SERIAL", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("guest run took {:?}", started.elapsed());
    assert!(out.status.success(), "ferrite perf against nvmet-tcp failed");
    assert!(text.contains("t-perf-nvmet: PASS"));
}

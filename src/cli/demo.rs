//! `ferrite demo`: a primary, a bunker and a secondary on loopback with file-backed volumes in
//! a scratch directory; a verified workload through NVMe/TCP with an acknowledged-write log;
//! SIGKILL of the primary; failover through the bunker; a check that no acknowledged write was
//! lost; then the old primary restarts (fenced), fails back as the new primary's secondary with
//! only its divergent blocks resent, and the two volumes are compared. Exits non-zero if any
//! check fails. Nothing to install or configure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::CliResult;
use crate::rpc::client;

const NQN: &str = "nqn.2026-11.io.ferrite:demo";
const PRIMARY_BDEVS: &[(&str, u64)] = &[("Data", 64), ("Log", 64), ("Stage", 64)];
const HOST: &str = "nqn.2026-11.io.ferrite:demo-host";

/// Arguments of `ferrite demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seconds of workload before the primary is killed.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Keep the scratch directory (configs, logs, images) afterwards.
    #[arg(long)]
    keep: bool,
}

/// One `ferrite serve` child.
struct Node {
    name: &'static str,
    child: Child,
    socket: PathBuf,
}

impl Node {
    fn start(dir: &Path, name: &'static str, bdevs: &[(&str, u64)]) -> Result<Node, String> {
        let socket = dir.join(format!("{name}.sock"));
        let mut cfg = format!("[reactor]\ncores = [0, 1]\n[rpc]\nsocket = \"{}\"\n", socket.display());
        for (bdev, mb) in bdevs {
            let file = dir.join(format!("{name}-{bdev}.img"));
            cfg += &format!(
                "[[bdev]]\ntype = \"uring\"\nname = \"{bdev}\"\nfilename = \"{}\"\ncreate_size_mb = {mb}\nblock_size = 512\n",
                file.display()
            );
        }
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting the {name}: {e}"))?;
        let node = Node { name, child, socket };
        node.wait_ready()?;
        Ok(node)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.rpc("spdk_get_version", None).is_err() {
            if Instant::now() > deadline {
                return Err(format!("the {} did not come up", self.name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn rpc(&self, method: &str, params: Option<Value>) -> Result<Value, String> {
        client::call(&self.socket, method, params, Duration::from_secs(120))
            .map_err(|e| format!("{} {method}: {e}", self.name))
    }

    fn export(&self, port: u16, ns: Option<&str>) -> Result<(), String> {
        self.rpc("nvmf_create_transport", Some(json!({"trtype": "TCP"})))?;
        self.rpc("nvmf_create_subsystem", Some(json!({"nqn": NQN, "allow_any_host": true})))?;
        if let Some(b) = ns {
            self.rpc("nvmf_subsystem_add_ns", Some(json!({"nqn": NQN, "namespace": {"bdev_name": b}})))?;
        }
        let la = json!({"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
        self.rpc("nvmf_subsystem_add_listener", Some(json!({"nqn": NQN, "listen_address": la})))?;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port() -> Result<u16, String> {
    Ok(TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port())
}

fn say(t0: Instant, what: &str) {
    println!("[{:7.3} s] {what}", t0.elapsed().as_secs_f64());
}

fn perf(args: &[&str]) -> Result<std::process::Output, String> {
    Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .arg("perf")
        .args(args)
        .output()
        .map_err(|e| e.to_string())
}

/// Runs the demo.
pub fn run(a: DemoArgs) -> CliResult {
    let dir = std::env::temp_dir().join(format!("ferrite-demo.{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = scenario(&dir, &a);
    if a.keep || result.is_err() {
        println!("scratch directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn scenario(dir: &Path, a: &DemoArgs) -> CliResult {
    let t0 = Instant::now();
    let (bport, sport, pport, snport) = (port()?, port()?, port()?, port()?);
    let bunker = Node::start(dir, "bunker", &[("BLog", 64)])?;
    bunker.rpc("replication_listen", Some(json!({"address": format!("127.0.0.1:{bport}")})))?;
    bunker.rpc("bunker_create", Some(json!({"volume": "vol0", "log_bdev": "BLog"})))?;
    say(t0, &format!("bunker up on 127.0.0.1:{bport}"));
    let secondary = Node::start(dir, "secondary", &[("SData", 64), ("SStage", 64), ("SLog", 64)])?;
    secondary.rpc("replication_listen", Some(json!({"address": format!("127.0.0.1:{sport}")})))?;
    let p = json!({"volume": "vol0", "data_bdev": "SData", "staging_bdev": "SStage", "log_bdev": "SLog",
                   "bunker": format!("127.0.0.1:{bport}")});
    secondary.rpc("secondary_create", Some(p))?;
    secondary.export(snport, None)?;
    say(t0, &format!("secondary up on 127.0.0.1:{sport} (NVMe/TCP standby on {snport})"));
    let rport = port()?;
    let mut primary = Node::start(dir, "primary", PRIMARY_BDEVS)?;
    let v = json!({"name": "vol0", "data_bdev": "Data", "log_bdev": "Log", "mode": "bunker-sync",
                   "bunker": format!("127.0.0.1:{bport}")});
    primary.rpc("volume_create", Some(v))?;
    primary.rpc(
        "replication_create",
        Some(json!({"volume": "vol0", "secondary": format!("127.0.0.1:{sport}")})),
    )?;
    primary.export(pport, Some("vol0"))?;
    say(t0, &format!("primary serving vol0 as {NQN} on 127.0.0.1:{pport}"));
    let ack = dir.join("ack.log");
    let trid = |port: u16| format!("trtype:tcp traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN} hostnqn:{HOST}");
    let mut run = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args([
            "perf",
            "-r",
            &trid(pport),
            "-q",
            "16",
            "-o",
            "4096",
            "-w",
            "randwrite",
            "--verify",
            "-t",
            "600",
        ])
        .arg("--ack-log")
        .arg(&ack)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    say(
        t0,
        &format!("writing: 4 KiB random writes, QD16, every acknowledgement logged, for {} s", a.seconds),
    );
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    let st = primary.rpc("replication_status", None)?;
    let sec = &st["primaries"][0]["secondary"];
    say(
        t0,
        &format!(
            "secondary lag: {} entries, {} bytes, {:.3} s",
            sec["lag_entries"],
            sec["lag_bytes"],
            sec["lag_seconds"].as_f64().unwrap_or(0.0)
        ),
    );
    primary.child.kill().map_err(|e| e.to_string())?;
    let _ = primary.child.wait();
    let _ = run.wait();
    let acked = std::fs::metadata(&ack).map(|m| m.len().saturating_sub(64) / 32).unwrap_or(0);
    say(t0, &format!("primary killed (SIGKILL) after {acked} acknowledged writes"));
    let report = secondary.rpc("volume_failover", Some(json!({"volume": "vol0", "nqn": NQN})))?;
    say(
        t0,
        &format!(
            "failover: epoch {}, {} bytes pulled from the bunker, {} ms in all (pull {} ms, apply {} ms)",
            report["epoch"],
            report["bytes_from_bunker"],
            report["total_ms"],
            report["pull_ms"],
            report["apply_ms"]
        ),
    );
    let out = perf(&["--check-ack-log", ack.to_str().unwrap_or_default(), "-r", &trid(snport), "--json"])?;
    let check: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        say(t0, &format!("LOST acknowledged writes: {check}"));
        return Err("acknowledged writes were lost".into());
    }
    say(
        t0,
        &format!(
            "check: every acknowledged write is on the new primary ({} blocks exact, {} newer in-flight writes)",
            check["blocks_exact"], check["blocks_newer"]
        ),
    );
    let secondary = fail_back(t0, dir, secondary, rport, snport, &trid(snport))?;
    drop(secondary);
    Ok(())
}

/// Restarts the old primary (it comes back fenced), fails it back as the new primary's
/// secondary, writes a little more, and checks the two volumes end identical.
fn fail_back(
    t0: Instant,
    dir: &Path,
    new_primary: Node,
    rport: u16,
    snport: u16,
    trid: &str,
) -> Result<Node, String> {
    let old = Node::start(dir, "primary", PRIMARY_BDEVS)?;
    old.rpc("replication_listen", Some(json!({"address": format!("127.0.0.1:{rport}")})))?;
    wait(
        10,
        || Ok(old.rpc("replication_status", None)?["primaries"][0]["fenced"] == true),
        "the old primary to be fenced",
    )?;
    say(t0, "old primary restarted: the bunker told it the volume moved on (fenced, serving nothing)");
    let fork = new_primary.rpc("replication_status", None)?["secondaries"][0]["failover"]["end"]
        .as_u64()
        .ok_or("no failover on record")?;
    let plan = old
        .rpc("volume_failback", Some(json!({"volume": "vol0", "fork_lsn": fork, "staging_bdev": "Stage"})))?;
    let r = json!({"volume": "vol0", "secondary": format!("127.0.0.1:{rport}"), "resync": plan["divergent"]});
    new_primary.rpc("replication_create", Some(r))?;
    say(
        t0,
        &format!(
            "failback: the old primary rejoins as secondary; {} divergent blocks to roll back",
            plan["blocks"]
        ),
    );
    let out = perf(&["-r", trid, "-q", "16", "-o", "4096", "-w", "randwrite", "--verify", "-t", "1"])?;
    if !out.status.success() {
        return Err(format!("writing to the new primary failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let view = |n: &Node| -> Result<Value, String> { n.rpc("replication_status", None) };
    wait(30, || Ok(view(&new_primary)?["primaries"][0]["secondary"]["resync_done"] != false), "the resync")?;
    // Answered writes may still be landing on the volume (the log already holds them): wait
    // until everything written is committed, then until the old primary has applied it.
    let settled = |n: &Node| -> Result<Option<u64>, String> {
        let st = &n.rpc("volume_status", Some(json!({"name": "vol0"})))?["status"];
        Ok((st["committed"] == st["tail"]).then(|| st["committed"].as_u64().unwrap_or(0)))
    };
    wait(30, || Ok(settled(&new_primary)?.is_some()), "the new primary's writes to land")?;
    let committed = settled(&new_primary)?.unwrap_or(0);
    wait(
        30,
        || Ok(view(&old)?["secondaries"][0]["applied"].as_u64() >= Some(committed)),
        "the old primary to catch up",
    )?;
    old.rpc("secondary_freeze", Some(json!({"volume": "vol0"})))?;
    let sent = view(&new_primary)?["primaries"][0]["secondary"]["resync_blocks_sent"].clone();
    let same = std::fs::read(dir.join("primary-Data.img")).map_err(|e| e.to_string())?
        == std::fs::read(dir.join("secondary-SData.img")).map_err(|e| e.to_string())?;
    if !same {
        return Err("after failback the two volumes differ".into());
    }
    say(t0, &format!("failback complete: {sent} blocks resent, then the log; both volumes identical (NVMe/TCP on {snport})"));
    Ok(new_primary)
}

fn wait(secs: u64, mut f: impl FnMut() -> Result<bool, String>, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f()? {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

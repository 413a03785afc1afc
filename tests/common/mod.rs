//! Shared helpers for integration tests: start a real `ferrite serve` process on a temporary
//! config and socket, call it over JSON-RPC, stop it.
#![allow(dead_code)]

pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrite::rpc::client::{self, ClientError};
use serde_json::Value;

/// A daemon under test.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

/// A TCP port free on loopback right now, for a daemon to listen on later.
///
/// Drawn below Linux's ephemeral range (32768-60999 by default), where `bind(0)` and every
/// outgoing connection take their local ports: a port handed out from that range could be taken
/// by some test's client connection before the daemon binds it (seen: "Address already in use"
/// on a primary restarted mid-test). Each process starts at a pid-derived offset and walks on, so
/// two test binaries or threads rarely meet; a port found bound is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {LOW}..{}", LOW + SPAN)
}

/// Whether the Linux guest may be booted: `FERRITE_GUEST=1` (scripts/test.sh sets it) and a
/// built harness; else why not.
pub fn guest_available() -> Result<(), String> {
    if std::env::var_os("FERRITE_GUEST").is_none() {
        return Err("set FERRITE_GUEST=1 to boot the Linux guest (scripts/test.sh does)".into());
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/guest/probe.sh"))
        .env("GUEST_PROBE_BUILT", "1")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// The ferrite binary built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferrite")
}

impl Daemon {
    /// Starts `ferrite serve` with `config` (the `[rpc]` section is added here).
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with(config, &[])
    }

    /// As `start`, with extra `serve` flags.
    pub fn start_with(config: &str, flags: &[&str]) -> Daemon {
        Daemon::start_prefixed(&[], config, flags)
    }

    /// As `start_with`, run under a prefix command (e.g. `ip netns exec NS`).
    pub fn start_prefixed(prefix: &[&str], config: &str, flags: &[&str]) -> Daemon {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let socket = dir.path().join("ferrite.sock");
        let text = config.replace("@DIR@", dir.path().to_str().unwrap());
        let text = format!("{text}\n[rpc]\nsocket = \"{}\"\n", socket.display());
        let cfg = dir.path().join("ferrite.toml");
        std::fs::write(&cfg, text).unwrap();
        let log = std::fs::File::create(dir.path().join("ferrite.log")).unwrap();
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon { child, dir, socket };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("ferrite serve exited early ({status}); log:\n{}", self.log());
            }
            if self.rpc("spdk_get_version", None).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ferrite serve did not answer in 30 s; log:\n{}", self.log());
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ferrite.log")).unwrap_or_default()
    }

    /// Calls a method.
    pub fn rpc(&self, method: &str, params: Option<Value>) -> Result<Value, ClientError> {
        client::call(&self.socket, method, params, Duration::from_secs(120))
    }

    /// Runs the ferrite CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin()).arg("-s").arg(&self.socket).args(args).output().unwrap()
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.rpc("shutdown", None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.alive() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Idle cost of the daemon: in the adaptive policy an idle `ferrite serve` with two reactors
//! uses under 2% of one core; in the busy policy its reactors spin. Measured from the process's
//! user+system CPU time in /proc over a few seconds of idleness.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;

const CONFIG: &str = "[reactor]\ncores = [0, 1]\n[memory]\nbuf_count = 16\n[[bdev]]\ntype = \"malloc\"\nname = \"M\"\nsize_mb = 8\n";

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

fn idle_core_fraction(d: &Daemon, window: Duration) -> f64 {
    std::thread::sleep(Duration::from_millis(500));
    let pid = d.child.id();
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(window);
    (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
}

#[test]
fn adaptive_idle_daemon_sleeps() {
    let d = Daemon::start_with(CONFIG, &["--idle-policy", "adaptive"]);
    let used = idle_core_fraction(&d, Duration::from_secs(4));
    eprintln!("adaptive idle: {:.2}% of one core", used * 100.0);
    assert!(used < 0.02, "idle adaptive daemon used {:.2}% of a core", used * 100.0);
    let snap = d.rpc("reactor_stats", None).unwrap();
    assert!(snap["reactors"][0]["counters"]["sleeps"].as_u64().unwrap() > 0);
}

#[test]
fn busy_daemon_spins() {
    let d = Daemon::start_with(CONFIG, &["--idle-policy", "busy"]);
    let used = idle_core_fraction(&d, Duration::from_secs(2));
    eprintln!("busy idle: {:.0}% of one core", used * 100.0);
    assert!(used > 0.5, "busy daemon used only {:.2}% of a core", used * 100.0);
    let snap = d.rpc("reactor_stats", None).unwrap();
    assert_eq!(snap["reactors"][0]["counters"]["sleeps"].as_u64().unwrap(), 0);
}

//! The stock Linux NVMe/TCP initiator against ferrite: a Debian kernel under qemu
//! (scripts/guest/) runs nvme-cli, fio, mkfs and mount against a ferrite target on the host.
//! Needs the guest harness (scripts/install-deps.sh builds it); without it the test says why
//! and skips. `scripts/test.sh` always runs it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, Daemon};

const NQN: &str = "nqn.2026-11.io.ferrite:guest";
const HOST: &str = "nqn.2026-11.io.ferrite:linux-guest";

#[test]
fn linux_initiator_end_to_end() {
    if let Err(why) = common::guest_available() {
        eprintln!("skipping: {why} (scripts/install-deps.sh builds the guest)");
        return;
    }
    let (port, dport) = (free_port(), free_port());
    let config = format!(
        r#"
[reactor]
cores = [0, 1]
[memory]
buf_count = 512
[[bdev]]
type = "malloc"
name = "Malloc0"
size_mb = 128
[[bdev]]
type = "uring"
name = "Uring0"
filename = "@DIR@/uring0.img"
create_size_mb = 128
block_size = 4096
[nvmf]
discovery = ["127.0.0.1:{dport}"]
[[nvmf.subsystem]]
nqn = "{NQN}"
hosts = ["{HOST}"]
namespaces = [{{ bdev = "Malloc0" }}, {{ bdev = "Uring0" }}]
listeners = ["127.0.0.1:{port}"]
"#
    );
    let d = Daemon::start(&config);
    let root = env!("CARGO_MANIFEST_DIR");
    let started = Instant::now();
    let out = Command::new(format!("{root}/scripts/guest/run.sh"))
        .arg(format!("{root}/scripts/guest/t-nvme-tcp.sh"))
        .args([NQN, HOST, &port.to_string(), &dport.to_string()])
        .env("VM_TIMEOUT", "1500")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("guest run took {:?}", started.elapsed());
    assert!(out.status.success(), "guest NVMe/TCP checks failed; daemon log:\n{}", d.log());
    assert!(text.contains("guest: all NVMe/TCP checks passed"));
    // Every qpair and buffer came back after the 20 connect/disconnect cycles.
    std::thread::sleep(Duration::from_secs(1));
    let stats = d.rpc("nvmf_get_stats", None).unwrap();
    assert_eq!(stats["controllers"].as_array().unwrap().len(), 0, "leaked controllers: {stats}");
    assert_eq!(stats["dma_pool_free"], stats["dma_pool_count"], "leaked DMA buffers: {stats}");
    let reactors = d.rpc("reactor_stats", None).unwrap();
    for r in reactors["reactors"].as_array().unwrap() {
        let qpairs = r["pollers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"].as_str().unwrap().starts_with("nvmf_tcp_qpair"))
            .count();
        assert_eq!(qpairs, 0, "leaked qpair pollers: {r}");
    }
}

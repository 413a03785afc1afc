//! The control plane end to end, against a real daemon: config with malloc and uring bdevs on
//! two reactors, bdev RPCs and CLI verbs, perf --verify on both, errors that name the problem
//! while the daemon keeps running, and SPDK's own rpc.py when it is installed.

mod common;

use common::Daemon;
use ferrite::rpc::client::ClientError;
use serde_json::json;

const CONFIG: &str = r#"
[reactor]
cores = [0, 1]
[memory]
buf_count = 128
[[bdev]]
type = "malloc"
name = "Malloc0"
size_mb = 32
[[bdev]]
type = "uring"
name = "Uring0"
filename = "@DIR@/uring0.img"
create_size_mb = 32
block_size = 4096
"#;

fn rpc_err(d: &Daemon, method: &str, params: serde_json::Value) -> (i64, String) {
    match d.rpc(method, Some(params)) {
        Err(ClientError::Rpc { code, message }) => (code, message),
        other => panic!("{method}: expected an RPC error, got {other:?}"),
    }
}

#[test]
fn serve_lists_and_verifies_both_bdevs() {
    let d = Daemon::start(CONFIG);
    let list = d.rpc("bdev_get_bdevs", None).unwrap();
    let names: Vec<_> =
        list.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["Malloc0", "Uring0"]);
    let reactors = d.rpc("framework_get_reactors", None).unwrap();
    assert_eq!(reactors["reactors"].as_array().unwrap().len(), 2);
    let out = d.cli(&["bdev", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Malloc0") && text.contains("URING bdev"), "{text}");
    for bdev in ["Malloc0", "Uring0"] {
        let out =
            d.cli(&["perf", "--bdev", bdev, "-w", "randrw", "-q", "8", "-t", "1", "--verify", "--json"]);
        assert!(out.status.success(), "perf on {bdev}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["verified_blocks"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report["errors"], 0);
    }
}

#[test]
fn bad_rpc_calls_get_clear_errors_and_the_daemon_survives() {
    let mut d = Daemon::start(CONFIG);
    let (code, msg) =
        rpc_err(&d, "bdev_malloc_create", json!({"name": "Malloc0", "num_blocks": 2048, "block_size": 512}));
    assert_eq!(code, -17, "{msg}");
    assert!(msg.contains("Malloc0") && msg.contains("exists"), "{msg}");
    let (code, msg) = rpc_err(&d, "bdev_malloc_create", json!({"num_blocks": 7, "block_size": 512}));
    assert_eq!(code, -22);
    assert!(msg.contains("not a whole number of MiB"), "{msg}");
    let (_, msg) = rpc_err(&d, "bdev_malloc_create", json!({"num_blocks": 2048, "block_size": 1000}));
    assert!(msg.contains("power of two"), "{msg}");
    let (code, msg) =
        rpc_err(&d, "bdev_uring_create", json!({"name": "U1", "filename": "/nonexistent/x.img"}));
    assert_eq!(code, -22);
    assert!(msg.contains("does not exist"), "{msg}");
    let (code, msg) = rpc_err(&d, "bdev_malloc_delete", json!({"name": "nope"}));
    assert_eq!(code, -19);
    assert!(msg.contains("nope"), "{msg}");
    let (code, msg) = rpc_err(&d, "bdev_null_delete", json!({"name": "Malloc0"}));
    assert_eq!(code, -19);
    assert!(msg.contains("Malloc disk"), "{msg}");
    let (code, msg) =
        rpc_err(&d, "bdev_null_create", json!({"name": "N", "num_blocks": "many", "block_size": 512}));
    assert_eq!(code, -32602);
    assert!(msg.contains("invalid type"), "{msg}");
    let (code, _) = rpc_err(&d, "no_such_method", json!({}));
    assert_eq!(code, -32601);
    let (code, _) = rpc_err(&d, "spdk_get_version", json!({"x": 1}));
    assert_eq!(code, -32602);
    let (_, msg) = rpc_err(
        &d,
        "bdev_perf",
        json!({"bdev": "Malloc0", "queue_depth": 1, "io_size": 1000, "pattern": "randread", "time_s": 1.0}),
    );
    assert!(msg.contains("not a multiple of the block size"), "{msg}");
    garbage_on_the_socket(&d);
    assert!(d.alive(), "daemon died");
    assert!(d.rpc("bdev_get_bdevs", None).is_ok());
}

fn garbage_on_the_socket(d: &Daemon) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"{\"jsonrpc\": \"2.0\", \"method\": }").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("-32700") && reply.contains("Parse error"), "{reply}");
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"{\"method\": \"bdev_get_bdevs\", \"id\": 4}").unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.contains("-32600"), "{reply}");
}

#[test]
fn bad_config_files_stop_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[reactor]\nidle_policy = \"lazy\"\n", "unknown variant `lazy`"),
        ("[[bdev]]\ntype = \"uring\"\nname = \"u\"\nfilename = \"/nonexistent/f\"\n", "does not exist"),
        ("[[bdev]]\ntype = \"malloc\"\nname = \"m\"\nsize_mb = 1\nblock_size = 4097\n", "power of two"),
        ("[reactor\n", "config file"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, format!("{text}\n[rpc]\nsocket = \"{}/s{i}.sock\"\n", dir.path().display()))
            .unwrap();
        let out = std::process::Command::new(common::bin())
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} started");
        assert!(err.contains(want), "case {i}: {err}");
    }
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent.toml"));
}

/// SPDK's own rpc.py (`spdk-rpc` from PyPI `spdk`) drives ferrite unchanged.
#[test]
fn spdk_rpc_py_drives_ferrite() {
    let rpc_py = std::env::var("FERRITE_SPDK_RPC").unwrap_or_else(|_| "spdk-rpc".into());
    if std::process::Command::new(&rpc_py).arg("--help").output().is_err() {
        eprintln!("skipping: SPDK's rpc.py ({rpc_py}) is not installed; scripts/test.sh installs it (pip install spdk)");
        return;
    }
    let d = Daemon::start(CONFIG);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&rpc_py).arg("-s").arg(&d.socket).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (ok, out) = run(&["bdev_get_bdevs"]);
    assert!(ok && out.contains("Malloc0") && out.contains("Uring0"), "{out}");
    let (ok, out) = run(&["bdev_malloc_create", "-b", "Malloc9", "16", "4096"]);
    assert!(ok && out.trim() == "Malloc9", "{out}");
    let (ok, out) = run(&["bdev_null_create", "Null0", "64", "512"]);
    assert!(ok && out.trim() == "Null0", "{out}");
    let img = d.dir().join("u2.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let (ok, out) = run(&["bdev_uring_create", img.to_str().unwrap(), "Uring2", "512"]);
    assert!(ok && out.trim() == "Uring2", "{out}");
    let (ok, out) = run(&["bdev_get_bdevs", "-b", "Null0"]);
    assert!(ok && out.contains("\"num_blocks\": 131072"), "{out}");
    for (m, n) in
        [("bdev_malloc_delete", "Malloc9"), ("bdev_null_delete", "Null0"), ("bdev_uring_delete", "Uring2")]
    {
        assert!(run(&[m, n]).0, "{m} {n}");
    }
    let (ok, out) = run(&["bdev_malloc_delete", "Malloc9"]);
    assert!(!ok && out.contains("No such device"), "{out}");
    let (ok, out) = run(&["framework_get_reactors"]);
    assert!(ok && out.contains("lcore"), "{out}");
    let (ok, out) = run(&["spdk_get_version"]);
    assert!(ok && out.contains("ferrite"), "{out}");
    nvmf_through_rpc_py(&run);
}

fn nvmf_through_rpc_py(run: &dyn Fn(&[&str]) -> (bool, String)) {
    let nqn = "nqn.2016-06.io.spdk:cnode1";
    let port = common::free_port().to_string();
    let steps: &[&[&str]] = &[
        &["nvmf_create_transport", "-t", "TCP"],
        &["nvmf_create_subsystem", nqn, "-s", "SPDK00000000000001", "-d", "ferrite test", "-m", "32"],
        &["nvmf_subsystem_add_ns", nqn, "Malloc0"],
        &["nvmf_subsystem_add_listener", nqn, "-t", "tcp", "-a", "127.0.0.1", "-s", &port],
        &["nvmf_subsystem_add_host", nqn, "nqn.2014-08.org.nvmexpress:uuid:h1"],
        &[
            "nvmf_subsystem_listener_set_ana_state",
            nqn,
            "-n",
            "non_optimized",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &port,
        ],
    ];
    for step in steps {
        let (ok, out) = run(step);
        assert!(ok, "rpc.py {step:?}: {out}");
    }
    let (ok, out) = run(&["nvmf_get_subsystems"]);
    assert!(
        ok && out.contains(nqn)
            && out.contains("Malloc0")
            && out.contains("non_optimized")
            && out.contains("uuid:h1"),
        "{out}"
    );
    let (ok, out) = run(&["nvmf_subsystem_add_ns", "nqn.2016-06.io.spdk:nope", "Malloc0"]);
    assert!(!ok && out.contains("not found"), "{out}");
    for step in [
        &["nvmf_subsystem_remove_host", nqn, "nqn.2014-08.org.nvmexpress:uuid:h1"][..],
        &["nvmf_delete_subsystem", nqn][..],
    ] {
        let (ok, out) = run(step);
        assert!(ok, "rpc.py {step:?}: {out}");
    }
}

//! The NVMe/TCP target through ferrite's own host (initiator) over loopback: Connect,
//! Identify, reads and writes in-capsule and by R2T, digests, keep-alive teardown, access
//! control, discovery, and malformed PDUs that must end in a TermReq or an NVMe status while
//! the target keeps serving its other hosts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{free_port, Daemon};
use ferrite::nvmf::host::{ok, Host, HostError};
use ferrite::nvmf::spec::{AdminOpcode, Status, CNTLID_DYNAMIC};
use ferrite::nvmf::tcp::pdu::Digests;

const NQN: &str = "nqn.2026-11.io.ferrite:test";
const HOST: &str = "nqn.2026-11.io.ferrite:host1";

struct Target {
    d: Daemon,
    addr: SocketAddr,
    disc: SocketAddr,
}

fn start() -> Target {
    let (port, dport) = (free_port(), free_port());
    let config = format!(
        r#"
[reactor]
cores = [0, 1]
[memory]
buf_count = 256
[[bdev]]
type = "malloc"
name = "Malloc0"
size_mb = 16
block_size = 512
[nvmf]
discovery = ["127.0.0.1:{dport}"]
[[nvmf.subsystem]]
nqn = "{NQN}"
hosts = ["{HOST}"]
namespaces = [{{ bdev = "Malloc0" }}]
listeners = ["127.0.0.1:{port}"]
"#
    );
    let d = Daemon::start(&config);
    Target {
        d,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        disc: format!("127.0.0.1:{dport}").parse().unwrap(),
    }
}

fn io_queue(t: &Target, admin: &Host, digests: Digests) -> Host {
    let mut io = Host::connect(t.addr, digests).unwrap();
    ok(&io.fabrics_connect(1, 63, NQN, HOST, admin.cntlid, 0).unwrap()).unwrap();
    io
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn connect_identify_and_io() {
    let t = start();
    let mut admin = Host::admin_queue(t.addr, NQN, HOST, 0, Digests::NONE).unwrap();
    let id = admin.identify(1, 0).unwrap();
    assert_eq!(&id[768..768 + NQN.len()], NQN.as_bytes(), "SUBNQN");
    assert_eq!((id[512], id[513]), (0x66, 0x44), "SQES/CQES");
    assert_ne!(u16::from_le_bytes([id[320], id[321]]), 0, "KAS");
    assert_eq!(u16::from_le_bytes([id[78], id[79]]), admin.cntlid);
    let ns = admin.identify(0, 1).unwrap();
    assert_eq!(u64::from_le_bytes(ns[0..8].try_into().unwrap()), 16 * 2048, "NSZE");
    let mut io = io_queue(&t, &admin, Digests::NONE);
    let small = pattern(4096, 1);
    ok(&io.write(1, 8, &small, 512, 8192).unwrap()).unwrap();
    let big = pattern(128 * 1024, 2);
    ok(&io.write(1, 1000, &big, 512, 8192).unwrap()).unwrap();
    let (cqe, data) = io.read(1, 8, 8, 512).unwrap();
    ok(&cqe).unwrap();
    assert_eq!(data, small);
    let (cqe, data) = io.read(1, 1000, 256, 512).unwrap();
    ok(&cqe).unwrap();
    assert!(data == big, "128 KiB read back differs");
    let (cqe, _) = io.read(1, 16 * 2048, 1, 512).unwrap();
    assert!(cqe.status.same_code(Status::LBA_OUT_OF_RANGE), "{}", cqe.status);
    let (cqe, _) = io.read(9, 0, 1, 512).unwrap();
    assert!(cqe.status.same_code(Status::INVALID_NAMESPACE_OR_FORMAT), "{}", cqe.status);
}

#[test]
fn digests_are_negotiated_and_checked() {
    let t = start();
    let dg = Digests { hdgst: true, ddgst: true };
    let admin = Host::admin_queue(t.addr, NQN, HOST, 0, dg).unwrap();
    let mut io = io_queue(&t, &admin, dg);
    let data = pattern(64 * 1024, 9);
    ok(&io.write(1, 64, &data, 512, 8192).unwrap()).unwrap();
    let (cqe, back) = io.read(1, 64, 128, 512).unwrap();
    ok(&cqe).unwrap();
    assert!(back == data);
}

#[test]
fn access_control_at_connect() {
    let t = start();
    let mut h = Host::connect(t.addr, Digests::NONE).unwrap();
    let cqe = h.fabrics_connect(0, 31, NQN, "nqn.2026-11.io.ferrite:stranger", CNTLID_DYNAMIC, 0).unwrap();
    assert!(cqe.status.same_code(Status::CONNECT_INVALID_HOST), "{}", cqe.status);
    let mut h = Host::connect(t.addr, Digests::NONE).unwrap();
    let cqe = h.fabrics_connect(0, 31, "nqn.2026-11.io.ferrite:nope", HOST, CNTLID_DYNAMIC, 0).unwrap();
    assert!(cqe.status.same_code(Status::CONNECT_INVALID_PARAMETERS), "{}", cqe.status);
    assert_eq!(cqe.dw0, (1 << 16) | 256, "IATTR/IPO names SUBNQN in the connect data");
}

#[test]
fn keep_alive_timeout_tears_the_controller_down() {
    let t = start();
    let mut admin = Host::admin_queue(t.addr, NQN, HOST, 1000, Digests::NONE).unwrap();
    let mut io = io_queue(&t, &admin, Digests::NONE);
    std::thread::sleep(Duration::from_millis(600));
    let (cqe, _) = admin.admin(AdminOpcode::KeepAlive, 0, 0, 0, 0).unwrap();
    ok(&cqe).unwrap();
    assert!(admin.closed_by_target(Duration::from_secs(5)), "admin queue not closed after KATO");
    assert!(io.closed_by_target(Duration::from_secs(5)), "I/O queue not closed after KATO");
    let stats = t.d.rpc("nvmf_get_stats", None).unwrap();
    assert_eq!(stats["controllers"].as_array().unwrap().len(), 0, "{stats}");
}

#[test]
fn discovery_log_lists_the_subsystem() {
    let t = start();
    let mut h = Host::admin_queue(t.disc, ferrite::nvmf::DISCOVERY_NQN, HOST, 0, Digests::NONE).unwrap();
    let (cqe, page) =
        h.admin(AdminOpcode::GetLogPage, 0, 0x70 | (((4096 / 4 - 1) as u32) << 16), 0, 4096).unwrap();
    ok(&cqe).unwrap();
    let genctr = u64::from_le_bytes(page[0..8].try_into().unwrap());
    let numrec = u64::from_le_bytes(page[8..16].try_into().unwrap());
    assert!(genctr > 0);
    assert_eq!(numrec, 2, "current discovery subsystem + our subsystem");
    let entry = &page[1024 + 1024..2048 + 1024];
    assert_eq!(&entry[256..256 + NQN.len()], NQN.as_bytes());
    let traddr = String::from_utf8_lossy(&entry[512..512 + 9]);
    assert_eq!(traddr, "127.0.0.1");
    // A partial read at an offset returns the matching bytes.
    let lpo = 1024u32;
    let sqe = ferrite::nvmf::spec::Sqe {
        opcode: AdminOpcode::GetLogPage.raw(),
        cdw10: 0x70 | ((1024 / 4 - 1) << 16),
        cdw12: lpo,
        ..Default::default()
    };
    let (cqe, part) = h.command(sqe, &[], 1024, 0).unwrap();
    ok(&cqe).unwrap();
    assert_eq!(&part[..], &page[1024..2048]);
}

fn still_serving(t: &Target) {
    let admin = Host::admin_queue(t.addr, NQN, HOST, 0, Digests::NONE).unwrap();
    let mut io = io_queue(t, &admin, Digests::NONE);
    ok(&io.write(1, 0, &pattern(512, 3), 512, 8192).unwrap()).unwrap();
}

fn expect_term(h: &mut Host, fes: u16) {
    match h.recv_pdu() {
        Ok((hdr, _)) => match hdr.pdu {
            ferrite::nvmf::tcp::pdu::Pdu::C2HTermReq(tr) => assert_eq!(tr.fes, fes, "FES"),
            other => panic!("expected C2HTermReq, got {other:?}"),
        },
        Err(HostError::Pdu(_)) | Err(HostError::Io(_)) => panic!("no TermReq before close"),
        Err(e) => panic!("{e}"),
    }
    assert!(h.closed_by_target(Duration::from_secs(5)), "connection left open after TermReq");
}

#[test]
fn malformed_pdus_get_term_req_and_the_target_keeps_serving() {
    let t = start();
    // Unknown PDU type.
    let mut h = Host::connect(t.addr, Digests::NONE).unwrap();
    h.send(&[0x0B, 0, 8, 0, 8, 0, 0, 0]).unwrap();
    expect_term(&mut h, 0x01);
    // CapsuleCmd with a wrong hlen.
    let mut h = Host::connect(t.addr, Digests::NONE).unwrap();
    let mut pdu = vec![0u8; 72];
    pdu[..8].copy_from_slice(&[0x04, 0, 24, 0, 72, 0, 0, 0]);
    h.send(&pdu).unwrap();
    expect_term(&mut h, 0x01);
    // plen smaller than hlen.
    let mut h = Host::connect(t.addr, Digests::NONE).unwrap();
    h.send(&[0x04, 0, 72, 0, 16, 0, 0, 0]).unwrap();
    expect_term(&mut h, 0x01);
    // Header digest mismatch.
    let dg = Digests { hdgst: true, ddgst: false };
    let mut h = Host::connect(t.addr, dg).unwrap();
    let mut pdu = vec![0u8; 76];
    pdu[..8].copy_from_slice(&[0x04, 0x01, 72, 0, 76, 0, 0, 0]);
    h.send(&pdu).unwrap();
    expect_term(&mut h, 0x03);
    // H2CData with a transfer tag nobody issued.
    let admin = Host::admin_queue(t.addr, NQN, HOST, 0, Digests::NONE).unwrap();
    let mut io = io_queue(&t, &admin, Digests::NONE);
    let h2c = ferrite::nvmf::tcp::pdu::H2CData { cccid: 1, ttag: 77, datao: 0, datal: 512, last: true };
    let mut out = Vec::new();
    h2c.encode(Digests::NONE, 0).append_pdu(&mut out, &[0u8; 512]);
    io.send(&out).unwrap();
    expect_term(&mut io, 0x01);
    // ICReq twice.
    let mut h = Host::connect(t.addr, Digests::NONE).unwrap();
    let icreq = ferrite::nvmf::tcp::pdu::IcReq::default().encode();
    h.send(icreq.as_bytes()).unwrap();
    expect_term(&mut h, 0x02);
    still_serving(&t);
}

#[test]
fn async_event_on_namespace_change() {
    let t = start();
    let mut admin = Host::admin_queue(t.addr, NQN, HOST, 0, Digests::NONE).unwrap();
    // Enable namespace-attribute notices, then park an AER.
    let (cqe, _) = admin.admin(AdminOpcode::SetFeatures, 0, 0x0B, 1 << 8, 0).unwrap();
    ok(&cqe).unwrap();
    let mut sqe = ferrite::nvmf::spec::Sqe {
        opcode: AdminOpcode::AsyncEventRequest.raw(),
        cid: 900,
        ..Default::default()
    };
    sqe.set_sgl(ferrite::nvmf::spec::SglDescriptor::Transport { length: 0 });
    let mut out = Vec::new();
    ferrite::nvmf::tcp::pdu::append_capsule_cmd(&mut out, &sqe, &[], Digests::NONE, 0);
    admin.send(&out).unwrap();
    t.d.rpc(
        "bdev_malloc_create",
        Some(serde_json::json!({"name": "M2", "num_blocks": 2048, "block_size": 512})),
    )
    .unwrap();
    let nsid = t
        .d
        .rpc("nvmf_subsystem_add_ns", Some(serde_json::json!({"nqn": NQN, "namespace": {"bdev_name": "M2"}})))
        .unwrap();
    assert_eq!(nsid, 2);
    let (hdr, _) = admin.recv_pdu().unwrap();
    let ferrite::nvmf::tcp::pdu::Pdu::CapsuleResp(cqe) = hdr.pdu else {
        panic!("expected the AER completion")
    };
    assert_eq!(cqe.cid, 900);
    assert_eq!(cqe.dw0, 0x2 | (0x04 << 16), "notice: namespace attribute changed, log page 4");
    let (cqe, page) = admin.admin(AdminOpcode::GetLogPage, 0, 0x04 | ((1024 - 1) << 16), 0, 4096).unwrap();
    ok(&cqe).unwrap();
    assert_eq!(u32::from_le_bytes(page[0..4].try_into().unwrap()), 2, "changed namespace list names nsid 2");
    // The bdev is claimed by the subsystem now.
    assert!(t.d.rpc("bdev_malloc_delete", Some(serde_json::json!({"name": "M2"}))).is_err());
}

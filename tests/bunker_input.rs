//! A bunker refuses bad input from a peer with an Error that names the problem, writes nothing,
//! and keeps serving: unknown volume, stale epoch, partial sectors, writes crossing the ring end,
//! writes before Hello, garbage frames, resync requests, reads of trimmed log.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Daemon;
use ferrite::replication::wire::Msg;
use serde_json::json;

fn bunker() -> (Daemon, u16) {
    let port = common::free_port();
    let d = Daemon::start("[reactor]\ncores = [0]\n[[bdev]]\ntype = \"uring\"\nname = \"BLog\"\nfilename = \"@DIR@/b.log\"\ncreate_size_mb = 8\nblock_size = 512\n");
    d.rpc("replication_listen", Some(json!({"address": format!("127.0.0.1:{port}")}))).unwrap();
    d.rpc("bunker_create", Some(json!({"volume": "v", "log_bdev": "BLog"}))).unwrap();
    (d, port)
}

struct Peer {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    fn new(port: u16) -> Peer {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Peer { s, buf: Vec::new() }
    }
    fn send(&mut self, m: &Msg) {
        let mut out = Vec::new();
        m.encode(&mut out);
        self.s.write_all(&out).unwrap();
    }
    fn recv(&mut self) -> Option<Msg> {
        loop {
            if let Ok(Some((m, used))) = Msg::decode(&self.buf) {
                self.buf.drain(..used);
                return Some(m);
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
    fn expect_error(&mut self, needle: &str) {
        loop {
            match self.recv() {
                Some(Msg::Error { message }) => {
                    assert!(message.contains(needle), "error {message:?} does not mention {needle:?}");
                    return;
                }
                Some(_) => continue,
                None => panic!("connection closed without an Error mentioning {needle:?}"),
            }
        }
    }
}

fn hello(epoch: u64) -> Msg {
    Msg::Hello {
        volume: "v".into(),
        uuid: [5; 16],
        epoch,
        sector: 512,
        ring_sectors: 1000,
        head: 0,
        end: u64::MAX,
    }
}

#[test]
fn bad_peer_input_is_refused_and_the_bunker_keeps_serving() {
    let (d, port) = bunker();
    let mut p = Peer::new(port);
    p.send(&Msg::Hello {
        volume: "nope".into(),
        uuid: [5; 16],
        epoch: 1,
        sector: 512,
        ring_sectors: 1000,
        head: 0,
        end: 0,
    });
    p.expect_error("unknown volume");
    let mut p = Peer::new(port);
    p.send(&Msg::Write { lsn: 0, data: vec![0; 512] });
    p.expect_error("before Hello");
    let mut p = Peer::new(port);
    p.send(&hello(3));
    assert!(matches!(p.recv(), Some(Msg::HelloAck { .. })));
    p.send(&Msg::Write { lsn: 0, data: vec![1; 100] });
    p.expect_error("not whole sectors");
    let mut p = Peer::new(port);
    p.send(&hello(3));
    assert!(matches!(p.recv(), Some(Msg::HelloAck { .. })));
    p.send(&Msg::Write { lsn: 999, data: vec![1; 1024] });
    p.expect_error("crosses the end of the ring");
    let mut p = Peer::new(port);
    p.send(&hello(2));
    p.expect_error("stale epoch");
    let mut p = Peer::new(port);
    p.s.write_all(&[9, 0, 0, 0, 77, 0, 0, 0, 0, 1, 2, 3, 4]).unwrap();
    assert!(p.recv().is_none(), "garbage closes the connection");
    // A good peer still gets its writes acknowledged.
    let mut p = Peer::new(port);
    p.send(&hello(3));
    assert!(matches!(p.recv(), Some(Msg::HelloAck { .. })));
    p.send(&Msg::Write { lsn: 10, data: vec![2; 1024] });
    loop {
        match p.recv() {
            Some(Msg::Ack { lsn: 10, sectors: 2 }) => break,
            Some(_) => continue,
            None => panic!("no Ack"),
        }
    }
    let list = d.rpc("bunker_get_bunkers", None).unwrap();
    assert_eq!(list[0]["state"]["epoch"], 3);
    // Resynchronising is a secondary's business; and nothing below the trimmed head is served
    // (a requester that far behind would get overwritten entries).
    p.send(&Msg::ResyncStart { from: 12 });
    p.expect_error("only a secondary resynchronises");
    let mut p = Peer::new(port);
    p.send(&hello(3));
    assert!(matches!(p.recv(), Some(Msg::HelloAck { .. })));
    p.send(&Msg::Trim { head: 12 });
    p.send(&Msg::Read { from: 10, to: 12 });
    p.expect_error("no longer holds LSN 10");
}

fn secondary() -> (Daemon, u16) {
    let port = common::free_port();
    let d = Daemon::start(
        "[reactor]\ncores = [0]\n\
         [[bdev]]\ntype = \"uring\"\nname = \"SStage\"\nfilename = \"@DIR@/s.log\"\ncreate_size_mb = 8\nblock_size = 512\n\
         [[bdev]]\ntype = \"uring\"\nname = \"SData\"\nfilename = \"@DIR@/s.img\"\ncreate_size_mb = 4\nblock_size = 512\n\
         [[bdev]]\ntype = \"uring\"\nname = \"SLog\"\nfilename = \"@DIR@/l.log\"\ncreate_size_mb = 8\nblock_size = 512\n",
    );
    d.rpc("replication_listen", Some(json!({"address": format!("127.0.0.1:{port}")}))).unwrap();
    let p = json!({"volume": "v", "data_bdev": "SData", "staging_bdev": "SStage", "log_bdev": "SLog"});
    d.rpc("secondary_create", Some(p)).unwrap();
    (d, port)
}

/// One log entry writing `fill` to 8 blocks at `lba`, at `lsn` (512-byte sectors).
fn entry(lsn: u64, lba: u64, fill: u8) -> Vec<u8> {
    use ferrite::replication::format::{EntryHeader, EntryKind};
    let data = vec![fill; 4096];
    let mut out = vec![0u8; 512 + 4096];
    let h = EntryHeader {
        kind: EntryKind::Write,
        lsn,
        epoch: 1,
        lba,
        blocks: 8,
        data_len: 4096,
        sectors: 9,
        data_crc: crc32c::crc32c(&data),
    };
    h.encode(&mut out[..512]);
    out[512..].copy_from_slice(&data);
    out
}

fn applied(d: &Daemon) -> serde_json::Value {
    d.rpc("replication_status", None).unwrap()["secondaries"][0].clone()
}

/// A secondary refuses entries out of order, from a stale epoch or for an unknown volume with
/// a reason, and applies nothing at or after an entry whose checksum is wrong.
#[test]
fn a_secondary_refuses_bad_shipping_and_applies_nothing_bad() {
    let (d, port) = secondary();
    let mut p = Peer::new(port);
    p.send(&Msg::Hello {
        volume: "w".into(),
        uuid: [5; 16],
        epoch: 1,
        sector: 512,
        ring_sectors: 1000,
        head: 0,
        end: 0,
    });
    p.expect_error("unknown volume");

    let mut p = Peer::new(port);
    p.send(&hello(2));
    assert!(matches!(p.recv(), Some(Msg::HelloAck { durable_end: 0 })));
    p.send(&Msg::Write { lsn: 9, data: entry(9, 0, 1) });
    p.expect_error("out of order: expected LSN 0, got 9");

    // In order: two good entries, then one whose data does not match its checksum.
    let mut p = Peer::new(port);
    p.send(&hello(2));
    assert!(matches!(p.recv(), Some(Msg::HelloAck { .. })));
    p.send(&Msg::Write { lsn: 0, data: entry(0, 0, 0xA1) });
    p.send(&Msg::Write { lsn: 9, data: entry(9, 8, 0xA2) });
    let mut bad = entry(18, 16, 0xA3);
    bad[600] ^= 0xFF;
    p.send(&Msg::Write { lsn: 18, data: bad });
    p.send(&Msg::Write { lsn: 27, data: entry(27, 24, 0xA4) });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while applied(&d)["apply_error"].is_null() {
        assert!(std::time::Instant::now() < deadline, "the bad entry went unnoticed: {}", applied(&d));
        std::thread::sleep(Duration::from_millis(20));
    }
    while applied(&d)["applied"] != 18 {
        assert!(std::time::Instant::now() < deadline, "the good entries were not applied: {}", applied(&d));
        std::thread::sleep(Duration::from_millis(20));
    }
    let v = applied(&d);
    assert!(v["apply_error"].as_str().unwrap().contains("LSN 18: data checksum mismatch"), "{v}");
    assert_eq!(v["applied"], 18, "{v}");
    let img = std::fs::read(d.dir().join("s.img")).unwrap();
    assert!(img[..4096].iter().all(|&b| b == 0xA1) && img[4096..8192].iter().all(|&b| b == 0xA2));
    assert!(img[8192..16384].iter().all(|&b| b == 0), "an entry at or after the bad one was applied");
    assert!(d.log().contains("secondary stops applying"), "no logged reason");

    // A primary on an older epoch than the one seen is fenced.
    let mut p = Peer::new(port);
    p.send(&hello(1));
    assert!(matches!(p.recv(), Some(Msg::Fenced { epoch: 2 })), "a stale primary must be told it is fenced");
}

/// `ResyncStart` restarts the staging log where the primary says, the replica is marked as
/// being resynchronised (failover refuses it) until `ResyncDone`, which is echoed once the
/// blocks are durable; shipping then applies from the new start.
#[test]
fn a_resync_restarts_the_staging_log_and_blocks_failover_until_done() {
    let (d, port) = secondary();
    let mut p = Peer::new(port);
    p.send(&hello(2));
    assert!(matches!(p.recv(), Some(Msg::HelloAck { .. })));
    p.send(&Msg::Write { lsn: 0, data: entry(0, 0, 0xA1) });
    p.send(&Msg::ResyncStart { from: 100 });
    p.send(&Msg::Block { lba: 8, data: vec![0xB1; 4096] });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while applied(&d)["resynchronising"] != true || applied(&d)["received"] != 100 {
        assert!(std::time::Instant::now() < deadline, "no resync: {}", applied(&d));
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = d.rpc("volume_failover", Some(json!({"volume": "v"}))).unwrap_err();
    assert!(err.to_string().contains("being resynchronised"), "{err}");
    p.send(&Msg::Write { lsn: 100, data: entry(100, 16, 0xB2) });
    p.send(&Msg::ResyncDone { blocks: 8, through: 0 });
    loop {
        match p.recv() {
            Some(Msg::ResyncDone { blocks: 8, .. }) => break,
            Some(_) => continue,
            None => panic!("ResyncDone was not echoed"),
        }
    }
    while applied(&d)["applied"] != 109 {
        assert!(
            std::time::Instant::now() < deadline,
            "shipping did not apply after the resync: {}",
            applied(&d)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(applied(&d)["resynchronising"], false);
    let img = std::fs::read(d.dir().join("s.img")).unwrap();
    assert!(img[4096..8192].iter().all(|&b| b == 0xB1), "the resync block did not land");
    assert!(img[8192..12288].iter().all(|&b| b == 0xB2), "the entry after the resync was not applied");
}

/// A primary that restarts with its log ending before what the bunker holds (the entries past
/// it never became durable in its own log, so were never acknowledged) gets that shorter end
/// back: the bunker blanks the abandoned tail before answering, and the old connection can no
/// longer write. Otherwise the primary would count new writes at those LSNs as already on the
/// bunker, and a failover could pull the old incarnation's entries.
#[test]
fn a_restarted_primary_gets_its_own_end_and_the_abandoned_tail_is_blanked() {
    let (d, port) = bunker();
    let end_hello = |end: u64| Msg::Hello {
        volume: "v".into(),
        uuid: [5; 16],
        epoch: 1,
        sector: 512,
        ring_sectors: 1000,
        head: 0,
        end,
    };
    let acked = |p: &mut Peer, lsn: u64| loop {
        match p.recv() {
            Some(Msg::Ack { lsn: l, .. }) if l == lsn => break,
            Some(_) => continue,
            None => panic!("no Ack for LSN {lsn}"),
        }
    };
    let mut old = Peer::new(port);
    old.send(&end_hello(0));
    assert!(matches!(old.recv(), Some(Msg::HelloAck { durable_end: 0 })));
    old.send(&Msg::Write { lsn: 0, data: vec![0xA1; 1024] });
    old.send(&Msg::Write { lsn: 2, data: vec![0xA2; 2048] });
    acked(&mut old, 0);
    acked(&mut old, 2);
    let state = |d: &Daemon| d.rpc("bunker_get_bunkers", None).unwrap()[0]["state"].clone();
    assert_eq!(state(&d)["durable_end"], 6);

    // The primary comes back with only the first entry in its log.
    let mut new = Peer::new(port);
    new.send(&end_hello(2));
    match new.recv() {
        Some(Msg::HelloAck { durable_end }) => {
            assert_eq!(durable_end, 2, "the bunker must not claim the dropped tail")
        }
        other => panic!("expected HelloAck, got {other:?}"),
    }
    old.send(&Msg::Write { lsn: 6, data: vec![0xA3; 512] });
    old.expect_error("superseded");
    new.send(&Msg::Read { from: 0, to: 6 });
    let mut got = Vec::new();
    loop {
        match new.recv() {
            Some(Msg::ReadData { data, .. }) if data.is_empty() => break,
            Some(Msg::ReadData { data, .. }) => got.extend_from_slice(&data),
            Some(_) => continue,
            None => panic!("no end of ReadData"),
        }
    }
    assert_eq!(got.len(), 6 * 512);
    assert!(got[..1024].iter().all(|&b| b == 0xA1), "the kept entry is intact");
    assert!(got[1024..].iter().all(|&b| b == 0), "the dropped tail is blanked");
    // New entries go where the dropped ones were, and the end follows them.
    new.send(&Msg::Write { lsn: 2, data: vec![0xB2; 512] });
    acked(&mut new, 2);
    assert_eq!(state(&d)["durable_end"], 3);
}

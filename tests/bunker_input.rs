//! A bunker refuses bad input from a peer with an Error that names the problem, writes nothing,
//! and keeps serving: unknown volume, stale epoch, partial sectors, writes crossing the ring end,
//! writes before Hello, garbage frames.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Daemon;
use ferrite::replication::wire::Msg;
use serde_json::json;

fn bunker() -> (Daemon, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
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
    Msg::Hello { volume: "v".into(), uuid: [5; 16], epoch, sector: 512, ring_sectors: 1000, head: 0 }
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
}

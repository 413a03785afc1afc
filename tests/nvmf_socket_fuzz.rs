//! Seeded socket-level fuzzing of a real `ferrite serve`: for a fixed set of seeds, queue pairs
//! receive valid NVMe/TCP streams (ICReq, Connect, then admin commands or I/O: Write in-capsule
//! and by R2T + H2CData, Read, Flush, Dataset Management, Write Zeroes) with random bit flips,
//! truncations, length-field changes, duplicated, reordered and dropped PDUs, sent in random
//! chunks. Whatever the target answers must decode with the host-side codec, a C2HTermReq must be
//! followed by the target closing the connection, unmutated streams must be fully answered, and
//! after every batch the daemon must still be alive, serve a clean host doing verified I/O, and
//! (once the connections are gone) hold no stray controller and have every DMA buffer back.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{free_port, Daemon};
use ferrite::nvmf::host::{ok, Host};
use ferrite::nvmf::spec::{
    AdminOpcode, ConnectCmd, ConnectData, IoOpcode, PropertySet, SglDescriptor, Sqe, CNTLID_DYNAMIC,
};
use ferrite::nvmf::tcp::pdu::{self, DecodeParams, Digests, H2CData, IcReq, Pdu, Role};
use ferrite::rng::Rng;
use serde_json::Value;

const NQN: &str = "nqn.2026-11.io.ferrite:sockfuzz";
const HOST: &str = "nqn.2026-11.io.ferrite:sockfuzz-host";
const BS: usize = 512;
/// 16 MiB malloc namespace.
const BLOCKS: u64 = 16 * 2048;
/// Seeds (each opens `CONNS` queue pairs at once).
const SEEDS: u64 = 96;
const CONNS: usize = 3;
/// A clean host checks the daemon after this many seeds.
const CHECK_EVERY: u64 = 12;

fn start() -> (Daemon, SocketAddr) {
    let port = free_port();
    let config = format!(
        r#"
[reactor]
cores = [0, 1]
[memory]
buf_count = 64
[[bdev]]
type = "malloc"
name = "Malloc0"
size_mb = 16
block_size = {BS}
[nvmf]
[[nvmf.subsystem]]
nqn = "{NQN}"
hosts = ["{HOST}"]
namespaces = [{{ bdev = "Malloc0" }}]
listeners = ["127.0.0.1:{port}"]
"#
    );
    (Daemon::start(&config), format!("127.0.0.1:{port}").parse().unwrap())
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(131).wrapping_add(seed) as u8).collect()
}

/// One PDU of a stream, and whether it is a command capsule (answered by one CapsuleResp).
struct Item {
    bytes: Vec<u8>,
    capsule: bool,
}

fn capsule(sqe: &Sqe, data: &[u8], dg: Digests) -> Item {
    let mut bytes = Vec::new();
    pdu::append_capsule_cmd(&mut bytes, sqe, data, dg, 0);
    Item { bytes, capsule: true }
}

fn with_sgl(mut sqe: Sqe, sgl: SglDescriptor, cid: u16) -> Sqe {
    sqe.cid = cid;
    sqe.set_sgl(sgl);
    sqe
}

fn rw(op: IoOpcode, slba: u64, blocks: u32) -> Sqe {
    Sqe {
        opcode: op.raw(),
        nsid: 1,
        cdw10: slba as u32,
        cdw11: (slba >> 32) as u32,
        cdw12: blocks - 1,
        ..Sqe::default()
    }
}

fn connect_item(qid: u16, sqsize: u16, cntlid: u16, dg: Digests) -> Item {
    let data = ConnectData { hostid: [3; 16], cntlid, subnqn: NQN.into(), hostnqn: HOST.into() }.encode();
    let sqe = ConnectCmd { recfmt: 0, qid, sqsize, cattr: 0, kato: 0 }.to_sqe(1);
    let sqe = with_sgl(sqe, SglDescriptor::InCapsule { offset: 0, length: data.len() as u32 }, 1);
    capsule(&sqe, &data, dg)
}

/// A valid stream for one queue pair: the admin queue of a new controller, or an I/O queue of
/// the anchor controller `anchor`. It can be sent blind: the only R2T-driven write comes first
/// after Connect, when the target's free request slot 0 (its transfer tag) is the one it takes.
fn valid_stream(rng: &mut Rng, io: bool, anchor: u16, dg: Digests) -> Vec<Item> {
    let icreq = IcReq { pfv: 0, hpda: 0, dgst: dg, maxr2t: 0 }.encode();
    let mut s = vec![Item { bytes: icreq.to_vec(), capsule: false }];
    let slba = rng.below(BLOCKS - 64);
    if io {
        s.push(connect_item(1, 63, anchor, dg));
        // Write by R2T: 8 KiB in two H2CData PDUs (transfer tag 0).
        let len = 8192u32;
        let data = pattern(len as usize, rng.next_u64());
        let sqe =
            with_sgl(rw(IoOpcode::Write, slba, len / BS as u32), SglDescriptor::Transport { length: len }, 2);
        s.push(capsule(&sqe, &[], dg));
        for (off, last) in [(0u32, false), (4096, true)] {
            let h = H2CData { cccid: 2, ttag: 0, datao: off, datal: 4096, last };
            let mut bytes = Vec::new();
            h.encode(dg, 0).append_pdu(&mut bytes, &data[off as usize..off as usize + 4096]);
            s.push(Item { bytes, capsule: false });
        }
        let data = pattern(4096, rng.next_u64());
        let sqe = rw(IoOpcode::Write, slba + 16, 8);
        s.push(capsule(&with_sgl(sqe, SglDescriptor::InCapsule { offset: 0, length: 4096 }, 3), &data, dg));
        let sqe = rw(IoOpcode::Read, slba, 24);
        s.push(capsule(&with_sgl(sqe, SglDescriptor::Transport { length: 24 * BS as u32 }, 4), &[], dg));
        let flush = Sqe { opcode: IoOpcode::Flush.raw(), nsid: 1, cid: 5, ..Sqe::default() };
        s.push(capsule(&flush, &[], dg));
        let mut range = [0u8; 16];
        range[4..8].copy_from_slice(&8u32.to_le_bytes());
        range[8..16].copy_from_slice(&(slba + 32).to_le_bytes());
        let dsm = Sqe { opcode: IoOpcode::DatasetManagement.raw(), nsid: 1, cdw11: 1 << 2, ..Sqe::default() };
        s.push(capsule(&with_sgl(dsm, SglDescriptor::InCapsule { offset: 0, length: 16 }, 6), &range, dg));
        let wz = Sqe { opcode: IoOpcode::WriteZeroes.raw(), ..rw(IoOpcode::Read, slba + 40, 8) };
        s.push(capsule(&with_sgl(wz, SglDescriptor::Transport { length: 0 }, 7), &[], dg));
    } else {
        s.push(connect_item(0, 31, CNTLID_DYNAMIC, dg));
        let en = PropertySet { attrib: 0, ofst: 0x14, value: 1 | (4 << 20) | (6 << 16) }.to_sqe(2);
        s.push(capsule(&with_sgl(en, SglDescriptor::Transport { length: 0 }, 2), &[], dg));
        for (cid, cns, nsid) in [(3u16, 1u32, 0u32), (4, 0, 1), (5, 2, 0)] {
            let id = Sqe { opcode: AdminOpcode::Identify.raw(), nsid, cdw10: cns, ..Sqe::default() };
            s.push(capsule(&with_sgl(id, SglDescriptor::Transport { length: 4096 }, cid), &[], dg));
        }
        let lp = Sqe { opcode: AdminOpcode::GetLogPage.raw(), cdw10: 0x02 | (127 << 16), ..Sqe::default() };
        s.push(capsule(&with_sgl(lp, SglDescriptor::Transport { length: 512 }, 6), &[], dg));
        let ka = Sqe { opcode: AdminOpcode::KeepAlive.raw(), ..Sqe::default() };
        s.push(capsule(&with_sgl(ka, SglDescriptor::Transport { length: 0 }, 7), &[], dg));
    }
    s
}

/// Applies 1 to 3 random mutations; returns the bytes to send.
fn mutate(rng: &mut Rng, mut s: Vec<Item>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        let n = s.len();
        let k = rng.below(n as u64) as usize;
        match rng.below(7) {
            // Bit flips inside one PDU (header bytes more often).
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let b = &mut s[k].bytes;
                    let at = if rng.below(2) == 0 {
                        rng.below(b.len().min(24) as u64)
                    } else {
                        rng.below(b.len() as u64)
                    };
                    b[at as usize] ^= 1 << rng.below(8);
                }
            }
            // plen changed.
            1 => {
                let b = &mut s[k].bytes;
                let plen = u32::from_le_bytes(b[4..8].try_into().unwrap());
                let new = match rng.below(3) {
                    0 => plen.wrapping_add(rng.below(16) as u32).wrapping_sub(8),
                    1 => rng.below(300_000) as u32,
                    _ => rng.next_u64() as u32,
                };
                b[4..8].copy_from_slice(&new.to_le_bytes());
            }
            // hlen or pdo changed.
            2 => {
                let b = &mut s[k].bytes;
                b[2 + rng.below(2) as usize] = rng.next_u64() as u8;
            }
            // A PDU duplicated.
            3 => {
                let dup = Item { bytes: s[k].bytes.clone(), capsule: s[k].capsule };
                s.insert(k, dup);
            }
            // Two PDUs swapped.
            4 => {
                let j = rng.below(n as u64) as usize;
                s.swap(k, j);
            }
            // A PDU dropped.
            5 if n > 1 => {
                s.remove(k);
            }
            // Truncated inside a PDU (and nothing after it).
            _ => {
                let cut = rng.below(s[k].bytes.len() as u64) as usize;
                s[k].bytes.truncate(cut);
                s.truncate(k + 1);
            }
        }
    }
    s.into_iter().flat_map(|i| i.bytes).collect()
}

/// Sends `bytes` in random chunks (sometimes all at once).
fn send_chunked(rng: &mut Rng, sock: &mut TcpStream, bytes: &[u8]) {
    let mut off = 0;
    let whole = rng.below(2) == 0;
    while off < bytes.len() {
        let n = if whole { bytes.len() } else { 1 + rng.below(3000) as usize };
        let end = (off + n).min(bytes.len());
        if sock.write_all(&bytes[off..end]).is_err() {
            return; // the target closed (TermReq): fine
        }
        off = end;
        if !whole && rng.below(4) == 0 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

/// What one queue pair got back.
#[derive(Default)]
struct Answer {
    capsule_resps: usize,
    failed: usize,
    term: bool,
    eof: bool,
}

/// Reads the target's answer: until `want` CapsuleResps (clean streams), or until the target
/// closes, or a short silence. Everything must decode; a TermReq must be followed by a close.
fn collect(sock: &mut TcpStream, sent: &[u8], want: Option<usize>, what: &str) -> Answer {
    let hpda = match pdu::decode_header(sent, &DecodeParams::new(Role::Controller, 1 << 20)) {
        Ok(Some(h)) => match h.pdu {
            Pdu::ICReq(r) => r.hpda,
            _ => 0,
        },
        _ => 0,
    };
    let mut decode = DecodeParams::new(Role::Host, 1 << 24);
    let mut a = Answer::default();
    let mut rx = Vec::new();
    let start = Instant::now();
    let mut last_data = Instant::now();
    sock.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let mut chunk = vec![0u8; 65536];
    loop {
        while let Some(h) = match pdu::decode_header(&rx, &decode) {
            Ok(h) => h.filter(|h| rx.len() >= h.total_len()),
            Err(e) => panic!("{what}: target sent a PDU the host codec rejects: {e}: {:02x?}", &rx[..8]),
        } {
            let bytes: Vec<u8> = rx.drain(..h.total_len()).collect();
            // (Responses of commands that finish after the TermReq still follow it: reported,
            // see `nothing_follows_a_term_req` below.)
            assert!(!(a.term && h.pdu_type == pdu::PduType::C2HTermReq), "{what}: a second C2HTermReq");
            if let Some(off) = h.ddgst_offset() {
                let data = &bytes[h.data_range().unwrap()];
                let d = bytes[off..off + 4].try_into().unwrap();
                pdu::verify_ddgst(&[data], d).unwrap_or_else(|e| panic!("{what}: target data digest: {e}"));
            }
            match h.pdu {
                Pdu::ICResp(r) => decode = decode.with_digests(r.dgst).with_pda(hpda),
                Pdu::CapsuleResp(c) => {
                    a.capsule_resps += 1;
                    a.failed += usize::from(!c.status.is_success());
                }
                Pdu::C2HTermReq(_) => a.term = true,
                _ => {}
            }
        }
        if a.eof || want.is_some_and(|w| a.capsule_resps >= w) {
            return a;
        }
        let quiet = last_data.elapsed();
        let waited = start.elapsed();
        if a.term {
            assert!(waited < Duration::from_secs(5), "{what}: connection left open 5 s after C2HTermReq");
        } else if want.is_some() {
            assert!(
                waited < Duration::from_secs(10),
                "{what}: clean stream answered {} of {want:?}",
                a.capsule_resps
            );
        } else if quiet > Duration::from_millis(40) {
            return a;
        }
        match sock.read(&mut chunk) {
            Ok(0) => a.eof = true,
            Ok(n) => {
                rx.extend_from_slice(&chunk[..n]);
                last_data = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => a.eof = true,
        }
    }
}

fn stats(d: &Daemon) -> Value {
    d.rpc("nvmf_get_stats", None).unwrap()
}

/// Waits until only the anchor controller is left, without I/O queues, and every DMA buffer is
/// back in the pool.
fn settled(d: &mut Daemon, anchor: Option<u16>, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(d.alive(), "{when}: ferrite serve died; log:\n{}", d.log());
        let s = stats(d);
        let ctrlrs = s["controllers"].as_array().unwrap();
        let only_anchor = match anchor {
            Some(id) => {
                ctrlrs.len() == 1 && ctrlrs[0]["cntlid"] == u64::from(id) && ctrlrs[0]["io_qpairs"] == 0
            }
            None => ctrlrs.is_empty(),
        };
        if only_anchor && s["dma_pool_free"] == s["dma_pool_count"] {
            return;
        }
        assert!(Instant::now() < deadline, "{when}: controllers or DMA buffers leaked: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A clean host: admin queue, I/O queue, writes (in-capsule and by R2T) read back and compared.
fn clean_io(addr: SocketAddr, seed: u64) {
    let mut admin = Host::admin_queue(addr, NQN, HOST, 0, Digests::NONE).unwrap();
    assert_eq!(&admin.identify(1, 0).unwrap()[768..768 + NQN.len()], NQN.as_bytes());
    let mut io = Host::connect(addr, Digests { hdgst: seed % 2 == 0, ddgst: seed % 3 == 0 }).unwrap();
    ok(&io.fabrics_connect(1, 63, NQN, HOST, admin.cntlid, 0).unwrap()).unwrap();
    for (slba, len) in [(BLOCKS - 8, 4096usize), (seed * 97 % (BLOCKS - 256), 64 * 1024)] {
        let data = pattern(len, seed ^ slba);
        ok(&io.write(1, slba, &data, BS, 8192).unwrap()).unwrap();
        let (cqe, back) = io.read(1, slba, (len / BS) as u32, BS).unwrap();
        ok(&cqe).unwrap();
        assert!(back == data, "seed {seed}: data read back at LBA {slba} differs");
    }
}

#[test]
fn mutated_streams_leave_the_target_serving_and_leak_nothing() {
    let (mut d, addr) = start();
    let t0 = Instant::now();
    // The anchor: a controller whose I/O queues the fuzzed streams open.
    let anchor = Host::admin_queue(addr, NQN, HOST, 0, Digests::NONE).unwrap();
    let digest_choices =
        [Digests::NONE, Digests { hdgst: true, ddgst: false }, Digests { hdgst: true, ddgst: true }];
    // Streams, TermReqs, closes by the target, CapsuleResps, failed commands.
    let mut tally = [0usize; 5];
    for seed in 0..SEEDS {
        let mut rng = Rng::new(0xF00D_0000 + seed);
        let mut conns = Vec::new();
        for c in 0..CONNS {
            let io = rng.below(3) != 0;
            let dg = digest_choices[rng.below(3) as usize];
            let items = valid_stream(&mut rng, io, anchor.cntlid, dg);
            // One stream in eight goes unmutated: it must be answered in full.
            let clean = rng.below(8) == 0;
            let want = items.iter().filter(|i| i.capsule).count();
            let bytes = if clean {
                items.into_iter().flat_map(|i| i.bytes).collect()
            } else {
                mutate(&mut rng, items)
            };
            let mut sock = TcpStream::connect(addr).unwrap();
            sock.set_nodelay(true).unwrap();
            send_chunked(&mut rng, &mut sock, &bytes);
            let what =
                format!("seed {seed} conn {c} ({}, {dg:?}, clean {clean})", if io { "I/O" } else { "admin" });
            conns.push((sock, bytes, clean.then_some(want), what));
        }
        for (sock, bytes, want, what) in conns.iter_mut() {
            let a = collect(sock, bytes, *want, what);
            tally[0] += 1;
            tally[1] += usize::from(a.term);
            tally[2] += usize::from(a.eof);
            tally[3] += a.capsule_resps;
            tally[4] += a.failed;
            if want.is_some() {
                assert!(
                    !a.term && a.failed == 0,
                    "{what}: clean stream: {} failed, term {}",
                    a.failed,
                    a.term
                );
            }
        }
        drop(conns);
        if (seed + 1) % CHECK_EVERY == 0 {
            settled(&mut d, Some(anchor.cntlid), &format!("after seed {seed}"));
            clean_io(addr, seed);
            settled(&mut d, Some(anchor.cntlid), &format!("after the clean host of seed {seed}"));
        }
    }
    drop(anchor);
    settled(&mut d, None, "at the end");
    let [streams, terms, closed, resps, failed] = tally;
    eprintln!("{streams} streams: {terms} TermReqs, {closed} closed by the target, {resps} responses ({failed} errors)");
    assert!(terms > streams / 4 && resps > streams, "the mutations no longer reach the target: {tally:?}");
    let log = d.log();
    assert!(!log.contains("panicked"), "the daemon logged a panic:\n{log}");
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
}

// -------------------------------------------------------------------------------------------
// Reproducers of defects the fuzzers found (fixed; kept as regression tests).

/// NVMe/TCP: after a C2HTermReq the controller sends nothing more and closes. A command that
/// was already running when a later PDU of the same batch turned out malformed still gets its
/// C2HData / CapsuleResp queued behind the TermReq.
#[test]
fn nothing_follows_a_term_req() {
    let (_d, addr) = start();
    let admin = Host::admin_queue(addr, NQN, HOST, 0, Digests::NONE).unwrap();
    let mut io = Host::connect(addr, Digests::NONE).unwrap();
    ok(&io.fabrics_connect(1, 63, NQN, HOST, admin.cntlid, 0).unwrap()).unwrap();
    let read = with_sgl(rw(IoOpcode::Read, 0, 8), SglDescriptor::Transport { length: 4096 }, 9);
    let mut bytes = capsule(&read, &[], Digests::NONE).bytes;
    bytes.extend_from_slice(&[0x0B, 0, 8, 0, 8, 0, 0, 0]); // unknown PDU type: fatal
    io.send(&bytes).unwrap();
    let (first, _) = io.recv_pdu().unwrap();
    assert!(matches!(first.pdu, Pdu::C2HTermReq(_)), "expected the TermReq first, got {:?}", first.pdu);
    match io.recv_pdu() {
        Ok((h, _)) => panic!("{:?} sent after the C2HTermReq", h.pdu_type),
        Err(e) => assert!(matches!(e, ferrite::nvmf::host::HostError::Io(_)), "{e}"),
    }
}

/// DMA buffers smaller than the in-capsule data limits are refused at start-up with a message
/// (they once let 8 KiB of admin in-capsule data overflow a 4 KiB buffer and panic a reactor);
/// in-capsule data beyond the queue's limit gets Data SGL Length Invalid.
#[test]
fn in_capsule_data_larger_than_a_dma_buffer() {
    let port = free_port();
    let config = |buf: u32| {
        format!(
            "[reactor]\ncores = [0]\n[memory]\nbuf_size = {buf}\nbuf_count = 16\n[[bdev]]\ntype = \"malloc\"\nname = \"Malloc0\"\nsize_mb = 4\n\
             [nvmf.transport]\nmax_io_size = 4096\n[[nvmf.subsystem]]\nnqn = \"{NQN}\"\nhosts = [\"{HOST}\"]\n\
             namespaces = [{{ bdev = \"Malloc0\" }}]\nlisteners = [\"127.0.0.1:{port}\"]\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.toml");
    std::fs::write(&path, format!("{}[rpc]\nsocket = \"{}/s.sock\"\n", config(4096), dir.path().display()))
        .unwrap();
    let out =
        std::process::Command::new(common::bin()).args(["serve", "--config"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("must hold the in-capsule data"), "{err}");
    let d = Daemon::start(&config(16384));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut h = Host::connect(addr, Digests::NONE).unwrap();
    let sqe = Sqe { opcode: AdminOpcode::SetFeatures.raw(), cdw10: 0x0B, ..Sqe::default() };
    let sqe = with_sgl(sqe, SglDescriptor::InCapsule { offset: 0, length: 12288 }, 1);
    h.send(&capsule(&sqe, &[0u8; 12288], Digests::NONE).bytes).unwrap();
    let (hdr, _) = h.recv_pdu().unwrap();
    assert!(
        matches!(hdr.pdu, Pdu::CapsuleResp(c) if c.status.same_code(ferrite::nvmf::spec::Status::DATA_SGL_LENGTH_INVALID)),
        "{:?}",
        hdr.pdu
    );
    assert!(!d.log().contains("panicked"));
    still_serves(addr);
}

fn still_serves(addr: SocketAddr) {
    let admin = Host::admin_queue(addr, NQN, HOST, 0, Digests::NONE).unwrap();
    let mut io = Host::connect(addr, Digests::NONE).unwrap();
    ok(&io.fabrics_connect(1, 15, NQN, HOST, admin.cntlid, 0).unwrap()).unwrap();
    ok(&io.write(1, 0, &pattern(4096, 1), BS, 8192).unwrap()).unwrap();
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A host that sends Reads but never reads the socket makes the target queue every C2HData in
/// the connection's output buffer, without bound (it keeps reading new capsules while its
/// output cannot drain): 2000 Reads of 128 KiB grow the daemon by ~250 MiB.
#[test]
fn output_buffer_is_bounded_when_the_host_does_not_read() {
    let (mut d, addr) = start();
    let admin = Host::admin_queue(addr, NQN, HOST, 0, Digests::NONE).unwrap();
    let mut io = Host::connect(addr, Digests::NONE).unwrap();
    ok(&io.fabrics_connect(1, 127, NQN, HOST, admin.cntlid, 0).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_bytes(d.child.id());
    let mut bytes = Vec::new();
    for i in 0..2000u16 {
        let sqe = with_sgl(rw(IoOpcode::Read, 0, 256), SglDescriptor::Transport { length: 128 * 1024 }, i);
        bytes.extend_from_slice(&capsule(&sqe, &[], Digests::NONE).bytes);
    }
    io.send(&bytes).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let grown = rss_bytes(d.child.id()).saturating_sub(before);
    assert!(d.alive());
    assert!(grown < 64 << 20, "daemon RSS grew by {} MiB for one connection", grown >> 20);
}

//! The initiator queue pair against a scripted target on a loopback socket: the paths a
//! well-behaved ferrite target does not take (C2HData split over several PDUs then a
//! CapsuleResp, several R2Ts per write, PDUs arriving a byte at a time, CPDA padding, data digest
//! errors) and the protocol errors that must end the connection.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::qpair::{Done, QpairError, QpairParams, TcpQpair};
use super::session::read_pdu;
use crate::nvmf::spec::{Cqe, IoOpcode, Sqe, Status};
use crate::nvmf::tcp::pdu::{
    encode_capsule_resp, C2HData, DecodeParams, Digests, Pdu, PduHeader, R2t, Role, TermReq,
};

const BOTH: Digests = Digests { hdgst: true, ddgst: true };

/// The target's end: reads host PDUs, writes scripted ones (optionally a byte at a time).
struct Peer {
    s: TcpStream,
    params: DecodeParams,
    dg: Digests,
    trickle: bool,
}

impl Peer {
    fn recv(&mut self) -> (PduHeader, Vec<u8>) {
        read_pdu(&mut self.s, &self.params).unwrap()
    }

    fn send(&mut self, bytes: &[u8]) {
        if self.trickle {
            for b in bytes {
                self.s.write_all(&[*b]).unwrap();
            }
        } else {
            self.s.write_all(bytes).unwrap();
        }
    }

    fn c2h(&mut self, cid: u16, datao: u32, data: &[u8], last: bool, success: bool) {
        let mut out = Vec::new();
        let h = C2HData { cccid: cid, datao, datal: data.len() as u32, last, success };
        h.encode(self.dg, 0).append_pdu(&mut out, data);
        self.send(&out);
    }

    fn resp(&mut self, cid: u16, status: Status) {
        self.send(encode_capsule_resp(&Cqe::new(cid, status), self.dg.hdgst).as_bytes());
    }
}

fn pair(dg: Digests, cpda: u8, icd: u32, maxh2cdata: u32, trickle: bool) -> (TcpQpair, Peer) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    let p = QpairParams { digests: dg, cpda, maxh2cdata, icd, slots: 4, buf_len: 16384 };
    let params = DecodeParams::new(Role::Controller, 65536).with_digests(dg).with_pda(cpda);
    (TcpQpair::new(host, p).unwrap(), Peer { s, params, dg, trickle })
}

fn rw(write: bool, lba: u64, blocks: u32) -> Sqe {
    let opcode = if write { IoOpcode::Write } else { IoOpcode::Read };
    Sqe { opcode: opcode.raw(), nsid: 1, cdw10: lba as u32, cdw12: blocks - 1, ..Sqe::default() }
}

/// Drives the queue pair until `n` completions arrived (or an error).
fn run(qp: &mut TcpQpair, n: usize) -> Result<Vec<Done>, QpairError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut done = Vec::new();
    while done.len() < n {
        assert!(Instant::now() < deadline, "no completion within 10 s");
        qp.flush()?;
        qp.recv(&mut done)?;
    }
    Ok(done)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect()
}

#[test]
fn read_in_several_c2h_pdus_then_a_capsule_response_a_byte_at_a_time() {
    let (mut qp, mut peer) = pair(BOTH, 0, 8192, 4096, true);
    qp.submit(2, rw(false, 7, 16), 8192, false);
    qp.flush().unwrap();
    let data = pattern(8192, 3);
    let t = std::thread::spawn(move || {
        let (h, _) = peer.recv();
        let Pdu::CapsuleCmd(sqe) = h.pdu else { panic!("{h:?}") };
        assert_eq!((sqe.cid, sqe.opcode), (2, IoOpcode::Read.raw()));
        peer.c2h(2, 0, &data[..3000], false, false);
        peer.c2h(2, 3000, &data[3000..], true, false);
        peer.resp(2, Status::SUCCESS);
        data
    });
    let done = run(&mut qp, 1).unwrap();
    let data = t.join().unwrap();
    assert_eq!(done, vec![Done { slot: 2, status: Status::SUCCESS }]);
    assert!(qp.buf(2)[..8192] == data[..]);
}

#[test]
fn write_answers_several_r2ts_with_h2c_pdus_padded_to_cpda() {
    let (mut qp, mut peer) = pair(BOTH, 3, 0, 4096, false);
    let data = pattern(12288, 9);
    qp.buf_mut(1)[..12288].copy_from_slice(&data);
    qp.submit(1, rw(true, 0, 24), 12288, true);
    let t = std::thread::spawn(move || {
        let (h, _) = peer.recv();
        assert!(matches!(h.pdu, Pdu::CapsuleCmd(s) if s.cid == 1), "{h:?}");
        assert_eq!(h.data_len(), 0, "12 KiB does not fit an ICD of 0: no in-capsule data");
        let mut got = vec![0u8; 12288];
        for (r2to, r2tl, pdus) in [(0u32, 8192u32, 2), (8192, 4096, 1)] {
            peer.send(R2t { cccid: 1, ttag: 5, r2to, r2tl }.encode(true).as_bytes());
            for k in 0..pdus {
                let (h, bytes) = peer.recv();
                let Pdu::H2CData(d) = h.pdu else { panic!("{h:?}") };
                assert_eq!((d.ttag, d.datal, d.last), (5, 4096, k == pdus - 1));
                assert_eq!(h.data_offset() % 16, 0, "data aligned to CPDA 3");
                let range = h.data_range().unwrap();
                crate::nvmf::tcp::pdu::verify_ddgst(
                    &[&bytes[range.clone()]],
                    bytes[range.end..range.end + 4].try_into().unwrap(),
                )
                .unwrap();
                got[d.datao as usize..(d.datao + d.datal) as usize].copy_from_slice(&bytes[range]);
            }
        }
        peer.resp(1, Status::SUCCESS);
        got
    });
    let done = run(&mut qp, 1).unwrap();
    assert_eq!(done[0], Done { slot: 1, status: Status::SUCCESS });
    assert!(t.join().unwrap() == data);
}

#[test]
fn in_capsule_write_and_success_flag_read() {
    let (mut qp, mut peer) = pair(Digests::NONE, 0, 8192, 4096, false);
    let data = pattern(4096, 1);
    qp.buf_mut(0)[..4096].copy_from_slice(&data);
    qp.submit(0, rw(true, 0, 8), 4096, true);
    qp.submit(3, rw(false, 0, 8), 4096, false);
    let t = std::thread::spawn(move || {
        let (h, bytes) = peer.recv();
        assert!(matches!(h.pdu, Pdu::CapsuleCmd(s) if s.cid == 0));
        let written = bytes[h.data_range().unwrap()].to_vec();
        let (h, _) = peer.recv();
        assert!(matches!(h.pdu, Pdu::CapsuleCmd(s) if s.cid == 3));
        peer.resp(0, Status::SUCCESS);
        peer.c2h(3, 0, &written, true, true);
        written
    });
    let done = run(&mut qp, 2).unwrap();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|d| d.status == Status::SUCCESS), "{done:?}");
    assert!(t.join().unwrap() == data);
    assert!(qp.buf(3)[..4096] == data[..]);
}

#[test]
fn a_data_digest_error_fails_the_command_not_the_connection() {
    let (mut qp, mut peer) = pair(BOTH, 0, 8192, 4096, false);
    qp.submit(0, rw(false, 0, 1), 512, false);
    qp.flush().unwrap();
    let t = std::thread::spawn(move || {
        peer.recv();
        let mut out = Vec::new();
        let h = C2HData { cccid: 0, datao: 0, datal: 512, last: true, success: true };
        h.encode(BOTH, 0).append_pdu(&mut out, &[7u8; 512]);
        let n = out.len();
        out[n - 1] ^= 0xFF;
        peer.send(&out);
        peer
    });
    let done = run(&mut qp, 1).unwrap();
    assert!(done[0].status.same_code(Status::TRANSIENT_TRANSPORT_ERROR), "{:?}", done[0]);
    let mut peer = t.join().unwrap();
    qp.submit(0, rw(false, 0, 1), 512, false);
    qp.flush().unwrap();
    peer.recv();
    peer.c2h(0, 0, &[1u8; 512], true, true);
    assert_eq!(run(&mut qp, 1).unwrap()[0].status, Status::SUCCESS);
}

#[test]
fn protocol_errors_end_the_connection() {
    type Script = fn(&mut Peer);
    let cases: [(&str, Script); 5] = [
        ("not outstanding", |p| p.resp(3, Status::SUCCESS)),
        ("C2HTermReq", |p| p.send(TermReq { fes: 2, fei: 0 }.encode_c2h(&[0; 8]).as_bytes())),
        ("expected offset", |p| p.c2h(0, 100, &[0; 8], true, true)),
        ("R2T for CID 0", |p| p.send(R2t { cccid: 0, ttag: 1, r2to: 0, r2tl: 512 }.encode(false).as_bytes())),
        ("closed", |p| p.s.shutdown(std::net::Shutdown::Both).unwrap()),
    ];
    for (want, script) in cases {
        let (mut qp, mut peer) = pair(Digests::NONE, 0, 8192, 4096, false);
        qp.submit(0, rw(false, 0, 1), 512, false);
        qp.flush().unwrap();
        peer.recv();
        script(&mut peer);
        let err = run(&mut qp, 1).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

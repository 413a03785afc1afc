//! Tests for the NVMe/TCP PDU codec: encoder/decoder round trips, exact
//! byte layouts, every malformed-header rejection with its TermReq
//! mapping, incremental decoding, digests, and a never-panics proptest.

use proptest::prelude::*;

use super::super::super::spec::{SglDescriptor, Sqe, Status};
use super::*;

const MAX: u32 = 1 << 20;

fn ctrl() -> DecodeParams {
    DecodeParams::new(Role::Controller, MAX)
}

fn host() -> DecodeParams {
    DecodeParams::new(Role::Host, MAX)
}

const BOTH: Digests = Digests { hdgst: true, ddgst: true };

fn decode_all(bytes: &[u8], p: &DecodeParams) -> PduHeader {
    let h = decode_header(bytes, p).unwrap().unwrap();
    assert_eq!(h.total_len(), bytes.len(), "plen covers the whole PDU");
    h
}

fn pdu(buf: &HeaderBuf, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    buf.append_pdu(&mut v, data);
    v
}

fn write_sqe(cid: u16, len: u32) -> Sqe {
    let mut sqe = Sqe { opcode: 0x01, cid, nsid: 1, ..Sqe::default() };
    sqe.set_sgl(SglDescriptor::InCapsule { offset: 0, length: len });
    sqe
}

#[test]
fn icreq_icresp_round_trip_and_layout() {
    let req = IcReq { pfv: 0, hpda: 0, dgst: BOTH, maxr2t: 0 };
    let b = req.encode();
    assert_eq!(b.len(), 128);
    assert_eq!(&b[..8], &[0, 0, 128, 0, 128, 0, 0, 0]);
    assert_eq!(b[11], 0b11);
    let h = decode_all(&b, &ctrl());
    assert_eq!(h.pdu, Pdu::ICReq(req));
    assert_eq!(h.data_range(), None);

    let resp = IcResp::for_icreq(&req, 131_072);
    assert_eq!(resp.dgst, BOTH, "echoes the host's digests");
    let b = resp.encode();
    assert_eq!(&b[..8], &[1, 0, 128, 0, 128, 0, 0, 0]);
    assert_eq!(b[10], 0, "cpda");
    assert_eq!(b[12..16], 131_072u32.to_le_bytes());
    assert_eq!(decode_all(&b, &host()).pdu, Pdu::ICResp(resp));
}

#[test]
fn capsule_cmd_without_data() {
    let sqe = Sqe { opcode: 0x06, cid: 3, cdw10: 1, ..Sqe::default() };
    for dg in [Digests::NONE, BOTH] {
        let b = encode_capsule_cmd(&sqe, 0, dg, 0);
        assert_eq!(b.flags(), u8::from(dg.hdgst), "no DDGSTF without data");
        assert_eq!(b[3], 0, "pdo 0 without data");
        let h = decode_all(&b, &ctrl().with_digests(dg));
        assert_eq!(h.pdu, Pdu::CapsuleCmd(sqe));
        assert_eq!(h.data_len(), 0);
        assert!(!h.ddgst);
    }
}

trait Flags {
    fn flags(&self) -> u8;
}
impl Flags for HeaderBuf {
    fn flags(&self) -> u8 {
        self.as_bytes()[1]
    }
}

#[test]
fn capsule_cmd_with_in_capsule_data() {
    let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    let sqe = write_sqe(7, 4096);
    for (dg, cpda) in [(Digests::NONE, 0), (BOTH, 0), (BOTH, 31), (Digests::NONE, 3)] {
        let mut bytes = Vec::new();
        append_capsule_cmd(&mut bytes, &sqe, &data, dg, cpda);
        let p = ctrl().with_digests(dg).with_pda(cpda);
        let h = decode_all(&bytes, &p);
        assert_eq!(h.pdu, Pdu::CapsuleCmd(sqe));
        let r = h.data_range().unwrap();
        assert_eq!(r.start % ((usize::from(cpda) + 1) * 4), 0);
        assert!(r.start >= h.header_len());
        assert_eq!(&bytes[r.clone()], &data[..]);
        if dg.ddgst {
            let off = h.ddgst_offset().unwrap();
            let rx: [u8; 4] = bytes[off..off + 4].try_into().unwrap();
            assert_eq!(verify_ddgst(&[&bytes[r]], rx), Ok(()));
        }
    }
}

#[test]
fn linux_host_capsule_layout() {
    // Linux: pdo = hlen + hdgst, plen = pdo + data + ddgst.
    let b = encode_capsule_cmd(&write_sqe(1, 512), 512, BOTH, 0);
    assert_eq!(&b[..4], &[4, 0x03, 72, 76]);
    assert_eq!(b.plen(), 76 + 512 + 4);
    assert_eq!(b.len(), 76);
    assert_eq!(b[72..76], hdgst(&b[..72]));
}

#[test]
fn capsule_resp_round_trip() {
    let mut cqe = Cqe::new(0x42, Status::LBA_OUT_OF_RANGE.with_dnr());
    cqe.sqhd = 9;
    cqe.sqid = 2;
    for hd in [false, true] {
        let b = encode_capsule_resp(&cqe, hd);
        assert_eq!(b.len(), if hd { 28 } else { 24 });
        assert_eq!(b.plen() as usize, b.len());
        let p = host().with_digests(Digests { hdgst: hd, ddgst: true });
        assert_eq!(decode_all(&b, &p).pdu, Pdu::CapsuleResp(cqe));
    }
}

#[test]
fn h2c_data_round_trip() {
    let d = H2CData { cccid: 5, ttag: 9, datao: 8192, datal: 1000, last: true };
    let data = vec![0xA5; 1000];
    for dg in [Digests::NONE, BOTH] {
        let bytes = pdu(&d.encode(dg, 0), &data);
        let h = decode_all(&bytes, &ctrl().with_digests(dg));
        assert_eq!(h.pdu, Pdu::H2CData(d));
        assert_eq!(h.flags & flags::LAST_PDU, flags::LAST_PDU);
        assert_eq!(&bytes[h.data_range().unwrap()], &data[..]);
    }
}

#[test]
fn c2h_data_round_trip_and_layout() {
    let d = C2HData { cccid: 0x77, datao: 0, datal: 4096, last: true, success: true };
    let b = d.encode(BOTH, 0);
    assert_eq!(&b[..4], &[7, 0x0F, 24, 28], "HDGSTF|DDGSTF|LAST|SUCCESS");
    assert_eq!(b.plen(), 28 + 4096 + 4);
    assert_eq!(b.data_len(), 4096);
    assert!(b.has_ddgst());
    let bytes = pdu(&b, &[1; 4096]);
    let h = decode_all(&bytes, &host().with_digests(BOTH));
    assert_eq!(h.pdu, Pdu::C2HData(d));
    // hpda 1 (8-byte alignment) pads 28 -> 32.
    let b = d.encode(BOTH, 1);
    assert_eq!(b[3], 32);
    let bytes = pdu(&b, &[1; 4096]);
    let h = decode_all(&bytes, &host().with_digests(BOTH).with_pda(1));
    assert_eq!(h.data_offset(), 32);
    assert_eq!(h.header_len(), 28);
}

#[test]
fn r2t_round_trip() {
    let r = R2t { cccid: 1, ttag: 2, r2to: 4096, r2tl: 65536 };
    for hd in [false, true] {
        let b = r.encode(hd);
        assert_eq!(b.plen() as usize, 24 + if hd { 4 } else { 0 });
        let p = host().with_digests(Digests { hdgst: hd, ddgst: false });
        assert_eq!(decode_all(&b, &p).pdu, Pdu::R2T(r));
    }
}

#[test]
fn term_req_round_trip() {
    let bad = [0x04u8, 0, 99, 0, 72, 0, 0, 0];
    let err = decode_header(&bad, &ctrl()).unwrap_err();
    let t = TermReq::from_error(&err);
    assert_eq!((t.fes, t.fei), (1, 2));
    let b = t.encode_c2h(offending_header(&bad));
    assert_eq!(&b[..8], &[3, 0, 24, 0, 32, 0, 0, 0]);
    assert_eq!(b[10..14], 2u32.to_le_bytes(), "FEI at byte 10");
    let h = decode_all(&b, &host().with_digests(BOTH));
    assert_eq!(h.pdu, Pdu::C2HTermReq(t));
    assert_eq!(&b[h.data_range().unwrap()], &bad);
    let long = [0u8; 300];
    let b = TermReq::new(Fes::PduSequenceError, 0).encode_h2c(&long);
    assert_eq!(b.len(), 24 + 128);
    assert_eq!(decode_all(&b, &ctrl()).data_len(), 128);
}

#[test]
fn truncated_input_needs_more() {
    let mut bytes = Vec::new();
    append_capsule_cmd(&mut bytes, &write_sqe(1, 64), &[9; 64], BOTH, 0);
    let p = ctrl().with_digests(BOTH);
    for n in 0..76 {
        assert_eq!(decode_header(&bytes[..n], &p), Ok(None), "prefix {n}");
        assert!(header_len_hint(&bytes[..n], &p) > n);
    }
    assert_eq!(header_len_hint(&bytes, &p), 76);
    assert!(decode_header(&bytes[..76], &p).unwrap().is_some());
    let icreq = IcReq::default().encode();
    assert_eq!(decode_header(&icreq[..127], &ctrl()), Ok(None));
}

fn mutate(bytes: &[u8], at: usize, v: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] = v;
    b
}

fn set_plen(bytes: &[u8], plen: u32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[4..8].copy_from_slice(&plen.to_le_bytes());
    b
}

fn term(bytes: &[u8], p: &DecodeParams) -> (Fes, u32) {
    decode_header(bytes, p).unwrap_err().term_req()
}

#[test]
fn rejects_unknown_type_and_wrong_direction() {
    let b = IcReq::default().encode();
    let e = decode_header(&mutate(&b, 0, 0x08), &ctrl()).unwrap_err();
    assert_eq!(e, PduError::UnknownType(8));
    assert_eq!(e.term_req(), (Fes::InvalidHeaderField, 0));
    assert!(e.to_string().contains("unknown PDU type 0x08"));
    let e = decode_header(&b, &host()).unwrap_err();
    assert_eq!(e, PduError::WrongDirection(PduType::ICReq));
}

#[test]
fn rejects_bad_hlen() {
    let b = R2t { r2tl: 1, ..R2t::default() }.encode(false);
    let bad = mutate(&b, 2, 28);
    assert!(matches!(
        decode_header(&bad, &host()),
        Err(PduError::InvalidHlen { hlen: 28, expected: 24, .. })
    ));
    assert_eq!(term(&bad, &host()), (Fes::InvalidHeaderField, 2));
}

#[test]
fn rejects_bad_pdo() {
    let mut bytes = Vec::new();
    append_capsule_cmd(&mut bytes, &write_sqe(1, 64), &[9; 64], Digests::NONE, 0);
    let p = ctrl();
    assert_eq!(bytes[3], 72);
    for bad_pdo in [0u8, 8, 70, 74] {
        let b = mutate(&bytes, 3, bad_pdo);
        assert_eq!(term(&b, &p), (Fes::InvalidHeaderField, 3), "pdo {bad_pdo}");
    }
    // Aligned for CPDA 0 but not for CPDA 3 (16 bytes).
    assert!(matches!(decode_header(&bytes, &p.with_pda(3)), Err(PduError::InvalidPdo { pdo: 72, .. })));
    let resp = encode_capsule_resp(&Cqe::default(), false);
    let b = mutate(&resp, 3, 24);
    assert_eq!(term(&b, &host()), (Fes::InvalidHeaderField, 3));
    let h2c = pdu(&H2CData { datal: 4, ..H2CData::default() }.encode(Digests::NONE, 0), &[0; 4]);
    assert_eq!(term(&mutate(&h2c, 3, 0), &p), (Fes::InvalidHeaderField, 3));
}

#[test]
fn rejects_bad_plen() {
    let resp = encode_capsule_resp(&Cqe::default(), true);
    let p = host().with_digests(BOTH);
    for plen in [0, 8, 24, 27, 29, 100] {
        let b = set_plen(&resp, plen);
        assert_eq!(term(&b, &p), (Fes::InvalidHeaderField, 4), "plen {plen}");
    }
    let ic = set_plen(&IcReq::default().encode(), 132);
    assert!(matches!(decode_header(&ic, &ctrl()), Err(PduError::InvalidPlen { plen: 132, .. })));
    let cmd = encode_capsule_cmd(&write_sqe(1, 8), 8, Digests::NONE, 0);
    assert_eq!(term(&set_plen(&cmd, 72), &ctrl()), (Fes::InvalidHeaderField, 4));
    let t = TermReq::default().encode_c2h(&[]);
    assert!(decode_header(&set_plen(&t, 24 + 129), &host()).is_err());
}

#[test]
fn rejects_plen_over_max() {
    let cmd = encode_capsule_cmd(&write_sqe(1, 8192), 8192, Digests::NONE, 0);
    let p = DecodeParams::new(Role::Controller, 72 + 4096);
    let e = decode_header(&cmd, &p).unwrap_err();
    assert_eq!(e, PduError::PlenTooLarge { pdu_type: PduType::CapsuleCmd, plen: 72 + 8192, max: 72 + 4096 });
    assert_eq!(e.term_req(), (Fes::InvalidHeaderField, 4));
}

#[test]
fn rejects_header_digest_mismatch() {
    let b = encode_capsule_resp(&Cqe::new(1, Status::SUCCESS), true);
    let p = host().with_digests(BOTH);
    for at in [12, 25] {
        let bad = mutate(&b, at, b[at] ^ 0x10);
        let e = decode_header(&bad, &p).unwrap_err();
        assert!(matches!(e, PduError::HeaderDigest { .. }), "byte {at}");
        assert_eq!(e.term_req(), (Fes::HeaderDigestError, 0));
    }
}

#[test]
fn rejects_digest_flag_mismatch() {
    let b = encode_capsule_resp(&Cqe::default(), false);
    let e = decode_header(&b, &host().with_digests(BOTH)).unwrap_err();
    assert!(matches!(e, PduError::InvalidFlags { .. }));
    assert_eq!(e.term_req(), (Fes::InvalidHeaderField, 1));
    let d = H2CData { datal: 16, ..H2CData::default() };
    let bytes = pdu(&d.encode(Digests::NONE, 0), &[0; 16]);
    let want_dd = ctrl().with_digests(Digests { hdgst: false, ddgst: true });
    assert_eq!(term(&bytes, &want_dd), (Fes::InvalidHeaderField, 1));
}

#[test]
fn rejects_type_specific_fields() {
    let d = H2CData { datal: 16, ..H2CData::default() };
    let mut bytes = pdu(&d.encode(Digests::NONE, 0), &[0; 16]);
    bytes[16] = 15;
    assert_eq!(term(&bytes, &ctrl()), (Fes::InvalidHeaderField, 16));
    let c = C2HData { datal: 4, ..C2HData::default() };
    let bytes = pdu(&c.encode(Digests::NONE, 0), &[0; 4]);
    let bad = mutate(&bytes, 1, flags::SUCCESS);
    assert_eq!(term(&bad, &host()), (Fes::InvalidHeaderField, 1));
    let r2t = R2t::default().encode(false);
    assert_eq!(term(&r2t, &host()), (Fes::InvalidHeaderField, 16));
    let ic = IcReq::default().encode();
    assert_eq!(term(&mutate(&ic, 8, 1), &ctrl()), (Fes::UnsupportedParameter, 8));
    assert_eq!(term(&mutate(&ic, 10, 32), &ctrl()), (Fes::InvalidHeaderField, 10));
    let resp = IcResp { maxh2cdata: 4096, ..IcResp::default() }.encode();
    assert!(decode_header(&resp, &host()).is_ok());
    let small = mutate(&resp, 13, 0x0F);
    assert_eq!(term(&small, &host()), (Fes::InvalidHeaderField, 12));
}

#[test]
fn data_digest_incremental() {
    assert_eq!(ddgst(&[b"123456789"]), 0xE306_9283u32.to_le_bytes());
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let mut d = DataDigest::new();
    for chunk in data.chunks(777) {
        d.update(chunk);
    }
    assert_eq!(d.to_bytes(), ddgst(&[&data]));
    assert_eq!(d.verify(ddgst(&[&data[..5000], &data[5000..]])), Ok(()));
    let e = d.verify([0; 4]).unwrap_err();
    assert!(e.status().same_code(Status::TRANSIENT_TRANSPORT_ERROR));
}

#[test]
fn offending_header_is_bounded() {
    let ic = IcReq::default().encode();
    assert_eq!(offending_header(&ic).len(), 128);
    assert_eq!(offending_header(&ic[..5]).len(), 5);
    let mut cmd = encode_capsule_cmd(&Sqe::default(), 0, Digests::NONE, 0).to_vec();
    cmd.extend_from_slice(&[0; 100]);
    assert_eq!(offending_header(&cmd).len(), 72);
}

fn arb_params() -> impl Strategy<Value = DecodeParams> {
    (any::<bool>(), any::<bool>(), any::<bool>(), 0u8..=255, any::<u32>()).prop_map(
        |(c, hd, dd, pda, max)| DecodeParams {
            receiver: if c { Role::Controller } else { Role::Host },
            hdgst: hd,
            ddgst: dd,
            pda,
            max_plen: max,
        },
    )
}

proptest! {
    #[test]
    fn decode_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                  p in arb_params()) {
        if let Ok(Some(h)) = decode_header(&bytes, &p) {
            prop_assert!(h.header_len() <= bytes.len());
            prop_assert!(h.data_offset() + h.data_len() <= h.total_len());
        }
        let _ = header_len_hint(&bytes, &p);
        let _ = offending_header(&bytes);
    }

    #[test]
    fn decode_header_typed_prefix_never_panics(t in 0u8..10, fl in 0u8..16, pdo in any::<u8>(),
                                               plen in 0u32..400, tail in proptest::collection::vec(any::<u8>(), 0..200),
                                               p in arb_params()) {
        let t = if t == 8 { 9 } else { t };
        let hlen = PduType::from_raw(t).map_or(24, PduType::hlen);
        let mut b = vec![t, fl, hlen, pdo];
        b.extend_from_slice(&plen.to_le_bytes());
        b.extend_from_slice(&tail);
        let _ = decode_header(&b, &p);
    }

    #[test]
    fn data_pdus_round_trip(cccid in any::<u16>(), ttag in any::<u16>(), datao in any::<u32>(),
                            datal in 1u32..3000, last in any::<bool>(), hd in any::<bool>(),
                            dd in any::<bool>(), pda in 0u8..=31) {
        let dg = Digests { hdgst: hd, ddgst: dd };
        let data = vec![0x5Au8; datal as usize];
        let h2c = H2CData { cccid, ttag, datao, datal, last };
        let bytes = pdu(&h2c.encode(dg, pda), &data);
        let p = ctrl().with_digests(dg).with_pda(pda);
        let h = decode_header(&bytes, &p).unwrap().unwrap();
        prop_assert_eq!(h.pdu, Pdu::H2CData(h2c));
        prop_assert_eq!(h.total_len(), bytes.len());
        let c2h = C2HData { cccid, datao, datal, last, success: last && hd };
        let bytes = pdu(&c2h.encode(dg, pda), &data);
        let p = host().with_digests(dg).with_pda(pda);
        let h = decode_header(&bytes, &p).unwrap().unwrap();
        prop_assert_eq!(h.pdu, Pdu::C2HData(c2h));
        prop_assert_eq!(&bytes[h.data_range().unwrap()], &data[..]);
    }
}

//! Fuzz target: arbitrary bytes through the NVMe/TCP header decoder and,
//! when a whole PDU is present, through the body handling a connection
//! would do (data range, data digest, SGL and Connect data decoding, the
//! TermReq answering an error).
//!
//! Input layout: byte 0 selects receiver / negotiated digests, byte 1 the
//! PDA and byte 2 the plen limit; the rest is the PDU stream. Invariants
//! checked: no panic, accepted headers fit in the bytes seen and in plen.
#![no_main]

use ferrite::nvmf::spec::{AdminOpcode, ConnectData, FabricsType};
use ferrite::nvmf::tcp::pdu::{
    decode_header, header_len_hint, offending_header, verify_ddgst, DecodeParams, Pdu, PduHeader, Role,
    TermReq,
};
use libfuzzer_sys::fuzz_target;

fn params(cfg: &[u8]) -> DecodeParams {
    DecodeParams {
        receiver: if cfg[0] & 1 == 0 { Role::Controller } else { Role::Host },
        hdgst: cfg[0] & 2 != 0,
        ddgst: cfg[0] & 4 != 0,
        pda: cfg[1] & 0x1F,
        max_plen: 128 + (u32::from(cfg[2]) << 8),
    }
}

fn body(h: &PduHeader, pdu: &[u8]) {
    let data = h.data_range().map(|r| &pdu[r]).unwrap_or(&[]);
    if let Some(off) = h.ddgst_offset() {
        let rx = [pdu[off], pdu[off + 1], pdu[off + 2], pdu[off + 3]];
        let _ = verify_ddgst(&[data], rx);
    }
    if let Pdu::CapsuleCmd(sqe) = h.pdu {
        let _ = sqe.sgl();
        if sqe.opcode == AdminOpcode::Fabrics.raw() && sqe.fctype() == FabricsType::Connect.raw() {
            let _ = ConnectData::parse(data);
        }
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let (cfg, mut bytes) = input.split_at(3);
    let p = params(cfg);
    // Walk the stream PDU by PDU, as a connection's receive path would.
    for _ in 0..16 {
        let _ = header_len_hint(bytes, &p);
        match decode_header(bytes, &p) {
            Ok(Some(h)) => {
                assert!(h.header_len() <= bytes.len());
                assert!(h.data_offset() + h.data_len() <= h.total_len());
                if bytes.len() < h.total_len() {
                    return;
                }
                let (pdu, rest) = bytes.split_at(h.total_len());
                body(&h, pdu);
                bytes = rest;
            }
            Ok(None) => return,
            Err(e) => {
                let _ = e.to_string();
                let t = TermReq::from_error(&e);
                let _ = t.encode_c2h(offending_header(bytes));
                return;
            }
        }
    }
});

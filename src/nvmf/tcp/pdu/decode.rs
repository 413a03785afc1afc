//! The incremental NVMe/TCP header decoder: [`decode_header`] validates
//! the common header against the PDU type and the receiver's negotiated
//! [`DecodeParams`], checks the header digest, and decodes the
//! type-specific fields into a [`Pdu`].
//!
//! Invariants: looks only at `buf[..hlen + HDGST]`, never at data; never
//! panics or allocates; returns `Ok(None)` exactly when the header is not
//! complete yet and its common header (if present) is valid so far; every
//! accepted header satisfies the layout rules listed in the parent module.

use super::super::super::spec::wire::{get_u16, get_u32};
use super::super::super::spec::{Cqe, Sqe, CQE_LEN, SQE_LEN};
use super::{
    flags, C2HData, DecodeParams, Digests, H2CData, IcReq, IcResp, Pdu, PduError, PduHeader, PduType, R2t,
    TermReq, COMMON_HEADER_LEN, DIGEST_LEN, MAX_PDA, MIN_MAXH2CDATA, PFV_1_0, TERM_REQ_MAX_DATA,
};

/// How many bytes `decode_header` needs to see the whole header of the
/// PDU starting at `buf` (8 until the common header is there).
pub fn header_len_hint(buf: &[u8], p: &DecodeParams) -> usize {
    match (buf.get(0..3), buf.first().copied().and_then(PduType::from_raw)) {
        (Some(ch), Some(t)) if p.hdgst && t.has_digests() => usize::from(ch[2]) + DIGEST_LEN,
        (Some(ch), Some(_)) => usize::from(ch[2]).max(COMMON_HEADER_LEN),
        _ => COMMON_HEADER_LEN,
    }
}

/// Where the parts of a PDU lie, from the common header.
struct Layout {
    hdgst: bool,
    ddgst: bool,
    header_len: usize,
    data_offset: u32,
    data_len: u32,
}

/// Decodes and validates the PDU header at the start of `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than the header (8 bytes,
/// then hlen + HDGST); it never needs the data. Errors are fatal
/// protocol violations (see [`PduError::term_req`]). Never panics.
pub fn decode_header(buf: &[u8], p: &DecodeParams) -> Result<Option<PduHeader>, PduError> {
    if buf.len() < COMMON_HEADER_LEN {
        return Ok(None);
    }
    let pdu_type = PduType::from_raw(buf[0]).ok_or(PduError::UnknownType(buf[0]))?;
    if pdu_type.receiver() != p.receiver {
        return Err(PduError::WrongDirection(pdu_type));
    }
    let (flags, hlen, pdo, plen) = (buf[1], buf[2], buf[3], get_u32(buf, 4));
    if hlen != pdu_type.hlen() {
        return Err(PduError::InvalidHlen { pdu_type, hlen, expected: pdu_type.hlen() });
    }
    let layout = layout(pdu_type, flags, pdo, plen, p)?;
    if buf.len() < layout.header_len {
        return Ok(None);
    }
    let header = &buf[..usize::from(hlen)];
    if layout.hdgst {
        let computed = crc32c::crc32c(header);
        let received = get_u32(buf, usize::from(hlen));
        if computed != received {
            return Err(PduError::HeaderDigest { pdu_type, computed, received });
        }
    }
    let pdu = parse_specific(pdu_type, flags, header, &layout)?;
    Ok(Some(PduHeader {
        pdu_type,
        flags,
        hlen,
        pdo,
        plen,
        hdgst: layout.hdgst,
        ddgst: layout.ddgst,
        data_offset: layout.data_offset,
        data_len: layout.data_len,
        pdu,
    }))
}

/// Validates flags/pdo/plen against the type and the negotiated params.
fn layout(t: PduType, flags: u8, pdo: u8, plen: u32, p: &DecodeParams) -> Result<Layout, PduError> {
    let hlen = u32::from(t.hlen());
    let hdgst = t.has_digests() && flags & flags::HDGSTF != 0;
    if t.has_digests() && hdgst != p.hdgst {
        let reason = "HDGSTF disagrees with the negotiated header digest";
        return Err(PduError::InvalidFlags { pdu_type: t, flags, reason });
    }
    let header_len = hlen + if hdgst { DIGEST_LEN as u32 } else { 0 };
    let bad_plen = |reason| PduError::InvalidPlen { pdu_type: t, plen, reason };
    if plen < header_len {
        return Err(bad_plen("shorter than the header and its digest"));
    }
    if plen > p.max_plen {
        return Err(PduError::PlenTooLarge { pdu_type: t, plen, max: p.max_plen });
    }
    let mut l = Layout { hdgst, ddgst: false, header_len: header_len as usize, data_offset: 0, data_len: 0 };
    match t {
        PduType::ICReq | PduType::ICResp if plen != hlen => Err(bad_plen("must equal hlen (128)")),
        PduType::ICReq | PduType::ICResp => Ok(l),
        PduType::H2CTermReq | PduType::C2HTermReq => {
            if plen - hlen > TERM_REQ_MAX_DATA as u32 {
                return Err(bad_plen("TermReq carries more than 128 bytes"));
            }
            (l.data_offset, l.data_len) = (hlen, plen - hlen);
            Ok(l)
        }
        PduType::CapsuleResp | PduType::R2T => {
            no_data(t, pdo, plen, header_len)?;
            Ok(l)
        }
        PduType::CapsuleCmd | PduType::H2CData | PduType::C2HData => {
            data_layout(t, flags, pdo, plen, p, &mut l)?;
            Ok(l)
        }
    }
}

/// Checks a PDU type that never carries data: pdo 0 and plen = header.
fn no_data(t: PduType, pdo: u8, plen: u32, header_len: u32) -> Result<(), PduError> {
    if pdo != 0 {
        let reason = "must be 0 for a PDU without data";
        return Err(PduError::InvalidPdo { pdu_type: t, pdo, reason });
    }
    if plen != header_len {
        let reason = "must equal hlen plus header digest";
        return Err(PduError::InvalidPlen { pdu_type: t, plen, reason });
    }
    Ok(())
}

/// Computes data offset/length and the data digest for a data-capable PDU.
fn data_layout(
    t: PduType,
    flags: u8,
    pdo: u8,
    plen: u32,
    p: &DecodeParams,
    l: &mut Layout,
) -> Result<(), PduError> {
    let header_len = l.header_len as u32;
    let bad_pdo = |reason| PduError::InvalidPdo { pdu_type: t, pdo, reason };
    if pdo == 0 {
        if t != PduType::CapsuleCmd {
            return Err(bad_pdo("a data PDU must carry data"));
        }
        if plen != header_len {
            return Err(bad_pdo("is 0 but plen leaves room for data"));
        }
        return Ok(());
    }
    let pdo32 = u32::from(pdo);
    if pdo32 < header_len {
        return Err(bad_pdo("points inside the header or header digest"));
    }
    if pdo32 % ((u32::from(p.pda) + 1) * 4) != 0 {
        return Err(bad_pdo("not aligned to the receiver's PDA"));
    }
    let ddgst = flags & flags::DDGSTF != 0;
    if ddgst != p.ddgst {
        let reason = "DDGSTF disagrees with the negotiated data digest";
        return Err(PduError::InvalidFlags { pdu_type: t, flags, reason });
    }
    let dd = if ddgst { DIGEST_LEN as u32 } else { 0 };
    if plen <= pdo32 + dd {
        return Err(PduError::InvalidPlen { pdu_type: t, plen, reason: "leaves no data after pdo" });
    }
    l.ddgst = ddgst;
    (l.data_offset, l.data_len) = (pdo32, plen - pdo32 - dd);
    Ok(())
}

/// Decodes the type-specific header fields (`h` is the hlen header bytes).
fn parse_specific(t: PduType, flags: u8, h: &[u8], l: &Layout) -> Result<Pdu, PduError> {
    Ok(match t {
        PduType::ICReq => Pdu::ICReq(parse_icreq(h)?),
        PduType::ICResp => Pdu::ICResp(parse_icresp(h)?),
        PduType::H2CTermReq => Pdu::H2CTermReq(parse_term_req(h)),
        PduType::C2HTermReq => Pdu::C2HTermReq(parse_term_req(h)),
        PduType::CapsuleCmd => {
            let mut sqe = [0u8; SQE_LEN];
            sqe.copy_from_slice(&h[COMMON_HEADER_LEN..COMMON_HEADER_LEN + SQE_LEN]);
            Pdu::CapsuleCmd(Sqe::parse(&sqe))
        }
        PduType::CapsuleResp => {
            let mut cqe = [0u8; CQE_LEN];
            cqe.copy_from_slice(&h[COMMON_HEADER_LEN..COMMON_HEADER_LEN + CQE_LEN]);
            Pdu::CapsuleResp(Cqe::parse(&cqe))
        }
        PduType::H2CData | PduType::C2HData => parse_data(t, flags, h, l)?,
        PduType::R2T => {
            let r2tl = get_u32(h, 16);
            if r2tl == 0 {
                return Err(PduError::InvalidField { pdu_type: t, field: "r2tl", offset: 16, value: 0 });
            }
            Pdu::R2T(R2t { cccid: get_u16(h, 8), ttag: get_u16(h, 10), r2to: get_u32(h, 12), r2tl })
        }
    })
}

/// Decodes H2CData / C2HData: datal must equal the data the PDU carries.
fn parse_data(t: PduType, flags: u8, h: &[u8], l: &Layout) -> Result<Pdu, PduError> {
    let datal = get_u32(h, 16);
    if datal != l.data_len {
        return Err(PduError::InvalidField {
            pdu_type: t,
            field: "datal (differs from the PDU's data length)",
            offset: 16,
            value: datal,
        });
    }
    let (cccid, datao) = (get_u16(h, 8), get_u32(h, 12));
    let last = flags & flags::LAST_PDU != 0;
    if t == PduType::H2CData {
        let ttag = get_u16(h, 10);
        return Ok(Pdu::H2CData(H2CData { cccid, ttag, datao, datal, last }));
    }
    let success = flags & flags::SUCCESS != 0;
    if success && !last {
        let reason = "SUCCESS without LAST_PDU";
        return Err(PduError::InvalidFlags { pdu_type: t, flags, reason });
    }
    Ok(Pdu::C2HData(C2HData { cccid, datao, datal, last, success }))
}

fn parse_icreq(h: &[u8]) -> Result<IcReq, PduError> {
    let t = PduType::ICReq;
    let r =
        IcReq { pfv: get_u16(h, 8), hpda: h[10], dgst: Digests::from_bits(h[11]), maxr2t: get_u32(h, 12) };
    check_pfv(t, r.pfv)?;
    check_pda(t, "hpda", r.hpda)?;
    Ok(r)
}

fn parse_icresp(h: &[u8]) -> Result<IcResp, PduError> {
    let t = PduType::ICResp;
    let r = IcResp {
        pfv: get_u16(h, 8),
        cpda: h[10],
        dgst: Digests::from_bits(h[11]),
        maxh2cdata: get_u32(h, 12),
    };
    check_pfv(t, r.pfv)?;
    check_pda(t, "cpda", r.cpda)?;
    if r.maxh2cdata < MIN_MAXH2CDATA || r.maxh2cdata % 4 != 0 {
        return Err(PduError::InvalidField {
            pdu_type: t,
            field: "maxh2cdata",
            offset: 12,
            value: r.maxh2cdata,
        });
    }
    Ok(r)
}

fn check_pfv(t: PduType, pfv: u16) -> Result<(), PduError> {
    if pfv == PFV_1_0 {
        return Ok(());
    }
    Err(PduError::UnsupportedParameter { pdu_type: t, field: "pfv", offset: 8, value: u32::from(pfv) })
}

fn check_pda(t: PduType, field: &'static str, pda: u8) -> Result<(), PduError> {
    if pda <= MAX_PDA {
        return Ok(());
    }
    Err(PduError::InvalidField { pdu_type: t, field, offset: 10, value: u32::from(pda) })
}

fn parse_term_req(h: &[u8]) -> TermReq {
    TermReq { fes: get_u16(h, 8), fei: get_u32(h, 10) }
}

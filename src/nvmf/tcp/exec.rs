//! Running commands on a connection: a capsule allocates a request, its data transfer is
//! planned from the SGL (in-capsule, or R2T + H2CData into a DMA buffer, or C2HData back), then
//! it executes as Connect, an admin command or an I/O command, and its response is queued.

use super::conn::{Connection, Qpair, ADMIN_ICD, MAXH2CDATA};
use super::pdu::{self, C2HData, Digests, Fes, R2t};
use super::request::ReqState;
use crate::nvmf::spec::{Cqe, SglDescriptor, Sqe, Status};
use crate::reactor::PollCtx;

/// How a command's data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// No data.
    None,
    /// Host to controller, `len` bytes, already in the capsule or to fetch with R2T.
    HostData { len: u32, in_capsule: bool },
    /// Controller to host, `len` bytes.
    CtrlData { len: u32 },
}

/// Data direction of a command: 1 host→controller, 2 controller→host (opcode bits 1:0).
pub(super) fn direction(sqe: &Sqe) -> u8 {
    if sqe.opcode == 0x7F {
        sqe.fctype() & 0x3
    } else {
        sqe.opcode & 0x3
    }
}

fn plan(conn: &Connection, sqe: &Sqe, in_capsule: usize) -> Result<Plan, Status> {
    let dir = direction(sqe);
    if dir == 0 {
        return Ok(Plan::None);
    }
    if !sqe.uses_sgl() {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    let icd = match conn.qp {
        Qpair::Io { .. } => conn.transport.in_capsule_data_size,
        _ => ADMIN_ICD,
    };
    let max_io = conn.transport.max_io_size.min(conn.target.pool.buf_size() as u32);
    match (dir, sqe.sgl().map_err(|e| e.status().with_dnr())?) {
        (1, SglDescriptor::InCapsule { offset, length }) => {
            if offset != 0 {
                return Err(Status::SGL_OFFSET_INVALID.with_dnr());
            }
            let fits = length <= icd && length as usize <= conn.target.pool.buf_size();
            if !fits || length as usize != in_capsule {
                return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            Ok(Plan::HostData { len: length, in_capsule: true })
        }
        (1, SglDescriptor::Transport { length }) if length > max_io => Err(Status::INVALID_FIELD.with_dnr()),
        (1, SglDescriptor::Transport { length: 0 }) | (2, SglDescriptor::Transport { length: 0 }) => {
            Ok(Plan::None)
        }
        (1, SglDescriptor::Transport { length }) => Ok(Plan::HostData { len: length, in_capsule: false }),
        (2, SglDescriptor::Transport { length }) if length > max_io => Err(Status::INVALID_FIELD.with_dnr()),
        (2, SglDescriptor::Transport { length }) => Ok(Plan::CtrlData { len: length }),
        (2, SglDescriptor::InCapsule { .. }) => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()),
        _ => Err(Status::INVALID_FIELD.with_dnr()),
    }
}

/// A command capsule arrived.
pub(super) fn capsule(conn: &mut Connection, cx: &mut PollCtx<'_>, sqe: &Sqe, data: &[u8], digest_ok: bool) {
    let idx = match conn.reqs.alloc(sqe) {
        Ok(idx) => idx,
        Err(conflict) => {
            let status = if conflict { Status::CID_CONFLICT } else { Status::COMMAND_SEQUENCE_ERROR };
            return respond(conn, sqe.cid, status.with_dnr(), 0, 0, None);
        }
    };
    if !digest_ok {
        return complete(conn, idx, Status::TRANSIENT_TRANSPORT_ERROR, 0, 0, None);
    }
    let plan = match plan(conn, sqe, data.len()) {
        Ok(p) => p,
        Err(s) => return complete(conn, idx, s, 0, 0, None),
    };
    if matches!(conn.qp, Qpair::Io { .. }) {
        if let Err(s) = super::io::check(conn, cx, sqe, plan) {
            return complete(conn, idx, s, 0, 0, None);
        }
    }
    let r = conn.reqs.get(idx);
    match plan {
        Plan::None => {}
        Plan::HostData { len, .. } | Plan::CtrlData { len } => r.xfer_len = len,
    }
    if let Plan::HostData { in_capsule: true, len } = plan {
        let Some(mut buf) = conn.target.pool.alloc() else {
            return complete(conn, idx, Status::COMMAND_INTERRUPTED, 0, 0, None);
        };
        buf.set_len(len as usize);
        buf.as_mut_slice().copy_from_slice(data);
        let r = conn.reqs.get(idx);
        r.buf = Some(buf);
        r.received = len;
    }
    advance(conn, cx, idx);
}

/// Whether the request still needs a DMA buffer.
fn needs_buffer(conn: &mut Connection, idx: u16) -> bool {
    let io = matches!(conn.qp, Qpair::Io { .. });
    let r = conn.reqs.get(idx);
    r.buf.is_none() && r.xfer_len > 0 && (io || direction(&r.sqe) == 1)
}

/// Moves a request as far as it can go: buffer, host data, execution.
pub(super) fn advance(conn: &mut Connection, cx: &mut PollCtx<'_>, idx: u16) {
    if needs_buffer(conn, idx) {
        let Some(mut buf) = conn.target.pool.alloc() else {
            return wait(conn, idx);
        };
        let r = conn.reqs.get(idx);
        buf.set_len(r.xfer_len as usize);
        r.buf = Some(buf);
    }
    let r = conn.reqs.get(idx);
    if direction(&r.sqe) == 1 && r.received < r.xfer_len {
        let r2t = R2t { cccid: r.sqe.cid, ttag: idx, r2to: 0, r2tl: r.xfer_len };
        if !conn.sealed {
            r2t.encode(conn.digests.hdgst).append_pdu(&mut conn.out, &[]);
        }
        return conn.reqs.set_state(idx, ReqState::AwaitingH2C);
    }
    execute(conn, cx, idx);
}

/// Marks a request as running (if it is not already).
pub(super) fn mark_executing(conn: &mut Connection, idx: u16) {
    if conn.reqs.get(idx).state != ReqState::Executing {
        conn.reqs.set_state(idx, ReqState::Executing);
    }
}

/// Parks a request until resources free up.
pub(super) fn wait(conn: &mut Connection, idx: u16) {
    if conn.reqs.get(idx).state != ReqState::Waiting {
        conn.reqs.set_state(idx, ReqState::Waiting);
    }
}

fn execute(conn: &mut Connection, cx: &mut PollCtx<'_>, idx: u16) {
    match conn.qp {
        Qpair::Unbound => super::connect::connect(conn, cx, idx),
        Qpair::Admin { .. } => super::connect::admin(conn, cx, idx),
        Qpair::Io { .. } => super::io::submit(conn, idx),
    }
}

/// An H2CData PDU arrived.
pub(super) fn h2c_data(
    conn: &mut Connection,
    cx: &mut PollCtx<'_>,
    d: &pdu::H2CData,
    data: &[u8],
    digest_ok: bool,
    head: &[u8],
) {
    let Some(r) = conn.reqs.get_in(d.ttag, ReqState::AwaitingH2C) else {
        return conn.term_req(
            Fes::InvalidHeaderField,
            10,
            head,
            format!("H2CData for unknown ttag {}", d.ttag),
        );
    };
    if r.sqe.cid != d.cccid {
        let why = format!("H2CData cccid {} does not match ttag {}'s command {}", d.cccid, d.ttag, r.sqe.cid);
        return conn.term_req(Fes::InvalidHeaderField, 8, head, why);
    }
    if d.datal > MAXH2CDATA {
        return conn.term_req(
            Fes::DataTransferLimitExceeded,
            16,
            head,
            format!("H2CData datal {} > MAXH2CDATA", d.datal),
        );
    }
    let end = u64::from(d.datao) + u64::from(d.datal);
    if d.datao != r.received || end > u64::from(r.xfer_len) {
        let why = format!(
            "H2CData datao {} datal {} outside the R2T window (at {} of {})",
            d.datao, d.datal, r.received, r.xfer_len
        );
        return conn.term_req(Fes::DataTransferOutOfRange, 12, head, why);
    }
    if !digest_ok {
        r.fail(Status::TRANSIENT_TRANSPORT_ERROR);
    }
    let buf = r.buf.as_mut().expect("a request awaiting data has a buffer");
    buf.as_mut_slice()[d.datao as usize..end as usize].copy_from_slice(data);
    r.received = end as u32;
    if r.received == r.xfer_len {
        if r.status.is_success() {
            execute(conn, cx, d.ttag);
        } else {
            let status = r.status;
            complete(conn, d.ttag, status, 0, 0, None);
        }
    }
}

/// Work besides new PDUs: retry parked requests, collect bdev completions, deliver events.
pub(super) fn progress(conn: &mut Connection, cx: &mut PollCtx<'_>) -> bool {
    let mut work = false;
    if conn.reqs.count(ReqState::Waiting) > 0 {
        for idx in 0..conn.reqs.len() {
            if conn.reqs.get(idx).state == ReqState::Waiting {
                advance(conn, cx, idx);
                work |= conn.reqs.get(idx).state != ReqState::Waiting;
            }
        }
    }
    work |= super::io::reap(conn);
    work |= super::connect::deliver_events(conn);
    work
}

/// Queues the response for request `idx` (and its data for the host) and frees the slot.
pub(super) fn complete(
    conn: &mut Connection,
    idx: u16,
    status: Status,
    dw0: u32,
    dw1: u32,
    data: Option<&[u8]>,
) {
    let r = conn.reqs.get(idx);
    let cid = r.sqe.cid;
    let buf = r.buf.take();
    let data = data.or_else(|| buf.as_ref().filter(|_| direction(&r.sqe) == 2).map(|b| b.as_slice()));
    respond(conn, cid, status, dw0, dw1, data.filter(|_| status.is_success()));
    conn.reqs.set_state(idx, ReqState::Free);
}

/// Encodes C2HData (if any) and the CapsuleResp (unless C2HData carried SUCCESS).
pub(super) fn respond(
    conn: &mut Connection,
    cid: u16,
    status: Status,
    dw0: u32,
    dw1: u32,
    data: Option<&[u8]>,
) {
    if conn.sealed {
        return;
    }
    let dg: Digests = conn.digests;
    if let Some(data) = data.filter(|d| !d.is_empty()) {
        let success = conn.sqflow_off && conn.transport.c2h_success && status.is_success();
        let c2h = C2HData { cccid: cid, datao: 0, datal: data.len() as u32, last: true, success };
        c2h.encode(dg, conn.hpda).append_pdu(&mut conn.out, data);
        if success {
            return;
        }
    }
    let cqe = Cqe { dw0, dw1, sqhd: conn.sqhd, sqid: conn.qid(), cid, status, phase: false };
    pdu::encode_capsule_resp(&cqe, dg.hdgst).append_pdu(&mut conn.out, &[]);
}

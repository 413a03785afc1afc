//! Fabrics Connect (which binds a connection to a new controller as its admin queue, or to an
//! existing controller as an I/O queue) and admin-queue glue: running admin commands, Keep
//! Alive bookkeeping and Asynchronous Event Requests.

use std::sync::Arc;

use super::conn::{Connection, Qpair};
use super::exec::{complete, mark_executing};
use super::request::ReqState;
use crate::nvmf::admin::{self, AdminCtx, Outcome, AERL};
use crate::nvmf::ctrlr::Ctrlr;
use crate::nvmf::spec::{
    connect_invalid_param_dw0, connect_ipo, AdminOpcode, ConnectCmd, ConnectData, FabricsType, Status,
    CNTLID_DYNAMIC,
};
use crate::nvmf::subsystem::SubsystemKind;
use crate::reactor::PollCtx;

/// A Connect failure: status and completion dword 0 (IATTR/IPO for invalid parameters).
type Refusal = (Status, u32);

fn invalid(in_data: bool, ipo: u16) -> Refusal {
    (Status::CONNECT_INVALID_PARAMETERS.with_dnr(), connect_invalid_param_dw0(in_data, ipo))
}

/// Runs the first command of a connection, which must be Connect.
pub(super) fn connect(conn: &mut Connection, cx: &mut PollCtx<'_>, idx: u16) {
    mark_executing(conn, idx);
    match bind(conn, cx, idx) {
        Ok(cntlid) => complete(conn, idx, Status::SUCCESS, u32::from(cntlid), 0, None),
        Err((status, dw0)) => {
            tracing::info!(peer = %conn.peer, status = %status, dw0, "Connect refused");
            complete(conn, idx, status, dw0, 0, None)
        }
    }
}

fn bind(conn: &mut Connection, cx: &mut PollCtx<'_>, idx: u16) -> Result<u16, Refusal> {
    let r = conn.reqs.get(idx);
    let sqe = r.sqe;
    if sqe.opcode != AdminOpcode::Fabrics.raw() || sqe.fctype() != FabricsType::Connect.raw() {
        return Err((Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0));
    }
    let cmd = ConnectCmd::from_sqe(&sqe);
    if cmd.recfmt != 0 {
        return Err((Status::CONNECT_INCOMPATIBLE_FORMAT.with_dnr(), 0));
    }
    let data = r.buf.as_ref().map(|b| b.as_slice()).unwrap_or(&[]);
    let data = ConnectData::parse(data).map_err(|e| e.completion())?;
    let subsys = conn.target.subsystem(&data.subnqn).map_err(|_| invalid(true, connect_ipo::DATA_SUBNQN))?;
    let reachable = match subsys.kind {
        SubsystemKind::Discovery => conn.target.serves_discovery(conn.local),
        SubsystemKind::Nvme => subsys.listener_state(conn.local).is_some(),
    };
    if !reachable {
        return Err(invalid(true, connect_ipo::DATA_SUBNQN));
    }
    if !subsys.host_allowed(&data.hostnqn) {
        tracing::warn!(hostnqn = data.hostnqn, subnqn = data.subnqn, "host not allowed");
        return Err((Status::CONNECT_INVALID_HOST.with_dnr(), 0));
    }
    if cmd.sqsize == 0 {
        return Err(invalid(false, connect_ipo::SQE_SQSIZE));
    }
    let cntlid =
        if cmd.qid == 0 { bind_admin(conn, cx, &cmd, &data, subsys)? } else { bind_io(conn, &cmd, &data)? };
    conn.sqsize = cmd.sqsize;
    conn.sqhd = 1 % (cmd.sqsize + 1);
    conn.sqflow_off = cmd.sqflow_disabled();
    Ok(cntlid)
}

fn bind_admin(
    conn: &mut Connection,
    cx: &mut PollCtx<'_>,
    cmd: &ConnectCmd,
    data: &ConnectData,
    subsys: Arc<crate::nvmf::subsystem::Subsystem>,
) -> Result<u16, Refusal> {
    if cmd.sqsize >= conn.transport.max_aq_depth {
        return Err(invalid(false, connect_ipo::SQE_SQSIZE));
    }
    if data.cntlid != CNTLID_DYNAMIC {
        return Err(invalid(true, connect_ipo::DATA_CNTLID));
    }
    let cntlid = conn.target.alloc_cntlid().ok_or((Status::CONNECT_CONTROLLER_BUSY, 0))?;
    let max_io =
        if subsys.kind == SubsystemKind::Discovery { 0 } else { conn.transport.max_io_qpairs_per_ctrlr };
    let ctrlr =
        Arc::new(Ctrlr::new(cntlid, subsys, data.hostnqn.clone(), data.hostid, conn.local, cmd.kato, max_io));
    conn.target.register_ctrlr(ctrlr.clone());
    tracing::info!(cntlid, subnqn = ctrlr.subsys.nqn, hostnqn = data.hostnqn, peer = %conn.peer, kato_ms = cmd.kato, "controller created");
    conn.qp = Qpair::Admin { ctrlr, aers: Vec::new(), last_keep_alive: cx.now };
    Ok(cntlid)
}

fn bind_io(conn: &mut Connection, cmd: &ConnectCmd, data: &ConnectData) -> Result<u16, Refusal> {
    let ctrlr = conn.target.ctrlr(data.cntlid).ok_or(invalid(true, connect_ipo::DATA_CNTLID))?;
    if ctrlr.subsys.nqn != data.subnqn || ctrlr.hostnqn != data.hostnqn || ctrlr.failed() {
        return Err(invalid(true, connect_ipo::DATA_CNTLID));
    }
    if ctrlr.is_discovery() || cmd.qid > ctrlr.regs().io_queues {
        return Err(invalid(false, connect_ipo::SQE_QID));
    }
    if !ctrlr.enabled() {
        return Err((Status::COMMAND_SEQUENCE_ERROR, 0));
    }
    if cmd.sqsize >= conn.transport.max_queue_depth {
        return Err(invalid(false, connect_ipo::SQE_SQSIZE));
    }
    ctrlr.io_qpair_added();
    let cntlid = ctrlr.cntlid;
    conn.qp = Qpair::Io { ctrlr, qid: cmd.qid };
    Ok(cntlid)
}

/// Runs an admin command on the admin queue.
pub(super) fn admin(conn: &mut Connection, cx: &mut PollCtx<'_>, idx: u16) {
    mark_executing(conn, idx);
    let Qpair::Admin { ctrlr, aers, last_keep_alive } = &mut conn.qp else {
        unreachable!("admin command on a non-admin queue")
    };
    let r = conn.reqs.get(idx);
    let sqe = r.sqe;
    if sqe.opcode == AdminOpcode::KeepAlive.raw() {
        *last_keep_alive = cx.now;
    }
    let transport = conn.transport.clone();
    let cx_admin = AdminCtx { ctrlr, target: &conn.target, transport: &transport };
    let data_in = r.buf.as_ref().map(|b| b.as_slice().to_vec()).unwrap_or_default();
    match admin::execute(&cx_admin, &sqe, &data_in) {
        Outcome::Aer if aers.len() > usize::from(AERL) => {
            complete(conn, idx, Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED.with_dnr(), 0, 0, None)
        }
        Outcome::Aer => {
            aers.push(idx);
            conn.reqs.set_state(idx, ReqState::AwaitingAer);
        }
        Outcome::Done(c) => {
            let want = r_len(conn, idx);
            let data = c.data.map(|mut d| {
                d.resize(want, 0);
                d
            });
            complete(conn, idx, c.status, c.dw0, c.dw1, data.as_deref());
        }
    }
}

fn r_len(conn: &mut Connection, idx: u16) -> usize {
    conn.reqs.get(idx).xfer_len as usize
}

/// Completes a parked AER when its controller has an event.
pub(super) fn deliver_events(conn: &mut Connection) -> bool {
    let Qpair::Admin { ctrlr, aers, .. } = &mut conn.qp else { return false };
    if aers.is_empty() || !ctrlr.has_event() {
        return false;
    }
    let Some(dw0) = ctrlr.take_event() else { return false };
    let idx = aers.remove(0);
    complete(conn, idx, Status::SUCCESS, dw0, 0, None);
    true
}

//! NVM I/O commands on an I/O queue: Read, Write, Flush, Write Zeroes and Dataset Management
//! (deallocate), mapped to bdev operations on the namespace's channel; bdev outcomes mapped
//! back to NVMe status codes.

use std::sync::atomic::Ordering;

use super::conn::{Connection, Qpair};
use super::exec::{complete, mark_executing, wait, Plan};
use crate::bdev::{BdevIo, IoCompletion, IoStatus, IoType};
use crate::nvmf::spec::{DsmCmd, DsmRange, IoOpcode, RwCmd, Sqe, Status, DSM_RANGE_LEN};
use crate::reactor::PollCtx;

/// Checks an I/O command before any data moves: path state, namespace, range, transfer size.
pub(super) fn check(
    conn: &mut Connection,
    cx: &mut PollCtx<'_>,
    sqe: &Sqe,
    plan: Plan,
) -> Result<(), Status> {
    let Qpair::Io { ctrlr, .. } = &conn.qp else { unreachable!("I/O check on a non-I/O queue") };
    conn.ns.refresh(cx, &ctrlr.subsys, conn.local);
    if !conn.ns.path.is_success() {
        return Err(conn.ns.path);
    }
    let op = IoOpcode::from_raw(sqe.opcode).ok_or(Status::INVALID_OPCODE.with_dnr())?;
    let ns = conn.ns.get(sqe.nsid).ok_or(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr())?;
    let (bs, blocks) = (u64::from(ns.bdev.block_size()), ns.bdev.num_blocks());
    let in_range = |slba: u64, n: u32| slba.checked_add(u64::from(n)).is_some_and(|end| end <= blocks);
    let want: u64 = match op {
        IoOpcode::Read | IoOpcode::Write | IoOpcode::WriteZeroes => {
            let rw = RwCmd::from_sqe(sqe);
            if !in_range(rw.slba, rw.blocks()) {
                return Err(Status::LBA_OUT_OF_RANGE.with_dnr());
            }
            if op == IoOpcode::WriteZeroes {
                0
            } else {
                u64::from(rw.blocks()) * bs
            }
        }
        IoOpcode::Flush => 0,
        IoOpcode::DatasetManagement => DsmCmd::from_sqe(sqe).data_len() as u64,
        _ => return Err(Status::INVALID_OPCODE.with_dnr()),
    };
    let max_io = u64::from(conn.transport.max_io_size.min(conn.target.pool.buf_size() as u32));
    if want > max_io {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    let have = match plan {
        Plan::None => 0,
        Plan::HostData { len, .. } | Plan::CtrlData { len } => u64::from(len),
    };
    // Dataset Management ranges may come in a longer buffer (Linux always sends 4 KiB);
    // reads and writes must describe exactly their blocks.
    let fits = if op == IoOpcode::DatasetManagement { have >= want } else { have == want };
    if !fits {
        return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
    }
    Ok(())
}

fn bdev_io(conn: &mut Connection, idx: u16, ty: IoType, slba: u64, blocks: u32, fua: bool) -> BdevIo {
    let buf = if ty.has_data() { conn.reqs.get(idx).buf.take() } else { None };
    BdevIo { ty, offset_blocks: slba, num_blocks: blocks, buf, fua, tag: u64::from(idx) }
}

/// Starts the bdev work of request `idx` (its data, if any, is in its buffer).
pub(super) fn submit(conn: &mut Connection, idx: u16) {
    let sqe = conn.reqs.get(idx).sqe;
    let Qpair::Io { ctrlr, .. } = &conn.qp else { unreachable!("I/O submit on a non-I/O queue") };
    let vwc = ctrlr.vwc_enabled.load(Ordering::Relaxed);
    let rw = RwCmd::from_sqe(&sqe);
    let Some(ns) = conn.ns.get(sqe.nsid) else {
        return complete(conn, idx, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr(), 0, 0, None);
    };
    let force_fua = !vwc && ns.bdev.volatile_write_cache();
    let one = |conn: &mut Connection, ty, slba, blocks, fua| Some(bdev_io(conn, idx, ty, slba, blocks, fua));
    let single = match IoOpcode::from_raw(sqe.opcode) {
        Some(IoOpcode::Read) => one(conn, IoType::Read, rw.slba, rw.blocks(), false),
        Some(IoOpcode::Write) => one(conn, IoType::Write, rw.slba, rw.blocks(), rw.fua || force_fua),
        Some(IoOpcode::Flush) => one(conn, IoType::Flush, 0, 0, false),
        Some(IoOpcode::WriteZeroes) => one(conn, IoType::WriteZeroes, rw.slba, rw.blocks(), force_fua),
        Some(IoOpcode::DatasetManagement) => None,
        _ => return complete(conn, idx, Status::INVALID_OPCODE.with_dnr(), 0, 0, None),
    };
    match single {
        Some(io) => start(conn, idx, sqe.nsid, std::iter::once(io)),
        None => {
            let ios = deallocations(conn, idx, &sqe);
            if ios.is_empty() {
                return complete(conn, idx, Status::SUCCESS, 0, 0, None);
            }
            start(conn, idx, sqe.nsid, ios)
        }
    }
}

/// The Unmap operations of a Dataset Management command (empty unless it deallocates).
fn deallocations(conn: &mut Connection, idx: u16, sqe: &Sqe) -> Vec<BdevIo> {
    let dsm = DsmCmd::from_sqe(sqe);
    let r = conn.reqs.get(idx);
    let (Some(buf), true) = (r.buf.as_ref(), dsm.ad) else { return Vec::new() };
    let n = dsm.ranges().min(buf.len() / DSM_RANGE_LEN);
    DsmRange::iter(&buf.as_slice()[..n * DSM_RANGE_LEN])
        .filter(|range| range.nlb > 0)
        .map(|range| BdevIo {
            ty: IoType::Unmap,
            offset_blocks: range.slba,
            num_blocks: range.nlb,
            buf: None,
            fua: false,
            tag: u64::from(idx),
        })
        .collect()
}

fn start(conn: &mut Connection, idx: u16, nsid: u32, ios: impl IntoIterator<Item = BdevIo>) {
    mark_executing(conn, idx);
    let Some(Ok(channel)) = conn.ns.get(nsid).map(|n| n.channel.as_mut()) else {
        return complete(conn, idx, Status::NAMESPACE_NOT_READY, 0, 0, None);
    };
    let mut started = 0;
    let mut refused = None;
    for io in ios {
        match channel.submit(io) {
            Ok(()) => started += 1,
            Err(io) => {
                refused = Some(io);
                break;
            }
        }
    }
    let r = conn.reqs.get(idx);
    r.pending_ops = started;
    if let Some(io) = refused {
        if started == 0 {
            r.buf = io.buf;
            return wait(conn, idx);
        }
        // Part of a multi-range deallocate went out; fail the rest so the host retries.
        r.fail(Status::COMMAND_INTERRUPTED);
    }
}

/// NVMe status for a bdev outcome of `op`.
pub fn status_of(s: IoStatus, op: IoType) -> Status {
    match s {
        IoStatus::Success => Status::SUCCESS,
        IoStatus::OutOfRange => Status::LBA_OUT_OF_RANGE.with_dnr(),
        IoStatus::InvalidLength => Status::DATA_SGL_LENGTH_INVALID.with_dnr(),
        IoStatus::Unsupported => Status::INVALID_OPCODE.with_dnr(),
        IoStatus::Aborted => Status::ABORTED_SQ_DELETION,
        IoStatus::IoError(_) if op == IoType::Read => Status::UNRECOVERED_READ_ERROR,
        IoStatus::IoError(_) if op == IoType::Write => Status::WRITE_FAULT,
        IoStatus::IoError(_) => Status::INTERNAL_ERROR,
    }
}

/// Collects bdev completions and answers finished commands.
pub(super) fn reap(conn: &mut Connection) -> bool {
    let mut done: Vec<IoCompletion> = std::mem::take(&mut conn.completions);
    conn.ns.poll(&mut done);
    let work = !done.is_empty();
    for c in done.drain(..) {
        finish_op(conn, c);
    }
    conn.completions = done;
    work
}

fn finish_op(conn: &mut Connection, c: IoCompletion) {
    let idx = c.tag as u16;
    let r = conn.reqs.get(idx);
    let op = match IoOpcode::from_raw(r.sqe.opcode) {
        Some(IoOpcode::Read) => IoType::Read,
        Some(IoOpcode::Write) => IoType::Write,
        _ => IoType::Flush,
    };
    if c.buf.is_some() {
        r.buf = c.buf;
    }
    if !c.status.is_success() {
        r.fail(status_of(c.status, op));
    }
    r.pending_ops -= 1;
    if r.pending_ops > 0 {
        return;
    }
    let (status, bytes) = (r.status, u64::from(r.xfer_len));
    if let (true, Some(ctrlr)) = (status.is_success(), conn.ctrlr()) {
        let n = &ctrlr.counters;
        match op {
            IoType::Read => {
                n.reads.fetch_add(1, Ordering::Relaxed);
                n.bytes_read.fetch_add(bytes, Ordering::Relaxed);
            }
            IoType::Write => {
                n.writes.fetch_add(1, Ordering::Relaxed);
                n.bytes_written.fetch_add(bytes, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    complete(conn, idx, status, 0, 0, None);
}

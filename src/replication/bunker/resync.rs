//! Failback resync on a staging connection: the new primary sends the volume blocks that
//! differ (the old primary's divergent tail) as `Block` messages; they are written straight to
//! the replica volume (FUA), and when `ResyncDone` has arrived and every block is durable the
//! staging log may be applied (the held applier is released) and `ResyncDone` is echoed.

use super::*;

/// Resync progress of one connection.
#[derive(Default)]
pub(super) struct Resync {
    /// Channel to the replica volume, opened on the first block.
    ch: Option<Channel>,
    /// Block writes in flight.
    inflight: usize,
    /// `ResyncDone` received, with the count the primary sent.
    pub done: Option<u64>,
    /// Volume blocks written durably.
    written: u64,
    done_buf: Vec<IoCompletion>,
}

impl BunkerConn {
    /// Checks and writes one resync block.
    pub(super) fn resync_block(&mut self, cx: &mut PollCtx<'_>, lba: u64, data: &[u8]) -> Result<(), String> {
        let a = self.att.as_ref().ok_or("Block before Hello")?;
        let vol =
            a.vol.data.clone().ok_or("Block sent to a bunker (only a secondary takes resync blocks)")?;
        let bs = vol.block_size() as usize;
        let blocks = (data.len() / bs.max(1)) as u64;
        if data.is_empty() || data.len() % bs != 0 || data.len() > self.pool.buf_size() {
            return Err(format!(
                "resync block at LBA {lba}: {} bytes is not whole blocks within one buffer",
                data.len()
            ));
        }
        if lba.checked_add(blocks).is_none_or(|end| end > vol.num_blocks()) {
            return Err(format!("resync block at LBA {lba} (+{blocks}) lies beyond the volume"));
        }
        if self.resync.ch.is_none() {
            let ch = Channel::new(vol).map_err(|e| e.to_string())?;
            for fd in ch.wake_fds() {
                if cx.watch_eventfd(fd).is_ok() {
                    self.watching.push(fd);
                }
            }
            self.resync.ch = Some(ch);
        }
        let mut buf = self.pool.alloc().ok_or("out of DMA buffers for resync")?;
        buf.set_len(data.len());
        buf.as_mut_slice().copy_from_slice(data);
        let io = BdevIo {
            ty: IoType::Write,
            offset_blocks: lba,
            num_blocks: blocks as u32,
            buf: Some(buf),
            fua: true,
            tag: blocks,
        };
        let ch = self.resync.ch.as_mut().expect("opened above");
        ch.submit(io).map_err(|_| "replica volume queue full during resync".to_string())?;
        self.resync.inflight += 1;
        Ok(())
    }

    /// Collects block writes; releases the applier once everything announced is durable.
    pub(super) fn resync_reap(&mut self) -> bool {
        let mut work = false;
        if let Some(ch) = self.resync.ch.as_mut() {
            let mut done = std::mem::take(&mut self.resync.done_buf);
            ch.poll(&mut done);
            for c in done.drain(..) {
                work = true;
                self.resync.inflight -= 1;
                if !c.status.is_success() {
                    self.refuse(format!("writing a resync block to the replica: {}", c.status));
                }
                self.resync.written += c.tag;
            }
            self.resync.done_buf = done;
        }
        if let (Some(sent), 0) = (self.resync.done, self.resync.inflight) {
            self.resync.done = None;
            if let Some(a) = self.att.as_ref() {
                let mut st = a.vol.state.lock().expect("bunker state");
                st.resync_pending = false;
                st.resync_blocks += self.resync.written;
                tracing::info!(
                    volume = a.vol.name,
                    blocks = self.resync.written,
                    sent,
                    "failback resync durable: applying the log"
                );
            }
            if let Some(w) = self.att.as_ref().and_then(|a| a.vol.waker.lock().expect("waker").clone()) {
                w.ring_doorbell_if_sleeping();
            }
            self.framed.queue(&Msg::ResyncDone { blocks: self.resync.written });
            work = true;
        }
        work
    }
}

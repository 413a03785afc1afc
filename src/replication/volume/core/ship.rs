//! Asynchronous shipping to the secondary: committed entries are taken from the in-memory ring
//! ([`crate::replication::memlog`]), or read back from the local log when the ring no longer
//! holds them, in batches (by bytes, or after a short wait) and written, in LSN order, into the
//! secondary's staging log over their own link; several batches may be in flight. The
//! secondary acknowledges receipt (staging durable) and application; the log head never
//! passes what it has applied, so nothing it still needs is overwritten.
//!
//! If the secondary stays away until the log is nearly full, it is dropped rather than stalling
//! the host, and the volume switches to its dirty-block map ([`crate::replication::dirty`]):
//! when the secondary is back, it is resynchronised (`ResyncStart`, the dirty granules read
//! from the volume as `Block`s, `ResyncDone`) while shipping resumes from the volume's applied
//! end; only once the secondary confirms the resync is it in step again. A volume written
//! before its secondary was attached is brought over the same way, with every granule dirty
//! (the initial synchronisation). Logs without room for a map keep the older behaviour: the
//! dropped secondary is reported as needing an initial synchronisation.

use super::*;
use std::net::SocketAddr;

/// Ship when this many bytes are waiting...
const BATCH_BYTES: u64 = 64 << 10;
/// ...or when the oldest waiting entry is this old.
const BATCH_WAIT: Nanos = NS_PER_MS;
/// Log fill beyond which a secondary that holds the head back is dropped.
const DROP_FILL: f64 = 0.9;
/// While the secondary's link has nothing to read, read it at most this often (its acks only
/// let the log head move; the reactor's sleep still wakes on them).
const RECV_SPACING: Nanos = 200 * NS_PER_US;
/// Log reads for shipping in flight at once.
const SHIP_READS: usize = 4;
/// Lag samples kept (one per STATUS_EVERY at most).
const LAG_SAMPLES: usize = 4096;

/// The primary's side of one secondary.
pub(super) struct Shipper {
    pub link: TcpLink,
    /// Next LSN to send.
    next: u64,
    /// Next LSN to read from the local log (reads run ahead of sending).
    read_to: u64,
    /// Log reads by LSN: in flight (None) or done and waiting for their turn to be sent.
    reads: BTreeMap<u64, Option<DmaBuf>>,
    /// The LSN each read slot is reading; tags carry `gen * SHIP_READS + slot`.
    slots: [Option<u64>; SHIP_READS],
    /// Bumped whenever the pipeline restarts, so late completions of older reads are ignored.
    gen: u64,
    /// Contiguous end the secondary holds durably in staging.
    received: u64,
    acked: BTreeMap<u64, u32>,
    /// End the secondary has applied.
    applied: u64,
    /// Attached and in sync (it has every entry from its end on).
    synced: bool,
    /// Given up on: no longer holds the head.
    dropped: bool,
    pub alarm: Option<String>,
    /// Since when committed entries have been waiting to be shipped.
    pending_since: Option<Nanos>,
    /// Samples of (committed LSN, time, writes answered) to measure lag.
    samples: VecDeque<(u64, Nanos, u64)>,
    pub fd: Option<RawFd>,
    /// Failback: blocks to resend before the secondary applies the log.
    resync: Option<Resync>,
}

/// Failback resync from the primary's side: the old primary's divergent ranges, read from the
/// volume and sent as `Block`s, then `ResyncDone`; everything is resent after a reconnect
/// until the secondary echoes `ResyncDone`.
struct Resync {
    /// A dirty-map resync: the staging log restarts at this LSN (sent as `ResyncStart`).
    start: Option<u64>,
    all: Vec<(u64, u64)>,
    queue: VecDeque<(u64, u64)>,
    reading: Option<(u64, u64)>,
    sent: u64,
    done_sent: bool,
    confirmed: bool,
}

impl Resync {
    /// A resync of `ranges`, from the staging LSN `start` for a dirty-map resync.
    fn new(start: Option<u64>, ranges: Vec<(u64, u64)>) -> Resync {
        Resync {
            start,
            queue: ranges.iter().copied().collect(),
            all: ranges,
            reading: None,
            sent: 0,
            done_sent: false,
            confirmed: false,
        }
    }
}

/// What status shows of the secondary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ShipStatus {
    pub address: String,
    pub link: String,
    pub synced: bool,
    pub dropped: bool,
    pub received: u64,
    pub applied: u64,
    pub lag_bytes: u64,
    pub lag_entries: u64,
    pub lag_seconds: f64,
    pub alarm: Option<String>,
    /// Failback: volume blocks resent, and whether the secondary has them all.
    pub resync_blocks_sent: u64,
    pub resync_done: Option<bool>,
    /// Out of step: the dirty-block map records what it lacks.
    pub out_of_sync: bool,
    /// Volume blocks the map holds dirty for it (while out of step).
    pub dirty_blocks: u64,
    /// A resync from the map is running, with this many blocks to send in all.
    pub resync_blocks: Option<u64>,
}

impl Shipper {
    /// A shipper for a log whose head is at `head` (nothing below it is needed).
    pub fn new(addr: SocketAddr, hello: Msg, head: u64, net: &crate::net::Net) -> Shipper {
        Shipper {
            link: TcpLink::with_dialer(addr, hello, net.0.clone())
                .with_recv_spacing(RECV_SPACING)
                .with_direct_writes(),
            next: 0,
            read_to: 0,
            reads: BTreeMap::new(),
            slots: [None; SHIP_READS],
            gen: 0,
            received: head,
            acked: BTreeMap::new(),
            applied: head,
            synced: false,
            dropped: false,
            alarm: None,
            pending_since: None,
            samples: VecDeque::new(),
            fd: None,
            resync: None,
        }
    }

    /// Resends `ranges` (volume blocks) as a failback resync before log shipping is applied.
    pub fn with_resync(mut self, ranges: Vec<(u64, u64)>) -> Shipper {
        self.resync = Some(Resync::new(None, ranges));
        self
    }

    /// Restarts reading at `from`; reads still in flight are ignored when they complete.
    fn restart(&mut self, from: u64) {
        (self.next, self.read_to, self.slots) = (from, from, [None; SHIP_READS]);
        self.reads.clear();
        self.gen += 1;
    }

    /// The LSN below which the secondary no longer needs the log.
    pub fn holds(&self) -> Option<u64> {
        (!self.dropped).then_some(self.applied)
    }
}

impl VolumeCore {
    /// Link events of the secondary link.
    pub(super) fn ship_link(&mut self, now: Nanos) -> bool {
        let Some(sh) = self.ship.as_mut() else { return false };
        let mut events = std::mem::take(&mut self.events);
        let work = sh.link.poll(now, &mut events);
        for ev in events.drain(..) {
            self.on_ship_event(ev);
        }
        self.events = events;
        work
    }

    fn on_ship_event(&mut self, ev: LinkEvent) {
        let head = self.shared.log.head();
        let Some(sh) = self.ship.as_mut() else { return };
        match ev {
            LinkEvent::Up { durable_end } if self.dirty.is_some() && (self.oos || durable_end < head) => {
                self.start_dirty_resync(durable_end)
            }
            LinkEvent::Up { durable_end } if durable_end < head || sh.dropped => {
                sh.synced = false;
                sh.alarm = Some(format!(
                    "secondary holds the log up to LSN {durable_end} but the log starts at {head}: it needs an initial synchronisation"
                ));
                tracing::error!(
                    volume = self.shared.name,
                    alarm = sh.alarm.as_deref(),
                    "secondary out of sync"
                );
            }
            LinkEvent::Up { durable_end } => {
                if let Some(r) = sh.resync.as_mut().filter(|r| !r.confirmed) {
                    (r.queue, r.sent, r.done_sent) = (r.all.iter().copied().collect(), 0, false);
                }
                sh.synced = true;
                sh.alarm = None;
                sh.restart(durable_end);
                (sh.received, sh.applied) = (durable_end, sh.applied.max(head));
                sh.acked.clear();
            }
            LinkEvent::Down { why } => {
                sh.synced = false;
                if !sh.dropped {
                    sh.alarm =
                        Some(format!("secondary unreachable ({why}); shipping resumes when it returns"));
                }
            }
            LinkEvent::Acked { lsn, sectors } => {
                crate::replication::log::advance_contiguous(&mut sh.acked, &mut sh.received, lsn, sectors);
            }
            LinkEvent::Message(Msg::Applied { lsn }) => sh.applied = sh.applied.max(lsn),
            LinkEvent::Message(Msg::Fenced { epoch }) => self.fence(epoch),
            LinkEvent::Message(Msg::ResyncDone { blocks, .. }) => {
                if let Some(r) = sh.resync.as_mut().filter(|r| r.done_sent) {
                    r.confirmed = true;
                    if let Some(from) = r.start {
                        // In step again: the secondary has every write below `from`.
                        (self.oos, self.floor, self.sb_dirty) = (false, from, true);
                    }
                    tracing::info!(
                        volume = self.shared.name,
                        blocks,
                        "failback resync complete on the secondary"
                    );
                }
            }
            LinkEvent::Message(m) => {
                tracing::debug!(volume = self.shared.name, ?m, "unexpected secondary message")
            }
        }
    }

    /// Reads the next batches of committed entries from the local log (several in flight),
    /// when one is due.
    pub(super) fn ship_step(&mut self, now: Nanos) -> bool {
        let committed = self.shared.log.committed();
        let (sector, per_buf) =
            (u64::from(self.geo.sector), (self.pool.buf_size() / self.geo.sector as usize) as u64);
        let Some(sh) = self.ship.as_mut() else { return false };
        if !sh.synced || sh.read_to >= committed || sh.link.state() != LinkState::Up {
            return false;
        }
        if sh.reads.is_empty() {
            let since = *sh.pending_since.get_or_insert(now);
            if (committed - sh.read_to) * sector < BATCH_BYTES && now.saturating_sub(since) < BATCH_WAIT {
                self.wake = Some(since + BATCH_WAIT);
                return false; // the batch is due within BATCH_WAIT: poll again by then
            }
        }
        sh.pending_since = None;
        let mut work = false;
        // From memory while it holds the next entries and no device read waits to go first.
        while let Some(data) =
            self.mem.as_ref().filter(|_| sh.reads.is_empty() && sh.next < committed).and_then(|m| {
                m.get(sh.next, (committed - sh.next).min(per_buf).min(self.geo.until_wrap(sh.next)))
            })
        {
            let data = &data[..whole_entries(data, sh.next, self.geo.sector)];
            if !sh.link.write_at(sh.next, data) {
                return true; // the link's queue is full: again next poll
            }
            sh.next += data.len() as u64 / sector;
            sh.read_to = sh.next;
            work = true;
        }
        while let Some(i) = sh.slots.iter().position(Option::is_none).filter(|_| sh.read_to < committed) {
            let n = (committed - sh.read_to).min(per_buf).min(self.geo.until_wrap(sh.read_to));
            let Some(mut buf) = self.pool.alloc() else { break };
            buf.set_len(n as usize * self.geo.sector as usize);
            let slot = sh.gen as usize * SHIP_READS + i;
            let io = BdevIo {
                ty: IoType::Read,
                offset_blocks: self.geo.block_of(sh.read_to),
                num_blocks: n as u32,
                buf: Some(buf),
                fua: false,
                tag: tag(slot, K_SHIP),
            };
            if self.log_ch.submit(io).is_err() {
                break;
            }
            sh.slots[i] = Some(sh.read_to);
            sh.reads.insert(sh.read_to, None);
            sh.read_to += n;
            work = true;
        }
        work
    }

    /// A shipping read is done: send what is next in LSN order.
    pub(super) fn on_ship_read(&mut self, slot: usize, c: IoCompletion) {
        let Some(sh) = self.ship.as_mut() else { return };
        if slot / SHIP_READS != sh.gen as usize {
            return; // from before a restart
        }
        let Some(lsn) = sh.slots[slot % SHIP_READS].take() else { return };
        match c.buf.filter(|_| c.status.is_success()) {
            Some(buf) => {
                sh.reads.insert(lsn, Some(buf));
            }
            None => {
                tracing::error!(volume = self.shared.name, status = %c.status, "reading the log for shipping");
                let next = sh.next;
                return sh.restart(next);
            }
        }
        while let Some(Some(buf)) = sh.reads.get(&sh.next) {
            let n = (buf.len() / self.geo.sector as usize) as u64;
            if !sh.link.write_at(sh.next, buf.as_slice()) {
                let next = sh.next;
                return sh.restart(next); // the link's queue is full: read it again later
            }
            sh.reads.remove(&sh.next);
            sh.next += n;
        }
    }

    /// Drops a secondary that holds the head back while the log is nearly full; with a
    /// dirty-block map, it is resynchronised from the map once it attaches again.
    pub(super) fn ship_guard(&mut self) {
        let (fill, head) = (self.shared.log.fill(), self.shared.log.head());
        let Some(sh) = self.ship.as_mut() else { return };
        if sh.dropped || fill <= DROP_FILL || sh.applied > head {
            return;
        }
        sh.dropped = true;
        sh.synced = false;
        let Some(map) = self.dirty.as_ref() else {
            sh.alarm = Some(format!(
                "secondary dropped: it fell {:.0}% of the log behind; it needs an initial synchronisation",
                fill * 100.0
            ));
            return tracing::error!(
                volume = self.shared.name,
                alarm = sh.alarm.as_deref(),
                "secondary dropped"
            );
        };
        if !self.oos {
            // The map is complete from `floor`; a secondary behind that needs everything.
            self.floor = if sh.applied >= self.floor { self.floor.max(sh.applied.min(head)) } else { 0 };
            (self.oos, self.oos_hold, self.sb_dirty) = (true, Some(head), true);
        }
        sh.alarm = Some(format!(
            "secondary dropped: it fell {:.0}% of the log behind; {} blocks to resynchronise from the dirty-block map when it attaches",
            fill * 100.0,
            map.dirty_blocks(self.floor)
        ));
        tracing::warn!(volume = self.shared.name, alarm = sh.alarm.as_deref(), "secondary dropped");
        sh.link.reset("the secondary was dropped: attaching again to resynchronise".into());
    }

    /// The secondary attached out of step: restart its staging log at the volume's applied end,
    /// send it the map's dirty blocks, and ship from that end meanwhile.
    fn start_dirty_resync(&mut self, durable_end: u64) {
        if !self.oos {
            // It ends before the head without having been dropped (a replaced staging log, or
            // a volume written before it was attached): the map cannot say what it lacks.
            (self.oos, self.floor, self.sb_dirty) = (true, 0, true);
            self.oos_hold = Some(self.shared.log.head());
        }
        let from = self.shared.log.applied();
        let ranges = self.dirty.as_ref().map(|m| m.ranges(self.floor)).unwrap_or_default();
        let blocks: u64 = ranges.iter().map(|r| r.1).sum();
        let Some(sh) = self.ship.as_mut() else { return };
        sh.link.send(&Msg::ResyncStart { from });
        (sh.dropped, sh.synced, sh.alarm) = (false, true, None);
        sh.restart(from);
        (sh.received, sh.applied) = (from, from);
        sh.acked.clear();
        sh.resync = Some(Resync::new(Some(from), ranges));
        tracing::warn!(
            volume = self.shared.name,
            durable_end,
            from,
            blocks,
            floor = self.floor,
            "secondary out of step: resynchronising from the dirty-block map"
        );
    }

    /// Records a lag sample and returns the secondary's status.
    pub(super) fn ship_status(&mut self, now: Nanos) -> Option<ShipStatus> {
        let (committed, writes, sector) =
            (self.shared.log.committed(), self.writes, u64::from(self.geo.sector));
        let oos = self.oos;
        let dirty_blocks = self.dirty.as_ref().filter(|_| oos).map_or(0, |m| m.dirty_blocks(self.floor));
        let sh = self.ship.as_mut()?;
        if sh.samples.back().is_none_or(|s| s.0 != committed) {
            if sh.samples.len() == LAG_SAMPLES {
                sh.samples.pop_front();
            }
            sh.samples.push_back((committed, now, writes));
        }
        let mut base = None;
        while sh.samples.len() > 1 && sh.samples[0].0 <= sh.applied {
            base = sh.samples.pop_front();
        }
        if let Some(b) = base {
            sh.samples.push_front(b);
        }
        let behind = committed.saturating_sub(sh.applied);
        let (lag_entries, lag_seconds) = match sh.samples.front() {
            Some(&(_, t, w)) if behind > 0 => (writes.saturating_sub(w), now.saturating_sub(t) as f64 / 1e9),
            _ => (0, 0.0),
        };
        Some(ShipStatus {
            address: sh.link.addr().to_string(),
            link: link_state(sh.link.state()).into(),
            synced: sh.synced,
            dropped: sh.dropped,
            received: sh.received,
            applied: sh.applied,
            lag_bytes: behind.saturating_mul(sector),
            lag_entries,
            lag_seconds,
            alarm: sh.alarm.clone(),
            resync_blocks_sent: sh.resync.as_ref().map_or(0, |r| r.sent),
            resync_done: sh.resync.as_ref().map(|r| r.confirmed),
            out_of_sync: oos,
            dirty_blocks,
            resync_blocks: sh
                .resync
                .as_ref()
                .filter(|r| r.start.is_some() && !r.confirmed)
                .map(|r| r.all.iter().map(|x| x.1).sum()),
        })
    }

    /// Failback: reads the next divergent range from the volume, or announces the end.
    pub(super) fn resync_step(&mut self) -> bool {
        let per_buf = (self.pool.buf_size() / self.sb.volume_block_size.max(1) as usize) as u64;
        // Every block was read below the tail: applied that far, the replica is consistent.
        let through = self.shared.log.tail();
        let Some(sh) = self.ship.as_mut() else { return false };
        let up = sh.synced && sh.link.state() == LinkState::Up;
        let Some(r) = sh.resync.as_mut().filter(|r| up && !r.confirmed && r.reading.is_none()) else {
            return false;
        };
        if !sh.link.has_room() {
            return true; // keep polling while the socket drains
        }
        let Some((lba, n)) = r.queue.pop_front() else {
            if !r.done_sent {
                r.done_sent = true;
                let blocks = r.sent;
                sh.link.send(&Msg::ResyncDone { blocks, through });
                return true;
            }
            return false;
        };
        let chunk = n.min(per_buf);
        if chunk < n {
            r.queue.push_front((lba + chunk, n - chunk));
        }
        let Some(mut buf) = self.pool.alloc() else {
            r.queue.push_front((lba, chunk));
            return false;
        };
        buf.set_len((chunk * u64::from(self.sb.volume_block_size)) as usize);
        let io = BdevIo {
            ty: IoType::Read,
            offset_blocks: lba,
            num_blocks: chunk as u32,
            buf: Some(buf),
            fua: false,
            tag: tag(0, K_RESYNC),
        };
        if self.data_ch.submit(io).is_ok() {
            r.reading = Some((lba, chunk));
        } else {
            r.queue.push_front((lba, chunk));
        }
        true
    }

    pub(super) fn on_resync_read(&mut self, c: IoCompletion) {
        let Some(sh) = self.ship.as_mut() else { return };
        let Some(r) = sh.resync.as_mut() else { return };
        let Some((lba, n)) = r.reading.take() else { return };
        match c.buf.filter(|_| c.status.is_success()) {
            Some(buf) => {
                sh.link.send(&Msg::Block { lba, data: buf.as_slice().to_vec() });
                r.sent += n;
            }
            None => {
                tracing::error!(volume = self.shared.name, lba, status = %c.status, "reading the volume for failback resync");
                r.queue.push_front((lba, n));
            }
        }
    }

    /// A peer has seen a newer epoch: this primary is stale and stops serving the volume.
    pub(super) fn fence(&mut self, epoch: u64) {
        if self.shared.fenced.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        self.shared.stopped.store(true, std::sync::atomic::Ordering::Release);
        self.alarm = Some(format!(
            "fenced: a peer is at epoch {epoch}, this primary at {}; it serves nothing until it rejoins",
            self.sb.epoch
        ));
        tracing::error!(volume = self.shared.name, alarm = self.alarm.as_deref(), "volume fenced");
    }
}

/// How many bytes at the front of `data` (log sectors from `lsn`) are whole entries: a
/// shipped batch that ends on an entry lets the secondary parse what it received in place (a
/// batch cut at the buffer size splits an entry, which the secondary's applier must copy to
/// join: at 128 KiB, nearly every byte). All of `data` when its first entry does not decode
/// or does not fit in it (the ring in memory wraps inside it); the secondary joins that one.
fn whole_entries(data: &[u8], lsn: u64, sector: u32) -> usize {
    let s = sector as usize;
    let mut at = 0;
    while let Some(head) = data.get(at..at + s) {
        let Ok(h) = EntryHeader::decode(head, lsn + (at / s) as u64, sector) else { break };
        let len = h.sectors as usize * s;
        if len == 0 || at + len > data.len() {
            break;
        }
        at += len;
    }
    if at == 0 {
        data.len()
    } else {
        at
    }
}

/// The status word of a link state.
pub(super) fn link_state(s: LinkState) -> &'static str {
    match s {
        LinkState::Up => "up",
        LinkState::Connecting => "connecting",
        LinkState::Down => "down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log bytes from `lsn` holding Write entries of these data sizes.
    fn entries(lsn: u64, sizes: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &len in sizes {
            let at = lsn + (out.len() / 512) as u64;
            let sectors = EntryHeader::sectors_for(len, 512);
            let h = EntryHeader {
                kind: EntryKind::Write,
                lsn: at,
                epoch: 1,
                lba: 0,
                blocks: len / 512,
                data_len: len,
                sectors,
                data_crc: crc32c::crc32c(&vec![7; len as usize]),
            };
            let start = out.len();
            out.resize(start + sectors as usize * 512, 7);
            h.encode(&mut out[start..start + 512]);
        }
        out
    }

    #[test]
    fn a_batch_ends_on_an_entry_unless_its_first_does_not_fit() {
        let log = entries(40, &[4096, 131_072, 512]);
        let (a, b) = (9 * 512, 9 * 512 + 257 * 512);
        assert_eq!(whole_entries(&log, 40, 512), log.len(), "all whole");
        assert_eq!(whole_entries(&log[..b + 512], 40, 512), b, "the last one cut");
        assert_eq!(whole_entries(&log[..b - 512], 40, 512), a, "the second one cut");
        assert_eq!(whole_entries(&log[..a - 512], 40, 512), a - 512, "the first one cut: sent as it is");
        assert_eq!(whole_entries(&log, 41, 512), log.len(), "not an entry at that LSN: sent as it is");
    }
}

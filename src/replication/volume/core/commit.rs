//! Group commit: the entries one intake pass starts lie next to each other in the log, so they
//! go to the local log as one write (FUA) instead of one write each: one device round trip and
//! one cache flush for the lot. A lone entry goes as it is, without a copy.
//!
//! Invariants: a batch is LSN-contiguous, does not cross the end of the ring and fits one DMA
//! buffer; each of its slots keeps its own entry bytes (for the bunker and the host's answer)
//! while the batch is written, and is marked with the batch's id (its first slot) until the
//! write completes. Without a spare DMA buffer the entries go one by one, as before.

use super::*;

impl VolumeCore {
    /// Adds a started slot's entry to the batch, first issuing the batch if the entry cannot
    /// join it.
    pub(super) fn batch_add(&mut self, slot: usize, lsn: u64, sectors: u32) {
        if let Some((from, batch_end)) = self.batch_span() {
            let end = lsn + u64::from(sectors);
            let joins = lsn == batch_end
                && end - from <= self.geo.until_wrap(from)
                && (end - from) * u64::from(self.geo.sector) <= self.pool.buf_size() as u64;
            if !joins {
                self.issue_batch();
            }
        }
        self.batch.push(slot);
    }

    /// The LSNs the batch covers: its first entry's, and the one after its last entry.
    fn batch_span(&self) -> Option<(u64, u64)> {
        let res = |slot: &usize| self.slots[*slot].as_ref().expect("batched slot").res;
        let (first, last) = (res(self.batch.first()?), res(self.batch.last()?));
        Some((first.lsn, last.lsn + u64::from(last.sectors)))
    }

    /// Issues the batch: one write for all its entries (or the lone entry itself).
    pub(super) fn issue_batch(&mut self) {
        let buf = match self.batch.len() {
            0 => return,
            1 => None,
            _ => self.pool.alloc(),
        };
        let Some(mut buf) = buf else {
            for i in 0..self.batch.len() {
                let slot = self.batch[i];
                let s = self.slots[slot].as_mut().expect("batched slot");
                let (lsn, entry) = (s.res.lsn, s.entry.take().expect("entry of a started slot"));
                self.issue_log(slot, K_LOG, lsn, entry);
            }
            return self.batch.clear();
        };
        let first = self.batch[0];
        let (from, end) = self.batch_span().expect("a batch of two or more");
        buf.set_len(((end - from) * u64::from(self.geo.sector)) as usize);
        let mut at = 0;
        for &slot in &self.batch {
            let s = self.slots[slot].as_mut().expect("batched slot");
            let entry = s.entry.as_ref().expect("entry of a started slot").as_slice();
            buf.as_mut_slice()[at..at + entry.len()].copy_from_slice(entry);
            at += entry.len();
            s.batch = Some(first);
        }
        self.batch.clear();
        self.issue_log(first, K_BATCH, from, buf);
    }

    /// The batch whose first slot is `first` is written (or failed): every slot in it is.
    pub(super) fn on_batch(&mut self, first: usize, status: IoStatus) {
        for slot in 0..self.live {
            let Some(s) = self.slots[slot].as_mut().filter(|s| s.batch == Some(first)) else { continue };
            s.batch = None;
            self.log_done(slot, status, None);
        }
    }
}

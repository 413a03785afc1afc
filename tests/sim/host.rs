//! The host: a workload of self-describing writes (and reads that check what they see)
//! through the primary's replicated volume, and the model of what every block may hold.
//!
//! Writes never overlap another write in flight, so per block the model is simple: the last
//! acknowledged write, plus any write issued after it whose outcome the host never learned
//! (the primary crashed first). A block may hold any of those and nothing else.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ferrite::bdev::{BdevIo, Channel, IoCompletion, IoStatus, IoType};
use ferrite::reactor::Nanos;
use ferrite::rng::Rng;
use ferrite::sys::DmaPool;

/// Mean pause between two I/Os is half of this (about 700 I/Os per second).
const THINK: Nanos = 3_000_000;
/// Volume block size.
pub const BLOCK: usize = 4096;

/// What a block holds when written by write `wid` (0: never written).
pub fn pattern(lba: u64, wid: u64) -> Vec<u8> {
    if wid == 0 {
        return vec![0; BLOCK];
    }
    let mut out = Vec::with_capacity(BLOCK);
    let mut x = lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ wid;
    while out.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out[..8].copy_from_slice(&lba.to_le_bytes());
    out[8..16].copy_from_slice(&wid.to_le_bytes());
    out
}

/// Which write a block's bytes came from, if any.
fn identify(lba: u64, bytes: &[u8]) -> Option<u64> {
    if bytes.iter().all(|b| *b == 0) {
        return Some(0);
    }
    let wid = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    (pattern(lba, wid) == bytes).then_some(wid)
}

/// One write as the host issued it: where, and when (on the host's event counter) it was
/// submitted and acknowledged.
struct WriteRec {
    lba: u64,
    blocks: u64,
    submitted: u64,
    acked: Option<u64>,
}

struct Inflight {
    lba: u64,
    blocks: u32,
    wid: Option<u64>,
}

/// The workload and its model.
pub struct Host {
    blocks: u64,
    /// Per block: the writes it may hold.
    possible: Vec<BTreeSet<u64>>,
    /// The same without what was observed: the last acknowledged write and the unanswered ones
    /// after it. A failover goes back to this (an unanswered write seen on the old primary may
    /// never have reached the bunker, and is legitimately gone).
    unobserved: Vec<BTreeSet<u64>>,
    inflight: BTreeMap<u64, Inflight>,
    /// Every write, indexed by write id - 1 (ids follow submission order).
    writes: Vec<WriteRec>,
    /// Counts submissions and acknowledgements: their order is what the host can vouch for.
    events: u64,
    busy: Vec<bool>,
    next_wid: u64,
    next_tag: u64,
    depth: usize,
    /// No new I/O before this time (the host thinks between I/Os).
    next_submit: Nanos,
    /// Writes acknowledged.
    pub acked: u64,
    /// Writes that failed with an error status.
    pub failed: u64,
    /// Reads checked.
    pub reads: u64,
    done: Vec<IoCompletion>,
    /// Just-acknowledged writes to read back, `(lba, blocks)`.
    readback: VecDeque<(u64, u32)>,
}

/// Most read-backs waiting.
const READBACK: usize = 8;

impl Host {
    /// A host for a volume of `blocks` blocks, keeping up to `depth` I/Os in flight.
    pub fn new(blocks: u64, depth: usize) -> Host {
        Host {
            blocks,
            possible: (0..blocks).map(|_| BTreeSet::from([0])).collect(),
            unobserved: (0..blocks).map(|_| BTreeSet::from([0])).collect(),
            inflight: BTreeMap::new(),
            writes: Vec::new(),
            events: 0,
            busy: vec![false; blocks as usize],
            next_wid: 1,
            next_tag: 1,
            depth,
            next_submit: 0,
            acked: 0,
            failed: 0,
            reads: 0,
            done: Vec::new(),
            readback: VecDeque::new(),
        }
    }

    /// The primary went away with I/O in flight: those writes' outcome is unknown for good.
    pub fn lost_primary(&mut self) {
        self.inflight.clear();
        self.busy.iter_mut().for_each(|b| *b = false);
    }

    /// A failover: what was observed on the old primary binds the new one only as far as it
    /// was acknowledged.
    pub fn failed_over(&mut self) {
        self.possible = self.unobserved.clone();
    }

    /// Submits new I/O while below depth; returns whether anything was submitted. Reads back
    /// of just-acknowledged writes go first, without thinking (as a verifying host would:
    /// they meet blocks whose volume write may still be running).
    pub fn submit(&mut self, ch: &mut Channel, pool: &DmaPool, rng: &mut Rng, now: Nanos) -> bool {
        let mut any = false;
        while self.inflight.len() < self.depth {
            let Some((lba, blocks)) = self.readback.pop_front() else { break };
            if !(lba..lba + u64::from(blocks)).any(|b| self.busy[b as usize]) {
                if !self.issue(ch, pool, lba, blocks, false) {
                    break;
                }
                any = true;
            }
        }
        while self.inflight.len() < self.depth && now >= self.next_submit {
            self.next_submit = now + rng.below(THINK);
            let blocks = 1 + rng.below(2) as u32;
            let lba = rng.below(self.blocks - u64::from(blocks) + 1);
            if (lba..lba + u64::from(blocks)).any(|b| self.busy[b as usize]) {
                break;
            }
            if !self.issue(ch, pool, lba, blocks, rng.below(4) != 0) {
                break;
            }
            any = true;
        }
        any
    }

    /// Issues one read or write of `[lba, lba + blocks)`; false if it could not go.
    fn issue(&mut self, ch: &mut Channel, pool: &DmaPool, lba: u64, blocks: u32, write: bool) -> bool {
        let Some(mut buf) = pool.alloc() else { return false };
        buf.set_len(blocks as usize * BLOCK);
        let wid = write.then(|| {
            let wid = self.next_wid;
            self.next_wid += 1;
            self.events += 1;
            let submitted = self.events;
            self.writes.push(WriteRec { lba, blocks: u64::from(blocks), submitted, acked: None });
            for i in 0..u64::from(blocks) {
                let at = i as usize * BLOCK;
                buf.as_mut_slice()[at..at + BLOCK].copy_from_slice(&pattern(lba + i, wid));
                self.possible[(lba + i) as usize].insert(wid);
                self.unobserved[(lba + i) as usize].insert(wid);
            }
            wid
        });
        let ty = if write { IoType::Write } else { IoType::Read };
        let tag = self.next_tag;
        self.next_tag += 1;
        let io = BdevIo { ty, offset_blocks: lba, num_blocks: blocks, buf: Some(buf), fua: false, tag };
        if ch.submit(io).is_err() {
            return false;
        }
        (lba..lba + u64::from(blocks)).for_each(|b| self.busy[b as usize] = true);
        self.inflight.insert(tag, Inflight { lba, blocks, wid });
        true
    }

    /// Collects completions and checks reads; an error names the block and what it held.
    pub fn reap(&mut self, ch: &mut Channel) -> Result<bool, String> {
        ch.poll(&mut self.done);
        let any = !self.done.is_empty();
        for c in std::mem::take(&mut self.done) {
            let Some(io) = self.inflight.remove(&c.tag) else { continue };
            (io.lba..io.lba + u64::from(io.blocks)).for_each(|b| self.busy[b as usize] = false);
            match (io.wid, c.status) {
                (Some(wid), IoStatus::Success) => {
                    self.acked += 1;
                    self.events += 1;
                    self.writes[wid as usize - 1].acked = Some(self.events);
                    (io.lba..io.lba + u64::from(io.blocks)).for_each(|b| {
                        self.possible[b as usize] = BTreeSet::from([wid]);
                        self.unobserved[b as usize] = BTreeSet::from([wid]);
                    });
                    // Every third write is read back, with a neighbouring block half the time
                    // (a read partly over a just-written range).
                    if wid % 3 == 0 && self.readback.len() < READBACK {
                        let lba = if wid % 2 == 0 { io.lba.saturating_sub(1) } else { io.lba };
                        let blocks = (io.blocks + 1).min((self.blocks - lba) as u32);
                        self.readback.push_back((lba, if wid % 2 == 0 { blocks } else { io.blocks }));
                    }
                }
                (Some(_), _) => self.failed += 1,
                (None, IoStatus::Success) => {
                    let buf = c.buf.as_ref().expect("read buffer back");
                    for (i, bytes) in buf.as_slice().chunks(BLOCK).enumerate() {
                        self.check(io.lba + i as u64, bytes, "host read")?;
                    }
                    self.reads += 1;
                }
                (None, _) => {}
            }
        }
        Ok(any)
    }

    /// Checks one block against the model; once seen, a block holds what was seen.
    pub fn check(&mut self, lba: u64, bytes: &[u8], when: &str) -> Result<(), String> {
        let set = &mut self.possible[lba as usize];
        match identify(lba, bytes) {
            Some(wid) if set.contains(&wid) => {
                // Writes older than the one seen can no longer appear.
                set.retain(|w| *w >= wid);
                Ok(())
            }
            got => Err(format!(
                "{when}: block {lba} holds {} but may only hold writes {set:?}",
                got.map_or("bytes from no write".into(), |w| format!("write {w}"))
            )),
        }
    }

    /// Checks a whole volume image.
    pub fn check_image(&mut self, image: &[u8], when: &str) -> Result<(), String> {
        for lba in 0..self.blocks {
            let at = lba as usize * BLOCK;
            self.check(lba, &image[at..at + BLOCK], when)?;
        }
        Ok(())
    }

    /// Checks that a replica image is a prefix of the primary's write order, as far as the host
    /// can tell: every write it shows is there whole, and so is every write acknowledged before
    /// the newest write it shows was submitted (each may be overwritten by a later write to the
    /// same block). Writes to one block never overlap in flight, so for one block write ids
    /// follow the log's order.
    pub fn check_prefix(&self, image: &[u8], when: &str) -> Result<(), String> {
        let shown = (0..self.blocks)
            .map(|lba| {
                let at = lba as usize * BLOCK;
                identify(lba, &image[at..at + BLOCK])
                    .ok_or_else(|| format!("{when}: block {lba} holds bytes from no write"))
            })
            .collect::<Result<Vec<u64>, String>>()?;
        let Some(newest) =
            shown.iter().filter(|w| **w > 0).map(|w| self.writes[*w as usize - 1].submitted).max()
        else {
            return Ok(()); // nothing applied yet: the empty prefix
        };
        // Per block: the newest write that must be there (0: none).
        let mut need = vec![(0u64, ""); self.blocks as usize];
        let mut require = |w: &WriteRec, wid: u64, why| {
            for b in w.lba..w.lba + w.blocks {
                need[b as usize] = need[b as usize].max((wid, why));
            }
        };
        for (i, w) in self.writes.iter().enumerate() {
            if w.acked.is_some_and(|a| a < newest) {
                require(w, i as u64 + 1, "acknowledged before the newest write shown was submitted");
            }
        }
        for &wid in shown.iter().filter(|w| **w > 0) {
            require(&self.writes[wid as usize - 1], wid, "shown on another block");
        }
        let newest_wid = shown.iter().copied().max().unwrap_or(0);
        match (0..self.blocks as usize).find(|b| shown[*b] < need[*b].0) {
            None => Ok(()),
            Some(b) => Err(format!(
                "{when}: not a prefix of the primary's writes: block {b} holds write {} but must hold write {} or a later one ({}; newest shown: write {newest_wid})",
                shown[b], need[b].0, need[b].1
            )),
        }
    }

    /// What is in flight (tag, first block, blocks, write id).
    pub fn describe_inflight(&self) -> String {
        let v: Vec<String> = self
            .inflight
            .iter()
            .map(|(t, i)| format!("#{t} lba {} x{} {:?}", i.lba, i.blocks, i.wid))
            .collect();
        v.join(", ")
    }

    /// Whether nothing is in flight.
    pub fn idle(&self) -> bool {
        self.inflight.is_empty()
    }
}

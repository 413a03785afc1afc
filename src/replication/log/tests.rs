//! Change-log tests: several stepped reactors append concurrently in a seeded order into an
//! in-memory disk; the checks cover sequence order, no overlap, wrap-around, back-pressure and
//! recovery (including random torn tails, as a proptest).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use proptest::prelude::*;

use super::*;
use crate::reactor::{PollCtx, PollStatus, Poller, Reactor};
use crate::replication::format::{EntryHeader, EntryKind};
use crate::replication::recovery::{scan, LogReader};
use crate::rng::Rng;

const SECTOR: u32 = 512;

/// A disk of sectors addressed by ring position.
struct MemDisk {
    geo: LogGeometry,
    sectors: Vec<Vec<u8>>,
}

impl MemDisk {
    fn new(geo: LogGeometry) -> MemDisk {
        MemDisk { geo, sectors: vec![vec![0; SECTOR as usize]; geo.ring_sectors as usize] }
    }
    fn write(&mut self, lsn: u64, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(SECTOR as usize).enumerate() {
            let s = &mut self.sectors[((lsn + i as u64) % self.geo.ring_sectors) as usize];
            s.fill(0);
            s[..chunk.len()].copy_from_slice(chunk);
        }
    }
}

impl LogReader for MemDisk {
    fn read(&mut self, lsn: u64, sectors: u32) -> std::io::Result<Vec<u8>> {
        Ok((0..u64::from(sectors))
            .flat_map(|i| self.sectors[((lsn + i) % self.geo.ring_sectors) as usize].clone())
            .collect())
    }
}

fn entry_bytes(lsn: u64, lba: u64, data: &[u8]) -> Vec<u8> {
    let sectors = EntryHeader::sectors_for(data.len() as u32, SECTOR);
    let h = EntryHeader {
        kind: EntryKind::Write,
        lsn,
        epoch: 1,
        lba,
        blocks: 1,
        data_len: data.len() as u32,
        sectors,
        data_crc: crc32c::crc32c(data),
    };
    let mut out = vec![0u8; sectors as usize * SECTOR as usize];
    h.encode(&mut out[..SECTOR as usize]);
    out[SECTOR as usize..SECTOR as usize + data.len()].copy_from_slice(data);
    out
}

fn pad_bytes(lsn: u64, sectors: u32) -> Vec<u8> {
    let h = EntryHeader {
        kind: EntryKind::Pad,
        lsn,
        epoch: 1,
        lba: 0,
        blocks: 0,
        data_len: 0,
        sectors,
        data_crc: 0,
    };
    let mut out = vec![0u8; SECTOR as usize];
    h.encode(&mut out);
    out
}

struct Shared {
    log: ChangeLog,
    disk: MemDisk,
    reserved: BTreeMap<u64, u32>,
    written: Vec<(u64, Vec<u8>)>,
    full_seen: u32,
}

/// One reactor's appender: reserves, writes later (out of order), finishes.
struct Appender {
    id: u64,
    shared: Rc<RefCell<Shared>>,
    rng: Rng,
    pending: Vec<(Reservation, Vec<u8>)>,
    left: u32,
}

impl Poller for Appender {
    fn name(&self) -> &str {
        "appender"
    }
    fn poll(&mut self, _cx: &mut PollCtx<'_>) -> PollStatus {
        let mut s = self.shared.borrow_mut();
        if self.left > 0 && (self.pending.is_empty() || self.rng.percent(50)) {
            let len = 512 * (1 + self.rng.below(8) as usize);
            let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ self.id) as u8).collect();
            match s.log.reserve(EntryHeader::sectors_for(len as u32, SECTOR)) {
                Ok(r) => {
                    let prev = s.reserved.insert(r.lsn, r.sectors);
                    assert!(prev.is_none(), "LSN {} reserved twice", r.lsn);
                    self.pending.push((r, data));
                    self.left -= 1;
                }
                Err(_) => s.full_seen += 1,
            }
        } else if !self.pending.is_empty() {
            let i = self.rng.below(self.pending.len() as u64) as usize;
            let (r, data) = self.pending.swap_remove(i);
            if let Some((plsn, pn)) = r.pad {
                s.disk.write(plsn, &pad_bytes(plsn, pn));
                s.log.finish(plsn, pn);
            }
            let bytes = entry_bytes(r.lsn, self.id, &data);
            s.disk.write(r.lsn, &bytes);
            s.written.push((r.lsn, data));
            s.log.finish(r.lsn, r.sectors);
        }
        if self.left == 0 && self.pending.is_empty() {
            PollStatus::Done
        } else {
            PollStatus::Busy
        }
    }
}

/// Commits in order and, lagging behind, lets the head follow (as applying would).
struct Committer {
    shared: Rc<RefCell<Shared>>,
    rng: Rng,
}

impl Poller for Committer {
    fn name(&self) -> &str {
        "committer"
    }
    fn poll(&mut self, _cx: &mut PollCtx<'_>) -> PollStatus {
        let s = self.shared.borrow();
        let c = s.log.advance_committed();
        if self.rng.percent(30) {
            s.log.set_applied(c);
            s.log.set_head(c);
        }
        PollStatus::Busy
    }
}

fn run(seed: u64, ring: u64, per_reactor: u32) -> Rc<RefCell<Shared>> {
    let geo = LogGeometry { sector: SECTOR, ring_start: 2, ring_sectors: ring };
    let shared = Rc::new(RefCell::new(Shared {
        log: ChangeLog::new(geo, 0, 0),
        disk: MemDisk::new(geo),
        reserved: BTreeMap::new(),
        written: Vec::new(),
        full_seen: 0,
    }));
    let mut reactors = Reactor::local_set(3).unwrap();
    let mut rng = Rng::new(seed);
    for (i, r) in reactors.iter_mut().enumerate() {
        r.add_poller(
            Box::new(Appender {
                id: i as u64,
                shared: shared.clone(),
                rng: Rng::new(seed ^ i as u64),
                pending: Vec::new(),
                left: per_reactor,
            }),
            0,
        );
    }
    reactors[0].add_poller(Box::new(Committer { shared: shared.clone(), rng: Rng::new(seed + 99) }), 0);
    for now in 0..200_000 {
        let i = rng.below(3) as usize;
        reactors[i].poll_once(now);
        if reactors.iter().skip(1).all(|r| r.poller_count() == 0) && reactors[0].poller_count() == 1 {
            break;
        }
    }
    shared.borrow().log.advance_committed();
    shared
}

#[test]
fn concurrent_appends_never_overlap_and_commit_in_order() {
    for seed in 0..20 {
        let shared = run(seed, 4096, 200);
        let s = shared.borrow();
        let mut end = 0;
        for (&lsn, &n) in &s.reserved {
            assert!(
                lsn >= end,
                "seed {seed}: reservation at {lsn} overlaps the previous one ending at {end}"
            );
            assert!(lsn % 4096 + u64::from(n) <= 4096, "seed {seed}: entry crosses the ring end");
            end = lsn + u64::from(n);
        }
        assert_eq!(s.log.committed(), s.log.tail(), "seed {seed}: everything finished is committed");
        assert_eq!(s.written.len(), 600);
    }
}

#[test]
fn wrap_around_and_back_pressure() {
    let shared = run(7, 256, 300);
    let s = shared.borrow();
    assert!(s.log.tail() > 3 * 256, "the ring wrapped several times");
    assert!(s.full_seen > 0, "a small ring pushes back");
    assert!(s.reserved.keys().any(|&l| l % 256 == 0), "entries start right after a wrap");
}

#[test]
fn recovery_finds_every_entry_after_the_checkpoint() {
    let shared = run(3, 8192, 100);
    let mut s = shared.borrow_mut();
    let geo = s.log.geometry();
    let result = scan(&mut s.disk, &geo, 0, 64).unwrap();
    assert_eq!(result.entries.len(), 300);
    assert_eq!(result.end, s.log.tail());
    let mut written = s.written.clone();
    written.sort_by_key(|(l, _)| *l);
    for (e, (lsn, data)) in result.entries.iter().zip(&written) {
        assert_eq!((e.header.lsn, &e.data), (*lsn, data));
    }
}

fn sequential_log(n: usize) -> (MemDisk, LogGeometry, Vec<u64>) {
    let geo = LogGeometry { sector: SECTOR, ring_start: 2, ring_sectors: 4096 };
    let mut disk = MemDisk::new(geo);
    let mut lsns = Vec::new();
    let mut lsn = 0;
    for i in 0..n {
        let data = vec![i as u8; 512 * (1 + i % 3)];
        disk.write(lsn, &entry_bytes(lsn, i as u64, &data));
        lsns.push(lsn);
        lsn += u64::from(EntryHeader::sectors_for(data.len() as u32, SECTOR));
    }
    lsns.push(lsn);
    (disk, geo, lsns)
}

proptest! {
    /// A torn tail (any of the last entries damaged at any byte) is discarded, and everything
    /// before it is replayed.
    #[test]
    fn torn_tails_are_discarded(n in 5usize..40, torn_back in 1usize..4, byte in 0usize..1024) {
        let (mut disk, geo, lsns) = sequential_log(n);
        let victim = n - torn_back.min(n);
        let s = &mut disk.sectors[(lsns[victim] + (byte / 512) as u64 % (lsns[victim + 1] - lsns[victim])) as usize];
        s[byte % 512] ^= 0x5A;
        let r = scan(&mut disk, &geo, 0, 16);
        match r {
            Ok(r) => {
                prop_assert!(r.entries.len() >= victim);
                prop_assert!(r.entries.iter().all(|e| e.header.lsn != lsns[victim]));
            }
            Err(e) => prop_assert!(false, "torn tail treated as corruption: {e}"),
        }
    }

    /// Damage far from the end is corruption and stops recovery with an error.
    #[test]
    fn corruption_in_the_middle_is_an_error(n in 40usize..60, victim in 2usize..10) {
        let (mut disk, geo, lsns) = sequential_log(n);
        disk.sectors[lsns[victim] as usize][100] ^= 1;
        prop_assert!(scan(&mut disk, &geo, 0, 16).is_err());
    }
}

/// A reader whose reads covering `victim` come back wrong `bad` times (one byte flipped, or
/// all zeroes as a misdirected read might be), the disk itself intact.
struct Misreading {
    disk: MemDisk,
    victim: u64,
    bad: usize,
    zeroes: bool,
}

impl LogReader for Misreading {
    fn read(&mut self, lsn: u64, sectors: u32) -> std::io::Result<Vec<u8>> {
        let mut out = self.disk.read(lsn, sectors)?;
        if self.bad > 0 && (lsn..lsn + u64::from(sectors)).contains(&self.victim) {
            self.bad -= 1;
            let at = (self.victim - lsn) as usize * SECTOR as usize;
            match self.zeroes {
                true => out[at..at + SECTOR as usize].fill(0),
                false => out[at + 20] ^= 0x10,
            }
        }
        Ok(out)
    }
}

proptest! {
    /// Reads that come back wrong fewer than `READS` times in a row neither end the log early
    /// (dropping acknowledged entries) nor stop it as corrupt; every entry is replayed.
    #[test]
    fn misreads_do_not_shorten_recovery(n in 5usize..40, victim in 0usize..40, bad in 1usize..3, zeroes: bool) {
        let (disk, geo, lsns) = sequential_log(n);
        let victim = lsns[victim % n];
        let mut r = Misreading { disk, victim, bad, zeroes };
        let found = scan(&mut r, &geo, 0, 16).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(found.entries.len(), n);
        prop_assert_eq!(found.end, lsns[n]);
    }
}

/// Acknowledged pieces that straddle the contiguous end (a catch-up cut in buffer-sized pieces
/// over live entries already acknowledged) still move it; pieces beyond a hole wait for it.
#[test]
fn contiguous_end_takes_straddling_pieces() {
    let (mut acked, mut end) = (BTreeMap::new(), 100u64);
    advance_contiguous(&mut acked, &mut end, 100, 9);
    advance_contiguous(&mut acked, &mut end, 109, 17);
    assert_eq!(end, 126);
    advance_contiguous(&mut acked, &mut end, 150, 24); // beyond a hole
    assert_eq!(end, 126);
    advance_contiguous(&mut acked, &mut end, 120, 24); // straddles 126
    assert_eq!(end, 144);
    advance_contiguous(&mut acked, &mut end, 90, 5); // wholly below: ignored
    advance_contiguous(&mut acked, &mut end, 144, 6); // fills the hole
    assert_eq!(end, 174);
    assert!(acked.is_empty(), "{acked:?}");
}

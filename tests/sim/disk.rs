//! A simulated block device: latency drawn from the seeded generator, a volatile write cache
//! that a crash loses, writes torn block by block when a crash catches them in flight, and
//! (when switched on) I/O errors at a low rate: a failed read returns nothing, a failed write
//! or flush may have done any part of its work, as a real device's may; and reads that come back
//! wrong without an error (one byte flipped, or another place's blocks: a misdirected read),
//! the media itself unharmed.
//!
//! It implements ferrite's `Bdev`, so the change log, bunker and secondary code run on it
//! unchanged. Effects happen when an I/O's due time passes (not when it is submitted); a crash
//! keeps each cached or in-flight block with probability one half, independently, which models
//! both a lost cache and a torn multi-block write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ferrite::bdev::{BackendChannel, Bdev, BdevError, BdevIo, IoCompletion, IoStatus, IoType};
use ferrite::reactor::Nanos;
use ferrite::rng::Rng;

use crate::Clock;

struct Op {
    chan: u64,
    due: Nanos,
    io: BdevIo,
}

/// The device's contents and queue.
pub struct DiskState {
    block: usize,
    media: Vec<u8>,
    /// Blocks written but not yet durable.
    cache: BTreeMap<u64, Vec<u8>>,
    queue: Vec<Op>,
    done: BTreeMap<u64, Vec<IoCompletion>>,
    next_chan: u64,
    generation: u64,
    rng: Rng,
    clock: Clock,
    /// Complete every I/O at once (control-plane work such as recovery, which polls without
    /// letting virtual time pass).
    pub immediate: bool,
    /// One I/O in this many fails with EIO (0: none).
    error_one_in: u64,
    /// I/O errors returned so far.
    errors: u64,
    /// The last one: what it was and where.
    last_error: String,
    /// One read in this many comes back wrong (0: none).
    misread_one_in: u64,
    /// Reads that came back wrong so far.
    misreads: u64,
}

/// A simulated device.
#[derive(Clone)]
pub struct SimDisk {
    name: String,
    block_size: u32,
    blocks: u64,
    st: Arc<Mutex<DiskState>>,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimDisk({})", self.name)
    }
}

impl SimDisk {
    /// A zeroed device.
    pub fn new(name: &str, block_size: u32, blocks: u64, seed: u64, clock: Clock) -> SimDisk {
        let st = DiskState {
            block: block_size as usize,
            media: vec![0; block_size as usize * blocks as usize],
            cache: BTreeMap::new(),
            queue: Vec::new(),
            done: BTreeMap::new(),
            next_chan: 0,
            generation: 0,
            rng: Rng::new(seed),
            clock,
            immediate: false,
            error_one_in: 0,
            errors: 0,
            last_error: String::new(),
            misread_one_in: 0,
            misreads: 0,
        };
        SimDisk { name: name.into(), block_size, blocks, st: Arc::new(Mutex::new(st)) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.st.lock().expect("sim disk")
    }

    /// Power loss: each cached or in-flight written block survives with probability 1/2;
    /// queued I/O vanishes, and channels opened before the crash see nothing more.
    pub fn crash(&self) {
        let mut st = self.state();
        let cache = std::mem::take(&mut st.cache);
        for (lba, data) in cache {
            if st.rng.below(2) == 0 {
                st.put_media(lba, &data);
            }
        }
        for op in std::mem::take(&mut st.queue) {
            if let (IoType::Write, Some(buf)) = (op.io.ty, op.io.buf.as_ref()) {
                let b = st.block;
                for (i, chunk) in buf.as_slice().chunks(b).enumerate() {
                    if st.rng.below(2) == 0 {
                        st.put_media(op.io.offset_blocks + i as u64, chunk);
                    }
                }
            }
        }
        st.done.clear();
        st.generation += 1;
    }

    /// What a reader sees now (cache over media).
    pub fn view(&self) -> Vec<u8> {
        let st = self.state();
        let mut out = st.media.clone();
        for (lba, data) in &st.cache {
            let at = *lba as usize * st.block;
            out[at..at + st.block].copy_from_slice(data);
        }
        out
    }

    /// Sets or clears immediate completion.
    pub fn set_immediate(&self, on: bool) {
        self.state().immediate = on;
    }

    /// Makes one I/O in `one_in` fail (0: none).
    pub fn set_errors(&self, one_in: u64) {
        self.state().error_one_in = one_in;
    }

    /// Makes one read in `one_in` come back wrong (0: none).
    pub fn set_misreads(&self, one_in: u64) {
        self.state().misread_one_in = one_in;
    }

    /// Reads that came back wrong so far.
    pub fn misreads(&self) -> u64 {
        self.state().misreads
    }

    /// I/O errors returned so far.
    pub fn errors(&self) -> u64 {
        self.state().errors
    }

    /// The last I/O error: its kind, blocks and device.
    pub fn last_error(&self) -> String {
        format!("{} on {}", self.state().last_error, self.name)
    }

    /// The earliest due time of queued I/O.
    pub fn next_due(&self) -> Option<Nanos> {
        self.state().queue.iter().map(|o| o.due).min()
    }
}

impl DiskState {
    fn put_media(&mut self, lba: u64, data: &[u8]) {
        let at = lba as usize * self.block;
        self.media[at..at + data.len()].copy_from_slice(data);
    }

    fn latency(&mut self) -> Nanos {
        crate::delay(&mut self.rng, (10_000, 100_000), 100, 5_000_000)
    }

    /// Runs every queued I/O whose time has come, in due order.
    fn advance(&mut self) {
        let now = self.clock.now();
        let immediate = self.immediate;
        self.queue.sort_by_key(|o| o.due);
        let split = self.queue.iter().position(|o| !(immediate || o.due <= now)).unwrap_or(self.queue.len());
        let ready: Vec<Op> = self.queue.drain(..split).collect();
        for mut op in ready {
            let status = if self.error_one_in > 0 && self.rng.below(self.error_one_in) == 0 {
                self.fail(&op.io)
            } else {
                self.execute(&mut op.io)
            };
            self.done.entry(op.chan).or_default().push(IoCompletion::of(op.io, status));
        }
    }

    fn execute(&mut self, io: &mut BdevIo) -> IoStatus {
        let b = self.block;
        let first = io.offset_blocks;
        match io.ty {
            IoType::Read => {
                let buf = io.buf.as_mut().expect("validated read has a buffer");
                let mut first = first;
                let wrong = self.misread_one_in > 0 && self.rng.below(self.misread_one_in) == 0;
                let misdirected = wrong && self.rng.below(2) == 0;
                if misdirected {
                    let blocks = (self.media.len() / b) as u64;
                    first = (first + 1 + self.rng.below(64)) % (blocks - u64::from(io.num_blocks) + 1);
                }
                for (i, chunk) in buf.as_mut_slice().chunks_mut(b).enumerate() {
                    let lba = first + i as u64;
                    match self.cache.get(&lba) {
                        Some(d) => chunk.copy_from_slice(d),
                        None => chunk.copy_from_slice(&self.media[lba as usize * b..(lba as usize + 1) * b]),
                    }
                }
                if wrong && !misdirected {
                    let at = self.rng.below(buf.len() as u64) as usize;
                    buf.as_mut_slice()[at] ^= 1 << self.rng.below(8);
                }
                self.misreads += u64::from(wrong);
            }
            IoType::Write => {
                let data = io.buf.as_ref().expect("validated write has a buffer").as_slice().to_vec();
                self.store(first, &data, io.fua);
            }
            IoType::WriteZeroes | IoType::Unmap => {
                self.store(first, &vec![0; io.num_blocks as usize * b], io.fua);
            }
            IoType::Flush => {
                for (lba, data) in std::mem::take(&mut self.cache) {
                    self.put_media(lba, &data);
                }
            }
        }
        IoStatus::Success
    }

    /// An I/O error: a write or flush may have done any part of its work (each block
    /// independently), a read returns nothing.
    fn fail(&mut self, io: &BdevIo) -> IoStatus {
        self.errors += 1;
        self.last_error = format!("{:?} of {} blocks at {}", io.ty, io.num_blocks, io.offset_blocks);
        let b = self.block;
        match (io.ty, io.buf.as_ref()) {
            (IoType::Write, Some(buf)) => {
                for (i, chunk) in buf.as_slice().chunks(b).enumerate() {
                    if self.rng.below(2) == 0 {
                        self.store(io.offset_blocks + i as u64, chunk, io.fua);
                    }
                }
            }
            (IoType::WriteZeroes | IoType::Unmap, _) => {
                for lba in io.offset_blocks..io.offset_blocks + u64::from(io.num_blocks) {
                    if self.rng.below(2) == 0 {
                        self.store(lba, &vec![0; b], io.fua);
                    }
                }
            }
            (IoType::Flush, _) => {
                for (lba, data) in std::mem::take(&mut self.cache) {
                    match self.rng.below(2) {
                        0 => self.put_media(lba, &data),
                        _ => drop(self.cache.insert(lba, data)),
                    }
                }
            }
            _ => {}
        }
        IoStatus::IoError(libc::EIO)
    }

    fn store(&mut self, first: u64, data: &[u8], fua: bool) {
        for (i, chunk) in data.chunks(self.block).enumerate() {
            let lba = first + i as u64;
            if fua {
                self.cache.remove(&lba);
                self.put_media(lba, chunk);
            } else {
                self.cache.insert(lba, chunk.to_vec());
            }
        }
    }
}

impl Bdev for SimDisk {
    fn name(&self) -> &str {
        &self.name
    }
    fn product_name(&self) -> &'static str {
        "Simulated disk"
    }
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn num_blocks(&self) -> u64 {
        self.blocks
    }
    fn uuid(&self) -> [u8; 16] {
        [7; 16]
    }
    fn volatile_write_cache(&self) -> bool {
        true
    }
    fn supports(&self, _ty: IoType) -> bool {
        true
    }
    fn open_backend(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        let mut st = self.state();
        st.next_chan += 1;
        Ok(Box::new(SimChannel {
            id: st.next_chan,
            generation: st.generation,
            st: self.st.clone(),
            inflight: 0,
        }))
    }
}

struct SimChannel {
    id: u64,
    generation: u64,
    st: Arc<Mutex<DiskState>>,
    inflight: usize,
}

impl BackendChannel for SimChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        let mut st = self.st.lock().expect("sim disk");
        if st.generation != self.generation {
            return Err(io);
        }
        let due = st.clock.now() + st.latency();
        st.queue.push(Op { chan: self.id, due, io });
        self.inflight += 1;
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<IoCompletion>) -> usize {
        let mut st = self.st.lock().expect("sim disk");
        if st.generation != self.generation {
            return 0;
        }
        st.advance();
        let done = st.done.remove(&self.id).unwrap_or_default();
        self.inflight -= done.len();
        let n = done.len();
        out.extend(done);
        n
    }

    fn in_flight(&self) -> usize {
        self.inflight
    }
}

//! The lifecycle of one command on a queue pair, as a state machine.
//!
//! ```text
//!         capsule    plan + checks
//!   Free ──────► New ─────┬──────────────► Executing ──► Free   (response queued)
//!                 │ error: response queued at once ─────────► Free
//!     │               │                   ▲
//!     │ no buffer or  │ needs host data   │ all H2CData in
//!     ▼ bdev queue    ▼ (R2T sent)        │
//!   Waiting ───► AwaitingH2C ─────────────┘
//!     │
//!     └──────────► Executing
//!   New ──► Executing ──► AwaitingAer ──► Free   (asynchronous event requests)
//! ```
//!
//! Every transition goes through [`Requests::set_state`], which asserts that it is legal and
//! counts it, so a stuck or leaked request shows in the counters. A slot's index is both its
//! R2T transfer tag (ttag) and its bdev tag.

use crate::nvmf::spec::{Sqe, Status};
use crate::sys::DmaBuf;

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqState {
    /// Slot unused.
    Free,
    /// Taken by a capsule, not started.
    New,
    /// Waiting for a DMA buffer or room in the bdev queue; retried every poll.
    Waiting,
    /// R2T sent; collecting H2CData.
    AwaitingH2C,
    /// Running on the bdev (or admin code).
    Executing,
    /// An AER parked until an event.
    AwaitingAer,
}

impl ReqState {
    fn index(self) -> usize {
        self as usize
    }

    fn may_become(self, next: ReqState) -> bool {
        use ReqState::*;
        matches!(
            (self, next),
            (New, Waiting | AwaitingH2C | Executing | AwaitingAer | Free)
                | (Waiting, AwaitingH2C | Executing | Free)
                | (AwaitingH2C, Executing | Free)
                | (Executing, Free | Waiting | AwaitingAer)
                | (AwaitingAer, Free)
        )
    }
}

/// Number of states (for counters).
pub const STATES: usize = 6;

/// One command.
#[derive(Debug)]
pub struct Request {
    /// State.
    pub state: ReqState,
    /// The command.
    pub sqe: Sqe,
    /// Data buffer (host data in, or data for the host).
    pub buf: Option<DmaBuf>,
    /// Bytes the command transfers.
    pub xfer_len: u32,
    /// Host data received so far (R2T flow).
    pub received: u32,
    /// Bdev operations still running (Dataset Management issues several).
    pub pending_ops: u32,
    /// Worst status seen so far.
    pub status: Status,
}

impl Request {
    fn empty() -> Request {
        Request {
            state: ReqState::Free,
            sqe: Sqe::default(),
            buf: None,
            xfer_len: 0,
            received: 0,
            pending_ops: 0,
            status: Status::SUCCESS,
        }
    }

    /// Records a failure (the first one wins).
    pub fn fail(&mut self, status: Status) {
        if self.status.is_success() {
            self.status = status;
        }
    }
}

/// The request slots of one queue pair.
#[derive(Debug)]
pub struct Requests {
    slots: Vec<Request>,
    free: Vec<u16>,
    cids: Vec<u64>,
    occupancy: [usize; STATES],
    /// Transitions into each state.
    pub entered: [u64; STATES],
}

impl Requests {
    /// `n` free slots.
    pub fn new(n: u16) -> Requests {
        Requests {
            slots: (0..n).map(|_| Request::empty()).collect(),
            free: (0..n).rev().collect(),
            cids: vec![0; 65536 / 64],
            occupancy: [n as usize, 0, 0, 0, 0, 0],
            entered: [0; STATES],
        }
    }

    /// Takes a slot for `sqe`; `Err(true)` when the cid is already outstanding, `Err(false)`
    /// when every slot is in use.
    pub fn alloc(&mut self, sqe: &Sqe) -> Result<u16, bool> {
        let (word, bit) = (usize::from(sqe.cid) / 64, sqe.cid % 64);
        if self.cids[word] & (1 << bit) != 0 {
            return Err(true);
        }
        let idx = self.free.pop().ok_or(false)?;
        self.cids[word] |= 1 << bit;
        self.occupancy[ReqState::Free.index()] -= 1;
        self.occupancy[ReqState::New.index()] += 1;
        let r = &mut self.slots[usize::from(idx)];
        debug_assert_eq!(r.state, ReqState::Free);
        *r = Request { sqe: *sqe, state: ReqState::New, ..Request::empty() };
        Ok(idx)
    }

    /// Moves slot `idx` to `next`; asserts the transition is legal.
    pub fn set_state(&mut self, idx: u16, next: ReqState) {
        let r = &mut self.slots[usize::from(idx)];
        assert!(
            r.state.may_become(next),
            "illegal request transition {:?} -> {next:?} (cid {})",
            r.state,
            r.sqe.cid
        );
        self.occupancy[r.state.index()] -= 1;
        r.state = next;
        self.entered[next.index()] += 1;
        self.occupancy[next.index()] += 1;
        if next == ReqState::Free {
            let cid = r.sqe.cid;
            self.cids[usize::from(cid) / 64] &= !(1 << (cid % 64));
            r.buf = None;
            self.free.push(idx);
        }
    }

    /// The request in slot `idx`.
    pub fn get(&mut self, idx: u16) -> &mut Request {
        &mut self.slots[usize::from(idx)]
    }

    /// Slot `idx` if it is in `state`.
    pub fn get_in(&mut self, idx: u16, state: ReqState) -> Option<&mut Request> {
        self.slots.get_mut(usize::from(idx)).filter(|r| r.state == state)
    }

    /// Requests now in `state`.
    pub fn count(&self, state: ReqState) -> usize {
        self.occupancy[state.index()]
    }

    /// Number of slots.
    pub fn len(&self) -> u16 {
        self.slots.len() as u16
    }

    /// Whether there are no slots at all.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots in use.
    pub fn busy(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_and_cid_conflicts() {
        let mut r = Requests::new(2);
        let sqe = Sqe { cid: 7, ..Sqe::default() };
        let a = r.alloc(&sqe).unwrap();
        assert_eq!(r.alloc(&sqe), Err(true));
        let b = r.alloc(&Sqe { cid: 8, ..Sqe::default() }).unwrap();
        assert_eq!(r.alloc(&Sqe { cid: 9, ..Sqe::default() }), Err(false));
        assert_eq!(r.count(ReqState::New), 2);
        r.set_state(a, ReqState::AwaitingH2C);
        r.set_state(a, ReqState::Executing);
        r.set_state(a, ReqState::Free);
        r.set_state(b, ReqState::Executing);
        r.set_state(b, ReqState::Free);
        assert_eq!(r.busy(), 0);
        assert_eq!(r.count(ReqState::Free), 2);
        assert!(r.alloc(&sqe).is_ok());
    }

    #[test]
    #[should_panic(expected = "illegal request transition")]
    fn illegal_transition_panics() {
        let mut r = Requests::new(1);
        let a = r.alloc(&Sqe::default()).unwrap();
        r.set_state(a, ReqState::AwaitingAer);
        r.set_state(a, ReqState::Executing);
    }
}

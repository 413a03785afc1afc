//! Messages between reactors and from the control plane, and each reactor's mailbox.
//!
//! A message is a fixed-size value (a boxed call or a built-in request) moved through a bounded
//! ring: per ordered reactor pair an SPSC ring; from the control plane a bounded MPMC
//! `ArrayQueue` (the control plane is off the data path). The mailbox's doorbell wakes a
//! reactor that sleeps in the adaptive idle policy.
//!
//! Wake protocol (no lost wake-ups): the sleeper stores `sleeping = true` (SeqCst), re-checks
//! its rings, then waits; the sender pushes, then loads `sleeping` (SeqCst) and rings the
//! doorbell if set. One of the two always sees the other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

use crossbeam_queue::ArrayQueue;

use super::poller::PollCtx;
use super::stats::ReactorSnapshot;
use crate::sys::event::EventFd;

/// A closure run on the target reactor.
pub type Call = Box<dyn FnOnce(&mut PollCtx<'_>) + Send>;

/// One message to a reactor.
pub enum Message {
    /// Run this on the reactor.
    Call(Call),
    /// Reply with the reactor's statistics.
    Snapshot(SyncSender<ReactorSnapshot>),
    /// Stop the reactor's loop.
    Stop,
}

impl Message {
    /// A `Call` message.
    pub fn call(f: impl FnOnce(&mut PollCtx<'_>) + Send + 'static) -> Message {
        Message::Call(Box::new(f))
    }
}

/// Capacity of the control-plane queue of each reactor.
pub const CONTROL_QUEUE_CAPACITY: usize = 1024;

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

/// The shared part of a reactor's inbox.
pub struct Mailbox {
    control: ArrayQueue<Message>,
    doorbell: EventFd,
    sleeping: AtomicBool,
}

impl Mailbox {
    /// A mailbox with an empty control queue.
    pub fn new() -> std::io::Result<Mailbox> {
        Ok(Mailbox {
            control: ArrayQueue::new(CONTROL_QUEUE_CAPACITY),
            doorbell: EventFd::new()?,
            sleeping: AtomicBool::new(false),
        })
    }

    /// Queues a control-plane message and wakes the reactor if it sleeps.
    pub fn push_control(&self, msg: Message) -> Result<(), Message> {
        self.control.push(msg)?;
        self.ring_doorbell_if_sleeping();
        Ok(())
    }

    pub(crate) fn pop_control(&self) -> Option<Message> {
        self.control.pop()
    }

    pub(crate) fn has_control(&self) -> bool {
        !self.control.is_empty()
    }

    /// Rings the doorbell when the reactor is (about to be) asleep.
    pub fn ring_doorbell_if_sleeping(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            self.doorbell.notify();
        }
    }

    pub(crate) fn set_sleeping(&self, sleeping: bool) {
        self.sleeping.store(sleeping, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    pub(crate) fn doorbell(&self) -> &EventFd {
        &self.doorbell
    }
}

//! A bounded single-producer single-consumer ring.
//!
//! The producer owns `tail` (next slot to write), the consumer owns `head` (next slot to read);
//! each reads the other's index with Acquire and publishes its own with Release. Each side
//! caches the other's last seen index so the common case touches only its own cache line.
//! Capacity is a power of two; indices run freely and are masked on use.
//! Invariants: `head <= tail <= head + capacity`; a slot between head and tail holds an
//! initialised value; [`Producer`] and [`Consumer`] are not `Clone`, so there is exactly one of
//! each.

use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[repr(align(128))]
struct Line(AtomicUsize);

struct Shared<T> {
    head: Line,
    tail: Line,
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: slots are handed from one producer thread to one consumer thread with Release/Acquire
// ordering on the indices, so each value is accessed by one thread at a time; T must be Send.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Shared<T> {}

/// The sending half.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: usize,
    head_cache: Cell<usize>,
}

/// The receiving half.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    tail_cache: Cell<usize>,
}

/// Creates a ring holding up to `capacity` values (rounded up to a power of two).
pub fn spsc<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(capacity > 0, "ring capacity must be positive");
    let cap = capacity.next_power_of_two();
    let slots = (0..cap).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let shared = Arc::new(Shared {
        head: Line(AtomicUsize::new(0)),
        tail: Line(AtomicUsize::new(0)),
        mask: cap - 1,
        slots,
    });
    let producer = Producer { shared: shared.clone(), tail: 0, head_cache: Cell::new(0) };
    let consumer = Consumer { shared, head: 0, tail_cache: Cell::new(0) };
    (producer, consumer)
}

impl<T> Producer<T> {
    /// Appends `value`, or hands it back when the ring is full.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        let cap = self.shared.mask + 1;
        if self.tail - self.head_cache.get() == cap {
            self.head_cache.set(self.shared.head.0.load(Ordering::Acquire));
            if self.tail - self.head_cache.get() == cap {
                return Err(value);
            }
        }
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: the slot lies outside [head, tail), so the consumer does not touch it, and we
        // are the only producer.
        unsafe { (*slot.get()).write(value) };
        self.tail += 1;
        self.shared.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Values the ring can still take (a lower bound).
    pub fn free(&self) -> usize {
        let head = self.shared.head.0.load(Ordering::Acquire);
        self.shared.mask + 1 - (self.tail - head)
    }
}

impl<T> Consumer<T> {
    /// Takes the oldest value, if any.
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.tail_cache.get() {
            self.tail_cache.set(self.shared.tail.0.load(Ordering::Acquire));
            if self.head == self.tail_cache.get() {
                return None;
            }
        }
        let slot = &self.shared.slots[self.head & self.shared.mask];
        // SAFETY: the slot lies inside [head, tail): the producer initialised it and published
        // it with Release, observed by our Acquire load of tail.
        let value = unsafe { (*slot.get()).assume_init_read() };
        self.head += 1;
        self.shared.head.0.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Whether the ring looks empty (exact for the consumer itself).
    pub fn is_empty(&self) -> bool {
        self.head == self.shared.tail.0.load(Ordering::Acquire)
    }

    /// Values waiting.
    pub fn len(&self) -> usize {
        self.shared.tail.0.load(Ordering::Acquire) - self.head
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        for i in head..tail {
            // SAFETY: slots in [head, tail) are initialised and no other handle exists any more.
            unsafe { self.slots[i & self.mask].get_mut().assume_init_drop() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_full() {
        let (mut p, mut c) = spsc::<u32>(4);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(9));
        assert_eq!(c.len(), 4);
        assert_eq!(c.pop(), Some(0));
        p.push(4).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| c.pop()).collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert!(c.is_empty());
    }

    #[test]
    fn drops_leftovers() {
        let (mut p, c) = spsc::<Arc<()>>(8);
        let tracker = Arc::new(());
        p.push(tracker.clone()).unwrap();
        p.push(tracker.clone()).unwrap();
        drop(p);
        drop(c);
        assert_eq!(Arc::strong_count(&tracker), 1);
    }

    #[test]
    fn cross_thread_order() {
        const N: u64 = 200_000;
        let (mut p, mut c) = spsc::<u64>(64);
        let t = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                if p.push(i).is_ok() {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expect = 0;
        while expect < N {
            if let Some(v) = c.pop() {
                assert_eq!(v, expect);
                expect += 1;
            }
        }
        t.join().unwrap();
    }
}

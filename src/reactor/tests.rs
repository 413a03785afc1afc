//! Reactor tests, stepped on the test thread with virtual time, plus threaded runtime tests for
//! both idle policies.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

struct Counter {
    name: &'static str,
    hits: Rc<Cell<u32>>,
    stop_after: u32,
}

impl Poller for Counter {
    fn name(&self) -> &str {
        self.name
    }
    fn poll(&mut self, _cx: &mut PollCtx<'_>) -> PollStatus {
        self.hits.set(self.hits.get() + 1);
        if self.hits.get() >= self.stop_after {
            PollStatus::Done
        } else {
            PollStatus::Busy
        }
    }
}

#[test]
fn pollers_run_until_done() {
    let mut rs = Reactor::local_set(1).unwrap();
    let hits = Rc::new(Cell::new(0));
    rs[0].add_poller(Box::new(Counter { name: "c", hits: hits.clone(), stop_after: 3 }), 0);
    assert!(rs[0].poll_once(1));
    assert!(rs[0].poll_once(2));
    assert!(rs[0].poll_once(3));
    assert_eq!(rs[0].poller_count(), 0);
    assert!(!rs[0].poll_once(4));
    assert_eq!(hits.get(), 3);
}

#[test]
fn timed_poller_runs_on_its_period() {
    let mut rs = Reactor::local_set(1).unwrap();
    let hits = Rc::new(Cell::new(0));
    let p = Counter { name: "t", hits: hits.clone(), stop_after: u32::MAX };
    rs[0].add_timed_poller(1000, Box::new(p), 0);
    assert_eq!(rs[0].next_timer_due(), Some(1000));
    rs[0].poll_once(500);
    assert_eq!(hits.get(), 0);
    rs[0].poll_once(1000);
    assert_eq!(hits.get(), 1);
    rs[0].poll_once(1500);
    assert_eq!(hits.get(), 1);
    rs[0].poll_once(2000);
    assert_eq!(hits.get(), 2);
    let snap = rs[0].snapshot();
    assert_eq!(snap.pollers[0].busy_count, 2);
}

#[test]
fn messages_cross_between_stepped_reactors() {
    let mut rs = Reactor::local_set(2).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    // Reactor 0 sends to reactor 1, which replies to reactor 0.
    rs[0]
        .mailbox()
        .push_control(Message::call(move |cx| {
            let s2 = s.clone();
            cx.send(
                1,
                Message::call(move |cx| {
                    assert_eq!(cx.reactor(), 1);
                    s2.fetch_add(1, Ordering::SeqCst);
                    cx.send(
                        0,
                        Message::call(move |_| {
                            s2.fetch_add(10, Ordering::SeqCst);
                        }),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap();
                }),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        }))
        .map_err(|_| ())
        .unwrap();
    for t in 0..3 {
        rs[0].poll_once(t);
        rs[1].poll_once(t);
    }
    assert_eq!(seen.load(Ordering::SeqCst), 11);
}

#[test]
fn peer_ring_is_bounded() {
    let mut rs = Reactor::local_set(2).unwrap();
    let full = Arc::new(AtomicU64::new(0));
    let f = full.clone();
    rs[0]
        .mailbox()
        .push_control(Message::call(move |cx| {
            for _ in 0..PEER_RING_CAPACITY + 10 {
                if cx.send(1, Message::call(|_| {})).is_err() {
                    f.fetch_add(1, Ordering::SeqCst);
                }
            }
        }))
        .map_err(|_| ())
        .unwrap();
    rs[0].poll_once(0);
    assert_eq!(full.load(Ordering::SeqCst), 10);
}

fn runtime(policy: IdlePolicy) -> Runtime {
    Runtime::start(RuntimeConfig {
        cores: vec![0, 1],
        idle_policy: policy,
        idle_spell_us: 100,
        max_sleep_ms: 50,
        pin: false,
    })
    .unwrap()
}

fn round_trips(rt: &Runtime) {
    for _ in 0..50 {
        for h in rt.handles() {
            let id = h.call(|cx| cx.reactor()).unwrap();
            assert_eq!(id, h.id());
        }
    }
    // Cross-reactor: reactor 0 asks reactor 1 and waits for the reply through reactor 0.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.handles()[0]
        .send(Message::call(move |cx| {
            cx.send(1, Message::call(move |cx| tx.send(cx.reactor()).unwrap())).map_err(|(e, _)| e).unwrap();
        }))
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
}

#[test]
fn adaptive_runtime_sleeps_and_wakes() {
    let rt = runtime(IdlePolicy::Adaptive);
    round_trips(&rt);
    std::thread::sleep(Duration::from_millis(100));
    let snap = rt.handles()[0].snapshot().unwrap();
    assert!(snap.counters.sleeps > 0, "an idle adaptive reactor sleeps: {snap:?}");
    rt.shutdown();
}

#[test]
fn busy_runtime_spins() {
    let rt = runtime(IdlePolicy::Busy);
    round_trips(&rt);
    std::thread::sleep(Duration::from_millis(20));
    let snap = rt.handles()[1].snapshot().unwrap();
    assert_eq!(snap.counters.sleeps, 0);
    assert!(snap.counters.idle_polls > 1000, "a busy reactor spins: {snap:?}");
    rt.shutdown();
}

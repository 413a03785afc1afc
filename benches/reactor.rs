//! Reactor benchmarks: the cost of one empty poll (no pollers, and with idle pollers), and a
//! message round trip between two busy-polling reactor threads.

use std::hint::black_box;
use std::sync::mpsc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ferrite::reactor::{IdlePolicy, Message, PollCtx, PollStatus, Poller, Reactor, Runtime, RuntimeConfig};

struct Idle;

impl Poller for Idle {
    fn name(&self) -> &str {
        "idle"
    }
    fn poll(&mut self, _cx: &mut PollCtx<'_>) -> PollStatus {
        PollStatus::Idle
    }
}

fn empty_poll(c: &mut Criterion) {
    let mut g = c.benchmark_group("reactor_poll");
    let mut rs = Reactor::local_set(1).unwrap();
    let mut now = 0;
    g.bench_function("empty", |b| {
        b.iter(|| {
            now += 1;
            black_box(rs[0].poll_once(now))
        })
    });
    for _ in 0..8 {
        rs[0].add_poller(Box::new(Idle), now);
    }
    g.bench_function("eight_idle_pollers", |b| {
        b.iter(|| {
            now += 1;
            black_box(rs[0].poll_once(now))
        })
    });
    g.finish();
}

fn message_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("reactor_message");
    g.measurement_time(Duration::from_secs(3));
    let rt = Runtime::start(RuntimeConfig {
        cores: vec![0, 1],
        idle_policy: IdlePolicy::Busy,
        idle_spell_us: 0,
        max_sleep_ms: 10,
        pin: true,
    })
    .unwrap();
    // Reactor 0 sends to reactor 1 over the peer ring; reactor 1 answers through a channel.
    g.bench_function("cross_reactor_round_trip", |b| {
        b.iter(|| {
            let (tx, rx) = mpsc::sync_channel(1);
            rt.handles()[0]
                .send(Message::call(move |cx| {
                    let _ = cx.send(1, Message::call(move |_| tx.send(()).unwrap()));
                }))
                .unwrap();
            rx.recv().unwrap();
        })
    });
    g.finish();
    rt.shutdown();
}

criterion_group!(benches, empty_poll, message_round_trip);
criterion_main!(benches);

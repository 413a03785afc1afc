//! Ring benchmarks: push+pop on one thread, and a cross-core round trip (ping over one SPSC
//! ring, pong over another), against crossbeam's ArrayQueue as the baseline.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_queue::ArrayQueue;
use ferrite::ring::spsc;

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_single_thread");
    let (mut p, mut q) = spsc::<u64>(1024);
    g.bench_function("spsc_push_pop", |b| {
        b.iter(|| {
            p.push(black_box(7)).unwrap();
            black_box(q.pop().unwrap());
        })
    });
    let aq = ArrayQueue::<u64>::new(1024);
    g.bench_function("arrayqueue_push_pop", |b| {
        b.iter(|| {
            aq.push(black_box(7)).unwrap();
            black_box(aq.pop().unwrap());
        })
    });
    g.finish();
}

fn cross_core(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_cross_core");
    let (mut ping_tx, mut ping_rx) = spsc::<u64>(64);
    let (mut pong_tx, mut pong_rx) = spsc::<u64>(64);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let echo = std::thread::spawn(move || {
        ferrite::sys::affinity::pin_current_thread(1);
        while !s.load(Ordering::Relaxed) {
            if let Some(v) = ping_rx.pop() {
                while pong_tx.push(v).is_err() {}
            }
        }
    });
    ferrite::sys::affinity::pin_current_thread(0);
    g.bench_function("spsc_round_trip", |b| {
        b.iter(|| {
            ping_tx.push(1).unwrap();
            loop {
                if let Some(v) = pong_rx.pop() {
                    break black_box(v);
                }
                std::hint::spin_loop();
            }
        })
    });
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    g.finish();
}

criterion_group!(benches, single_thread, cross_core);
criterion_main!(benches);

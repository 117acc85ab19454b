//! What a source costs when it is quiet, measured with a counting global allocator: the
//! heap bytes of 100,000 sources that sent one record each, a source that had holes once
//! it is back in order, and 1,000 sources appearing at once.
//!
//! The allocator's counters are global to the process, so this binary runs without libtest
//! (`harness = false`), its tests one after another on the main thread (see
//! `testkit::run_tests`).

use std::alloc::System;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use ncrx_core::{Receiver, ReceiverConfig};
use netpoll_frame::Instant;
use testkit::heap::{self, INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes an idle in-order source may cost, all included (its stream's ring, bitmap and
/// buffers, the receiver's slab entry, key index and timer entries): about 4 KiB.
const IDLE_SOURCE_BYTES: i64 = 4096;

fn source(i: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 6665))
}

fn record(seq: u64) -> Vec<u8> {
    format!(
        "6,{seq},{},-;an ordinary kernel message {seq}\n",
        3_600_000_000 + seq
    )
    .into_bytes()
}

fn drain(rx: &mut Receiver) -> usize {
    let mut n = 0;
    rx.drain_events(|_, _| n += 1);
    let mut buf = [0u8; 1000];
    while rx.poll_transmit(&mut buf).is_some() {}
    n
}

/// 100,000 sources, one record each (a stream joined in the middle: nothing to ask for),
/// then quiet for a minute: the heap bytes per source, everything counted.
fn idle_sources_cost_about_4_kib_each() {
    const SOURCES: u32 = 100_000;
    let mut config = ReceiverConfig::default();
    config.max_sources = SOURCES as usize;
    let before = heap::in_use(GLOBAL);
    let mut rx: Receiver = Receiver::new(config);
    let t = Instant::from_millis(1000);
    let mut delivered = 0;
    for i in 0..SOURCES {
        rx.handle_datagram(t, &source(i), &record(1_000_000 + u64::from(i)));
        delivered += drain(&mut rx);
    }
    assert_eq!(delivered, SOURCES as usize);
    let idle = t + Duration::from_secs(60);
    rx.handle_timeout(idle);
    drain(&mut rx);
    assert_eq!(rx.sources(), SOURCES as usize);
    let used = heap::in_use(GLOBAL) - before;
    let per_source = used / i64::from(SOURCES);
    println!(
        "{SOURCES} idle sources: {used} heap bytes, {per_source} a source (memory_used {} a source)",
        rx.memory_used() / SOURCES as usize
    );
    assert!(
        per_source <= IDLE_SOURCE_BYTES,
        "{per_source} bytes a source"
    );
    drop(rx);
}

/// A source that had holes (its ring grown for them) gives the memory back once it is in
/// order again for eight times as long as its ring, and once it is quiet.
fn a_source_back_in_order_gives_its_ring_back() {
    let before = heap::in_use(GLOBAL);
    let mut rx: Receiver = Receiver::new(ReceiverConfig::default());
    let src = source(1);
    let mut t = Instant::from_millis(1000);
    let mut seq = 1_000_000;
    // A lossy stretch: every third record lost, a thousand records.
    for _ in 0..1000 {
        t += Duration::from_millis(1);
        if seq % 3 != 0 {
            rx.handle_datagram(t, &src, &record(seq));
        }
        seq += 1;
        drain(&mut rx);
    }
    let lossy = heap::in_use(GLOBAL) - before;
    // The holes are given up on (the sender does not answer), then twenty thousand in
    // order (more than eight times the ring the holes needed).
    t += Duration::from_secs(2);
    rx.handle_timeout(t);
    for _ in 0..20_000 {
        t += Duration::from_millis(1);
        rx.handle_datagram(t, &src, &record(seq));
        seq += 1;
        drain(&mut rx);
    }
    let in_order = heap::in_use(GLOBAL) - before;
    println!("one source: {lossy} heap bytes with holes, {in_order} back in order");
    assert!(lossy > 64 * 1024, "{lossy}");
    assert!(in_order <= IDLE_SOURCE_BYTES + 2048, "{in_order}");

    drop(rx);

    // Holes again, then a record every 5 s: a stream with nothing open for 10 s gives its
    // ring back at its next timer call (here the receiver's idle check, every 30 s).
    let before = heap::in_use(GLOBAL);
    let mut config = ReceiverConfig::default();
    config.idle_timeout = Duration::from_secs(30);
    let mut rx: Receiver = Receiver::new(config);
    for _ in 0..1000 {
        t += Duration::from_millis(1);
        if seq % 3 != 0 {
            rx.handle_datagram(t, &src, &record(seq));
        }
        seq += 1;
        drain(&mut rx);
    }
    let lossy = heap::in_use(GLOBAL) - before;
    for _ in 0..24 {
        t += Duration::from_secs(5);
        while let Some(deadline) = rx.poll_timeout().filter(|&d| d <= t) {
            rx.handle_timeout(deadline);
            drain(&mut rx);
        }
        rx.handle_datagram(t, &src, &record(seq));
        seq += 1;
        drain(&mut rx);
    }
    assert_eq!(rx.sources(), 1);
    let quiet = heap::in_use(GLOBAL) - before;
    println!("one source: {lossy} heap bytes with holes, {quiet} after two quiet minutes");
    assert!(quiet <= IDLE_SOURCE_BYTES + 2048, "{quiet}");
    drop(rx);
}

/// 1,000 sources appearing at once allocate no window each: creating a source is a few
/// small buffers.
fn a_thousand_new_sources_are_cheap() {
    let before = heap::in_use(GLOBAL);
    let mut rx: Receiver = Receiver::new(ReceiverConfig::default());
    let t = Instant::from_millis(1000);
    let allocations = heap::allocations(GLOBAL);
    for i in 0..1000 {
        rx.handle_datagram(t, &source(i), &record(1_000_000));
    }
    let made = heap::allocations(GLOBAL) - allocations;
    drain(&mut rx);
    let used = heap::in_use(GLOBAL) - before;
    println!("1000 new sources: {used} heap bytes, {made} allocations");
    assert!(used / 1000 <= IDLE_SOURCE_BYTES, "{used}");
    assert!(made <= 1000 * 8, "{made} allocations");
    drop(rx);
}

fn main() {
    testkit::run_tests(&[
        (
            "idle_sources_cost_about_4_kib_each",
            idle_sources_cost_about_4_kib_each,
        ),
        (
            "a_source_back_in_order_gives_its_ring_back",
            a_source_back_in_order_gives_its_ring_back,
        ),
        (
            "a_thousand_new_sources_are_cheap",
            a_thousand_new_sources_are_cheap,
        ),
    ]);
}

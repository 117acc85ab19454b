//! The multi-source front: keys, limits, eviction, the byte budget over all sources, and the
//! batch calls (`drain_events`, `handle_datagram_and_drain`).

mod common;

use core::time::Duration;
use std::net::SocketAddr;
use testkit::SplitMix64 as Rng;

use common::{Ev, body, drain_rx, hostile_datagram, rec};
use ncrx_core::{Receiver, ReceiverConfig, StreamConfig};
use netpoll_frame::Instant;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

#[test]
fn sources_are_ip_and_port() {
    let mut rx: Receiver = Receiver::new(ReceiverConfig::libncrx());
    let a = addr("192.0.2.1:6665");
    let b = addr("192.0.2.1:6667");
    rx.handle_datagram(t(1), &a, &rec(5, 1));
    rx.handle_datagram(t(1), &b, &rec(5, 1));
    rx.handle_datagram(t(1), &a, &rec(7, 3));
    assert_eq!(rx.sources(), 2);
    assert_eq!(
        drain_rx(&mut rx),
        [(a, Ev::Rec(5, body(5))), (b, Ev::Rec(5, body(5)))]
    );
    // a's hole is asked for from a, at its deadline.
    assert_eq!(rx.poll_timeout(), Some(t(1001)));
    rx.handle_timeout(t(1001));
    let mut buf = [0u8; 1000];
    let (to, n) = rx.poll_transmit(&mut buf).unwrap();
    assert_eq!((to, &buf[..n]), (a, &b"ncrx5 6"[..]));
    assert!(rx.poll_transmit(&mut buf).is_none());
    assert_eq!(rx.stats().streams.delivered, 2);
    assert_eq!(rx.stats().streams.responses, 1);
}

#[test]
fn full_table_refuses_then_evicts_the_least_recent_after_its_quiet_time() {
    let mut config = ReceiverConfig::libncrx();
    config.max_sources = 2;
    config.evict_when_full_after = Duration::from_secs(10);
    let mut rx: Receiver<u32> = Receiver::new(config);
    rx.handle_datagram(t(0), &1, &rec(0, 0));
    rx.handle_datagram(t(0), &1, &rec(2, 2)); // 1 is missing: held
    rx.handle_datagram(t(5_000), &2, &rec(0, 0));
    drain_rx(&mut rx);
    rx.handle_datagram(t(6_000), &3, &rec(0, 0));
    assert_eq!(rx.stats().refused, 1);
    assert!(drain_rx(&mut rx).is_empty());
    rx.handle_datagram(t(10_000), &3, &rec(0, 0));
    assert_eq!(
        drain_rx(&mut rx),
        [
            (1, Ev::Lost(1..2)),
            (1, Ev::Rec(2, body(2))),
            (1, Ev::Evicted),
            (3, Ev::Rec(0, body(0))),
        ]
    );
    assert_eq!(rx.sources(), 2);
    assert!(rx.stream(&1).is_none());
    assert_eq!(rx.stats().sources_evicted, 1);
}

#[test]
fn idle_sources_are_evicted_at_their_exact_deadline() {
    let mut config = ReceiverConfig::libncrx();
    config.idle_timeout = Duration::from_secs(60);
    let mut rx: Receiver<u8> = Receiver::new(config);
    rx.handle_datagram(t(100), &7, &rec(0, 0));
    drain_rx(&mut rx);
    assert_eq!(rx.poll_timeout(), Some(t(60_100)));
    rx.handle_timeout(t(60_099));
    assert!(drain_rx(&mut rx).is_empty());
    rx.handle_timeout(t(60_100));
    assert_eq!(drain_rx(&mut rx), [(7, Ev::Evicted)]);
    assert_eq!(rx.sources(), 0);
    assert_eq!(rx.poll_timeout(), None);
}

#[test]
fn an_active_source_is_not_evicted_and_its_idle_check_rearms() {
    let mut config = ReceiverConfig::libncrx();
    config.idle_timeout = Duration::from_secs(60);
    let mut rx: Receiver<u8> = Receiver::new(config);
    rx.handle_datagram(t(100), &7, &rec(0, 0));
    rx.handle_datagram(t(30_000), &7, &rec(1, 1));
    drain_rx(&mut rx);
    assert_eq!(rx.poll_timeout(), Some(t(60_100)));
    rx.handle_timeout(t(60_100));
    assert!(drain_rx(&mut rx).is_empty());
    assert_eq!(rx.sources(), 1);
    assert_eq!(rx.poll_timeout(), Some(t(90_000)));
    rx.handle_timeout(t(90_000));
    assert_eq!(drain_rx(&mut rx), [(7, Ev::Evicted)]);
}

/// One held record's cost in [`Receiver::held_bytes`] (its bytes and bookkeeping), for
/// records `rec(seq, seq)` with three-digit numbers (all the same length).
fn held_cost() -> usize {
    let mut rx: Receiver<u8> = Receiver::new(ReceiverConfig::libncrx());
    rx.handle_datagram(t(1), &0, &rec(100, 100));
    rx.handle_datagram(t(1), &0, &rec(102, 102));
    rx.held_bytes()
}

#[test]
fn over_the_total_budget_the_source_holding_most_gives_up_its_oldest_bytes() {
    let cost = held_cost();
    assert!(cost > rec(102, 102).len());
    let mut config = ReceiverConfig::libncrx();
    config.max_held_bytes_total = 10 * cost;
    let mut rx: Receiver<u8> = Receiver::new(config);
    // Source 1 holds 6 records behind its hole at 101, source 2 holds 3 behind 201.
    rx.handle_datagram(t(1), &1, &rec(100, 100));
    for seq in 102..108 {
        rx.handle_datagram(t(1), &1, &rec(seq, seq));
    }
    rx.handle_datagram(t(1), &2, &rec(200, 200));
    for seq in 202..205 {
        rx.handle_datagram(t(1), &2, &rec(seq, seq));
    }
    assert_eq!(rx.held_bytes(), 9 * cost);
    assert_eq!(
        drain_rx(&mut rx),
        [(1, Ev::Rec(100, body(100))), (2, Ev::Rec(200, body(200)))]
    );
    // The tenth held record fits.
    rx.handle_datagram(t(2), &2, &rec(205, 205));
    assert_eq!(rx.held_bytes(), 10 * cost);
    assert!(drain_rx(&mut rx).is_empty());
    // The eleventh does not: source 1 (6 held, source 2 has 5) gives up its hole and its
    // oldest record; the rest of its window is then complete and comes out in order.
    rx.handle_datagram(t(2), &2, &rec(206, 206));
    let mut expected = vec![(1, Ev::Lost(101..102))];
    expected.extend((102..108).map(|seq| (1, Ev::Rec(seq, body(seq)))));
    assert_eq!(drain_rx(&mut rx), expected);
    assert_eq!(rx.held_bytes(), 5 * cost);
    assert_eq!(rx.stream(&1).unwrap().held_bytes(), 0);
    assert_eq!(rx.stream(&1).unwrap().window(), 108..108);
    assert_eq!(rx.stream(&2).unwrap().held_bytes(), 5 * cost);
    assert_eq!(rx.stream(&1).unwrap().stats().shed, 1);
    assert_eq!(rx.stats().streams.shed, 1);
    assert_eq!(rx.stats().streams.over_budget, 0);
    // Source 2's hole is asked for and given up as usual.
    rx.handle_timeout(t(30_002));
    let mut expected = vec![(2, Ev::Lost(201..202))];
    expected.extend((202..207).map(|seq| (2, Ev::Rec(seq, body(seq)))));
    assert_eq!(drain_rx(&mut rx), expected);
    assert_eq!(rx.held_bytes(), 0);
    // Once more from nothing held (the index of sources by held bytes is rebuilt): now
    // source 2 holds the most (6 against 5) and gives up its hole first.
    let now = t(30_003);
    for seq in (208..214).chain(302..306) {
        let source = if seq < 300 { 2 } else { 1 };
        rx.handle_datagram(now, &source, &rec(seq, seq));
    }
    assert_eq!(rx.held_bytes(), 10 * cost);
    assert!(drain_rx(&mut rx).is_empty());
    rx.handle_datagram(now, &1, &rec(306, 306));
    let mut expected = vec![(2, Ev::Lost(207..208))];
    expected.extend((208..214).map(|seq| (2, Ev::Rec(seq, body(seq)))));
    assert_eq!(drain_rx(&mut rx), expected);
    assert_eq!(rx.held_bytes(), 5 * cost);
    assert_eq!(rx.stats().streams.shed, 2);
}

#[test]
fn many_sources_opening_holes_stay_within_the_total_budget_and_lose_nothing_silently() {
    const SOURCES: u16 = 32;
    const BUDGET: usize = 64 * 1024;
    let seqs = 1000u64..1400;
    let mut config = ReceiverConfig::libncrx();
    config.stream.slots = 512;
    config.stream.retransmit_stride = 64;
    config.max_sources = usize::from(SOURCES);
    config.max_held_bytes_total = BUDGET;
    let mut rx: Receiver<u16> = Receiver::new(config);
    let mut delivered: Vec<Vec<u64>> = vec![Vec::new(); usize::from(SOURCES)];
    let mut lost: Vec<Vec<u64>> = vec![Vec::new(); usize::from(SOURCES)];
    let mut collect = |rx: &mut Receiver<u16>| {
        for (source, event) in drain_rx(rx) {
            let s = usize::from(source);
            match event {
                Ev::Rec(seq, bytes) => {
                    assert_eq!(bytes, body(seq));
                    delivered[s].push(seq);
                }
                Ev::Lost(range) => lost[s].extend(range),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let check = |rx: &Receiver<u16>| {
        let held = rx.held_bytes();
        assert!(held <= BUDGET, "{held} held");
        let sum: usize = (0..SOURCES)
            .filter_map(|s| rx.stream(&s))
            .map(ncrx_core::Stream::held_bytes)
            .sum();
        assert_eq!(held, sum);
        held
    };
    let mut now = t(1);
    let mut peak = 0;
    for seq in seqs.clone() {
        now += Duration::from_micros(100);
        for source in 0..SOURCES {
            // Every source misses every seventh record, each at another place.
            if (seq + u64::from(source)) % 7 != 3 || seq == seqs.start || seq == seqs.end - 1 {
                rx.handle_datagram(now, &source, &rec(seq, seq));
                peak = peak.max(check(&rx));
                collect(&mut rx);
            }
        }
    }
    // Without the budget, each source would hold about 340 records by now.
    assert!(peak > BUDGET - 2 * held_cost(), "peak {peak}");
    assert!(rx.stats().streams.shed > 0);
    rx.handle_timeout(now + Duration::from_secs(31));
    check(&rx);
    collect(&mut rx);
    assert_eq!(rx.held_bytes(), 0);
    for s in 0..usize::from(SOURCES) {
        // In order, once each, and every number either delivered or reported lost.
        assert!(delivered[s].windows(2).all(|w| w[0] < w[1]), "source {s}");
        let mut all: Vec<u64> = delivered[s].iter().chain(&lost[s]).copied().collect();
        all.sort_unstable();
        assert_eq!(all, seqs.clone().collect::<Vec<_>>(), "source {s}");
        // Exactly the missing ones are lost: shedding gives up holes, never records.
        let missing: Vec<u64> = seqs
            .clone()
            .filter(|&q| (q + s as u64) % 7 == 3 && q != seqs.start && q != seqs.end - 1)
            .collect();
        assert_eq!(lost[s], missing, "source {s}");
    }
    assert_eq!(rx.stats().streams.over_budget, 0);
}

#[test]
fn the_default_total_budget_bounds_the_default_receiver() {
    let config = ReceiverConfig::libncrx();
    assert_eq!(config.max_held_bytes_total, 256 << 20);
    assert_eq!(config.stream.max_held_bytes, 16 << 20);
    let bounded: Receiver = Receiver::new(config.clone());
    let mut unbounded = config;
    unbounded.max_held_bytes_total = usize::MAX;
    let unbounded: Receiver = Receiver::new(unbounded);
    // 1025 sources (one draining) of 16 MiB each, three times over (held, output, growth),
    // against 256 MiB three times over: 47 GiB less.
    let saved = unbounded.memory_bound() - bounded.memory_bound();
    let per_source = 3 * (16 << 20) + 4 * 65_536;
    let total = 3 * (256 << 20) + 4 * 65_536;
    assert_eq!(saved, 1025 * per_source - total);
}

#[test]
fn drain_events_and_handle_datagram_and_drain_hand_out_what_poll_event_does_in_order() {
    let mut stream = StreamConfig::libncrx();
    stream.slots = 256;
    stream.retransmit_stride = 16;
    stream.max_held_bytes = 64 * 1024;
    let mut config = ReceiverConfig::libncrx();
    config.stream = stream;
    config.max_sources = 4;
    config.evict_when_full_after = Duration::from_millis(50);
    config.idle_timeout = Duration::from_secs(1);
    let (mut evictions, mut records, mut drains, mut transmits) = (0, 0, 0, 0);
    for seed in 0..8 {
        let mut rng = Rng::new(seed);
        let mut config = config.clone();
        if seed % 2 == 1 {
            // The ack timer too (it starts with the first record of a quiet stream).
            config.stream.ack_interval = Some(Duration::from_millis(50));
        }
        let mut by_poll: Receiver<u16> = Receiver::new(config.clone());
        let mut by_drain: Receiver<u16> = Receiver::new(config.clone());
        // Drained at every call: datagrams through `handle_datagram_and_drain`, against
        // `handle_datagram` then `poll_event` (across calls the order differs: evicted
        // sources' events come first).
        let mut direct: Receiver<u16> = Receiver::new(config.clone());
        let mut per_call: Receiver<u16> = Receiver::new(config.clone());
        let mut now = Instant::ZERO;
        let mut next = [0u64; 10];
        for step in 0..2000 {
            let mut direct_events = Vec::new();
            let mut per_call_events = Vec::new();
            now += Duration::from_micros(rng.below(20_000));
            // Several calls between drains, so events of several sources (and evicted
            // ones) wait together.
            for _ in 0..=rng.below(4) {
                if rng.below(10) == 0 {
                    by_poll.handle_timeout(now);
                    by_drain.handle_timeout(now);
                    direct.handle_timeout(now);
                    per_call.handle_timeout(now);
                    per_call_events.extend(drain_rx(&mut per_call));
                    direct.drain_events(|source, event| {
                        direct_events.push((*source, common::own(&event)));
                    });
                } else {
                    let source = rng.below(10) as u16;
                    let datagram = match rng.below(4) {
                        0 => hostile_datagram(&mut rng),
                        1 => rec(rng.below(300), 0),
                        // The source's next record: the in-order path.
                        _ => {
                            next[usize::from(source)] += 1;
                            rec(next[usize::from(source)], 0)
                        }
                    };
                    by_poll.handle_datagram(now, &source, &datagram);
                    by_drain.handle_datagram(now, &source, &datagram);
                    per_call.handle_datagram(now, &source, &datagram);
                    per_call_events.extend(drain_rx(&mut per_call));
                    direct.handle_datagram_and_drain(now, &source, &datagram, |source, event| {
                        direct_events.push((*source, common::own(&event)));
                    });
                }
            }
            let mut first = Vec::new();
            // Sometimes one event is polled first: draining goes on from there.
            if step % 3 == 0 {
                if let Some((source, event)) = by_drain.poll_event() {
                    first.push((source, common::own(&event)));
                }
            }
            let mut drained = first;
            by_drain.drain_events(|source, event| drained.push((*source, common::own(&event))));
            assert!(by_drain.poll_event().is_none(), "seed {seed} step {step}");
            let polled = drain_rx(&mut by_poll);
            assert_eq!(drained, polled, "seed {seed} step {step}");
            assert_eq!(direct_events, per_call_events, "seed {seed} step {step}");
            // Timers and responses kept in line as well.
            assert_eq!(
                direct.poll_timeout(),
                per_call.poll_timeout(),
                "seed {seed}"
            );
            let mut buf = [0u8; 1000];
            let mut other = [0u8; 1000];
            loop {
                let sent = direct.poll_transmit(&mut buf);
                let expected = per_call.poll_transmit(&mut other);
                assert_eq!(sent, expected, "seed {seed} step {step}");
                let Some((_, n)) = sent else { break };
                assert_eq!(buf[..n], other[..n], "seed {seed} step {step}");
                transmits += 1;
            }
            assert!(direct.poll_event().is_none(), "seed {seed} step {step}");
            evictions += polled.iter().filter(|(_, e)| *e == Ev::Evicted).count();
            records += polled
                .iter()
                .filter(|(_, e)| matches!(e, Ev::Rec(..)))
                .count();
            drains += usize::from(!polled.is_empty());
        }
        assert_eq!(by_drain.stats(), by_poll.stats(), "seed {seed}");
        assert_eq!(direct.stats(), per_call.stats(), "seed {seed}");
    }
    // The comparison covered evictions and records, not only empty drains.
    assert!(evictions > 10, "{evictions} evictions");
    assert!(records > 1000, "{records} records");
    assert!(drains > 1000, "{drains} drains with events");
    assert!(transmits > 100, "{transmits} responses");
}

//! Senders that answer retransmission requests and senders that do not (stock kernels),
//! with the default configuration, deadlines exact.

mod common;

use core::time::Duration;
use std::net::SocketAddr;

use common::{Ev, body, drain, drain_rx, rec, transmits};
use ncrx_core::{Answering, Receiver, ReceiverConfig, Stream, StreamConfig};
use netpoll_frame::Instant;

const MS: Duration = Duration::from_millis(1);

/// A stream joined in the middle: numbers far from 0, an uptime of an hour.
const BASE: u64 = 1_000_000;

fn r(n: u64) -> Vec<u8> {
    rec(BASE + n, 3_600_000_000 + n)
}

fn b(n: u64) -> Vec<u8> {
    body(BASE + n)
}

/// The last instant before `t`.
fn before(t: Instant) -> Instant {
    t.checked_sub(Duration::from_nanos(1)).unwrap()
}

fn t0() -> Instant {
    Instant::from_millis(10_000)
}

#[test]
fn defaults_are_libncrx_with_a_one_second_unanswered_hole_timeout() {
    let default = StreamConfig::default();
    let libncrx = StreamConfig::libncrx();
    assert_eq!(
        default.unanswered_hole_timeout,
        Some(Duration::from_secs(1))
    );
    assert_eq!(libncrx.unanswered_hole_timeout, None);
    assert_eq!(StreamConfig::daemon().unanswered_hole_timeout, None);
    let mut same = default.clone();
    same.unanswered_hole_timeout = None;
    same.ask_for_boot_head = false;
    assert_eq!(same, libncrx);
    assert_eq!(ReceiverConfig::libncrx().stream, libncrx);
    assert_eq!(ReceiverConfig::default().stream, default);
}

/// A stock kernel: one lost record; what follows it comes out at exactly one second, the
/// hole reported lost, after one request at half a second.
#[test]
fn a_sender_that_never_answers_has_its_hole_given_up_after_the_reorder_window() {
    let mut s = Stream::new(StreamConfig::default());
    s.handle_datagram(t0(), &r(0));
    s.handle_datagram(t0() + 2 * MS, &r(2));
    s.handle_datagram(t0() + 3 * MS, &r(3));
    assert_eq!(drain(&mut s), [Ev::Rec(BASE, b(0))]);
    assert_eq!(s.answering(), Answering::Unknown);
    // The hole was found at t0 + 2 ms: asked for once at half the window.
    assert_eq!(s.poll_timeout(), Some(t0() + 502 * MS));
    s.handle_timeout(t0() + 502 * MS);
    assert_eq!(transmits(&mut s), [format!("ncrx{BASE} {}", BASE + 1)]);
    // Given up at exactly one second after it was found.
    assert_eq!(s.poll_timeout(), Some(t0() + 1002 * MS));
    s.handle_timeout(before(t0() + 1002 * MS));
    assert!(drain(&mut s).is_empty());
    assert!(
        transmits(&mut s).is_empty(),
        "rate-limited: no second request"
    );
    s.handle_timeout(t0() + 1002 * MS);
    assert_eq!(
        drain(&mut s),
        [
            Ev::Lost(BASE + 1..BASE + 2),
            Ev::Rec(BASE + 2, b(2)),
            Ev::Rec(BASE + 3, b(3))
        ]
    );
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.stats().responses, 1);
    assert_eq!(s.answering(), Answering::Unknown);
}

/// With libncrx's values the same hole is held 30 s.
#[test]
fn libncrx_holds_the_same_hole_thirty_seconds() {
    let mut s = Stream::new(StreamConfig::libncrx());
    s.handle_datagram(t0(), &r(0));
    s.handle_datagram(t0() + 2 * MS, &r(2));
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0() + 1002 * MS));
    s.handle_timeout(t0() + 1002 * MS);
    assert_eq!(transmits(&mut s), [format!("ncrx{BASE} {}", BASE + 1)]);
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t0() + 30_002 * MS);
    assert_eq!(
        drain(&mut s),
        [Ev::Lost(BASE + 1..BASE + 2), Ev::Rec(BASE + 2, b(2))]
    );
}

/// A sender that answers: the requested number arrives; from then on every open hole is
/// held its full message timeout from when it was found, and requests are not limited.
#[test]
fn a_sender_that_answers_keeps_the_full_timeouts() {
    let mut s = Stream::new(StreamConfig::default());
    s.handle_datagram(t0(), &r(0));
    s.handle_datagram(t0() + 2 * MS, &r(2));
    s.handle_timeout(t0() + 502 * MS);
    assert_eq!(transmits(&mut s), [format!("ncrx{BASE} {}", BASE + 1)]);
    // Another hole, found before the answer.
    s.handle_datagram(t0() + 600 * MS, &r(4));
    // The answer: the number asked for.
    s.handle_datagram(t0() + 700 * MS, &r(1));
    assert_eq!(s.answering(), Answering::Answers);
    assert_eq!(
        drain(&mut s),
        [
            Ev::Rec(BASE, b(0)),
            Ev::Rec(BASE + 1, b(1)),
            Ev::Rec(BASE + 2, b(2))
        ]
    );
    // The hole at 3, found at 600 ms, shares the first hole's request entry (re-armed at
    // 502 + 500 ms while the sender had not answered): asked for at 1002 ms, then every
    // second.
    assert_eq!(s.poll_timeout(), Some(t0() + 1002 * MS));
    s.handle_timeout(t0() + 1002 * MS);
    assert_eq!(
        transmits(&mut s),
        [format!("ncrx{} {}", BASE + 2, BASE + 3)]
    );
    assert_eq!(s.poll_timeout(), Some(t0() + 2002 * MS));
    s.handle_timeout(t0() + 2002 * MS);
    assert_eq!(
        transmits(&mut s),
        [format!("ncrx{} {}", BASE + 2, BASE + 3)]
    );
    // Not given up at one second: thirty seconds after it was found.
    assert!(drain(&mut s).is_empty());
    for k in 3..31 {
        s.handle_timeout(t0() + (k * 1000 + 2) * MS);
        assert_eq!(transmits(&mut s).len(), 1, "request {k}");
    }
    s.handle_timeout(before(t0() + 30_600 * MS));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t0() + 30_600 * MS);
    assert_eq!(
        drain(&mut s),
        [Ev::Lost(BASE + 3..BASE + 4), Ev::Rec(BASE + 4, b(4))]
    );
    assert_eq!(s.stats().responses, 31);
}

/// An `ncemg` record shows a reliable sender: full timeouts and an ack at once.
#[test]
fn an_emergency_record_shows_that_the_sender_answers() {
    let mut s = Stream::new(StreamConfig::default());
    s.handle_datagram(t0(), &r(0));
    s.handle_datagram(t0() + 2 * MS, &r(2));
    let emg = format!("6,{},{},-,ncemg=1;e\n", BASE + 3, 3_600_000_003u64);
    s.handle_datagram(t0() + 3 * MS, emg.as_bytes());
    assert_eq!(s.answering(), Answering::Answers);
    assert_eq!(transmits(&mut s), [format!("ncrx{BASE}")]);
    s.handle_timeout(t0() + 1002 * MS);
    assert_eq!(transmits(&mut s), [format!("ncrx{BASE} {}", BASE + 1)]);
    s.handle_timeout(before(t0() + 30_002 * MS));
    assert_eq!(drain(&mut s), [Ev::Rec(BASE, b(0))]);
}

/// A stock kernel losing a record every 100 ms for a minute gets few requests: one per
/// spacing, the spacing doubling once holes are given up unanswered.
#[test]
fn requests_to_a_sender_that_never_answers_back_off() {
    let mut s = Stream::new(StreamConfig::default());
    let mut sent_at = Vec::new();
    let mut now = t0();
    let mut n = 0;
    let end = t0() + Duration::from_secs(200);
    let mut buf = [0u8; 1000];
    while now < end {
        // Records every 10 ms; every tenth one lost.
        if n % 10 != 5 {
            s.handle_datagram(now, &r(n));
        }
        n += 1;
        let next = now + 10 * MS;
        while let Some(t) = s.poll_timeout().filter(|&t| t <= next) {
            s.handle_timeout(t);
            while s.poll_transmit(&mut buf).is_some() {
                sent_at.push((t - t0()).as_millis());
            }
        }
        while s.poll_transmit(&mut buf).is_some() {
            sent_at.push((now - t0()).as_millis());
        }
        drain(&mut s);
        now = next;
    }
    // The first hole (found at 60 ms) asked for at 560 ms, half the 1 s hold; then one a
    // spacing: 1 s, 1 s, then 2 s, 4 s ... 64 s at most, doubling at each response once a
    // hole was given up unanswered (the first at 1060 ms). Seven requests in the first
    // minute, ten in 200 s.
    assert_eq!(
        sent_at,
        [
            560, 1560, 2560, 4560, 8560, 16560, 32560, 64560, 128_560, 192_560
        ]
    );
    assert_eq!(s.answering(), Answering::Unknown);
    assert!(s.stats().lost > 1000);
    // No hole is held longer than the window: nothing is open for more than 1 s.
    assert!(s.window().end - s.window().start <= 101);
}

/// After a port unreachable nothing more is sent to the sender, not even acks; its holes
/// are held at most the reorder window. An `ncemg` record makes it answer again.
#[test]
fn after_port_unreachable_nothing_is_sent_until_an_emergency_record() {
    let mut config = StreamConfig::default();
    config.ack_interval = Some(200 * MS);
    config.message_timeout = Duration::from_secs(30);
    let mut s = Stream::new(config);
    s.handle_datagram(t0(), &r(0));
    // An emergency record shows a reliable sender: 30 s holes.
    let emg = format!("6,{},{},-,ncemg=1;e\n", BASE + 1, 3_600_000_001u64);
    s.handle_datagram(t0(), emg.as_bytes());
    assert_eq!(transmits(&mut s), [format!("ncrx{}", BASE + 1)]);
    s.handle_datagram(t0() + 10 * MS, &r(3));
    assert_eq!(s.answering(), Answering::Answers);
    s.handle_unreachable(t0() + 20 * MS);
    assert_eq!(s.answering(), Answering::Unreachable);
    assert!(transmits(&mut s).is_empty());
    // The hole found at 10 ms is now held one second from then, not 30.
    assert_eq!(s.poll_timeout(), Some(t0() + 1010 * MS));
    let mut now = t0() + 20 * MS;
    for n in 4..2000 {
        now += 10 * MS;
        if n % 7 != 0 {
            s.handle_datagram(now, &r(n));
        }
        while let Some(t) = s.poll_timeout().filter(|&t| t <= now) {
            s.handle_timeout(t);
        }
        assert!(transmits(&mut s).is_empty(), "sent to a closed port at {n}");
    }
    let stats = s.stats();
    assert_eq!((stats.responses, stats.unreachable), (1, 1));
    assert!(stats.lost > 200);
    let events = drain(&mut s);
    assert!(events.contains(&Ev::Lost(BASE + 2..BASE + 3)));
    // An emergency record: the sender answers again, and is acked at once.
    let emg = format!("6,{},{},-,ncemg=1;e\n", BASE + 2000, 3_600_002_000u64);
    s.handle_datagram(now, emg.as_bytes());
    assert_eq!(s.answering(), Answering::Answers);
    assert_eq!(transmits(&mut s), [format!("ncrx{}", s.window().start - 1)]);
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The front: after one port unreachable, no more requests reach that source; another
/// source is still asked.
#[test]
fn receiver_sends_nothing_to_an_unreachable_source() {
    let mut rx: Receiver = Receiver::new(ReceiverConfig::default());
    let (a, c) = (addr("192.0.2.1:6665"), addr("[2001:db8::1]:6665"));
    rx.handle_datagram(t0(), &a, &r(0));
    rx.handle_datagram(t0(), &c, &r(0));
    rx.handle_datagram(t0() + MS, &a, &r(2));
    rx.handle_datagram(t0() + MS, &c, &r(2));
    drain_rx(&mut rx);
    assert_eq!(rx.poll_timeout(), Some(t0() + 501 * MS));
    rx.handle_timeout(t0() + 501 * MS);
    let mut buf = [0u8; 1000];
    let mut to = Vec::new();
    while let Some((dest, _)) = rx.poll_transmit(&mut buf) {
        to.push(dest);
    }
    assert_eq!(to, [a, c]);
    rx.handle_unreachable(t0() + 502 * MS, &a);
    // An unknown source: ignored.
    rx.handle_unreachable(t0() + 502 * MS, &addr("192.0.2.9:6665"));
    assert_eq!(rx.sources(), 2);
    let mut now = t0() + 502 * MS;
    for n in 3..400 {
        now += 10 * MS;
        if n % 5 != 0 {
            rx.handle_datagram(now, &a, &r(n));
            rx.handle_datagram(now, &c, &r(n));
        }
        while let Some(t) = rx.poll_timeout().filter(|&t| t <= now) {
            rx.handle_timeout(t);
        }
        while let Some((dest, _)) = rx.poll_transmit(&mut buf) {
            assert_eq!(dest, c, "a request reached the unreachable source");
        }
        drain_rx(&mut rx);
    }
    let sa = rx.stream(&a).unwrap().stats();
    let sc = rx.stream(&c).unwrap().stats();
    assert_eq!((sa.responses, sa.unreachable), (1, 1));
    assert!(sc.responses > 1);
    assert_eq!(rx.stats().streams.unreachable, 1);
}

/// The fuzzer's finding: with an unanswered hold shorter than half the retransmit interval
/// (here 100 ms against 200 ms, so holes are asked for every 50 ms), a request re-armed in
/// `handle_timeout` fell within the quarter interval it gathers and was taken again, for
/// ever. Now the requests go every 50 ms and the call returns.
#[test]
fn a_short_unanswered_hold_asks_at_its_own_pace() {
    let mut config = StreamConfig::daemon();
    config.unanswered_hole_timeout = Some(100 * MS);
    config.ack_interval = None;
    let mut s = Stream::new(config);
    s.handle_datagram(t0(), &r(0));
    s.handle_datagram(t0(), &r(2));
    assert_eq!(s.poll_timeout(), Some(t0() + 50 * MS));
    s.handle_timeout(t0() + 50 * MS);
    assert_eq!(transmits(&mut s), [format!("ncrx{BASE} {}", BASE + 1)]);
    // Rate-limited (one response a retransmit interval while unanswered); given up at 100 ms.
    assert_eq!(s.poll_timeout(), Some(t0() + 100 * MS));
    s.handle_timeout(t0() + 100 * MS);
    assert!(transmits(&mut s).is_empty());
    assert_eq!(
        drain(&mut s),
        [
            Ev::Rec(BASE, b(0)),
            Ev::Lost(BASE + 1..BASE + 2),
            Ev::Rec(BASE + 2, b(2))
        ]
    );
}

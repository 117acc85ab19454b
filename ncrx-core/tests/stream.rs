//! The per-source stream state machine, event by event.

mod common;

use core::time::Duration;

use common::{Ev, body, drain, rec, transmits};
use ncrx_core::{RestartReason, Stream, StreamConfig};
use netpoll_frame::Instant;

const MS: Duration = Duration::from_millis(1);

fn t0() -> Instant {
    Instant::from_millis(1000)
}

fn small() -> StreamConfig {
    let mut config = StreamConfig::libncrx();
    config.slots = 16;
    config.retransmit_stride = 4;
    config
}

#[test]
fn in_order_hole_request_and_fill() {
    let mut s = Stream::new(StreamConfig::libncrx());
    s.handle_datagram(t0(), &rec(10, 1));
    s.handle_datagram(t0(), &rec(12, 3));
    assert_eq!(drain(&mut s), [Ev::Rec(10, body(10))]);
    assert_eq!(s.window(), 11..13);
    // Exact: the first request is one retransmit interval after the hole was seen.
    assert_eq!(s.poll_timeout(), Some(t0() + 1000 * MS));
    s.handle_timeout(t0() + 999 * MS);
    assert!(transmits(&mut s).is_empty());
    s.handle_timeout(t0() + 1000 * MS);
    s.handle_timeout(t0() + 1000 * MS);
    assert_eq!(transmits(&mut s), ["ncrx10 11"]);
    assert_eq!(s.poll_timeout(), Some(t0() + 2000 * MS));
    s.handle_datagram(t0() + 1500 * MS, &rec(11, 2));
    assert_eq!(
        drain(&mut s),
        [Ev::Rec(11, body(11)), Ev::Rec(12, body(12))]
    );
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.held_bytes(), 0);
    assert_eq!(s.stats().delivered, 3);
}

#[test]
fn message_timeout_reports_the_lost_range_then_late_and_duplicates() {
    let mut s = Stream::new(StreamConfig::libncrx());
    s.handle_datagram(t0(), &rec(10, 1));
    s.handle_datagram(t0() + 5 * MS, &rec(13, 4));
    drain(&mut s);
    let give_up = t0() + 5 * MS + Duration::from_secs(30);
    s.handle_timeout(give_up.checked_sub(Duration::from_nanos(1)).unwrap());
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(give_up);
    assert_eq!(drain(&mut s), [Ev::Lost(11..13), Ev::Rec(13, body(13))]);
    // Requests queued earlier are not sent for retired numbers.
    assert!(transmits(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), None);
    s.handle_datagram(give_up, &rec(11, 2));
    assert_eq!(drain(&mut s), [Ev::Late(11, body(11))]);
    s.handle_datagram(give_up, &rec(11, 2));
    s.handle_datagram(give_up, &rec(13, 4));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().duplicates, 2);
    assert_eq!(s.stats().lost, 2);
    assert_eq!(s.stats().late, 1);
}

#[test]
fn stride_rule_asks_when_the_head_moves_a_stride_past_a_hole_then_twice_as_far() {
    let mut config = StreamConfig::libncrx();
    config.slots = 64;
    config.retransmit_stride = 8;
    config.retransmit_interval = Duration::from_secs(3600);
    let mut s = Stream::new(config);
    s.handle_datagram(t0(), &rec(0, 0));
    for seq in 2..=8 {
        s.handle_datagram(t0(), &rec(seq, seq));
    }
    assert!(transmits(&mut s).is_empty());
    // Head 10: more than 8 past the hole at 1.
    s.handle_datagram(t0(), &rec(9, 9));
    assert_eq!(transmits(&mut s), ["ncrx0 1"]);
    for seq in 10..=18 {
        s.handle_datagram(t0(), &rec(seq, seq));
    }
    // And again twice as far (head 10 + 16 + 1 = 27, rounded up to a quarter stride: 28).
    for seq in 19..=26 {
        s.handle_datagram(t0(), &rec(seq, seq));
    }
    assert!(transmits(&mut s).is_empty());
    s.handle_datagram(t0(), &rec(27, 27));
    assert_eq!(transmits(&mut s), ["ncrx0 1"]);
    s.handle_datagram(t0(), &rec(1, 1));
    for seq in 28..=60 {
        s.handle_datagram(t0(), &rec(seq, seq));
    }
    assert!(transmits(&mut s).is_empty());
}

fn frag(seq: u64, offset: usize, chunk: &[u8], total: usize) -> Vec<u8> {
    let mut d = format!("6,{seq},{},-,ncfrag={offset}/{total};", seq * 10).into_bytes();
    d.extend_from_slice(chunk);
    d
}

#[test]
fn fragments_complete_in_any_order() {
    let mut s = Stream::new(StreamConfig::libncrx());
    s.handle_datagram(t0(), &rec(4, 40));
    s.handle_datagram(t0(), &frag(5, 5, b"56789", 10));
    s.handle_datagram(t0(), &rec(6, 60));
    assert_eq!(drain(&mut s), [Ev::Rec(4, body(4))]);
    s.handle_datagram(t0(), &frag(5, 5, b"56789", 10));
    assert_eq!(s.stats().duplicates, 1);
    s.handle_datagram(t0(), &frag(5, 0, b"01234", 10));
    assert_eq!(
        drain(&mut s),
        [Ev::Rec(5, b"0123456789".to_vec()), Ev::Rec(6, body(6))]
    );
    assert_eq!(s.held_bytes(), 0);
}

#[test]
fn incomplete_record_times_out_with_its_missing_bytes() {
    let mut s = Stream::new(StreamConfig::libncrx());
    s.handle_datagram(t0(), &rec(4, 40));
    s.handle_datagram(t0(), &frag(5, 5, b"56789", 12));
    s.handle_datagram(t0(), &rec(6, 60));
    drain(&mut s);
    s.handle_timeout(t0() + Duration::from_secs(1));
    assert_eq!(transmits(&mut s), ["ncrx4 5"]);
    s.handle_timeout(t0() + Duration::from_secs(30));
    assert_eq!(
        drain(&mut s),
        [
            Ev::Incomplete {
                seq: 5,
                missing: vec![0..5, 10..12],
                received: vec![(5, b"56789".to_vec())],
            },
            Ev::Rec(6, body(6)),
        ]
    );
    // More fragments of it are counted, not delivered.
    s.handle_datagram(t0() + Duration::from_secs(31), &frag(5, 0, b"01234", 12));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().late_fragments, 1);
    assert_eq!(s.stats().incomplete, 1);
    assert_eq!(s.held_bytes(), 0);
}

#[test]
fn restart_when_seq_and_ts_go_far_back() {
    let mut s = Stream::new(small());
    for seq in 100..=140 {
        s.handle_datagram(t0(), &rec(seq, seq * 1_000_000));
    }
    assert_eq!(drain(&mut s).len(), 41);
    s.handle_datagram(t0(), &rec(0, 5));
    assert_eq!(
        drain(&mut s),
        [Ev::Restart(RestartReason::FarBack, 0), Ev::Rec(0, body(0))]
    );
    assert_eq!(s.stats().restarts, 1);
    s.handle_datagram(t0(), &rec(1, 6));
    assert_eq!(drain(&mut s), [Ev::Rec(1, body(1))]);
}

#[test]
fn restart_when_a_remembered_seq_has_another_timestamp() {
    let mut s = Stream::new(StreamConfig::libncrx());
    for seq in 0..=5 {
        s.handle_datagram(t0(), &rec(seq, seq * 10));
    }
    drain(&mut s);
    // The same record again is a duplicate (a replay, sysrq R)...
    s.handle_datagram(t0(), &rec(3, 30));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().duplicates, 1);
    // ...the same number with another timestamp is another boot.
    s.handle_datagram(t0(), &rec(3, 999));
    assert_eq!(
        drain(&mut s),
        [
            Ev::Restart(RestartReason::Timestamp, 3),
            Ev::Rec(3, body(3))
        ]
    );
}

#[test]
fn restart_when_the_release_changes() {
    let mut s = Stream::new(StreamConfig::libncrx());
    s.handle_datagram(t0(), b"7.3.4,6,0,0,-;a\n");
    s.handle_datagram(t0(), b"7.3.4,6,1,1,-;b\n");
    s.handle_datagram(t0(), b"7.3.5,6,2,1,-;c\n");
    assert_eq!(
        drain(&mut s),
        [
            Ev::Rec(0, b"a\n".to_vec()),
            Ev::Rec(1, b"b\n".to_vec()),
            Ev::Restart(RestartReason::Release, 2),
            Ev::Rec(2, b"c\n".to_vec()),
        ]
    );
}

#[test]
fn out_of_order_threshold_restarts_from_the_lowest() {
    let mut s = Stream::new(small());
    for seq in 0..10 {
        s.handle_datagram(t0(), &rec(seq, seq));
    }
    drain(&mut s);
    // Far ahead of the window, 18 times: buffered, nothing out.
    for k in (0..18).rev() {
        s.handle_datagram(t0(), &rec(100_000 + k, 1_000_000 + k));
    }
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().out_of_order, 18);
    s.handle_datagram(t0(), &rec(100_018, 1_000_018));
    let events = drain(&mut s);
    assert_eq!(events[0], Ev::Restart(RestartReason::OutOfOrder, 100_000));
    let seqs: Vec<u64> = events[1..]
        .iter()
        .map(|e| match e {
            Ev::Rec(seq, _) => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, (100_000..=100_018).collect::<Vec<_>>());
}

#[test]
fn a_buffered_record_ahead_of_the_window_comes_out_in_order_after_the_gap_is_lost() {
    let mut s = Stream::new(small());
    s.handle_datagram(t0(), &rec(0, 0));
    s.handle_datagram(t0(), &rec(500, 5));
    assert_eq!(drain(&mut s), [Ev::Rec(0, body(0))]);
    assert_eq!(s.poll_timeout(), Some(t0() + Duration::from_secs(30)));
    s.handle_timeout(t0() + 29_999 * MS);
    assert!(drain(&mut s).is_empty());
    // Not a restart after all: the gap it opened (known since it arrived, 30 s ago) is
    // given up on as one range, and the record is delivered in order, not late.
    s.handle_timeout(t0() + Duration::from_secs(30));
    assert_eq!(drain(&mut s), [Ev::Lost(1..500), Ev::Rec(500, body(500))]);
    assert_eq!(s.window(), 501..501);
    assert_eq!(s.held_bytes(), 0);
    // A straggler from the gap comes out late once; the record itself again is a duplicate.
    s.handle_datagram(t0() + Duration::from_secs(31), &rec(499, 4));
    s.handle_datagram(t0() + Duration::from_secs(31), &rec(499, 4));
    s.handle_datagram(t0() + Duration::from_secs(31), &rec(500, 5));
    assert_eq!(drain(&mut s), [Ev::Late(499, body(499))]);
    assert_eq!((s.stats().late, s.stats().duplicates), (1, 2));
    assert_eq!(s.stats().restarts, 0);
}

#[test]
fn a_buffered_record_the_window_reaches_first_is_delivered_once() {
    let mut s = Stream::new(small());
    s.handle_datagram(t0(), &rec(0, 0));
    s.handle_datagram(t0(), &rec(20, 20));
    for seq in 1..=20 {
        s.handle_datagram(t0() + MS, &rec(seq, seq));
    }
    let seqs: Vec<u64> = drain(&mut s)
        .iter()
        .map(|e| match e {
            Ev::Rec(seq, _) => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, (0..=20).collect::<Vec<_>>());
    s.handle_timeout(t0() + Duration::from_secs(30));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().duplicates, 1);
    assert_eq!(s.held_bytes(), 0);
}

/// The receiver fuzz target's finding (fuzz/corpus/receiver/967c3dfa...): an `ncemg` record
/// starts the stream, then two different records claim one sequence number far ahead of the
/// window. Before: both were buffered as out of order and, at the timeout, both delivered
/// late under that number, with no loss reported for the gap.
#[test]
fn two_records_claiming_one_seq_far_ahead_the_first_stands_after_the_gap_is_lost() {
    let mut config = StreamConfig::daemon();
    config.slots = 64;
    config.max_held_bytes = 64 * 1024;
    let mut s = Stream::new(config);
    let t = Instant::from_millis(1000);
    s.handle_datagram(t, b"6,22609,22609,-,ncemg=1;emergency 22609\n");
    assert_eq!(
        drain(&mut s),
        [Ev::Rec(22609, b"emergency 22609\n".to_vec())]
    );
    s.handle_datagram(t, b"0,58717,48465,-;\n");
    s.handle_datagram(t, b"7,58717,65535,-;\n");
    assert!(drain(&mut s).is_empty());
    assert_eq!((s.stats().out_of_order, s.stats().conflicts), (1, 1));
    // The out-of-order timeout (200 ms) is the first deadline; the message timeout of the
    // gap (also 200 ms after the record arrived) has passed by then.
    assert_eq!(s.poll_timeout(), Some(t + 200 * MS));
    s.handle_timeout(Instant::from_millis(65_536_000));
    assert_eq!(
        drain(&mut s),
        [Ev::Lost(22610..58717), Ev::Rec(58717, b"\n".to_vec())]
    );
    assert_eq!(s.stats().lost, 58717 - 22610);
    assert_eq!((s.stats().delivered, s.stats().late), (2, 0));
    assert_eq!(s.window(), 58718..58718);
    assert_eq!(s.held_bytes(), 0);
    // The other claim coming back once the number is placed: another boot's record.
    s.handle_datagram(Instant::from_millis(65_536_001), b"7,58717,65535,-;\n");
    assert_eq!(
        drain(&mut s),
        [
            Ev::Restart(RestartReason::Timestamp, 58717),
            Ev::Rec(58717, b"\n".to_vec())
        ]
    );
    assert_eq!(s.stats().restarts, 1);
}

#[test]
fn a_restart_from_the_buffer_places_a_record_far_ahead_once() {
    let mut s = Stream::new(small());
    for seq in 0..10 {
        s.handle_datagram(t0(), &rec(seq, seq));
    }
    drain(&mut s);
    // One far from the rest, then 18 together: the 19th out of order restarts the stream
    // from the lowest buffered.
    s.handle_datagram(t0(), &rec(100_100, 1_000_100));
    for seq in 100_000..100_018 {
        s.handle_datagram(t0(), &rec(seq, seq * 10));
    }
    let events = drain(&mut s);
    assert_eq!(events[0], Ev::Restart(RestartReason::OutOfOrder, 100_000));
    let mut expected: Vec<Ev> = (100_000..100_018).map(|q| Ev::Rec(q, body(q))).collect();
    // The window (12 open at most) moved to the far one: what it passed is given up on.
    expected.push(Ev::Lost(100_018..100_089));
    assert_eq!(events[1..], expected[..]);
    // It is held in order, not delivered late: a copy now is a duplicate, and it comes out
    // once, in order, when the rest of the gap is given up on.
    s.handle_datagram(t0() + MS, &rec(100_100, 1_000_100));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().duplicates, 1);
    s.handle_timeout(t0() + Duration::from_secs(30));
    assert_eq!(
        drain(&mut s),
        [Ev::Lost(100_089..100_100), Ev::Rec(100_100, body(100_100))]
    );
    assert_eq!((s.stats().late, s.stats().restarts), (0, 1));
}

#[test]
fn emergency_records_are_acked_at_once_and_never_out_of_order() {
    let mut s = Stream::new(small());
    for seq in 0..4 {
        s.handle_datagram(t0(), &rec(seq, seq));
    }
    s.handle_datagram(t0(), b"6,10,100,-,ncemg=1;x\n");
    // Acked at once; the head is a stride past the hole 4..10: the stride rule asks for it.
    assert_eq!(transmits(&mut s), ["ncrx3 4 5 6 7 8 9"]);
    // Far ahead, an emergency record moves the window instead of being buffered.
    s.handle_datagram(t0(), b"6,40,400,-,ncemg=1;y\n");
    assert_eq!(s.stats().out_of_order, 0);
    let events = drain(&mut s);
    assert!(events.contains(&Ev::Lost(4..10)), "{events:?}");
    assert_eq!(s.window().end, 41);
    assert_eq!(s.stats().emergency, 2);
}

#[test]
fn acks_after_the_interval_when_configured() {
    let mut config = StreamConfig::libncrx();
    config.ack_interval = Some(200 * MS);
    let mut s = Stream::new(config);
    s.handle_datagram(t0(), &rec(0, 0));
    assert!(transmits(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), Some(t0() + 200 * MS));
    s.handle_timeout(t0() + 200 * MS);
    assert_eq!(transmits(&mut s), ["ncrx0"]);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn plain_text_is_passed_on() {
    let mut s = Stream::new(StreamConfig::libncrx());
    s.handle_datagram(t0(), b"[    1.000000] hello\n");
    s.handle_datagram(t0(), b"6,1,2,- broken");
    assert_eq!(
        drain(&mut s),
        [Ev::Plain(b"[    1.000000] hello\n".to_vec())]
    );
    assert_eq!(s.stats().malformed, 1);
}

#[test]
fn window_overflow_gives_up_the_oldest_first() {
    let mut s = Stream::new(small());
    s.handle_datagram(t0(), &rec(0, 0));
    // 16 slots, stride 4: at most 12 open.
    s.handle_datagram(t0(), &rec(13, 13));
    assert_eq!(drain(&mut s), [Ev::Rec(0, body(0)), Ev::Lost(1..2)]);
    assert_eq!(s.window(), 2..14);
}

#[test]
fn byte_budget_is_never_exceeded() {
    let mut config = StreamConfig::libncrx();
    config.max_held_bytes = 100;
    let mut s = Stream::new(config);
    s.handle_datagram(t0(), &rec(0, 0));
    let mut events = Vec::new();
    for seq in 2..40 {
        s.handle_datagram(t0(), &rec(seq, seq));
        assert!(s.held_bytes() <= 100);
        events.extend(drain(&mut s));
    }
    assert_eq!(events[1], Ev::Lost(1..2));
    assert!(events.contains(&Ev::Rec(2, body(2))));
}

#[test]
fn same_inputs_same_outputs_and_timeouts_are_idempotent() {
    let run = |extra_timeouts: bool| {
        let mut s = Stream::new(StreamConfig::daemon());
        let mut log = Vec::new();
        let mut now = t0();
        for i in 0..2000u64 {
            let seq = (i * 7919) % 1500;
            now += Duration::from_micros(300);
            s.handle_datagram(now, &rec(seq, seq));
            if extra_timeouts {
                s.handle_timeout(now);
                s.handle_timeout(now.checked_sub(MS).unwrap());
            }
            if let Some(deadline) = s.poll_timeout() {
                if deadline <= now + 50 * MS {
                    s.handle_timeout(deadline);
                    now = now.max(deadline);
                }
            }
            log.extend(drain(&mut s).into_iter().map(|e| format!("{e:?}")));
            log.extend(transmits(&mut s));
        }
        log
    };
    let a = run(false);
    assert!(a.len() > 1000);
    assert_eq!(a, run(false));
    assert_eq!(a, run(true));
}

#[test]
fn daemon_preset() {
    let c = StreamConfig::daemon();
    assert_eq!(c.slots, 512);
    assert_eq!(c.retransmit_interval, 200 * MS);
    assert_eq!(c.message_timeout, 200 * MS);
    assert_eq!(c.ack_interval, Some(200 * MS));
    let d = StreamConfig::libncrx();
    assert_eq!(
        (d.slots, d.retransmit_stride, d.out_of_order_threshold),
        (8192, 256, 19)
    );
    assert_eq!(d.message_timeout, Duration::from_secs(30));
    assert_eq!(d.ack_interval, None);
}

#[test]
fn records_overtaken_at_the_start_come_out_late_once() {
    let mut s = Stream::new(StreamConfig::libncrx());
    s.handle_datagram(t0(), &rec(5, 5_000));
    s.handle_datagram(t0(), &rec(3, 3_000));
    s.handle_datagram(t0(), &rec(3, 3_000));
    s.handle_datagram(t0(), &rec(6, 6_000));
    assert_eq!(
        drain(&mut s),
        [
            Ev::Rec(5, body(5)),
            Ev::Late(3, body(3)),
            Ev::Rec(6, body(6)),
        ]
    );
    assert_eq!(s.stats().duplicates, 1);
    assert_eq!(s.stats().out_of_order, 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Every response asks for numbers that are missing, ascending and once each; at each
    /// interval the responses together ask for every hole exactly once, however many (more
    /// than one response holds, and more than the stream gathers for one).
    #[test]
    fn responses_ask_for_every_open_hole_once_in_order(
        seed in proptest::prelude::any::<u64>(),
        keep_percent in 5u64..95,
        records in 2u64..4000,
    ) {
        use std::collections::BTreeSet;
        use testkit::SplitMix64;

        let mut rng = SplitMix64::new(seed);
        let mut s = Stream::new(StreamConfig::libncrx());
        let mut missing = BTreeSet::new();
        for seq in 0..records {
            // The first and the last arrive, so that every hole is inside the window.
            if seq == 0 || seq == records - 1 || rng.percent(keep_percent) {
                s.handle_datagram(t0(), &rec(seq, seq));
            } else {
                missing.insert(seq);
            }
            // Stride requests, as the head moves.
            for response in transmits(&mut s) {
                let parsed = netconsole_proto::Response::parse(response.as_bytes()).unwrap();
                for seq in parsed.missing() {
                    proptest::prop_assert!(missing.contains(&seq), "{seq} asked, not missing");
                }
            }
        }
        drain(&mut s);
        for interval in 1..=2 {
            s.handle_timeout(t0() + interval * 1000 * MS);
            let mut asked = BTreeSet::new();
            for response in transmits(&mut s) {
                proptest::prop_assert!(response.len() <= 1000);
                // Strictly ascending and above the ack, or it would not parse.
                let parsed = netconsole_proto::Response::parse(response.as_bytes()).unwrap();
                // Everything before the first hole is retired.
                proptest::prop_assert_eq!(Some(parsed.ack() + 1), missing.first().copied());
                for seq in parsed.missing() {
                    proptest::prop_assert!(asked.insert(seq), "{seq} asked twice");
                }
            }
            proptest::prop_assert_eq!(&asked, &missing);
        }
    }
}

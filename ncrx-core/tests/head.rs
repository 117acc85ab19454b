//! The head of a stream: a fresh boot's first record heard is not its first record.

mod common;

use core::time::Duration;

use common::{Ev, body, drain, rec, transmits};
use ncrx_core::{Answering, RestartReason, Stream, StreamConfig};
use netpoll_frame::Instant;

const MS: Duration = Duration::from_millis(1);

fn t0() -> Instant {
    Instant::from_millis(10_000)
}

/// A stock kernel's first record heard is 5: 0..5 are holes, asked for once when the first
/// request leaves (half the reorder window) with the ack that acknowledges nothing
/// (u64::MAX, as libncrx writes it), then given up on at the window; 5 comes out then.
#[test]
fn a_fresh_boots_head_is_asked_for_and_reported_lost() {
    let mut s = Stream::new(StreamConfig::default());
    s.handle_datagram(t0(), &rec(5, 2_000_000));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.window(), 0..6);
    assert_eq!(s.poll_timeout(), Some(t0() + 500 * MS));
    s.handle_timeout(t0() + 500 * MS);
    assert_eq!(drain(&mut s), []);
    assert_eq!(transmits(&mut s), ["ncrx18446744073709551615 0 1 2 3 4"]);
    assert_eq!(s.poll_timeout(), Some(t0() + 1000 * MS));
    s.handle_timeout(t0() + 1000 * MS);
    assert_eq!(drain(&mut s), [Ev::Lost(0..5), Ev::Rec(5, body(5))]);
    assert_eq!(s.stats().lost, 5);
}

/// A sender that answers: the head comes, in order, before the first record heard.
#[test]
fn a_fresh_boots_head_comes_from_a_sender_that_answers() {
    let mut s = Stream::new(StreamConfig::default());
    s.handle_datagram(t0(), &rec(5, 2_000_000));
    // 0 arrived after all, overtaken on the way.
    s.handle_datagram(t0() + 3 * MS, &rec(0, 1_000_000));
    assert_eq!(drain(&mut s), [Ev::Rec(0, body(0))]);
    s.handle_timeout(t0() + 500 * MS);
    assert_eq!(transmits(&mut s), ["ncrx0 1 2 3 4"]);
    for seq in [2, 1, 4, 3] {
        s.handle_datagram(t0() + 510 * MS, &rec(seq, 1_000_000 + seq * 100));
    }
    assert_eq!(s.answering(), Answering::Answers);
    assert_eq!(
        drain(&mut s),
        (1..=5).map(|n| Ev::Rec(n, body(n))).collect::<Vec<_>>()
    );
    assert_eq!(s.poll_timeout(), None);
}

/// A stream joined in the middle asks for nothing before its first record; nor does one
/// that starts at 0, nor libncrx's configuration.
#[test]
fn a_stream_joined_in_the_middle_asks_for_nothing_before() {
    for (config, first) in [
        (StreamConfig::default(), 100_000),
        (StreamConfig::default(), 64),
        (StreamConfig::default(), 394),
        (StreamConfig::default(), 0),
        (StreamConfig::libncrx(), 5),
    ] {
        let mut s = Stream::new(config);
        s.handle_datagram(t0(), &rec(first, 3_600_000_000));
        assert_eq!(drain(&mut s), [Ev::Rec(first, body(first))], "{first}");
        assert_eq!(s.window(), first + 1..first + 1);
        assert_eq!(s.poll_timeout(), None);
    }
    // The last number below BOOT_HEAD is a fresh boot's: 0..63 asked for.
    let mut s = Stream::new(StreamConfig::default());
    s.handle_datagram(t0(), &rec(63, 3_600_000_000));
    assert_eq!(drain(&mut s), []);
    // Asked for at the first request (half the 1 s reorder window for a sender that has not
    // answered yet).
    let first_request = s.poll_timeout().unwrap();
    assert_eq!(first_request, t0() + 500 * MS);
    s.handle_timeout(first_request);
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.window(), 0..64);
    // Every number of the head once, in responses of at most 1000 bytes acking nothing.
    let mut asked = Vec::new();
    for response in transmits(&mut s) {
        assert!(response.len() <= 1000);
        let mut numbers = response["ncrx".len()..].split(' ');
        assert_eq!(numbers.next(), Some("18446744073709551615"));
        asked.extend(numbers.map(|n| n.parse::<u64>().unwrap()));
    }
    assert_eq!(asked, (0..63).collect::<Vec<_>>());
}

/// A reboot restarts the stream; the new boot's first record heard is 3: 0..3 are holes of
/// the new epoch, and the record of the old boot far ahead does not fill them.
#[test]
fn a_restart_to_a_fresh_boot_asks_for_its_head() {
    let mut s = Stream::new(StreamConfig::default());
    for seq in 100_000..100_010 {
        s.handle_datagram(t0(), &rec(seq, 3_600_000_000 + seq));
    }
    drain(&mut s);
    // The new boot: seq 3 at 2 s uptime.
    s.handle_datagram(t0() + 5000 * MS, &rec(3, 2_000_000));
    assert_eq!(drain(&mut s), [Ev::Restart(RestartReason::FarBack, 0)]);
    assert_eq!(s.window(), 0..4);
    s.handle_datagram(t0() + 5001 * MS, &rec(1, 1_900_000));
    s.handle_datagram(t0() + 5001 * MS, &rec(2, 1_950_000));
    s.handle_timeout(t0() + 5500 * MS);
    assert_eq!(drain(&mut s), []);
    // Only 0 is missing, asked for with nothing acknowledged.
    assert_eq!(transmits(&mut s), ["ncrx18446744073709551615 0"]);
    s.handle_datagram(t0() + 5502 * MS, &rec(0, 1_800_000));
    assert_eq!(
        drain(&mut s),
        (0..4).map(|n| Ev::Rec(n, body(n))).collect::<Vec<_>>()
    );
    assert_eq!(s.answering(), Answering::Answers);
}

/// A record numbered before the first one heard, yet stamped well after it, is from
/// another boot: the stream restarts (what it held comes out first) instead of filling
/// the head with it.
#[test]
fn a_head_record_stamped_after_the_first_one_restarts_the_stream() {
    let mut s = Stream::new(StreamConfig::default());
    s.handle_datagram(t0(), &rec(5, 2_000_000));
    s.handle_datagram(t0() + MS, &rec(2, 9_000_000));
    assert_eq!(
        drain(&mut s),
        [
            Ev::Lost(0..5),
            Ev::Rec(5, body(5)),
            Ev::Restart(RestartReason::Timestamp, 0)
        ]
    );
    assert_eq!(s.window(), 0..3);
    assert_eq!(s.stats().restarts, 1);
}

/// The age of the oldest open hole: when the first missing run of the window was found,
/// for the stream and over a receiver's sources.
#[test]
fn the_oldest_hole_is_the_first_run_found() {
    let mut s = Stream::new(StreamConfig::default());
    s.handle_datagram(t0(), &rec(1000, 3_600_000_000));
    assert_eq!(s.oldest_hole(), None);
    s.handle_datagram(t0() + 10 * MS, &rec(1003, 3_600_000_003));
    s.handle_datagram(t0() + 20 * MS, &rec(1006, 3_600_000_006));
    assert_eq!(s.oldest_hole(), Some(t0() + 10 * MS));
    // 1001..1003 filled: the hole found at +20 ms is the oldest.
    s.handle_datagram(t0() + 30 * MS, &rec(1001, 3_600_000_001));
    s.handle_datagram(t0() + 30 * MS, &rec(1002, 3_600_000_002));
    assert_eq!(s.oldest_hole(), Some(t0() + 20 * MS));
    drain(&mut s);

    let mut rx: ncrx_core::Receiver<u32> =
        ncrx_core::Receiver::new(ncrx_core::ReceiverConfig::default());
    for (source, found) in [(1, 40), (2, 50), (3, 60)] {
        rx.handle_datagram(t0() + found * MS, &source, &rec(1000, 3_600_000_000));
        rx.handle_datagram(t0() + found * MS, &source, &rec(1002, 3_600_000_002));
    }
    rx.handle_datagram(t0() + 70 * MS, &4, &rec(1000, 3_600_000_000));
    assert_eq!(rx.oldest_hole(), Some(t0() + 40 * MS));
    // Source 1's hole filled: source 2's is the oldest.
    rx.handle_datagram(t0() + 80 * MS, &1, &rec(1001, 3_600_000_001));
    assert_eq!(rx.oldest_hole(), Some(t0() + 50 * MS));
}

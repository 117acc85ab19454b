//! Properties over arbitrary arrival orders and arbitrary bytes.

mod common;

use core::time::Duration;

use common::{Ev, body, drain, rec};
use ncrx_core::{Receiver, ReceiverConfig, Stream, StreamConfig};
use netpoll_frame::Instant;
use proptest::prelude::*;

/// Records `base..base + n`, some dropped, the rest arriving in any order with duplicates
/// (the lowest kept one first: it starts the stream).
fn arrivals() -> impl Strategy<Value = (u64, Vec<bool>, Vec<u64>)> {
    (
        0u64..1_000_000,
        prop::collection::vec(any::<bool>(), 1..150),
    )
        .prop_flat_map(|(base, kept)| {
            let seqs: Vec<u64> = kept
                .iter()
                .enumerate()
                .filter(|(_, k)| **k)
                .map(|(i, _)| base + i as u64)
                .collect();
            // Duplicates of kept records (a placeholder when none is kept: then unused).
            let pool = if seqs.is_empty() {
                vec![base]
            } else {
                seqs.clone()
            };
            let dups = prop::collection::vec(prop::sample::select(pool), 0..20);
            (Just(base), Just(kept), Just(seqs), dups).prop_flat_map(|(base, kept, seqs, dups)| {
                let first = seqs.first().copied();
                let mut rest: Vec<u64> = seqs.iter().skip(1).copied().collect();
                if first.is_some() {
                    rest.extend(dups);
                }
                (
                    Just(base),
                    Just(kept),
                    Just(first),
                    Just(rest).prop_shuffle(),
                )
            })
        })
        .prop_map(|(base, kept, first, rest)| {
            let mut order: Vec<u64> = first.into_iter().collect();
            order.extend(rest);
            (base, kept, order)
        })
}

proptest! {
    #[test]
    fn every_record_once_in_order_and_every_hole_reported(
        (base, kept, order) in arrivals()
    ) {
        let mut s = Stream::new(StreamConfig::libncrx());
        let t0 = Instant::from_millis(10);
        let mut events = Vec::new();
        for (i, &seq) in order.iter().enumerate() {
            s.handle_datagram(t0 + Duration::from_micros(i as u64), &rec(seq, seq * 10));
            events.extend(drain(&mut s));
        }
        s.handle_timeout(t0 + Duration::from_secs(31));
        events.extend(drain(&mut s));
        let kept_seqs: Vec<u64> = kept
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| base + i as u64)
            .collect();
        let mut expected = Vec::new();
        for pair in kept_seqs.windows(2) {
            expected.push(Ev::Rec(pair[0], body(pair[0])));
            if pair[1] > pair[0] + 1 {
                expected.push(Ev::Lost(pair[0] + 1..pair[1]));
            }
        }
        if let Some(&last) = kept_seqs.last() {
            expected.push(Ev::Rec(last, body(last)));
        }
        prop_assert_eq!(events, expected);
        prop_assert_eq!(s.held_bytes(), 0);
        prop_assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn arbitrary_datagrams_and_times_stay_within_bounds(
        inputs in prop::collection::vec(
            (0u8..4, 0u64..5_000, prop::collection::vec(any::<u8>(), 0..300)),
            1..200,
        )
    ) {
        let mut config = ReceiverConfig::libncrx();
        config.stream.slots = 64;
        config.stream.retransmit_stride = 8;
        config.stream.max_held_bytes = 4096;
        config.max_sources = 3;
        config.evict_when_full_after = Duration::from_millis(1);
        let mut rx: Receiver<u8> = Receiver::new(config);
        let mut now = Instant::ZERO;
        let mut buf = [0u8; 1000];
        for (source, step, bytes) in inputs {
            now += Duration::from_micros(step);
            // Half of the inputs look like records: a header in front of the bytes.
            let mut datagram = Vec::new();
            if step % 2 == 0 {
                datagram.extend_from_slice(format!("6,{},{},-;", step % 97, step).as_bytes());
            }
            datagram.extend_from_slice(&bytes);
            rx.handle_datagram(now, &source, &datagram);
            if step % 3 == 0 {
                rx.handle_timeout(now);
            }
            while rx.poll_event().is_some() {}
            while let Some((_, n)) = rx.poll_transmit(&mut buf) {
                prop_assert!(netconsole_proto::Response::parse(&buf[..n]).is_ok());
            }
            prop_assert!(rx.held_bytes() <= 3 * 4096);
            prop_assert!(rx.sources() <= 3);
        }
    }
}

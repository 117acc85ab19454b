//! Helpers shared by the integration tests: owned copies of events.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::ops::Range;

use ncrx_core::{Event, Receiver, RestartReason, Stream};
use testkit::SplitMix64;

/// An owned summary of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ev {
    Rec(u64, Vec<u8>),
    Late(u64, Vec<u8>),
    Lost(Range<u64>),
    Incomplete {
        seq: u64,
        missing: Vec<Range<usize>>,
        received: Vec<(usize, Vec<u8>)>,
    },
    Restart(RestartReason, u64),
    Plain(Vec<u8>),
    Evicted,
}

pub(crate) fn own(event: &Event<'_>) -> Ev {
    match event {
        Event::Record(r) => Ev::Rec(r.fields.seq, r.body.to_vec()),
        Event::Late(r) => Ev::Late(r.fields.seq, r.body.to_vec()),
        Event::Lost { seqs } => Ev::Lost(seqs.clone()),
        Event::Incomplete(i) => Ev::Incomplete {
            seq: i.record.fields.seq,
            missing: i.missing.to_vec(),
            received: i.received().map(|(o, b)| (o, b.to_vec())).collect(),
        },
        Event::Restart(r) => Ev::Restart(r.reason, r.seq),
        Event::Plain(t) => Ev::Plain(t.to_vec()),
        Event::SourceEvicted => Ev::Evicted,
        _ => panic!("unknown event"),
    }
}

pub(crate) fn drain(stream: &mut Stream) -> Vec<Ev> {
    let mut out = Vec::new();
    while let Some(event) = stream.poll_event() {
        out.push(own(&event));
    }
    out
}

pub(crate) fn drain_rx<S: Ord + Clone>(rx: &mut Receiver<S>) -> Vec<(S, Ev)> {
    let mut out = Vec::new();
    while let Some((source, event)) = rx.poll_event() {
        out.push((source, own(&event)));
    }
    out
}

pub(crate) fn transmits(stream: &mut Stream) -> Vec<String> {
    let mut buf = [0u8; 1000];
    let mut out = Vec::new();
    while let Some(n) = stream.poll_transmit(&mut buf) {
        out.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    out
}

/// An unfragmented record `6,<seq>,<ts>,-;rec <seq>\n`.
pub(crate) fn rec(seq: u64, ts: u64) -> Vec<u8> {
    format!("6,{seq},{ts},-;rec {seq}\n").into_bytes()
}

pub(crate) fn body(seq: u64) -> Vec<u8> {
    format!("rec {seq}\n").into_bytes()
}

/// A datagram a hostile or broken peer might send: a record numbered near 0, below 5000, anywhere
/// in `u64` or near 10^6, its `ts_usec` now and then random, a release that changes, `ncemg`
/// now and then; a fragment of a record of up to 60,000 bytes; or garbage.
pub(crate) fn hostile_datagram(rng: &mut SplitMix64) -> Vec<u8> {
    let seq = match rng.below(4) {
        0 => rng.below(64),
        1 => rng.below(5000),
        2 => rng.next_u64(),
        _ => 1_000_000 + rng.below(300),
    };
    let ts = if rng.below(8) == 0 {
        rng.next_u64()
    } else {
        seq.wrapping_mul(1000) % (1 << 50)
    };
    let release = match rng.below(6) {
        0 => "6.1.0,",
        1 => "7.3.4,",
        _ => "",
    };
    let emg = if rng.below(10) == 0 { ",ncemg=1" } else { "" };
    match rng.below(5) {
        0 => {
            let total = 1 + rng.below(60_000) as usize;
            let offset = rng.below(total as u64) as usize;
            let len = (1 + rng.below(900) as usize).min(total - offset);
            let mut d =
                format!("{release}6,{seq},{ts},-{emg},ncfrag={offset}/{total};").into_bytes();
            d.extend(std::iter::repeat_n(b'f', len));
            d
        }
        1 => {
            let n = rng.below(3000) as usize;
            (0..n).map(|_| rng.next_u64() as u8).collect()
        }
        _ => {
            let n = rng.below(1200) as usize;
            let mut d = format!("{release}6,{seq},{ts},-{emg};").into_bytes();
            d.extend(std::iter::repeat_n(b'x', n));
            d
        }
    }
}

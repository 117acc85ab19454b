//! Helpers shared by the integration tests: owned copies of events.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::ops::Range;

use ncrx_core::{Event, Receiver, RestartReason, Stream};

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
        Event::Record(r) => Ev::Rec(r.seq, r.body.to_vec()),
        Event::Late(r) => Ev::Late(r.seq, r.body.to_vec()),
        Event::Lost { seqs } => Ev::Lost(seqs.clone()),
        Event::Incomplete(i) => Ev::Incomplete {
            seq: i.record.seq,
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

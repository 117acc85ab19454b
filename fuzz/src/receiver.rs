//! ncrx-core: the receiver driven by arbitrary datagrams and times, and the reliable sender of
//! netconsole-proto driven by arbitrary records, responses and times.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use ncrx_core::{Event, Receiver, ReceiverConfig, StreamConfig};
use netconsole_proto::{MAX_PRINT_CHUNK, Response, Sender, SenderConfig};
use netpoll_frame::Instant;

#[derive(Debug, Arbitrary)]
enum RxStep {
    /// A well-formed extended record (or one fragment of it).
    Record {
        source: u8,
        seq: u16,
        ts: u16,
        level: u8,
        text: Vec<u8>,
        fragment: Option<(u8, u8)>,
    },
    /// An emergency retransmission.
    Emergency { source: u8, seq: u16 },
    /// Arbitrary bytes.
    Garbage { source: u8, bytes: Vec<u8> },
    /// Time passes.
    Wait { millis: u16 },
    /// A timeout call, early or late.
    Timeout,
    /// The source's port is closed (ICMP port unreachable).
    Unreachable { source: u8 },
}

/// Drives a receiver with up to four sources. After every step: memory within the bound,
/// no (epoch, seq) delivered twice (in order, late, or both) or both delivered and reported
/// lost, a deadline never in the past after `handle_timeout`.
pub fn receiver(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let mut stream = StreamConfig::daemon();
    stream.slots = 64;
    stream.retransmit_stride = 16;
    stream.max_held_bytes = 64 * 1024;
    // Senders that do not answer held 100 ms, the head of a fresh boot (below 48) asked for.
    stream.unanswered_hole_timeout = Some(Duration::from_millis(100));
    stream.ask_for_boot_head = true;
    let mut config = ReceiverConfig::default();
    config.stream = stream;
    config.max_sources = 3;
    let mut receiver: Receiver<u8> = Receiver::new(config.clone());
    // The same inputs through the batch calls (`handle_datagram_and_drain`, `drain_events`).
    let mut twin: Receiver<u8> = Receiver::new(config);
    let (mut events, mut twin_events) = (Vec::new(), Vec::new());
    let mut now = Instant::from_millis(1);
    // (source, epoch, seq) delivered in order, and given up on.
    // An evicted source starts again at epoch 0: count its generations apart.
    let mut epochs = [(0u64, 0u64); 4];
    let mut delivered = BTreeSet::new();
    let mut late = HashSet::new();
    // Loss ranges by (source, epoch, start) → end: ranges, not numbers, since one event can
    // give up on tens of thousands of numbers.
    let mut lost: BTreeMap<(u8, (u64, u64), u64), u64> = BTreeMap::new();
    let mut buf = [0u8; 2048];
    // Sources reported unreachable: nothing may be sent to them until an `ncemg` record
    // (or their eviction: a new stream starts over).
    let mut silenced = [false; 4];
    let trace = std::env::var_os("FUZZ_TRACE").is_some();
    while !input.is_empty() {
        let Ok(step) = RxStep::arbitrary(&mut input) else {
            break;
        };
        if trace {
            eprintln!("{now:?} {step:?}");
        }
        // The datagram of this step, if it is one; fed to both receivers below.
        let datagram: Option<(u8, Vec<u8>)> = match step {
            RxStep::Record {
                source,
                seq,
                ts,
                level,
                text,
                fragment,
            } => {
                let text: Vec<u8> = text.into_iter().map(|b| b'a' + b % 26).collect();
                let header = format!("{},{seq},{ts},-", level % 8);
                let datagram = match fragment {
                    None => [header.as_bytes(), b";", &text, b"\n"].concat(),
                    Some((offset, len)) => {
                        let total = text.len() + 1;
                        let offset = usize::from(offset) % total;
                        let end = (offset + usize::from(len) + 1).min(total);
                        let body = [&text[..], b"\n"].concat();
                        let frag = format!(",ncfrag={offset}/{total};");
                        [header.as_bytes(), frag.as_bytes(), &body[offset..end]].concat()
                    }
                };
                Some((source % 4, datagram))
            }
            RxStep::Emergency { source, seq } => Some((
                source % 4,
                format!("6,{seq},{seq},-,ncemg=1;emergency {seq}\n").into_bytes(),
            )),
            RxStep::Garbage { source, bytes } => Some((source % 4, bytes)),
            RxStep::Wait { millis } => {
                now += Duration::from_millis(u64::from(millis));
                None
            }
            RxStep::Timeout => {
                receiver.handle_timeout(now);
                twin.handle_timeout(now);
                if let Some(deadline) = receiver.poll_timeout() {
                    assert!(deadline > now, "deadline {deadline:?} not after {now:?}");
                }
                None
            }
            RxStep::Unreachable { source } => {
                if receiver.stream(&(source % 4)).is_some() {
                    silenced[usize::from(source % 4)] = true;
                }
                receiver.handle_unreachable(now, &(source % 4));
                twin.handle_unreachable(now, &(source % 4));
                None
            }
        };
        if let Some((source, datagram)) = &datagram {
            if datagram.windows(5).any(|w| w == b"ncemg") {
                silenced[usize::from(*source)] = false;
            }
            receiver.handle_datagram(now, source, datagram);
            twin.handle_datagram_and_drain(now, source, datagram, |s, e| {
                twin_events.push(format!("{s} {e:?}"));
            });
        }
        assert!(
            receiver.memory_used() <= receiver.memory_bound(),
            "memory over the bound"
        );
        while let Some((source, event)) = receiver.poll_event() {
            if trace {
                eprintln!("  -> {source} {event:?}");
            }
            events.push(format!("{source} {event:?}"));
            let s = usize::from(source);
            match event {
                Event::Record(record) => {
                    let key = (source, epochs[s], record.fields.seq);
                    let covered = lost
                        .range(..=key)
                        .next_back()
                        .is_some_and(|(k, &end)| k.0 == key.0 && k.1 == key.1 && key.2 < end);
                    assert!(!covered, "{key:?} delivered after reported lost");
                    assert!(
                        !late.contains(&key),
                        "{key:?} delivered late, then in order"
                    );
                    assert!(delivered.insert(key), "{key:?} delivered twice");
                }
                Event::Late(record) => {
                    // Once, and never for a record already delivered in order.
                    let key = (source, epochs[s], record.fields.seq);
                    assert!(
                        !delivered.contains(&key),
                        "{key:?} delivered in order and late"
                    );
                    assert!(late.insert(key), "{key:?} delivered late twice");
                }
                Event::Lost { seqs } => {
                    let (from, to) = (
                        (source, epochs[s], seqs.start),
                        (source, epochs[s], seqs.end),
                    );
                    assert!(seqs.start < seqs.end, "{from:?}: empty loss range");
                    if let Some(key) = delivered.range(from..to).next() {
                        panic!("{key:?} reported lost after delivery");
                    }
                    // Each number is given up on once: ranges of one epoch never overlap.
                    if let Some((k, &end)) = lost.range(..to).next_back() {
                        assert!(
                            k.0 != source || k.1 != epochs[s] || end <= seqs.start,
                            "{from:?}..{} reported lost twice",
                            seqs.end
                        );
                    }
                    lost.insert(from, seqs.end);
                }
                Event::Restart(restart) => epochs[s].1 = restart.epoch,
                Event::SourceEvicted => {
                    epochs[s] = (epochs[s].0 + 1, 0);
                    silenced[s] = false;
                }
                _ => {}
            }
        }
        // The batch calls hand out exactly what poll_event does, in the same order.
        twin.drain_events(|s, e| twin_events.push(format!("{s} {e:?}")));
        assert_eq!(
            events, twin_events,
            "drain_events / handle_datagram_and_drain"
        );
        events.clear();
        twin_events.clear();
        assert_eq!(receiver.poll_timeout(), twin.poll_timeout());
        while let Some((to, len)) = receiver.poll_transmit(&mut buf) {
            assert!(
                !silenced[usize::from(to)],
                "sent to {to}, reported unreachable"
            );
            let response = buf[..len].to_vec();
            assert_eq!(twin.poll_transmit(&mut buf), Some((to, len)));
            assert_eq!(buf[..len], response[..]);
        }
        assert_eq!(twin.poll_transmit(&mut buf), None);
    }
}

#[derive(Debug, Arbitrary)]
enum TxStep {
    Push { len: u16 },
    Respond { ack: u16, missing: Vec<u16> },
    Garbage { bytes: Vec<u8> },
    Wait { millis: u16 },
    Timeout,
    Drain,
}

/// Drives the reliable sender with records, arbitrary (also hostile) responses and time. It
/// stays within its window, never hands out a datagram over 1000 bytes, and its deadline is
/// never in the past after `handle_timeout`.
pub fn sender(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let window = 16;
    let mut sender = Sender::new(SenderConfig::default().with_window(window));
    let mut now = Instant::ZERO;
    let mut seq = 0u64;
    let mut out = [0u8; MAX_PRINT_CHUNK];
    while !input.is_empty() {
        let Ok(step) = TxStep::arbitrary(&mut input) else {
            break;
        };
        match step {
            TxStep::Push { len } => {
                let text = "x".repeat(usize::from(len) % 3000);
                let record = format!("6,{seq},{},-;{text}\n", seq * 10);
                sender
                    .push(now, record.as_bytes())
                    .expect("a well-formed record");
                seq += 1;
            }
            TxStep::Respond { ack, missing } => {
                let mut text = format!("ncrx{ack}");
                let mut last = u64::from(ack);
                for m in missing {
                    last += u64::from(m) + 1;
                    text.push_str(&format!(" {last}"));
                }
                if let Ok(response) = Response::parse(text.as_bytes()) {
                    sender.handle_response(now, &response);
                }
            }
            TxStep::Garbage { bytes } => {
                if let Ok(response) = Response::parse(&bytes) {
                    sender.handle_response(now, &response);
                }
            }
            TxStep::Wait { millis } => now += Duration::from_millis(u64::from(millis)),
            TxStep::Timeout => {
                sender.handle_timeout(now);
                if let Some(deadline) = sender.poll_timeout() {
                    assert!(deadline > now, "deadline {deadline:?} not after {now:?}");
                }
            }
            TxStep::Drain => {
                while let Some(len) = sender.poll_transmit(&mut out) {
                    assert!(len <= MAX_PRINT_CHUNK);
                }
            }
        }
        assert!(sender.unacked() <= window, "window exceeded");
    }
}

//! Replaying real kernel captures (Linux 6.1 and 7.3) through the receiver, with the pcap
//! timestamps as time: every extended source delivers exactly its `kmsg.raw` records, in
//! order, with nothing lost, late, incomplete or restarted; plain targets come out as plain
//! text. A sample (`tests/data`, cut by `make_sample.py`) always runs; the whole set runs when
//! `../shared/captures` exists beside the workspace (its absence skips that test with a note,
//! and fails it under `CI=true`).
//!
//! A replay of the log (module-parameter targets replay it from seq 0 at load, sysrq `R` does
//! it again: same seq, same `ts_usec`) is what this receiver treats as duplicates while it
//! still remembers those sequence numbers; when the replayed records are older than its
//! memory (a 64-slot ring remembers 512 numbers), their far-back seq and ts_usec restart the stream
//! and the log comes out again in a new epoch. Both are checked here.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::{Ev, own};
use ncrx_core::{Event, Receiver, ReceiverConfig, RestartReason};
use netconsole_proto::{Datagram, Header};
use netpoll_frame::{Frame, Instant};

const RELEASE: &[u8] = b"7.3.4+deb13-amd64";

/// A delivered record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    seq: u64,
    ts_usec: u64,
    level: u8,
    facility: u8,
    flag: netconsole_proto::Flag,
    caller: Option<netconsole_proto::Caller>,
    release: Option<Vec<u8>>,
    body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Outcome {
    records: BTreeMap<SocketAddr, Vec<Delivered>>,
    others: Vec<(SocketAddr, Ev)>,
    plain: usize,
    /// Sequence numbers asked for again (acks alone are fine).
    requested: usize,
}

fn udp_datagrams(pcap: &Path) -> Vec<(Instant, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    for packet in testkit::read_pcap(pcap) {
        // Multicast listener reports and neighbour solicitations are not UDP: skipped.
        if let Ok(frame) = Frame::parse(&packet.data) {
            let at = Instant::from_nanos(u64::try_from(packet.timestamp.as_nanos()).unwrap());
            out.push((at, frame.source(), frame.payload().to_vec()));
        }
    }
    out
}

fn kmsg_records(path: &Path) -> BTreeMap<u64, Vec<u8>> {
    testkit::kmsg_records(path)
        .into_iter()
        .map(|r| (Header::parse(&r).unwrap().0.fields.seq, r))
        .collect()
}

fn collect(rx: &mut Receiver, outcome: &mut Outcome) {
    while let Some((source, event)) = rx.poll_event() {
        match &event {
            Event::Record(r) => outcome.records.entry(source).or_default().push(Delivered {
                seq: r.fields.seq,
                ts_usec: r.fields.ts_usec,
                level: r.fields.level,
                facility: r.fields.facility,
                flag: r.fields.flag,
                caller: r.fields.caller,
                release: r.release.map(<[u8]>::to_vec),
                body: r.body.to_vec(),
            }),
            Event::Plain(_) => outcome.plain += 1,
            other => outcome.others.push((source, own(other))),
        }
    }
    let mut buf = [0u8; 1000];
    while let Some((_, n)) = rx.poll_transmit(&mut buf) {
        let response = netconsole_proto::Response::parse(&buf[..n]).unwrap();
        outcome.requested += response.missing().count();
    }
}

/// Feeds datagrams in time order, firing every deadline that falls before each.
fn feed(rx: &mut Receiver, datagrams: &[(Instant, SocketAddr, Vec<u8>)], outcome: &mut Outcome) {
    for (at, source, payload) in datagrams {
        while let Some(deadline) = rx.poll_timeout().filter(|d| d <= at) {
            rx.handle_timeout(deadline);
            collect(rx, outcome);
        }
        rx.handle_datagram(*at, source, payload);
        collect(rx, outcome);
    }
}

fn finish(rx: &mut Receiver, end: Instant, outcome: &mut Outcome) {
    while let Some(deadline) = rx.poll_timeout().filter(|d| *d <= end) {
        rx.handle_timeout(deadline);
        collect(rx, outcome);
    }
}

fn check_record(kernel: &str, case: &str, got: &Delivered, kmsg: &[u8]) {
    let (header, body) = Header::parse(kmsg).unwrap();
    let want = (
        header.fields.seq,
        header.fields.ts_usec,
        header.fields.level,
        header.fields.facility,
        header.fields.flag,
        header.fields.caller,
    );
    let have = (
        got.seq,
        got.ts_usec,
        got.level,
        got.facility,
        got.flag,
        got.caller,
    );
    assert_eq!(have, want, "{kernel}/{case} seq {}", got.seq);
    let with_release = kernel == "linux-7.3" && matches!(case, "ext_release" | "configfs_userdata");
    assert_eq!(
        got.release.as_deref(),
        with_release.then_some(RELEASE),
        "{kernel}/{case} seq {}",
        got.seq
    );
    if kernel == "linux-7.3" && case == "configfs_userdata" {
        // netconsole appends userdata and sysdata lines to the kernel's record.
        assert!(
            got.body.starts_with(body),
            "{kernel}/{case} seq {}",
            got.seq
        );
        let extra = &got.body[body.len()..];
        assert!(extra.contains(&b'='), "{kernel}/{case} seq {}", got.seq);
    } else {
        assert_eq!(got.body, body, "{kernel}/{case} seq {}", got.seq);
    }
}

/// The kernel booted shortly before the capture: the numbers before each source's first
/// record are asked for (once: a stock kernel never answers) and reported lost, first
/// thing. Takes those losses and requests out of `outcome`; returns how many numbers.
fn take_head_losses(kernel: &str, case: &str, outcome: &mut Outcome) -> usize {
    let mut head = 0;
    for (source, records) in &outcome.records {
        let first = records[0].seq;
        if first >= ncrx_core::BOOT_HEAD {
            // Joined in the middle: nothing before it is asked for.
            continue;
        }
        // From 0, in one or more ranges.
        let mut covered = 0;
        while covered < first {
            let at = outcome.others.iter().position(|(s, _)| s == source);
            match at.map(|i| outcome.others.remove(i)) {
                Some((_, Ev::Lost(range))) if range.start == covered => covered = range.end,
                other => panic!("{kernel}/{case}: head lost at {covered}: {other:?}"),
            }
        }
        head += usize::try_from(first).unwrap();
    }
    assert!(
        outcome.requested <= head && (head == 0 || outcome.requested > 0),
        "{kernel}/{case}: {} asked for, {head} at the head",
        outcome.requested
    );
    outcome.requested = 0;
    head
}

fn run_case(dir: &Path, kernel: &str, case: &str, config: &ReceiverConfig) -> usize {
    let datagrams = udp_datagrams(&dir.join("frames.pcap"));
    let kmsg = kmsg_records(&dir.join("kmsg.raw"));
    let mut rx: Receiver = Receiver::new(config.clone());
    let mut outcome = Outcome::default();
    feed(&mut rx, &datagrams, &mut outcome);
    let end = datagrams.last().unwrap().0;
    finish(
        &mut rx,
        end + core::time::Duration::from_secs(120),
        &mut outcome,
    );
    let head = if config.stream.ask_for_boot_head {
        take_head_losses(kernel, case, &mut outcome)
    } else {
        0
    };
    assert!(
        outcome.others.is_empty(),
        "{kernel}/{case}: {:?}",
        outcome.others
    );
    assert_eq!(outcome.requested, 0, "{kernel}/{case}: nothing to ask for");
    let plain_datagrams = datagrams
        .iter()
        .filter(|d| matches!(Datagram::parse(&d.2), Ok(Datagram::Plain(_))))
        .count();
    assert_eq!(outcome.plain, plain_datagrams, "{kernel}/{case}");
    let extended_sources = outcome.records.len();
    if case == "plain" {
        assert_eq!(extended_sources, 0);
        assert!(outcome.plain > 0);
        return 0;
    }
    assert_eq!(extended_sources, 1, "{kernel}/{case}");
    let delivered = outcome.records.values().next().unwrap();
    let first = delivered[0].seq;
    let expected: Vec<u64> = kmsg.range(first..).map(|(&seq, _)| seq).collect();
    let seqs: Vec<u64> = delivered.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs, expected,
        "{kernel}/{case}: exactly the kmsg.raw records"
    );
    for record in delivered {
        check_record(kernel, case, record, &kmsg[&record.seq]);
    }
    let stats = rx.stats().streams;
    assert_eq!(stats.delivered as usize, delivered.len());
    assert_eq!(
        stats.duplicates + stats.late + stats.lost + stats.malformed,
        head as u64
    );

    // The same log again after the end, as a replay would send it.
    let shift = end - datagrams[0].0 + core::time::Duration::from_secs(121);
    let replay: Vec<_> = datagrams
        .iter()
        .filter(|d| !matches!(Datagram::parse(&d.2), Ok(Datagram::Plain(_))))
        .map(|(at, source, payload)| (*at + shift, *source, payload.clone()))
        .collect();
    let mut again = Outcome::default();
    feed(&mut rx, &replay, &mut again);
    finish(&mut rx, end + shift * 2, &mut again);
    // The stream remembers what it delivered over 8 times its ring.
    let remembered = kmsg.range(first..).count() <= config.stream.slots * 8;
    if remembered {
        assert!(
            again.records.is_empty(),
            "{kernel}/{case}: replay delivered again"
        );
        assert!(
            again.others.is_empty(),
            "{kernel}/{case}: {:?}",
            again.others
        );
        assert_eq!(
            rx.stats().streams.duplicates as usize,
            replay.len(),
            "{kernel}/{case}: every replayed datagram counted as a duplicate"
        );
    } else {
        assert!(
            matches!(again.others[0].1, Ev::Restart(RestartReason::FarBack, s) if s == first),
            "{kernel}/{case}: {:?}",
            &again.others[..1]
        );
        let seqs: Vec<u64> = again
            .records
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(
            seqs, expected,
            "{kernel}/{case}: the log again, in a new epoch"
        );
    }
    delivered.len()
}

/// The defaults, libncrx's values, the daemon's preset, and a 64-slot ring that remembers
/// less than a whole capture (so a replay restarts the stream).
fn configs() -> [ReceiverConfig; 4] {
    let mut tiny = ReceiverConfig::daemon();
    tiny.stream.slots = 64;
    tiny.stream.retransmit_stride = 16;
    [
        ReceiverConfig::default(),
        ReceiverConfig::libncrx(),
        ReceiverConfig::daemon(),
        tiny,
    ]
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn sample_captures_deliver_exactly_the_kmsg_records() {
    // tests/data/<kernel>-<case>/: the extended captures, cut by make_sample.py.
    let mut samples = Vec::new();
    for entry in std::fs::read_dir(crate_dir().join("tests/data")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.is_dir() {
            samples.push(dir);
        }
    }
    samples.sort();
    assert_eq!(samples.len(), 6, "{samples:?}");
    for dir in samples {
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let (kernel, case) = name.split_at(name[6..].find('-').unwrap() + 6);
        let case = &case[1..];
        for config in configs() {
            let n = run_case(&dir, kernel, case, &config);
            assert_eq!(n, 33, "{kernel}/{case}");
        }
    }
}

#[test]
fn full_captures_when_present() {
    let captures = testkit::captures_or_skip();
    if captures.is_empty() {
        return;
    }
    for capture in &captures {
        let (kernel, case, dir) = (capture.kernel.as_str(), capture.case.as_str(), &capture.dir);
        for config in configs() {
            let n = run_case(dir, kernel, case, &config);
            println!(
                "{kernel}/{case}: {n} records ({} slots)",
                config.stream.slots
            );
            if case != "plain" {
                assert!(n > 300, "{kernel}/{case}");
            }
        }
    }
}

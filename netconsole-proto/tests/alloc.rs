//! Proof that the hot paths allocate nothing: a counting global allocator, every operation
//! run on real input inside a measured region, and the count asserted to be zero.
//!
//! Parsing each datagram of the in-repo capture sample (Linux 6.1 and 7.3, every target
//! kind), splitting bodies, walking lines and header fields, unescaping into a buffer,
//! reading a reassembled record's header and partial body, formatting records, userdata and
//! sysdata, fragmenting, encoding and parsing responses, and the reliable sender once its
//! buffers have reached their steady size.
//!
//! The allocator's counters are global to the process, so this binary runs without libtest
//! (`harness = false` in Cargo.toml): its `main` hands the tests to `testkit::run_tests`,
//! which runs them one after another on the main thread, the only thread in the process, so
//! no other code allocates between a test's readings.

use std::alloc::System;
use std::path::PathBuf;

use netconsole_proto::{
    CONSOLE_EXT_LOG_MAX, DEFAULT_MAX_TOTAL, Datagram, DictEntry, ExtFragments, FragmentedRecord,
    Header, KmsgRecord, MAX_PRINT_CHUNK, PRINTK_MESSAGE_MAX, Response, SendOptions, Sender,
    SenderConfig, Sysdata, encode_response, format_kmsg, format_userdata, plain_chunks,
    unescape_into,
};
use netpoll_frame::{Frame, Instant};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The UDP payloads of every capture in the in-repo sample, read before measuring.
fn sample_payloads() -> Vec<Vec<u8>> {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut payloads = Vec::new();
    for (kernel, case) in testkit::KNOWN {
        let pcap = data.join(format!("{kernel}-{case}")).join("frames.pcap");
        for packet in testkit::read_pcap(&pcap) {
            if let Ok(frame) = Frame::parse(&packet.data) {
                payloads.push(frame.payload().to_vec());
            }
        }
    }
    payloads
}

/// What reading every datagram found, so that the work cannot be optimised away and the
/// test knows it saw each kind.
#[derive(Debug, Default)]
struct Seen {
    extended: usize,
    fragments: usize,
    plain: usize,
    lines: usize,
    unescaped: usize,
    fields: usize,
}

/// Parses every payload, splits each body both ways, walks lines and fields, unescapes
/// text and values into `out`. Allocation-free by contract.
fn read_all(payloads: &[Vec<u8>], out: &mut [u8]) -> Seen {
    let mut seen = Seen::default();
    for payload in payloads {
        match Datagram::parse(payload) {
            Ok(Datagram::Extended(record)) => {
                seen.extended += 1;
                seen.fields += record.header.extra_fields().count();
                seen.fields += record.header.unknown_fields().count();
                if record.is_fragment() {
                    seen.fragments += 1;
                    continue;
                }
                for body in [
                    record.split_body(),
                    record.split_body_limited(PRINTK_MESSAGE_MAX),
                ] {
                    seen.unescaped += unescape_into(body.text(), out).expect("sized").len;
                    for line in body.lines() {
                        seen.lines += 1;
                        seen.unescaped += unescape_into(line.key(), out).expect("sized").len;
                        seen.unescaped += unescape_into(line.value(), out).expect("sized").len;
                    }
                }
            }
            Ok(Datagram::Plain(text)) => seen.plain += text.len(),
            Ok(_) => {}
            Err(e) => panic!("a captured datagram did not parse: {e}"),
        }
    }
    seen
}

/// Formats a record (escaping, dictionary), userdata and sysdata, then fragments the
/// result into datagrams; returns the bytes written. Allocation-free by contract.
fn write_all(text: &[u8], kmsg_buf: &mut [u8], extra_buf: &mut [u8]) -> usize {
    let dict = [&b"SUBSYSTEM=pci"[..], b"DEVICE=+pci:0000:00:03.0"].map(dict_entry);
    let mut record = KmsgRecord::new(4, 77, 1_234_567, text);
    record.dict = &dict;
    let msg_len = format_kmsg(&record, kmsg_buf);
    let userdata_len = format_userdata(&[(b"host", b"rig-1"), (b"empty", b"")], extra_buf)
        .expect("room for userdata");
    let (userdata, rest) = extra_buf.split_at_mut(userdata_len);
    let mut sysdata = Sysdata::default();
    sysdata.cpu = Some(3);
    sysdata.taskname = Some(b"kworker/3:1");
    sysdata.release = Some(b"6.15.0");
    sysdata.msgid = Some(9);
    let sysdata_len = sysdata.format_into(rest).expect("room for sysdata");
    let mut options = SendOptions::default();
    options.release = Some(b"6.15.0");
    options.userdata = userdata;
    options.sysdata = &rest[..sysdata_len];
    let msg = &kmsg_buf[..msg_len];
    let mut written = msg_len;
    let mut datagram = [0u8; MAX_PRINT_CHUNK];
    let mut frags = ExtFragments::new(msg, options).expect("sendable");
    while let Some(n) = frags.write_next(&mut datagram) {
        written += n;
    }
    written + plain_chunks(msg).count()
}

/// Encodes a response, parses it back and walks it; returns the numbers seen.
fn respond(missing: &[u64], out: &mut [u8]) -> usize {
    let (len, fitted) = encode_response(41, missing, out).expect("room for the ack");
    let response = Response::parse(&out[..len]).expect("own response parses");
    assert_eq!(response.missing().count(), fitted);
    fitted
}

/// One round of a sender at steady state: pushes records, sends them, gets an ack and a
/// retransmission request, sends those, and lets emergency transmission run once.
fn sender_round(sender: &mut Sender, first_seq: u64, msgs: &[Vec<u8>], t: Instant) -> usize {
    let mut sent = 0;
    let mut out = [0u8; MAX_PRINT_CHUNK];
    for msg in msgs {
        sender.push(t, msg).expect("pushable");
    }
    while sender.poll_transmit(&mut out).is_some() {
        sent += 1;
    }
    // Ack the first half, ask for two of the rest.
    let half = first_seq + msgs.len() as u64 / 2;
    let mut response = [0u8; 64];
    let (len, _) = encode_response(half, &[half + 1, half + 3], &mut response).expect("room");
    sender.handle_response(t, &Response::parse(&response[..len]).expect("parses"));
    while sender.poll_transmit(&mut out).is_some() {
        sent += 1;
    }
    if let Some(deadline) = sender.poll_timeout() {
        sender.handle_timeout(deadline);
        while sender.poll_transmit(&mut out).is_some() {
            sent += 1;
        }
    }
    // Everything acked before the next round.
    let last = first_seq + msgs.len() as u64 - 1;
    let (len, _) = encode_response(last, &[], &mut response).expect("room");
    sender.handle_response(t, &Response::parse(&response[..len]).expect("parses"));
    sent
}

/// `ROUND` records of 100 to 2500 bytes (fragmented from 1000 on), seq from `first`.
const ROUND: u64 = 16;

fn sender_msgs(first: u64) -> Vec<Vec<u8>> {
    (0..ROUND)
        .map(|i| {
            let seq = first + i;
            let mut msg = format!("6,{seq},{},-;", seq * 1000).into_bytes();
            let len = 100 + usize::try_from(i).unwrap() * 160;
            msg.resize(len - 1, b'x');
            msg.push(b'\n');
            msg
        })
        .collect()
}

fn main() {
    testkit::run_tests(&[("hot_paths_allocate_nothing", hot_paths_allocate_nothing)]);
}

fn hot_paths_allocate_nothing() {
    // Inputs and buffers, allocated before measuring.
    let payloads = sample_payloads();
    assert!(payloads.len() > 100, "sample too small: {}", payloads.len());
    let mut out = vec![0u8; 64 * 1024];
    let text: Vec<u8> = b"kernel BUG at mm/slub.c:42!\tRIP: 0010:kfree+0x1c/0x1e0 \\ \x7f\n"
        .iter()
        .copied()
        .cycle()
        .take(3000)
        .collect();
    let mut kmsg_buf = vec![0u8; CONSOLE_EXT_LOG_MAX];
    let mut extra_buf = vec![0u8; 1024];
    let missing: Vec<u64> = (1_000..1_400).step_by(3).collect();
    let mut response_buf = [0u8; 1000];

    // A fragmented record being reassembled (creation allocates its body, by design).
    let mut datagram = [0u8; MAX_PRINT_CHUNK];
    let msg_len = format_kmsg(&KmsgRecord::new(6, 9, 10, &text), &mut kmsg_buf);
    let mut frags = ExtFragments::new(&kmsg_buf[..msg_len], SendOptions::default()).unwrap();
    let mut fragments = Vec::new();
    while let Some(n) = frags.write_next(&mut datagram) {
        fragments.push(datagram[..n].to_vec());
    }
    assert!(fragments.len() >= 3);
    let first = netconsole_proto::ExtRecord::parse(&fragments[0]).unwrap();
    let mut partial = FragmentedRecord::new(&first, DEFAULT_MAX_TOTAL).unwrap();

    // The sender, warmed up: two rounds bring its queues and buffers to their steady size.
    let mut sender = Sender::new(SenderConfig::default().with_window(64));
    let rounds: Vec<Vec<Vec<u8>>> = (0..6).map(|r| sender_msgs(1 + r * ROUND)).collect();
    let t0 = Instant::from_millis(0);
    for (r, msgs) in rounds.iter().enumerate().take(2) {
        let first_seq = 1 + r as u64 * ROUND;
        sender_round(
            &mut sender,
            first_seq,
            msgs,
            t0 + core::time::Duration::from_secs(20 * r as u64),
        );
    }

    let region = Region::new(GLOBAL);

    let seen = read_all(&payloads, &mut out);
    let written = write_all(&text, &mut kmsg_buf, &mut extra_buf);
    let fitted = respond(&missing, &mut response_buf);
    // Reassembly after creation: pushing the other fragments, reading the header and
    // the partial body.
    for fragment in &fragments[2..] {
        let record = netconsole_proto::ExtRecord::parse(fragment).unwrap();
        partial.push(&record).unwrap();
    }
    let header: Header<'_> = partial.header();
    let partial_len = partial.body().bytes().len();
    let gaps = partial.body().missing().count();
    let mut sent = 0;
    for (r, msgs) in rounds.iter().enumerate().skip(2) {
        let first_seq = 1 + r as u64 * ROUND;
        let t = t0 + core::time::Duration::from_secs(20 * r as u64);
        sent += sender_round(&mut sender, first_seq, msgs, t);
    }

    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "allocations in the measured region: {change:?}"
    );

    // The work was done, on real input.
    assert!(
        seen.extended > 50 && seen.fragments > 10 && seen.plain > 1000,
        "{seen:?}"
    );
    assert!(
        seen.lines > 50 && seen.unescaped > 10_000 && seen.fields > 10,
        "{seen:?}"
    );
    assert!(written > 2 * 3000);
    assert!(fitted > 100);
    assert_eq!(
        (
            header.fields.seq,
            header.fields.ts_usec,
            header.fields.level
        ),
        (9, 10, 6)
    );
    assert_eq!((partial_len, gaps), (msg_len - "6,9,10,-;".len(), 1));
    assert_eq!(sender.stats().pushed, 6 * ROUND);
    assert!(sent > 4 * ROUND as usize, "{sent}");
    assert_eq!(sender.unacked(), 0);
}

/// A dictionary entry from `KEY=VALUE`.
fn dict_entry(line: &[u8]) -> DictEntry<'_> {
    let eq = line.iter().position(|&b| b == b'=').unwrap_or(line.len());
    DictEntry {
        key: &line[..eq],
        value: line.get(eq + 1..).unwrap_or_default(),
    }
}

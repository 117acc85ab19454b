//! Hostile peers against the parsers and the reliable sender, measured with a counting
//! global allocator.
//!
//! - [`Datagram::parse`] on every byte value at every position of a header (plain, with
//!   `caller=` and `ncfrag=`, with a release) and of a response packet: a typed error, plain
//!   text, or a parse whose numbers are the digits written; never a panic, never an
//!   allocation. 0-byte and 64 KiB datagrams likewise.
//! - A flood of response packets at a [`Sender`]: acks and requests for numbers it never held
//!   are counted (`unavailable`), requests for held records re-queue them at most once each;
//!   after the first responses, not one allocation, and the heap stays at what the held
//!   records take.
//!
//! The allocator's counters are global to the process, so this binary runs without libtest
//! (`harness = false` in Cargo.toml): its `main` hands the tests to `testkit::run_tests`,
//! which runs them one after another on the main thread, the only thread in the process, so
//! no other code allocates between a test's readings.

use std::alloc::System;
use std::time::Duration;

use netconsole_proto::{
    Datagram, Flag, MAX_PRINT_CHUNK, Response, Sender, SenderConfig, encode_response,
};
use netpoll_frame::Instant;
use testkit::heap::{self, INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The numeric fields of a header template: (byte range, which field).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    Prefix,
    Seq,
    TsUsec,
    Flag,
    Other,
}

/// Splits `header` (up to and including `;`) into fields by position: the release (if
/// `with_release`), prefix, seq, ts_usec, flag, then the rest.
fn field_at(header: &[u8], position: usize, with_release: bool) -> Field {
    let commas_before = header[..position]
        .split(|&b| b == b',')
        .count()
        .saturating_sub(1);
    if header[position] == b',' || header[position] == b';' {
        return Field::Other;
    }
    match commas_before.checked_sub(usize::from(with_release)) {
        Some(0) => Field::Prefix,
        Some(1) => Field::Seq,
        Some(2) => Field::TsUsec,
        Some(3) => Field::Flag,
        _ => Field::Other,
    }
}

/// The field of `bytes` that `position` lies in, as text (between the commas around it).
fn field_text(bytes: &[u8], position: usize) -> &[u8] {
    let start = bytes[..position]
        .iter()
        .rposition(|&b| b == b',')
        .map_or(0, |i| i + 1);
    let end = position
        + bytes[position..]
            .iter()
            .position(|&b| b == b',' || b == b';')
            .unwrap();
    &bytes[start..end]
}

/// Every byte value at every header position of `template`: checks what each parse gives and
/// that none allocates. Returns (extended, plain, errors).
fn every_byte_in_the_header(template: &[u8], with_release: bool) -> (u32, u32, u32) {
    let header_len = template.iter().position(|&b| b == b';').unwrap() + 1;
    let original = match Datagram::parse(template) {
        Ok(Datagram::Extended(r)) => r.header,
        other => panic!("the template must parse: {other:?}"),
    };
    let mut mutated = template.to_vec();
    let (mut extended, mut plain, mut errors) = (0, 0, 0);
    let before = heap::allocations(GLOBAL);
    for position in 0..header_len {
        let field = field_at(template, position, with_release);
        for value in 0..=255u8 {
            mutated.copy_from_slice(template);
            mutated[position] = value;
            let parsed = Datagram::parse(&mutated);
            match &parsed {
                Ok(Datagram::Extended(_)) => extended += 1,
                Ok(Datagram::Plain(text)) => {
                    assert_eq!(*text, &mutated[..]);
                    plain += 1;
                }
                Ok(_) => {}
                Err(_) => errors += 1,
            }
            let digit = value.is_ascii_digit();
            let header = match &parsed {
                Ok(Datagram::Extended(r)) => Some(&r.header),
                _ => None,
            };
            match field {
                Field::Seq | Field::TsUsec if digit => {
                    let text = field_text(&mutated, position);
                    let number: u64 = std::str::from_utf8(text).unwrap().parse().unwrap();
                    let header = header.unwrap_or_else(|| {
                        panic!("{:?}: {parsed:?}", String::from_utf8_lossy(&mutated))
                    });
                    let got = if field == Field::Seq {
                        header.fields.seq
                    } else {
                        header.fields.ts_usec
                    };
                    assert_eq!(got, number, "{:?}", String::from_utf8_lossy(&mutated));
                }
                Field::Prefix if digit => {
                    let text = field_text(&mutated, position);
                    let prefix: u32 = std::str::from_utf8(text).unwrap().parse().unwrap();
                    // The prefix is (facility << 3) | level, printk's `info_print_ext_header`:
                    // level 0..7 and facility 0..31, so a prefix of 256 or more is an error.
                    if prefix < 256 {
                        let header = header.expect("a prefix below 256 parses");
                        assert_eq!(u32::from(header.fields.level), prefix & 7);
                        assert_eq!(u32::from(header.fields.facility), prefix >> 3);
                    } else {
                        assert!(header.is_none(), "prefix {prefix} accepted");
                    }
                }
                Field::Seq | Field::TsUsec | Field::Prefix => {
                    // A number with a non-digit in it is not that record any more.
                    assert!(
                        header.is_none_or(|h| h.fields.seq != original.fields.seq
                            || h.fields.ts_usec != original.fields.ts_usec
                            || (h.fields.level, h.fields.facility)
                                != (original.fields.level, original.fields.facility)),
                        "{:?} parsed as the original",
                        String::from_utf8_lossy(&mutated)
                    );
                }
                Field::Flag => {
                    let expected = match value {
                        b'-' => Some(Flag::Normal),
                        b'c' => Some(Flag::Cont),
                        b'+' => Some(Flag::ContMore),
                        _ => None,
                    };
                    match expected {
                        Some(flag) => assert_eq!(header.map(|h| h.fields.flag), Some(flag)),
                        None => assert!(header.is_none(), "flag byte {value:#04x} accepted"),
                    }
                }
                Field::Other => {}
            }
        }
    }
    assert_eq!(heap::allocations(GLOBAL), before, "parsing allocated");
    (extended, plain, errors)
}

fn parsers_take_every_byte_value() {
    let templates: [(&[u8], bool); 3] = [
        (
            b"6,444,501151268,-;netconsole: network logging started\n",
            false,
        ),
        (
            b"4,1234,5678901,c,caller=T321,ncfrag=0/12;hello world!",
            false,
        ),
        (
            b"6.4.0,6,444,501151268,-;netconsole: network logging started\n",
            true,
        ),
    ];
    for (template, with_release) in templates {
        let (extended, plain, errors) = every_byte_in_the_header(template, with_release);
        println!(
            "{:?}: {extended} extended, {plain} plain, {errors} typed errors",
            String::from_utf8_lossy(&template[..20])
        );
    }

    // A response packet: every byte value at every position parses to the digits written
    // or fails with a typed error.
    let response = b"ncrx10 11 13";
    let mut mutated = response.to_vec();
    let mut allocated = 0;
    for position in 0..response.len() {
        for value in 0..=255u8 {
            mutated.copy_from_slice(response);
            mutated[position] = value;
            let before = heap::allocations(GLOBAL);
            let parsed = Datagram::parse(&mutated);
            allocated += heap::allocations(GLOBAL) - before;
            if let Ok(Datagram::Response(r)) = parsed {
                let text = std::str::from_utf8(&mutated[4..]).unwrap();
                let numbers: Vec<u64> = text.split(' ').map(|n| n.parse().unwrap()).collect();
                assert_eq!(r.ack(), numbers[0]);
                assert!(r.missing().eq(numbers[1..].iter().copied()));
            }
        }
    }
    assert_eq!(allocated, 0, "parsing responses allocated");
}

fn empty_and_64_kib_datagrams() {
    let mut record = b"6,4,4000,-;".to_vec();
    record.resize(65_506, b'y');
    record.push(b'\n');
    let garbage = vec![0xffu8; 65_507];
    let mut long_response = b"ncrx1".to_vec();
    while long_response.len() < 65_500 {
        long_response.extend_from_slice(b" 2");
    }
    let before = heap::allocations(GLOBAL);
    assert_eq!(Datagram::parse(b""), Ok(Datagram::Plain(b"")));
    assert_eq!(Datagram::parse(&garbage), Ok(Datagram::Plain(&garbage[..])));
    match Datagram::parse(&record) {
        Ok(Datagram::Extended(r)) => {
            assert_eq!((r.header.fields.seq, r.header.fields.ts_usec), (4, 4000));
            assert_eq!(r.body.len(), 65_507 - 11);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        Datagram::parse(&long_response).is_err(),
        "a response is at most 1000 bytes"
    );
    assert_eq!(heap::allocations(GLOBAL), before);
}

/// A flood of responses at a sender holding 64 records: acks far behind, requests for
/// numbers never held, for held ones (over and over), absurd acks: the state stays bounded,
/// each request is counted, nothing allocates once the queues have grown.
fn a_flood_of_responses_at_the_sender() {
    const WINDOW: u64 = 64;
    const BASE: u64 = 1_000;
    let records: Vec<Vec<u8>> = (0..WINDOW)
        .map(|i| format!("6,{},{},-;record {i}\n", BASE + i, i * 10).into_bytes())
        .collect();
    let held_bytes: usize = records.iter().map(Vec::len).sum();
    let mut responses: Vec<Vec<u8>> = Vec::new();
    let mut buf = [0u8; 1000];
    // (ack, requested seqs): requests below, inside and above the held range.
    let mut expect_unavailable = 0u64;
    let mut expect_retransmitted = 0u64;
    for i in 0..4096u64 {
        let ack = i % (BASE - 1);
        let missing: Vec<u64> = match i % 4 {
            0 => (0..100).map(|k| BASE + WINDOW + k * 7 + i).collect(),
            1 => (BASE..BASE + WINDOW).collect(),
            2 => vec![u64::MAX - 1, u64::MAX],
            _ => (0..150).map(|k| k * 3 + 1).filter(|s| *s > ack).collect(),
        };
        let (len, fitted) = encode_response(ack, &missing, &mut buf).unwrap();
        for &seq in &missing[..fitted] {
            if (BASE..BASE + WINDOW).contains(&seq) {
                expect_retransmitted += 1;
            } else {
                expect_unavailable += 1;
            }
        }
        responses.push(buf[..len].to_vec());
    }
    let rounds = 10;

    let baseline = heap::in_use(GLOBAL);
    let mut sender = Sender::new(SenderConfig::default().with_window(WINDOW as usize));
    let t0 = Instant::from_millis(1);
    for record in &records {
        sender.push(t0, record).unwrap();
    }
    let mut out = [0u8; MAX_PRINT_CHUNK];
    while sender.poll_transmit(&mut out).is_some() {}
    let mut now = t0;
    let mut warm = None;
    let mut sent = 0u64;
    let mut peak = 0i64;
    for round in 0..rounds {
        if round == 1 {
            warm = Some(heap::allocations(GLOBAL));
        }
        for response in &responses {
            let response = Response::parse(response).unwrap();
            sender.handle_response(now, &response);
            while sender.poll_transmit(&mut out).is_some() {
                sent += 1;
            }
            sender.handle_timeout(now);
            now += Duration::from_micros(10);
            peak = peak.max(heap::in_use(GLOBAL) - baseline);
        }
    }
    let steady = heap::allocations(GLOBAL) - warm.unwrap();
    let stats = sender.stats();
    println!(
        "sender flood: {} responses, {sent} datagrams re-sent, peak heap {peak} B for {held_bytes} B of records held, {steady} allocations after the first round",
        rounds * responses.len()
    );
    assert_eq!(
        sender.unacked(),
        WINDOW as usize,
        "no ack reached the held records"
    );
    assert_eq!(stats.acked, 0);
    assert_eq!(stats.unavailable, expect_unavailable * rounds as u64);
    assert_eq!(stats.retransmitted, expect_retransmitted * rounds as u64);
    assert_eq!(steady, 0, "allocations once the queues have grown");
    // The held records (their bytes and each Vec's header), the window deque, the pending
    // queue (at most window + 1 entries of 24 bytes), allocator rounding.
    let bound = i64::try_from(held_bytes).unwrap()
        + (i64::try_from(WINDOW).unwrap() + 2) * (64 + 24)
        + 4096;
    assert!(peak <= bound, "peak heap {peak} over {bound}");

    // An ack of u64::MAX acknowledges nothing (nothing retired yet, as libncrx writes it).
    sender.handle_response(now, &Response::parse(b"ncrx18446744073709551615").unwrap());
    assert_eq!(sender.unacked(), WINDOW as usize);
    // An ack of everything empties the window and gives its memory back.
    let last = format!("ncrx{}", BASE + WINDOW - 1);
    sender.handle_response(now, &Response::parse(last.as_bytes()).unwrap());
    assert_eq!(sender.unacked(), 0);
    assert_eq!(sender.stats().acked, WINDOW);
}

fn main() {
    testkit::run_tests(&[(
        "hostile_peers_at_the_parsers_and_the_sender",
        hostile_peers_at_the_parsers_and_the_sender,
    )]);
}

fn hostile_peers_at_the_parsers_and_the_sender() {
    parsers_take_every_byte_value();
    empty_and_64_kib_datagrams();
    a_flood_of_responses_at_the_sender();
}

//! The plain console line against real kernels: every `/dev/kmsg` record that went out on
//! the plain target, formatted with `format_console` and cut with `plain_chunks`, gives the
//! captured UDP payloads byte for byte, in order.
//!
//! A sample (the `rig-spec-*` and `rig-long-*` records and their datagrams) lives in
//! `tests/data/console`; the whole capture is used when `../shared/captures` exists (its absence
//! skips that test with a note, and fails it under `CI=true`).

use std::fs::File;
use std::path::{Path, PathBuf};

use netconsole_proto::{
    Caller, ConsoleOptions, ConsoleRecord, Header, RecordFields, format_console, plain_chunks,
    printed_on_console, unescape,
};
use netpoll_frame::Frame;
use proptest::prelude::*;

/// The plain target's log server port.
const PLAIN_PORT: u16 = 6666;
/// `loglevel=8` on the command line of every capture (guest-info.txt).
const CONSOLE_LOGLEVEL: u8 = 8;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn options_for(kernel: &str) -> ConsoleOptions {
    match kernel {
        "linux-6.1" => ConsoleOptions::LINUX_5_10,
        _ => ConsoleOptions::LINUX_6_3,
    }
}

fn udp_payloads(pcap: &Path, port: u16) -> Vec<Vec<u8>> {
    let mut reader = pcap_file::pcap::PcapReader::new(File::open(pcap).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        if let Ok(frame) = Frame::parse(&packet.data) {
            if frame.destination().port() == port {
                out.push(frame.payload().to_vec());
            }
        } else {
            // Multicast listener reports, neighbour solicitations: not UDP.
            assert_eq!(
                packet.data[12..14],
                [0x86, 0xdd],
                "an IPv4 frame did not parse"
            );
        }
    }
    out
}

/// Every record of a `kmsg.raw` as (fields, raw text), in seq order; a record `/dev/kmsg`
/// cut (no newline after the text, or a dangling escape) gets the whole text from the
/// manifest.
fn kmsg_records(path: &Path) -> Vec<(RecordFields, Vec<u8>)> {
    let manifest = testkit::workload_texts();
    let raw = std::fs::read(path).unwrap();
    let mut records: Vec<_> = raw
        .split(|&b| b == 0x1e)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let (header, rest) = Header::parse(r).unwrap();
            let escaped = rest.split(|&b| b == b'\n').next().unwrap();
            let (text, malformed) = unescape(escaped);
            let text = if malformed > 0 || !rest.contains(&b'\n') {
                manifest
                    .iter()
                    .find(|m| m.starts_with(&text[..24]))
                    .expect("cut record not in the workload manifest")
                    .clone()
            } else {
                text.into_owned()
            };
            (header.fields, text)
        })
        .collect();
    records.sort_by_key(|(fields, _)| fields.seq);
    records
}

struct Outcome {
    records: usize,
    suppressed: usize,
    datagrams: usize,
    multi_line: usize,
    split: usize,
    cut: usize,
}

fn run_case(dir: &Path, kernel: &str) -> Outcome {
    let options = options_for(kernel);
    let records = kmsg_records(&dir.join("kmsg.raw"));
    let captured = udp_payloads(&dir.join("frames.pcap"), PLAIN_PORT);
    let mut outcome = Outcome {
        records: 0,
        suppressed: 0,
        datagrams: 0,
        multi_line: 0,
        split: 0,
        cut: 0,
    };
    let mut roomy = options;
    roomy.buffer_size = usize::MAX;
    let mut next = captured.iter();
    let mut out = vec![0u8; 16 * 1024];
    let mut scratch = vec![0u8; 16 * 1024];
    for (fields, text) in &records {
        if !printed_on_console(fields.level, CONSOLE_LOGLEVEL) {
            outcome.suppressed += 1;
            continue;
        }
        let record = ConsoleRecord::from_fields(*fields, text);
        let seq = fields.seq;
        let len = format_console(&record, &options, &mut out);
        let chunks: Vec<&[u8]> = plain_chunks(&out[..len]).collect();
        outcome.records += 1;
        outcome.multi_line += usize::from(text.contains(&b'\n'));
        outcome.split += usize::from(chunks.len() > 1);
        outcome.cut += usize::from(format_console(&record, &roomy, &mut scratch) > len);
        for chunk in chunks {
            let got = next
                .next()
                .unwrap_or_else(|| panic!("{kernel}: seq {seq} was not captured"));
            assert_eq!(
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(chunk),
                "{kernel}: seq {seq}"
            );
            assert_eq!(got.as_slice(), chunk, "{kernel}: seq {seq} (bytes)");
            outcome.datagrams += 1;
        }
    }
    let left: Vec<_> = next
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "{kernel}: datagrams after the last record: {left:?}"
    );
    assert_eq!(outcome.datagrams, captured.len());
    outcome
}

/// Runs the case of each kernel, whose folder (`kmsg.raw`, `frames.pcap`) `dir_of` gives.
fn run_all(dir_of: impl Fn(&str) -> PathBuf) {
    for kernel in ["linux-6.1", "linux-7.3"] {
        let outcome = run_case(&dir_of(kernel), kernel);
        eprintln!(
            "{kernel}: {} records -> {} datagrams ({} multi-line, {} split at 1000 bytes, \
             {} cut by the console buffer), {} suppressed",
            outcome.records,
            outcome.datagrams,
            outcome.multi_line,
            outcome.split,
            outcome.cut,
            outcome.suppressed
        );
        assert!(outcome.multi_line > 0 && outcome.split > 0);
        // 6.1's 1024-byte console buffer cuts the many-line rig-long-ctl; 7.3's 2048 does not.
        assert_eq!(outcome.cut > 0, kernel == "linux-6.1");
    }
}

#[test]
fn sample_in_repo() {
    run_all(|kernel| crate_dir().join("tests/data/console").join(kernel));
}

#[test]
fn full_captures_when_present() {
    let captures = testkit::captures_or_skip();
    if captures.is_empty() {
        return;
    }
    run_all(|kernel| {
        captures
            .iter()
            .find(|capture| capture.kernel == kernel && capture.case == "plain")
            .unwrap_or_else(|| panic!("no {kernel}/plain capture"))
            .dir
            .clone()
    });
}

#[test]
fn prefixes_follow_the_kernel_formats() {
    let mut out = [0u8; 128];
    let mut record = ConsoleRecord::new(7, 1, 123_456_789_012, b"x");
    record.fields.facility = 23;
    record.fields.caller = Some(Caller::Task(123));
    let mut options = ConsoleOptions::default();
    options.caller = true;
    options.syslog = true;
    let len = format_console(&record, &options, &mut out);
    // "<%u>" of 23 << 3 | 7, "[%5lu.%06lu]", "[%6s]" of "T123", then a space.
    assert_eq!(&out[..len], b"<191>[123456.789012][  T123] x\n");

    record.fields.caller = Some(Caller::Cpu(1));
    options.time = false;
    options.syslog = false;
    let len = format_console(&record, &options, &mut out);
    assert_eq!(&out[..len], b"[    C1] x\n");

    // No time, no caller: no prefix and no space; a NUL goes through.
    options.caller = false;
    let record = ConsoleRecord::new(6, 2, 0, b"a\0b\n\nc");
    let len = format_console(&record, &options, &mut out);
    assert_eq!(&out[..len], b"a\0b\n\nc\n");

    // A trailing newline gives an empty prefixed line (rig-spec-09/10 on the wire).
    let record = ConsoleRecord::new(6, 3, 1_000_002, b"a\n");
    let len = format_console(&record, &ConsoleOptions::default(), &mut out);
    assert_eq!(&out[..len], b"[    1.000002] a\n[    1.000002] \n");
}

#[test]
fn a_short_buffer_cuts_like_the_kernel() {
    let record = ConsoleRecord::new(6, 1, 0, b"0123456789\nabcdefghij");
    let mut options = ConsoleOptions::default();
    // Prefix 15 bytes: the first line needs 15 + 10 + 1 bytes and the NUL.
    options.buffer_size = 15 + 10 + 2;
    let mut out = [0u8; 100];
    let len = format_console(&record, &options, &mut out);
    assert_eq!(&out[..len], b"[    0.000000] 0123456789\n");
    // One byte less: the first line does not fit and nothing is printed.
    options.buffer_size -= 1;
    assert_eq!(format_console(&record, &options, &mut out), 0);
    // Lines are printed whole or not at all: a single line too long for the buffer is
    // dropped, not cut (record_print_text).
    let record = ConsoleRecord::new(6, 1, 0, b"0123456789");
    options.buffer_size = 15 + 9 + 2;
    assert_eq!(format_console(&record, &options, &mut out), 0);
    // The same limit from a short `out` (the NUL is not written).
    options.buffer_size = usize::MAX;
    assert_eq!(format_console(&record, &options, &mut out[..15 + 10]), 0);
    let len = format_console(&record, &options, &mut out[..15 + 11]);
    assert_eq!(&out[..len], b"[    0.000000] 0123456789\n");
}

fn expected_lines(prefix: &[u8], text: &[u8]) -> Vec<u8> {
    let mut want = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        want.extend_from_slice(prefix);
        want.extend_from_slice(line);
        want.push(b'\n');
    }
    want
}

proptest! {
    #[test]
    fn never_writes_past_out(
        text in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..3000),
        out_len in 0usize..4000,
        buffer_size in 0usize..5000,
        level in any::<u8>(),
        facility in any::<u8>(),
        ts_usec in any::<u64>(),
        caller in proptest::option::of(any::<u32>()),
        flags in any::<u8>(),
    ) {
        let mut record = ConsoleRecord::new(level, 0, ts_usec, &text);
        record.fields.facility = facility;
        record.fields.caller = caller.map(Caller::Task);
        let mut options = ConsoleOptions::default();
        options.time = flags & 1 != 0;
        options.caller = flags & 2 != 0;
        options.syslog = flags & 4 != 0;
        options.buffer_size = buffer_size;
        let mut backing = vec![0xa5u8; out_len + 64];
        let len = format_console(&record, &options, &mut backing[..out_len]);
        prop_assert!(len <= out_len && len < buffer_size.max(1));
        prop_assert!(backing[out_len..].iter().all(|&b| b == 0xa5));

        // With room for everything, every line is the prefix and the line. The prefix is
        // what an empty text gets before its newline.
        options.buffer_size = usize::MAX;
        let mut empty = record;
        empty.text = b"";
        let mut prefix = [0u8; 64];
        let prefix_len = format_console(&empty, &options, &mut prefix) - 1;
        prop_assert_eq!(prefix[prefix_len], b'\n');
        let want = expected_lines(&prefix[..prefix_len], &text);
        let mut roomy = vec![0u8; want.len() + 1];
        let len = format_console(&record, &options, &mut roomy);
        prop_assert_eq!(&roomy[..len], want.as_slice());
        // A cut output is whole lines from the start of the uncut one.
        let mut small = vec![0u8; out_len];
        let cut = format_console(&record, &options, &mut small);
        prop_assert!(cut <= out_len);
        prop_assert!(want.starts_with(&small[..cut]));
        if cut > 0 {
            prop_assert_eq!(small[cut - 1], b'\n');
        }
    }
}

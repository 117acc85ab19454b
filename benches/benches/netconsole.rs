//! netconsole-proto: parsing (against rmesg's `/dev/kmsg` line parser), unescaping,
//! formatting, fragmenting and reassembling records, and the response packet.
//!
//! `cargo bench -p benches --bench netconsole`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netconsole_proto::{
    CONSOLE_EXT_LOG_MAX, DEFAULT_MAX_TOTAL, Datagram, DictEntry, ExtFragments, ExtRecord,
    FragmentedRecord, KmsgRecord, MAX_PRINT_CHUNK, Response, SendOptions, encode_response,
    format_kmsg, unescape_into,
};

/// An extended record of exactly `len` bytes, as a 6.x kernel sends it: printable text with
/// a few escapes, a dictionary.
fn record(len: usize) -> Vec<u8> {
    let head = b"6,123456,98765432,-;";
    let dict = b"\n SUBSYSTEM=net\n DEVICE=n2\n";
    let filler = b"e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex\\x09ok ";
    let mut out = head.to_vec();
    let text_len = len - head.len() - dict.len();
    out.extend(filler.iter().copied().cycle().take(text_len));
    out.extend_from_slice(dict);
    assert_eq!(out.len(), len);
    out
}

fn parse_whole(payload: &[u8]) -> usize {
    let Ok(Datagram::Extended(record)) = Datagram::parse(payload) else {
        panic!("not extended")
    };
    let body = record.split_body();
    body.text().len() + body.lines().map(|l| l.value().len()).sum::<usize>()
}

fn parse(c: &mut Criterion) {
    for len in [100, 1000] {
        let payload = record(len);
        assert!(parse_whole(&payload) > 0);
        // rmesg reads the record's first line (header and text, no `\n`; it has no
        // dictionary support) into an owned entry; check it agrees before timing it.
        let first_line = payload.split(|&b| b == b'\n').next().unwrap();
        let line = std::str::from_utf8(first_line).unwrap();
        let entry = rmesg::kmsgfile::entry_from_line(line).unwrap();
        let ours = ExtRecord::parse(&payload).unwrap();
        assert_eq!(entry.sequence_num, Some(123_456));
        assert_eq!(entry.message.as_bytes(), ours.split_body().text());
        let mut group = c.benchmark_group(format!("netconsole_parse/{len}B"));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("netconsole-proto", |b| {
            b.iter(|| parse_whole(black_box(&payload)));
        });
        group.bench_function("rmesg", |b| {
            b.iter(|| rmesg::kmsgfile::entry_from_line(black_box(line)).unwrap());
        });
        group.finish();
    }
}

fn unescape(c: &mut Criterion) {
    let payload = record(1000);
    let text = ExtRecord::parse(&payload)
        .unwrap()
        .split_body()
        .text()
        .to_vec();
    let mut out = vec![0u8; text.len()];
    let mut group = c.benchmark_group("netconsole_unescape/1000B");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("netconsole-proto", |b| {
        b.iter(|| {
            unescape_into(black_box(&text), black_box(&mut out))
                .unwrap()
                .len
        });
    });
    group.finish();
}

fn format_and_fragment(c: &mut Criterion) {
    // An 8 KiB formatted record: 7.5 KiB of text with some bytes to escape, a dictionary.
    let text: Vec<u8> = b"kernel BUG at mm/slub.c:42! \tRIP: 0010:kfree+0x1c/0x1e0\n"
        .iter()
        .copied()
        .cycle()
        .take(7000)
        .collect();
    let dict = [&b"SUBSYSTEM=pci"[..], b"DEVICE=+pci:0000:00:03.0"].map(dict_entry);
    let mut kmsg = KmsgRecord::new(3, 4_000_000, 1_234_567_890, &text);
    kmsg.dict = &dict;
    let mut buf = vec![0u8; CONSOLE_EXT_LOG_MAX];
    let msg_len = format_kmsg(&kmsg, &mut buf);
    assert!(msg_len > 7000 && msg_len < CONSOLE_EXT_LOG_MAX);
    let msg = buf[..msg_len].to_vec();

    let mut group = c.benchmark_group("netconsole_format/8KiB");
    group.throughput(Throughput::Bytes(msg_len as u64));
    group.bench_function("netconsole-proto", |b| {
        b.iter(|| format_kmsg(black_box(&kmsg), black_box(&mut buf)));
    });
    group.finish();

    let mut group = c.benchmark_group("netconsole_fragment/8KiB");
    group.throughput(Throughput::Bytes(msg_len as u64));
    let mut out = [0u8; MAX_PRINT_CHUNK];
    group.bench_function("netconsole-proto", |b| {
        b.iter(|| {
            let mut frags = ExtFragments::new(black_box(&msg), SendOptions::default()).unwrap();
            let mut total = 0;
            while let Some(n) = frags.write_next(&mut out) {
                total += n;
            }
            total
        });
    });
    group.finish();

    let mut datagrams = Vec::new();
    let mut frags = ExtFragments::new(&msg, SendOptions::default()).unwrap();
    while let Some(n) = frags.write_next(&mut out) {
        datagrams.push(out[..n].to_vec());
    }
    datagrams.reverse();
    let mut group = c.benchmark_group("netconsole_reassemble/8KiB");
    group.throughput(Throughput::Bytes(msg_len as u64));
    group.bench_function("netconsole-proto", |b| {
        b.iter(|| {
            let first = ExtRecord::parse(&datagrams[0]).unwrap();
            let mut record = FragmentedRecord::new(&first, DEFAULT_MAX_TOTAL).unwrap();
            for d in &datagrams[1..] {
                record
                    .push(&ExtRecord::parse(black_box(d)).unwrap())
                    .unwrap();
            }
            record.is_complete()
        });
    });
    group.finish();
}

fn response(c: &mut Criterion) {
    let missing: Vec<u64> = (1_000_000..1_000_200).step_by(2).collect();
    let mut out = [0u8; 1000];
    let (len, _) = encode_response(999_999, &missing, &mut out).unwrap();
    let packet = out[..len].to_vec();
    let mut group = c.benchmark_group("netconsole_response");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode/100", |b| {
        b.iter(|| encode_response(black_box(999_999), black_box(&missing), &mut out));
    });
    group.bench_function("parse/100", |b| {
        b.iter(|| {
            Response::parse(black_box(&packet))
                .unwrap()
                .missing()
                .count()
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group!(name = benches; config = config(); targets = parse, unescape, format_and_fragment, response);
criterion_main!(benches);

/// A dictionary entry from `KEY=VALUE`.
fn dict_entry(line: &[u8]) -> DictEntry<'_> {
    let eq = line.iter().position(|&b| b == b'=').unwrap_or(line.len());
    DictEntry {
        key: &line[..eq],
        value: line.get(eq + 1..).unwrap_or_default(),
    }
}

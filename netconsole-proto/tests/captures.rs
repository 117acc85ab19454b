//! Proof against real kernel captures (Linux 6.1 and 7.3).
//!
//! For every capture: every UDP payload parses (extended targets as extended records, plain
//! targets as plain text); fragments reassemble into records equal to the kernel's own
//! `/dev/kmsg` records in `kmsg.raw` (seq, level, facility, ts_usec, flag, text bytes,
//! dictionary; userdata and sysdata are what follows); the userdata/sysdata lines re-format
//! to the captured bytes; re-sending each `kmsg.raw` record with the target's options gives
//! back the captured datagrams byte for byte, fragment boundaries included; and re-formatting
//! each `kmsg.raw` record from its decoded fields (or, for records the kernel cut, from the
//! text written by the workload) gives back the record byte for byte.
//!
//! A sample lives in `tests/data`; the whole set is used when `../shared/captures` exists
//! beside the workspace (its absence skips that test with a note, and fails it under
//! `CI=true`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use netconsole_proto::{
    Body, CONSOLE_EXT_LOG_MAX, DEFAULT_MAX_TOTAL, Datagram, DictEntry, ExtFragments,
    FragmentedRecord, Header, KmsgRecord, MAX_PRINT_CHUNK, OwnedRecord, PRINTK_MESSAGE_MAX,
    SendOptions, Sysdata, format_kmsg, format_userdata, plain_chunks, unescape,
};
use netpoll_frame::Frame;

/// Records being reassembled, by (destination port, seq), with their datagrams.
type Partial = HashMap<(u16, u64), (FragmentedRecord, Vec<Vec<u8>>)>;

const SYSDATA_KEYS: [&[u8]; 4] = [b"cpu", b"taskname", b"release", b"msgid"];

#[derive(Debug, Default)]
struct Stats {
    frames: usize,
    skipped_non_udp: usize,
    extended_datagrams: usize,
    plain_datagrams: usize,
    records: usize,
    fragmented_records: usize,
    cut_records: usize,
    with_extradata: usize,
    kmsg_reformatted: usize,
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn udp_payloads(pcap: &Path, stats: &mut Stats) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    for packet in testkit::read_pcap(pcap) {
        stats.frames += 1;
        if let Ok(frame) = Frame::parse(&packet.data) {
            out.push((frame.destination().port(), frame.payload().to_vec()));
        } else {
            // Multicast listener reports, neighbour solicitations: not UDP.
            assert!(
                packet.data.len() > 14 && packet.data[12..14] == [0x86, 0xdd],
                "an IPv4 frame did not parse in {}",
                pcap.display()
            );
            stats.skipped_non_udp += 1;
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

/// Decodes a `/dev/kmsg` record and formats it again; for records the kernel cut, formats
/// the text the workload wrote instead.
fn check_reformat(kmsg: &[u8], limit: usize, manifest: &[Vec<u8>]) -> bool {
    let (header, body) = Header::parse(kmsg).unwrap();
    let split = Body::parse_limited(body, header.kernel_len(), limit);
    let (text, malformed) = unescape(split.text());
    let cut = malformed > 0 || !split.text_terminated();
    let text: Vec<u8> = if cut {
        let probe = &text[..24];
        manifest
            .iter()
            .find(|m| m.starts_with(probe))
            .expect("cut record not in the workload manifest")
            .clone()
    } else {
        text.into_owned()
    };
    let lines: Vec<(Vec<u8>, Vec<u8>)> = split
        .lines()
        .map(|l| {
            (
                unescape(l.key()).0.into_owned(),
                unescape(l.value()).0.into_owned(),
            )
        })
        .collect();
    let dict: Vec<DictEntry<'_>> = lines
        .iter()
        .map(|(k, v)| DictEntry { key: k, value: v })
        .collect();
    let mut record = KmsgRecord::from_fields(header.fields, &text);
    record.dict = &dict;
    let mut out = vec![0u8; limit];
    let n = format_kmsg(&record, &mut out);
    assert_eq!(
        String::from_utf8_lossy(&out[..n]),
        String::from_utf8_lossy(kmsg),
        "re-formatted record differs"
    );
    cut
}

fn check_record(
    record: &OwnedRecord,
    datagrams: &[Vec<u8>],
    kmsg: &BTreeMap<u64, Vec<u8>>,
    limit: usize,
    release: Option<&[u8]>,
    stats: &mut Stats,
) {
    let kmsg_record = kmsg
        .get(&record.fields.seq)
        .unwrap_or_else(|| panic!("seq {} not in kmsg.raw", record.fields.seq));
    let (kh, kbody) = Header::parse(kmsg_record).unwrap();
    assert_eq!(
        record.fields, kh.fields,
        "header of seq {}",
        record.fields.seq
    );
    assert_eq!(record.release.as_deref(), release);
    assert_eq!(record.kernel_header_len, kh.kernel_len());
    assert!(
        record.body.starts_with(kbody),
        "body of seq {} differs from kmsg.raw",
        record.fields.seq
    );
    let extradata = &record.body[kbody.len()..];
    let ours = record.split_body_limited(limit);
    let theirs = Body::parse_limited(kbody, kh.kernel_len(), limit);
    assert_eq!(
        ours.text(),
        theirs.text(),
        "text of seq {}",
        record.fields.seq
    );
    assert_eq!(ours.text_terminated(), theirs.text_terminated());
    let our_lines: Vec<_> = ours.lines().collect();
    let dict: Vec<_> = theirs.lines().collect();
    assert_eq!(
        &our_lines[..dict.len()],
        &dict[..],
        "dictionary of seq {}",
        record.fields.seq
    );
    if extradata.is_empty() {
        assert_eq!(our_lines.len(), dict.len());
        if theirs.text_terminated() {
            assert_eq!(record.split_body().text(), theirs.text());
        }
    } else {
        stats.with_extradata += 1;
        check_extradata(record.fields.seq, &our_lines[dict.len()..], extradata);
    }
    // Send the kernel's record again with the target's options.
    let (userdata_len, _) = extradata_split(extradata);
    let options = {
        let mut o = SendOptions::default();
        o.release = release;
        o.userdata = &extradata[..userdata_len];
        o.sysdata = &extradata[userdata_len..];
        o
    };
    let mut frags = ExtFragments::new(kmsg_record, options).unwrap();
    let mut out = [0u8; MAX_PRINT_CHUNK];
    let mut ours = Vec::new();
    while let Some(n) = frags.write_next(&mut out) {
        ours.push(out[..n].to_vec());
    }
    assert_eq!(
        ours.len(),
        datagrams.len(),
        "datagram count of seq {}",
        record.fields.seq
    );
    for (a, b) in ours.iter().zip(datagrams) {
        assert_eq!(
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b),
            "datagram of seq {}",
            record.fields.seq
        );
    }
    stats.records += 1;
    if datagrams.len() > 1 {
        stats.fragmented_records += 1;
    }
}

/// Rebuilds userdata and sysdata from the lines after the dictionary, in their order.
fn check_extradata(seq: u64, extra: &[netconsole_proto::Line<'_>], extradata: &[u8]) {
    // Rebuild userdata and sysdata from the lines, in their order.
    let split = extra
        .iter()
        .position(|l| SYSDATA_KEYS.contains(&l.key()))
        .unwrap_or(extra.len());
    let userdata: Vec<(&[u8], &[u8])> = extra[..split]
        .iter()
        .map(|l| (l.key(), l.value()))
        .collect();
    let mut sysdata = Sysdata::default();
    let mut cpu = None;
    let mut msgid = None;
    for line in &extra[split..] {
        match line.key() {
            b"cpu" => cpu = Some(std::str::from_utf8(line.value()).unwrap().parse().unwrap()),
            b"taskname" => sysdata.taskname = Some(line.value()),
            b"release" => sysdata.release = Some(line.value()),
            b"msgid" => {
                msgid = Some(std::str::from_utf8(line.value()).unwrap().parse().unwrap());
            }
            other => panic!("unexpected line {:?}", String::from_utf8_lossy(other)),
        }
    }
    sysdata.cpu = cpu;
    sysdata.msgid = msgid;
    let mut ud = [0u8; 4096];
    let ud_len = format_userdata(&userdata, &mut ud).unwrap();
    let mut sd = [0u8; 1024];
    let sd_len = sysdata.format_into(&mut sd).unwrap();
    assert_eq!(
        [&ud[..ud_len], &sd[..sd_len]].concat(),
        extradata,
        "extradata of seq {seq}"
    );
}

/// Where the sysdata lines start in the extradata.
fn extradata_split(extradata: &[u8]) -> (usize, usize) {
    let mut pos = 0;
    for line in extradata.split_inclusive(|&b| b == b'\n') {
        let key = line[1..].split(|&b| b == b'=').next().unwrap();
        if SYSDATA_KEYS.contains(&key) {
            return (pos, extradata.len() - pos);
        }
        pos += line.len();
    }
    (pos, 0)
}

fn run_case(dir: &Path, kernel: &str, case: &str, manifest: &[Vec<u8>]) -> Stats {
    let mut stats = Stats::default();
    let limit = if kernel == "linux-7.3" {
        PRINTK_MESSAGE_MAX
    } else {
        CONSOLE_EXT_LOG_MAX
    };
    let release: Option<&[u8]> = match (kernel, case) {
        ("linux-7.3", "ext_release" | "configfs_userdata") => Some(b"7.3.4+deb13-amd64"),
        _ => None,
    };
    let kmsg = kmsg_records(&dir.join("kmsg.raw"));
    for record in kmsg.values() {
        if check_reformat(record, limit, manifest) {
            stats.cut_records += 1;
        }
        stats.kmsg_reformatted += 1;
    }
    let payloads = udp_payloads(&dir.join("frames.pcap"), &mut stats);
    let mut partial: Partial = HashMap::new();
    let mut plain: HashMap<u16, Vec<Vec<u8>>> = HashMap::new();
    for (port, payload) in &payloads {
        let is_plain = case == "plain" || (case == "ipv6" && *port == 6668);
        let datagram = Datagram::parse(payload)
            .unwrap_or_else(|e| panic!("{kernel}/{case}: payload does not parse: {e}"));
        match datagram {
            Datagram::Plain(text) => {
                assert!(is_plain, "extended target sent plain text");
                assert!(text.len() <= MAX_PRINT_CHUNK);
                stats.plain_datagrams += 1;
                plain.entry(*port).or_default().push(text.to_vec());
            }
            Datagram::Extended(record) => {
                assert!(!is_plain, "plain target payload taken as extended");
                assert!(payload.len() <= MAX_PRINT_CHUNK);
                stats.extended_datagrams += 1;
                if record.is_fragment() {
                    let key = (*port, record.header.fields.seq);
                    let entry = match partial.entry(key) {
                        std::collections::hash_map::Entry::Occupied(e) => {
                            let entry = e.into_mut();
                            entry.0.push(&record).unwrap();
                            entry
                        }
                        std::collections::hash_map::Entry::Vacant(v) => v.insert((
                            FragmentedRecord::new(&record, DEFAULT_MAX_TOTAL).unwrap(),
                            Vec::new(),
                        )),
                    };
                    entry.1.push(payload.clone());
                    if let Some(done) = entry.0.to_record() {
                        let (_, datagrams) = partial.remove(&key).unwrap();
                        check_record(&done, &datagrams, &kmsg, limit, release, &mut stats);
                    }
                } else {
                    let owned = OwnedRecord::from_parts(&record.header, record.body);
                    check_record(
                        &owned,
                        std::slice::from_ref(payload),
                        &kmsg,
                        limit,
                        release,
                        &mut stats,
                    );
                }
            }
            Datagram::Response(_) => panic!("no response packets in the captures"),
            other => panic!("unexpected datagram kind {other:?}"),
        }
    }
    assert!(partial.is_empty(), "incomplete fragmented records");
    // Plain mode: join the console writes cut at 1000 bytes and cut them again.
    for datagrams in plain.values() {
        let mut write = Vec::new();
        let mut expected: Vec<&[u8]> = Vec::new();
        for d in datagrams {
            write.extend_from_slice(d);
            expected.push(d);
            if d.len() < MAX_PRINT_CHUNK {
                let again: Vec<&[u8]> = plain_chunks(&write).collect();
                assert_eq!(again, expected);
                write.clear();
                expected.clear();
            }
        }
    }
    stats
}

fn run_all(cases: &[(String, String, PathBuf)]) {
    let manifest = testkit::workload_texts();
    for (kernel, case, dir) in cases {
        let (kernel, case) = (kernel.as_str(), case.as_str());
        let stats = run_case(dir, kernel, case, &manifest);
        println!("{kernel}/{case}: {stats:?}");
        assert!(stats.extended_datagrams + stats.plain_datagrams > 0);
        if case == "plain" {
            assert_eq!(stats.extended_datagrams, 0);
        } else {
            assert!(
                stats.fragmented_records > 0,
                "{kernel}/{case}: no fragments"
            );
        }
        if kernel == "linux-7.3" && case != "plain" {
            assert!(
                stats.cut_records >= 3,
                "{kernel}/{case}: 2048-byte cut not seen"
            );
        }
        if kernel == "linux-7.3" && case == "configfs_userdata" {
            assert!(stats.with_extradata > 0);
        }
    }
}

#[test]
fn sample_captures_in_repo() {
    let data = crate_dir().join("tests/data");
    let cases: Vec<_> = testkit::KNOWN
        .iter()
        .map(|&(kernel, case)| {
            let dir = data.join(format!("{kernel}-{case}"));
            (kernel.to_owned(), case.to_owned(), dir)
        })
        .collect();
    run_all(&cases);
}

#[test]
fn full_captures_when_present() {
    let cases: Vec<_> = testkit::captures_or_skip()
        .into_iter()
        .map(|c| (c.kernel, c.case, c.dir))
        .collect();
    if cases.is_empty() {
        return;
    }
    run_all(&cases);
}

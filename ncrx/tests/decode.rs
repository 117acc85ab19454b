//! `ncrx decode` on real kernel captures outputs exactly the records of the kernel's own
//! `/dev/kmsg` (`kmsg.raw`): every JSON record, written back in printk's format (SPEC.md
//! section 2: header, `\xNN` escapes, `\n`, ` KEY=VALUE\n` lines), gives the kernel's record
//! byte for byte, in the same order, none missing.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::{parts, run, scratch, shared_captures, write_pcap};
use serde_json::Value;

/// printk's escaping: every byte below 0x20, from 0x7f, and `\` as `\xNN`.
fn printk_escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if !(0x20..0x7f).contains(&b) || b == b'\\' {
            let _ = write!(out, "\\x{b:02x}");
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// The `/dev/kmsg` form of one JSON record.
fn kmsg_of(record: &Value) -> Vec<u8> {
    let escaped = record["escaped"].as_bool().unwrap();
    let wire = |s: &Value| {
        let s = s.as_str().unwrap();
        if escaped {
            s.to_owned()
        } else {
            printk_escape(s.as_bytes())
        }
    };
    let prefix = record["facility"].as_u64().unwrap() * 8 + record["level"].as_u64().unwrap();
    let mut out = format!(
        "{prefix},{},{},{}",
        record["seq"],
        record["ts_usec"],
        record["flag"].as_str().unwrap()
    );
    if let Some(caller) = record["caller"].as_str() {
        let _ = write!(out, ",caller={caller}");
    }
    out.push(';');
    out.push_str(&wire(&record["text"]));
    if !record["truncated"].as_bool().unwrap() {
        out.push('\n');
    }
    for pair in record["dict"].as_array().unwrap() {
        let _ = writeln!(out, " {}={}", wire(&pair[0]), wire(&pair[1]));
    }
    out.into_bytes()
}

/// Decodes `pcap` and compares with `kmsg` (records separated by 0x1e).
fn check(pcap: &Path, kmsg: &Path, release: Option<&str>) -> usize {
    check_from(pcap, kmsg, release, "192.0.2.1:6665")
}

fn check_from(pcap: &Path, kmsg: &Path, release: Option<&str>, source: &str) -> usize {
    let (code, stdout, stderr) = parts(&run(
        &[
            "decode",
            pcap.to_str().unwrap(),
            "--format",
            "json",
            "--port",
            "6666",
        ],
        b"",
    ));
    assert_eq!(code, 0, "{stderr}");
    let expected: Vec<Vec<u8>> = std::fs::read(kmsg)
        .unwrap()
        .split(|&b| b == 0x1e)
        .filter(|r| !r.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, kernel) in lines.iter().zip(&expected) {
        assert_eq!(line["type"], "record", "{line}");
        assert_eq!(line["source"], source);
        assert_eq!(line["release"].as_str(), release);
        assert_eq!(line["out_of_order"], false);
        assert_eq!(
            String::from_utf8_lossy(&kmsg_of(line)),
            String::from_utf8_lossy(kernel),
            "{line}"
        );
    }
    lines.len()
}

#[test]
fn sample_decodes_to_the_kernels_records() {
    let data = common::data("linux-7.3-ext-seq700-715");
    let records = check(&data.join("frames.pcap"), &data.join("kmsg.raw"), None);
    assert_eq!(records, 16);
}

#[test]
fn a_truncated_capture_gives_what_came_before_and_exit_5() {
    // The sample's last frame (record #715) cut short: every record before it comes out,
    // then the exit code says the capture was truncated.
    let dir = scratch("decode-truncated");
    let pcap = dir.join("cut.pcap");
    let bytes =
        std::fs::read(common::data("linux-7.3-ext-seq700-715").join("frames.pcap")).unwrap();
    std::fs::write(&pcap, &bytes[..bytes.len() - 20]).unwrap();
    let (code, stdout, stderr) = parts(&run(&["decode", pcap.to_str().unwrap()], b""));
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("capture truncated"), "{stderr}");
    assert_eq!(stdout.lines().count(), 15, "{stdout}");
    assert!(
        stdout.lines().last().unwrap().contains(" #714 "),
        "{stdout}"
    );
}

#[test]
fn kernel_captures_decode_to_the_kernels_records() {
    let Some(root) = shared_captures() else {
        return;
    };
    for (case, release) in [
        ("linux-7.3/ext", None),
        ("linux-6.1/ext", None),
        ("linux-7.3/ext_release", Some("7.3.4+deb13-amd64")),
    ] {
        let dir = root.join(case);
        let records = check(&dir.join("frames.pcap"), &dir.join("kmsg.raw"), release);
        eprintln!("{case}: {records} records");
        assert!(records > 800, "{case}");
    }
    // The extended IPv6 target (the plain one, on port 6668, is left out by --port 6666).
    for case in ["linux-7.3/ipv6", "linux-6.1/ipv6"] {
        let dir = root.join(case);
        let records = check_from(
            &dir.join("frames.pcap"),
            &dir.join("kmsg.raw"),
            None,
            "[2001:db8::1]:6665",
        );
        eprintln!("{case}: {records} records");
        assert!(records > 700, "{case}");
    }
}

/// `decode --format json` then `send --input json --pcap` gives the captured frames back.
fn round_trip(pcap: &Path, spec: &str, ip_id: &str, record_limit: &str) {
    let (ours, theirs) = decode_and_send(pcap, spec, ip_id, record_limit);
    assert_eq!(ours.len(), theirs.len());
    for (index, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(
            a.escape_ascii().to_string(),
            b.escape_ascii().to_string(),
            "frame {index}"
        );
    }
}

/// `decode | send` of a capture holding a choice of a kernel's records (their IPv4 ids are
/// not consecutive): the UDP payloads are the captured ones. Returns how many.
fn round_trip_payloads(pcap: &Path, spec: &str) -> usize {
    let (ours, theirs) = decode_and_send(pcap, spec, "1", "2048");
    let payload = |f: &Vec<u8>| {
        netpoll_frame::Frame::parse(f)
            .unwrap()
            .payload()
            .escape_ascii()
            .to_string()
    };
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(payload(a), payload(b));
    }
    ours.len()
}

/// The frames `decode | send` wrote, and the captured ones to port 6666.
fn decode_and_send(
    pcap: &Path,
    spec: &str,
    ip_id: &str,
    record_limit: &str,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (code, json, stderr) = parts(&run(
        &["decode", pcap.to_str().unwrap(), "--format", "json"],
        b"",
    ));
    assert_eq!(code, 0, "{stderr}");
    let dir = scratch("round-trip");
    let out = dir.join("out.pcap");
    let (code, _, stderr) = common::send_pcap(
        spec,
        &out,
        &[
            "--input",
            "json",
            "--ip-id",
            ip_id,
            "--record-limit",
            record_limit,
        ],
        json.as_bytes(),
    );
    assert_eq!(code, 0, "{stderr}");
    let theirs: Vec<Vec<u8>> = common::read_pcap(pcap)
        .into_iter()
        .filter(|f| {
            netpoll_frame::Frame::parse(f).is_ok_and(|frame| frame.destination().port() == 6666)
        })
        .collect();
    (common::read_pcap(&out), theirs)
}

const SPEC: &str = "+6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57";

#[test]
fn decode_then_send_reproduces_the_sample() {
    let data = common::data("linux-7.3-ext-seq700-715");
    round_trip(&data.join("frames.pcap"), SPEC, "701", "2048");
}

#[test]
fn decode_then_send_reproduces_kernel_captures() {
    let Some(root) = shared_captures() else {
        return;
    };
    round_trip(&root.join("linux-7.3/ext/frames.pcap"), SPEC, "1", "2048");
    // Linux 6.1 formats into CONSOLE_EXT_LOG_MAX (8192 bytes): records up to 3878 bytes.
    round_trip(&root.join("linux-6.1/ext/frames.pcap"), SPEC, "1", "8192");
    // The extended IPv6 target (port 6666; the plain one is left out by decode's default port).
    let ipv6 = "+6665@2001:db8::1/52:54:00:12:34:56,6666@2001:db8::2/52:54:00:12:34:57";
    round_trip(&root.join("linux-7.3/ipv6/frames.pcap"), ipv6, "1", "2048");
    round_trip(&root.join("linux-6.1/ipv6/frames.pcap"), ipv6, "1", "8192");
    round_trip(
        &root.join("linux-7.3/ext_release/frames.pcap"),
        "+r6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57",
        "1",
        "2048",
    );
}

#[test]
fn decode_then_send_reproduces_userdata_captures() {
    // Linux 7.3 configfs target with userdata and sysdata (records cut at 2048 bytes with the
    // userdata on the text's line): no option tells decode about the sender's kernel.
    let spec = "+r6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57";
    // The sample is a choice of the capture's records: their IPv4 ids are not consecutive,
    // so the UDP payloads are compared.
    let sample = common::data("linux-7.3-configfs_userdata-sample").join("frames.pcap");
    assert!(round_trip_payloads(&sample, spec) > 30);
    if let Some(root) = shared_captures() {
        round_trip(
            &root.join("linux-7.3/configfs_userdata/frames.pcap"),
            spec,
            "1",
            "2048",
        );
        // Linux 6.1's configfs target: no userdata, no release, records up to 8192 bytes.
        round_trip(
            &root.join("linux-6.1/configfs_userdata/frames.pcap"),
            SPEC,
            "1",
            "8192",
        );
    }
}

#[test]
fn userdata_outside_printks_buffer_round_trips() {
    // Made like a Linux 6.15+ sender (frames from `ncrx send`, checked against the kernel's
    // captures elsewhere): a record cut at 2048 bytes on a clean byte (so it decodes as text,
    // not wire form), and a record that fits printk's buffer but whose userdata takes the
    // message past 2048 bytes. Neither may be cut again on the way back.
    let dir = scratch("userdata-round-trip");
    let mut kmsg = b"6,1,2,-;".to_vec();
    kmsg.resize(2048, b'a');
    kmsg.push(0x1e);
    kmsg.extend_from_slice(b"6,2,3,-;");
    kmsg.extend(std::iter::repeat_n(b'b', 1900));
    kmsg.extend_from_slice(b"\n\x1e");
    let input = dir.join("records.kmsg");
    std::fs::write(&input, &kmsg).unwrap();
    let pcap = dir.join("sender.pcap");
    let (long_a, long_b) = (
        format!("a={}", "x".repeat(190)),
        format!("b={}", "y".repeat(190)),
    );
    let (code, _, stderr) = common::send_pcap(
        SPEC,
        &pcap,
        &[
            "--userdata",
            &long_a,
            "--userdata",
            &long_b,
            "--sysdata",
            "msgid",
            input.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, json, stderr) = parts(&run(
        &["decode", pcap.to_str().unwrap(), "--format", "json"],
        b"",
    ));
    assert_eq!(code, 0, "{stderr}");
    let records: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{json}");
    assert_eq!(records[0]["truncated"], true);
    assert_eq!(records[0]["escaped"], false);
    assert_eq!(records[0]["text"].as_str().unwrap().len(), 2040);
    assert_eq!(records[1]["truncated"], false);
    assert_eq!(records[1]["text"].as_str().unwrap().len(), 1900);
    for (record, msgid) in records.iter().zip(["1", "2"]) {
        let keys: Vec<&str> = record["dict"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["a", "b", "msgid"]);
        assert_eq!(record["dict"][2][1], msgid);
    }
    round_trip(&pcap, SPEC, "1", "2048");
}

#[test]
fn decode_then_send_reproduces_plain_captures() {
    // Console text goes out as it came; the rig-spec-04 line is not UTF-8 (it comes out
    // escaped) and long records are split at 1000 bytes.
    let spec = "6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57";
    for kernel in ["linux-6.1", "linux-7.3"] {
        // The sample holds some of the capture's records: their IPv4 ids are not
        // consecutive, so the UDP payloads are compared.
        let sample = common::data(&format!("{kernel}-plain-sample")).join("frames.pcap");
        assert!(round_trip_payloads(&sample, spec) > 20);
    }
    let (code, json, _) = parts(&run(
        &[
            "decode",
            common::data("linux-7.3-plain-sample/frames.pcap")
                .to_str()
                .unwrap(),
            "--format",
            "json",
        ],
        b"",
    ));
    assert_eq!(code, 0);
    assert!(
        json.contains(r#"rig-spec-04 invalid-utf8: [\\xff\\xfe] [\\xc3] [\\xe2\\x82] [\\x80] end\\x0a","escaped":true}"#),
        "{json}"
    );
    let Some(root) = shared_captures() else {
        return;
    };
    for kernel in ["linux-6.1", "linux-7.3"] {
        round_trip(
            &root.join(kernel).join("plain/frames.pcap"),
            spec,
            "1",
            "2048",
        );
    }
}

#[test]
fn plain_targets_come_out_as_plain_text() {
    let Some(root) = shared_captures() else {
        return;
    };
    let pcap = root.join("linux-7.3/ipv6/frames.pcap");
    let (code, stdout, stderr) = parts(&run(
        &["decode", pcap.to_str().unwrap(), "--port", "6668"],
        b"",
    ));
    assert_eq!(code, 0, "{stderr}");
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with("[2001:db8::1]:6667 [    0.000000] Linux version 7.3.4"),
        "{first}"
    );
    assert!(stdout.lines().all(|l| l.starts_with("[2001:db8::1]:6667 ")));
}

#[test]
fn a_hole_is_reported_lost_and_late_records_marked() {
    // Records 1, 2, 4 from one sender, frames built like the kernel's: 3 never comes.
    let mut config =
        netpoll_frame::FrameConfig::new("10.0.0.7".parse().unwrap(), "10.0.0.1".parse().unwrap());
    config.source_port = 6665;
    let mut builder = netpoll_frame::FrameBuilder::new(&config).unwrap();
    let mut frames = Vec::new();
    for (i, payload) in [
        &b"6,1,1000,-;one\n"[..],
        b"6,2,2000,-;two\n",
        b"6,4,4000,-;four\n",
    ]
    .iter()
    .enumerate()
    {
        let mut buf = [0u8; 256];
        let len = builder.build(payload, &mut buf).unwrap();
        frames.push((
            std::time::Duration::from_millis(10 * i as u64),
            buf[..len].to_vec(),
        ));
    }
    let dir = scratch("decode-hole");
    let pcap = dir.join("hole.pcap");
    write_pcap(&pcap, &frames);
    let (code, stdout, stderr) = parts(&run(&["decode", pcap.to_str().unwrap()], b""));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "10.0.0.7:6665 #1 [    0.001000] <6> one\n\
         10.0.0.7:6665 #2 [    0.002000] <6> two\n\
         10.0.0.7:6665 lost #3..#3\n\
         10.0.0.7:6665 #4 [    0.004000] <6> four\n"
    );
    assert!(
        stderr.contains("10.0.0.7:6665: 3 records, 1 lost, 0 out of order"),
        "{stderr}"
    );
}

/// Decodes a configfs capture (which starts at enable time, so only a window of kmsg.raw
/// was sent) and checks each record against the kernel's of the same seq, its
/// userdata/sysdata entries set aside. Returns (records, cut, with userdata/sysdata).
fn check_configfs(dir: &Path, extra: &[&str]) -> (usize, usize, usize) {
    let pcap = dir.join("frames.pcap");
    let mut args = vec!["decode", pcap.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = parts(&run(&args, b""));
    assert_eq!(code, 0, "{stderr}");
    let kernel: std::collections::BTreeMap<u64, Vec<u8>> = std::fs::read(dir.join("kmsg.raw"))
        .unwrap()
        .split(|&b| b == 0x1e)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let seq = std::str::from_utf8(r.split(|&b| b == b',').nth(1).unwrap())
                .unwrap()
                .parse()
                .unwrap();
            (seq, r.to_vec())
        })
        .collect();
    let extradata = [
        "rig_cfg", "host", "odd", "cpu", "taskname", "release", "msgid",
    ];
    let (mut records, mut cut, mut with_extradata) = (0, 0, 0);
    for line in stdout.lines() {
        let mut line: Value = serde_json::from_str(line).unwrap();
        let dict = line["dict"].as_array().unwrap().clone();
        let (userdata, printk): (Vec<Value>, Vec<Value>) = dict
            .into_iter()
            .partition(|pair| extradata.contains(&pair[0].as_str().unwrap()));
        if !userdata.is_empty() {
            with_extradata += 1;
        }
        if line["truncated"] == true {
            cut += 1;
        }
        records += 1;
        line["dict"] = Value::Array(printk);
        let seq = line["seq"].as_u64().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&kmsg_of(&line)),
            String::from_utf8_lossy(&kernel[&seq]),
            "seq {seq} of {}",
            dir.display()
        );
    }
    (records, cut, with_extradata)
}

#[test]
fn configfs_captures_decode_to_the_kernels_records() {
    let Some(root) = shared_captures() else {
        return;
    };
    // Linux 7.3 with userdata and sysdata: a record the kernel cut keeps its cut text, and
    // the userdata/sysdata lines that followed it on the same line come out as `dict`
    // entries, whether the sender's format limit is given or found by decode itself.
    for extra in [&[][..], &["--format-limit", "2048"]] {
        let (records, cut, with_extradata) =
            check_configfs(&root.join("linux-7.3/configfs_userdata"), extra);
        assert!(records > 400, "{records}");
        assert!(cut >= 3, "{cut} cut records");
        assert!(with_extradata > 400, "{with_extradata}");
    }
    // Linux 6.1: no cap, no userdata; records up to 3878 bytes.
    let (records, cut, with_extradata) =
        check_configfs(&root.join("linux-6.1/configfs_userdata"), &[]);
    assert!(records > 350, "{records}");
    assert_eq!((cut, with_extradata), (0, 0));
}

#[test]
fn vlan_frames_and_malformed_datagrams() {
    let mut config =
        netpoll_frame::FrameConfig::new("10.0.0.8".parse().unwrap(), "10.0.0.1".parse().unwrap());
    let plain_config = config.clone();
    config.vlan = Some(netpoll_frame::VlanTag::new(42));
    let mut tagged = netpoll_frame::FrameBuilder::new(&config).unwrap();
    let mut untagged = netpoll_frame::FrameBuilder::new(&plain_config).unwrap();
    let mut frames = Vec::new();
    let mut buf = [0u8; 256];
    let len = tagged.build(b"6,1,1000,-;tagged\n", &mut buf).unwrap();
    assert_eq!(&buf[12..14], &[0x81, 0x00], "an 802.1Q frame");
    frames.push((std::time::Duration::from_millis(1), buf[..len].to_vec()));
    // Looks extended, but its fragment does not fit its own total: malformed.
    let len = untagged
        .build(b"6,2,2000,-,ncfrag=9/4;abc", &mut buf)
        .unwrap();
    frames.push((std::time::Duration::from_millis(2), buf[..len].to_vec()));
    let len = untagged.build(b"6,3,3000,-;three\n", &mut buf).unwrap();
    frames.push((std::time::Duration::from_millis(3), buf[..len].to_vec()));
    let dir = scratch("decode-vlan");
    let pcap = dir.join("vlan.pcap");
    write_pcap(&pcap, &frames);
    let (code, stdout, stderr) = parts(&run(&["decode", "-v", pcap.to_str().unwrap()], b""));
    assert_eq!(code, 1, "malformed data seen: {stderr}");
    assert_eq!(
        stdout,
        "10.0.0.8:6665 #1 [    0.001000] <6> tagged\n\
         10.0.0.8:6665 lost #2..#2\n\
         10.0.0.8:6665 #3 [    0.003000] <6> three\n"
    );
    assert!(
        stderr.contains(
            "malformed datagram from 10.0.0.8:6665 (25 bytes): 6,2,2000,-,ncfrag=9/4;abc"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("; 1 malformed datagrams"), "{stderr}");
}

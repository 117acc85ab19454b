//! `ncrx decode` on real kernel captures outputs exactly the records of the kernel's own
//! `/dev/kmsg` (`kmsg.raw`): every JSON record, written back in printk's format (header,
//! `\xNN` escapes, `\n`, ` KEY=VALUE\n` lines, as `info_print_ext_header`, `msg_add_ext_text`
//! and `msg_add_dict_text` in `kernel/printk/printk.c` write them), gives the kernel's record
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

/// The sample capture of `tests/data` (30 Ethernet frames, records 700 to 715).
fn sample_pcap() -> std::path::PathBuf {
    common::data("linux-7.3-ext-seq700-715/frames.pcap")
}

/// Waits for `child` at most a minute (a hang fails the test instead of stalling it).
fn wait_bounded(child: std::process::Child) -> std::process::Output {
    let (done, finished) = std::sync::mpsc::channel();
    let id = child.id();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    if finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .is_err()
    {
        let _ = std::process::Command::new("kill")
            .arg(id.to_string())
            .status();
        panic!("ncrx did not finish");
    }
    waiter.join().unwrap().unwrap()
}

#[test]
fn captures_from_stdin_pipes_and_fifos() {
    let pcap = sample_pcap();
    let bytes = std::fs::read(&pcap).unwrap();
    let (code, expected, stderr) = parts(&run(&["decode", pcap.to_str().unwrap()], b""));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(expected.lines().count(), 16);
    // `-` and `/dev/stdin` from a pipe.
    for name in ["-", "/dev/stdin"] {
        let (code, stdout, stderr) = parts(&run(&["decode", name], &bytes));
        assert_eq!(code, 0, "{name}: {stderr}");
        assert_eq!(stdout, expected, "{name}");
        assert!(stderr.contains("30 frames: 30 UDP datagrams"), "{stderr}");
    }
    // A FIFO, opened once (opened twice, the writer's data went to the first open and the
    // second waited forever).
    let dir = scratch("decode-fifo");
    let fifo = dir.join("frames.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let child = common::ncrx()
        .args(["decode", fifo.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Opening for writing waits until ncrx has opened it for reading.
    std::fs::write(&fifo, &bytes).unwrap();
    let (code, stdout, stderr) = parts(&wait_bounded(child));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, expected);
    // A process substitution, as bash makes it: a pipe named /dev/fd/N.
    let script = format!(
        "{} decode <(cat {})",
        env!("CARGO_BIN_EXE_ncrx"),
        pcap.display()
    );
    let output = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, expected);
}

#[test]
fn a_live_pipe_is_decoded_packet_by_packet() {
    use std::io::{BufRead, Write};
    // Three one-datagram records as frames, written into ncrx's stdin one at a time: each
    // record must come out before the next packet is written (tcpdump -U -w - | ncrx decode -).
    let dir = scratch("decode-live");
    let pcap = dir.join("three.pcap");
    let (code, _, stderr) = common::send_pcap(
        "+6665@192.0.2.1/,6666@192.0.2.2/",
        &pcap,
        &["--input", "text"],
        b"one\ntwo\nthree\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let bytes = std::fs::read(&pcap).unwrap();
    // The 24-byte header, then per packet a 16-byte record header and the frame.
    let mut packets = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        packets.push(&bytes[at..at + 16 + len]);
        at += 16 + len;
    }
    assert_eq!(packets.len(), 3);
    let mut child = common::ncrx()
        .args(["decode", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (lines, read) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    stdin.write_all(&bytes[..24]).unwrap();
    for (packet, text) in packets.iter().zip(["one", "two", "three"]) {
        stdin.write_all(packet).unwrap();
        stdin.flush().unwrap();
        let line = read
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line for {text:?} while the pipe stays open"));
        assert!(line.ends_with(&format!("<6> {text}")), "{line}");
    }
    drop(stdin);
    let output = wait_bounded(child);
    assert_eq!(output.status.code(), Some(0));
    assert!(read.try_recv().is_err(), "nothing more");
}

/// The sample's frames rewritten for another link type: pcap with `datalink`, each frame's
/// Ethernet header replaced by what `link_header` gives for its ethertype.
fn relinked(
    dir: &Path,
    name: &str,
    datalink: pcap_file::DataLink,
    link_header: impl Fn(u16) -> Vec<u8>,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let header = pcap_file::pcap::PcapHeader {
        datalink,
        ..pcap_file::pcap::PcapHeader::default()
    };
    let mut writer =
        pcap_file::pcap::PcapWriter::with_header(std::fs::File::create(&path).unwrap(), header)
            .unwrap();
    for (i, frame) in common::read_pcap(&sample_pcap()).iter().enumerate() {
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let mut packet = link_header(ethertype);
        packet.extend_from_slice(&frame[14..]);
        writer
            .write_packet(&pcap_file::pcap::PcapPacket::new(
                std::time::Duration::from_millis(1_000 + i as u64),
                packet.len() as u32,
                &packet,
            ))
            .unwrap();
    }
    path
}

#[test]
fn linux_cooked_and_raw_ip_captures() {
    let (code, expected, stderr) = parts(&run(&["decode", sample_pcap().to_str().unwrap()], b""));
    assert_eq!(code, 0, "{stderr}");
    let dir = scratch("decode-links");
    // LINUX_SLL: packet type, ARPHRD_ETHER, address length 6, address (8), protocol.
    let sll = |ethertype: u16| {
        let mut h = vec![0, 0, 0, 1, 0, 6, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0];
        h.extend_from_slice(&ethertype.to_be_bytes());
        h
    };
    // LINUX_SLL2: protocol, reserved, interface index, ARPHRD_ETHER, packet type, address
    // length, address (8).
    let sll2 = |ethertype: u16| {
        let mut h = ethertype.to_be_bytes().to_vec();
        h.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 4, 6]);
        h.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0]);
        h
    };
    let cases = [
        relinked(&dir, "sll.pcap", pcap_file::DataLink::LINUX_SLL, sll),
        relinked(&dir, "sll2.pcap", pcap_file::DataLink::LINUX_SLL2, sll2),
        relinked(&dir, "raw.pcap", pcap_file::DataLink::RAW, |_| Vec::new()),
        relinked(&dir, "ipv4.pcap", pcap_file::DataLink::IPV4, |_| Vec::new()),
    ];
    for path in &cases {
        let (code, stdout, stderr) = parts(&run(&["decode", path.to_str().unwrap()], b""));
        assert_eq!(code, 0, "{}: {stderr}", path.display());
        assert_eq!(stdout, expected, "{}", path.display());
        assert!(stderr.contains("30 frames: 30 UDP datagrams"), "{stderr}");
    }
    // A cooked packet that is not IP (ARP, 0x0806) is other traffic, not a bad frame.
    let arp = relinked(&dir, "arp.pcap", pcap_file::DataLink::LINUX_SLL2, |_| {
        sll2(0x0806)
    });
    let (code, stdout, stderr) = parts(&run(&["decode", arp.to_str().unwrap()], b""));
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    assert!(
        stderr.contains("30 frames: 0 UDP datagrams to port 6666, 0 to other ports, 30 other traffic, 0 bad frames"),
        "{stderr}"
    );
}

#[test]
fn loopback_checksums_left_to_offload_are_decoded_and_counted_apart() {
    // Real `tcpdump -i lo` and `-i any` captures (see tests/data/loopback-offload).
    let lo = common::data("loopback-offload/lo.pcap");
    let any = common::data("loopback-offload/any-sll2.pcap");
    let (code, stdout, stderr) = parts(&run(&["decode", lo.to_str().unwrap()], b""));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "127.0.0.1:6665 #0 [    0.000005] <6> hello lo\n\
         127.0.0.1:6665 #1 [    0.000063] <6> second\n\
         [::1]:6667 #0 [    0.000003] <6> v6 hello\n\
         127.0.0.1:6668 #0 [    0.000005] <6> any1\n"
    );
    assert!(
        stderr.contains("4 frames: 4 UDP datagrams to port 6666, 0 to other ports, 0 other traffic, 0 bad frames; 4 UDP checksums not verified (left to checksum offload, or absent); 0 malformed"),
        "{stderr}"
    );
    let (code, stdout, stderr) = parts(&run(&["decode", any.to_str().unwrap()], b""));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "127.0.0.1:6668 #0 [    0.000005] <6> any1\n[::1]:6669 #0 [    0.000004] <6> any2\n"
    );
    assert!(stderr.contains("2 UDP checksums not verified"), "{stderr}");
    // Strict: bad frames, exit code 1, and the message says why and what to do.
    let (code, stdout, stderr) = parts(&run(
        &["decode", "--strict-checksums", lo.to_str().unwrap()],
        b"",
    ));
    assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
    assert!(
        stderr.contains("frame 1: bad frame skipped: UDP checksum 0xfe2d is wrong (expected 0x7b23) (left unfilled by checksum offload: decoded without --strict-checksums)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("0 other traffic, 4 bad frames; 0 malformed"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_checksum_is_bad_and_a_zero_one_not_verified() {
    // Frames made by `send` (checksums right), then one checksum zeroed (IPv4: none
    // computed), one set to the pseudo-header's sum (what offload leaves), one wrong.
    let dir = scratch("decode-checksums");
    let pcap = dir.join("four.pcap");
    let (code, _, stderr) = common::send_pcap(
        "+6665@192.0.2.1/,6666@192.0.2.2/",
        &pcap,
        &["--input", "text"],
        b"right\nzero\nunfilled\nwrong\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let mut frames = common::read_pcap(&pcap);
    // The UDP checksum is at bytes 40..42 (Ethernet 14, IPv4 20, UDP 6).
    frames[1][40..42].copy_from_slice(&[0, 0]);
    let udp_len = u16::from_be_bytes([frames[2][38], frames[2][39]]);
    // 192.0.2.1 + 192.0.2.2 + UDP (17) + length, folded, not complemented.
    let mut sum: u32 = 0xc000 + 0x0201 + 0xc000 + 0x0202 + 17 + u32::from(udp_len);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frames[2][40..42].copy_from_slice(&(sum as u16).to_be_bytes());
    frames[3][41] ^= 0x01;
    let timed: Vec<_> = frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| (std::time::Duration::from_millis(i as u64), f))
        .collect();
    write_pcap(&pcap, &timed);
    let (code, stdout, stderr) = parts(&run(&["decode", pcap.to_str().unwrap()], b""));
    assert_eq!(code, 1, "the wrong checksum is bad data: {stderr}");
    let texts: Vec<&str> = stdout
        .lines()
        .map(|l| l.rsplit("<6> ").next().unwrap())
        .collect();
    assert_eq!(texts, ["right", "zero", "unfilled"], "{stdout}");
    assert!(
        stderr.contains("frame 4: bad frame skipped: UDP checksum"),
        "{stderr}"
    );
    assert!(
        stderr.contains("4 frames: 3 UDP datagrams to port 6666, 0 to other ports, 0 other traffic, 1 bad frames; 2 UDP checksums not verified"),
        "{stderr}"
    );
    // Strict: the unfilled one is bad too; a zero IPv4 checksum is allowed (RFC 768) but
    // still not verified.
    let (code, stdout, stderr) = parts(&run(
        &["decode", "--strict-checksums", pcap.to_str().unwrap()],
        b"",
    ));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stderr.contains("2 UDP datagrams to port 6666, 0 to other ports, 0 other traffic, 2 bad frames; 1 UDP checksums not verified"),
        "{stderr}"
    );
}

#[test]
fn long_plain_messages_come_out_as_one_item() {
    // Linux sends a console message longer than 1000 bytes in several datagrams, the second
    // without a timestamp: they come out as one `plain` item per record, the datagrams'
    // bytes joined in order, nothing lost, nothing merged across records.
    for (kernel, records, long) in [("linux-6.1", 25, 4), ("linux-7.3", 30, 9)] {
        let sample = common::data(&format!("{kernel}-plain-sample"));
        let pcap = sample.join("frames.pcap");
        let frames = common::read_pcap(&pcap);
        // Ethernet, IPv4 without options, UDP: the payload starts at byte 42.
        let sent: Vec<u8> = frames.iter().flat_map(|f| f[42..].to_vec()).collect();
        let kmsg = std::fs::read(sample.join("kmsg.raw")).unwrap();
        assert_eq!(
            kmsg.split(|&b| b == 0x1e).filter(|r| !r.is_empty()).count(),
            records,
            "{kernel}"
        );
        let (code, json, stderr) = parts(&run(
            &["decode", "--format", "json", pcap.to_str().unwrap()],
            b"",
        ));
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "0 records, 0 lost, 0 out of order, 0 incomplete, 0 restarts, {records} plain"
            )),
            "{stderr}"
        );
        let texts: Vec<Vec<u8>> = json
            .lines()
            .map(|line| {
                let item: Value = serde_json::from_str(line).unwrap();
                assert_eq!(item["type"], "plain");
                let text = item["text"].as_str().unwrap().as_bytes();
                if item["escaped"].as_bool().unwrap() {
                    netconsole_proto::unescape(text).0.into_owned()
                } else {
                    text.to_vec()
                }
            })
            .collect();
        assert_eq!(texts.len(), records, "{kernel}: one item per record");
        assert_eq!(texts.concat(), sent, "{kernel}: the datagrams, in order");
        for text in &texts {
            assert!(text.starts_with(b"["), "{}", text.escape_ascii());
            assert!(text.ends_with(b"\n"), "{}", text.escape_ascii());
        }
        assert_eq!(
            texts.iter().filter(|t| t.len() > 1000).count(),
            long,
            "{kernel}: records sent in more than one datagram"
        );
    }
}

/// `ncrx decode --dir` writes each sender's lines to its own file, `<address>.log`, exactly
/// the lines that sender has on standard output, in the same order: here two senders whose
/// records interleave, more than one batch of lines (1 MiB) in all, and a hole.
#[test]
fn dir_files_hold_each_senders_lines_in_order() {
    let senders = ["10.0.0.7", "10.0.0.8"];
    let mut builders: Vec<netpoll_frame::FrameBuilder> = senders
        .iter()
        .map(|ip| {
            let mut config =
                netpoll_frame::FrameConfig::new(ip.parse().unwrap(), "10.0.0.1".parse().unwrap());
            config.source_port = 6665;
            netpoll_frame::FrameBuilder::new(&config).unwrap()
        })
        .collect();
    let mut frames = Vec::new();
    let text = "w".repeat(250);
    for seq in 0..3000u64 {
        for (n, builder) in builders.iter_mut().enumerate() {
            if n == 1 && seq == 1234 {
                continue; // a hole in the second sender's records
            }
            let payload = format!("6,{seq},{},-;sender {n} record {seq} {text}\n", seq * 1000);
            let mut buf = [0u8; 1500];
            let len = builder.build(payload.as_bytes(), &mut buf).unwrap();
            let at = std::time::Duration::from_micros(frames.len() as u64 * 10);
            frames.push((at, buf[..len].to_vec()));
        }
    }
    let dir = scratch("decode-dir");
    let pcap = dir.join("two.pcap");
    write_pcap(&pcap, &frames);
    let (code, stdout, stderr) = parts(&run(&["decode", pcap.to_str().unwrap()], b""));
    assert_eq!(code, 0, "{stderr}");
    let files = dir.join("files");
    let (code, _, stderr) = parts(&run(
        &[
            "decode",
            pcap.to_str().unwrap(),
            "--dir",
            files.to_str().unwrap(),
        ],
        b"",
    ));
    assert_eq!(code, 0, "{stderr}");
    for ip in senders {
        let expected: String = stdout
            .split_inclusive('\n')
            .filter(|line| line.starts_with(&format!("{ip}:")))
            .collect();
        let written = std::fs::read_to_string(files.join(format!("{ip}.log"))).unwrap();
        // 3,000 records; or 2,999 and the hole's line.
        assert_eq!(written.lines().count(), 3000, "{ip}");
        assert_eq!(written, expected, "{ip}");
    }
    assert!(stdout.contains("10.0.0.8:6665 lost #1234..#1234\n"));
    assert!(stdout.len() > 1 << 20, "{} bytes of lines", stdout.len());
}

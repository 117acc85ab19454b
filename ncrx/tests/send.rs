//! `ncrx send`: frames written to a pcap reproduce real kernel captures byte for byte, and
//! datagrams sent over UDP on the loopback are what the kernel's format rules say.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::{parts, read_pcap, run, scratch, shared_captures};
use netconsole_proto::Datagram;
use netpoll_frame::Frame;

const CAPTURE_SPEC: &str = "+6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57";

/// The captured frames to `port` (IPv4 or IPv6 UDP; other traffic left out).
fn captured_udp(pcap: &Path, port: u16) -> Vec<Vec<u8>> {
    read_pcap(pcap)
        .into_iter()
        .filter(|f| Frame::parse(f).is_ok_and(|frame| frame.destination().port() == port))
        .collect()
}

/// Feeds `kmsg` to `ncrx send --pcap` and compares every frame with the capture's.
fn reproduce(kmsg: &Path, pcap: &Path, spec: &str, extra: &[&str], port: u16) -> usize {
    let dir = scratch("reproduce");
    let out = dir.join("out.pcap");
    let mut args = vec![kmsg.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, _, stderr) = common::send_pcap(spec, &out, &args, b"");
    assert_eq!(code, 0, "{stderr}");
    let ours = read_pcap(&out);
    let theirs = captured_udp(pcap, port);
    assert_eq!(ours.len(), theirs.len(), "frame count ({stderr})");
    for (index, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(
            a.escape_ascii().to_string(),
            b.escape_ascii().to_string(),
            "frame {index} of {}",
            pcap.display()
        );
    }
    ours.len()
}

#[test]
fn sample_in_the_repository_reproduces_byte_for_byte() {
    // Records 700..=715 of the Linux 7.3 extended capture: fragmented records, and three
    // records the kernel cut at 2048 bytes (no trailing newline).
    let data = common::data("linux-7.3-ext-seq700-715");
    let frames = reproduce(
        &data.join("kmsg.raw"),
        &data.join("frames.pcap"),
        CAPTURE_SPEC,
        &["--ip-id", "701"],
        6666,
    );
    assert_eq!(frames, 30);
}

#[test]
fn plain_sample_reproduces_byte_for_byte() {
    // The README's plain example: the Linux 6.1 plain sample (console buffer 1024 bytes),
    // whose frames' IPv4 ids run from 675; four records take two datagrams each.
    let data = common::data("linux-6.1-plain-sample");
    let frames = reproduce(
        &data.join("kmsg.raw"),
        &data.join("frames.pcap"),
        "6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57",
        &["--console-buffer", "1024", "--ip-id", "675"],
        6666,
    );
    assert_eq!(frames, 29);
}

#[test]
fn sample_from_standard_input() {
    let data = common::data("linux-7.3-ext-seq700-715");
    let dir = scratch("stdin");
    let out = dir.join("out.pcap");
    let kmsg = std::fs::read(data.join("kmsg.raw")).unwrap();
    let (code, _, stderr) = common::send_pcap(CAPTURE_SPEC, &out, &["--ip-id", "701"], &kmsg);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        read_pcap(&out),
        captured_udp(&data.join("frames.pcap"), 6666)
    );
    assert!(
        stderr.contains("16 records read, 30 datagrams written"),
        "{stderr}"
    );
}

#[test]
fn kernel_captures_reproduce_byte_for_byte() {
    let Some(root) = shared_captures() else {
        return;
    };
    let cases: [(&str, &str, &[&str]); 3] = [
        ("linux-7.3/ext", CAPTURE_SPEC, &["--ip-id", "1"]),
        ("linux-6.1/ext", CAPTURE_SPEC, &["--ip-id", "1"]),
        (
            "linux-7.3/ext_release",
            "+r6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57",
            &["--ip-id", "1", "--release", "7.3.4+deb13-amd64"],
        ),
    ];
    for (case, spec, extra) in cases {
        let dir = root.join(case);
        let frames = reproduce(
            &dir.join("kmsg.raw"),
            &dir.join("frames.pcap"),
            spec,
            extra,
            6666,
        );
        eprintln!("{case}: {frames} frames reproduced");
        assert!(frames > 800, "{case}: {frames}");
    }
}

const PLAIN_SPEC: &str = "6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57";

/// `kmsg.raw` with each record `/dev/kmsg` cut (Linux 7.3, at 2048 bytes: no newline after
/// the text, or a dangling escape) given back the whole text the workload wrote: the
/// console, which has its own buffer, printed those whole.
fn kmsg_with_whole_texts(raw: &[u8]) -> Vec<u8> {
    let manifest = testkit::workload_texts();
    let mut out = Vec::new();
    for record in raw.split(|&b| b == 0x1e).filter(|r| !r.is_empty()) {
        let semi = record.iter().position(|&b| b == b';').unwrap();
        let body = netconsole_proto::Body::parse(&record[semi + 1..]);
        let (text, malformed) = netconsole_proto::unescape(body.text());
        if malformed == 0 && body.text_terminated() {
            out.extend_from_slice(record);
        } else {
            let whole = manifest
                .iter()
                .find(|m| m.starts_with(&text[..24]))
                .expect("a cut record is in the workload manifest");
            out.extend_from_slice(&record[..=semi]);
            out.extend_from_slice(&netconsole_proto::escape(whole));
            out.push(b'\n');
        }
        out.push(0x1e);
    }
    out
}

/// The IPv4 identification of the first captured frame to `port`.
fn first_ip_id(pcap: &Path, port: u16) -> u16 {
    let frame = &captured_udp(pcap, port)[0];
    u16::from_be_bytes([frame[18], frame[19]])
}

/// Plain target: `kmsg.raw` (cut records made whole) through `ncrx send --pcap` gives the
/// captured frames byte for byte. Returns the frames compared.
fn reproduce_plain(dir: &Path, kernel: &str) -> usize {
    reproduce_console(dir, kernel, PLAIN_SPEC, 6666)
}

/// [`reproduce_plain`] for the target `spec` whose frames go to `port`.
fn reproduce_console(dir: &Path, kernel: &str, spec: &str, port: u16) -> usize {
    let kmsg = scratch("plain").join("kmsg");
    std::fs::write(
        &kmsg,
        kmsg_with_whole_texts(&std::fs::read(dir.join("kmsg.raw")).unwrap()),
    )
    .unwrap();
    let pcap = dir.join("frames.pcap");
    // IPv6 frames have no id: the option is then unused.
    let ip_id = first_ip_id(&pcap, port).to_string();
    // Linux 6.1's console buffer is 1024 bytes (CONSOLE_LOG_MAX), 7.3's 2048.
    let buffer = if kernel == "linux-6.1" {
        "1024"
    } else {
        "2048"
    };
    reproduce(
        &kmsg,
        &pcap,
        spec,
        &["--ip-id", &ip_id, "--console-buffer", buffer],
        port,
    )
}

#[test]
fn plain_sample_in_the_repository_reproduces_byte_for_byte() {
    // The rig-spec-* (control bytes, newlines, invalid UTF-8, a NUL) and rig-long-*
    // (split at 1000 bytes, cut by the 1024-byte console buffer on 6.1) records.
    for kernel in ["linux-6.1", "linux-7.3"] {
        let data = common::data(&format!("{kernel}-plain-sample"));
        let frames = reproduce_plain(&data, kernel);
        assert!(frames > 20, "{kernel}: {frames}");
    }
}

#[test]
fn ipv6_kernel_captures_reproduce_byte_for_byte() {
    // Two targets over IPv6: extended [2001:db8::1]:6665 -> :6666, plain :6667 -> :6668.
    // Each target's frames are compared (the kernel's consoles do not interleave them
    // record by record).
    let Some(root) = shared_captures() else {
        return;
    };
    let mac = "52:54:00:12:34:56";
    let ext = format!("+6665@2001:db8::1/{mac},6666@2001:db8::2/52:54:00:12:34:57");
    let plain = format!("6667@2001:db8::1/{mac},6668@2001:db8::2/52:54:00:12:34:57");
    for kernel in ["linux-6.1", "linux-7.3"] {
        let dir = root.join(kernel).join("ipv6");
        let pcap = dir.join("frames.pcap");
        let frames = reproduce(&dir.join("kmsg.raw"), &pcap, &ext, &[], 6666);
        assert!(frames > 700, "{kernel}: {frames}");
        let frames = reproduce_console(&dir, kernel, &plain, 6668);
        assert!(frames > 700, "{kernel}: {frames}");
    }
}

#[test]
fn plain_kernel_captures_reproduce_byte_for_byte() {
    let Some(root) = shared_captures() else {
        return;
    };
    for kernel in ["linux-6.1", "linux-7.3"] {
        let frames = reproduce_plain(&root.join(kernel).join("plain"), kernel);
        eprintln!("{kernel}/plain: {frames} frames reproduced");
        assert!(frames > 300, "{kernel}: {frames}");
    }
}

/// Runs `ncrx send` from a free local port to a receiver on `ip`; retries when another
/// program takes the port first. Returns the exit code, stderr, the local port and what the
/// receiver got.
fn send_udp(
    ip: &str,
    spec_template: &str,
    extra: &[&str],
    stdin: &[u8],
) -> (i32, String, u16, Vec<Vec<u8>>) {
    let receiver = UdpSocket::bind((ip, 0)).unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let remote = receiver.local_addr().unwrap().port();
    for _ in 0..5 {
        let local = UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = spec_template
            .replace("LOCAL", &local.to_string())
            .replace("REMOTE", &remote.to_string());
        let mut args = vec!["send", "--target", &spec];
        args.extend_from_slice(extra);
        let (code, _, stderr) = parts(&run(&args, stdin));
        if code == 6 && stderr.contains("in use") {
            continue;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((len, from)) = receiver.recv_from(&mut buf) {
            assert_eq!(from.port(), local, "sent from the target's local port");
            got.push(buf[..len].to_vec());
        }
        return (code, stderr, local, got);
    }
    panic!("no free local port in 5 tries");
}

#[test]
fn text_lines_become_extended_records() {
    let (code, stderr, _, got) = send_udp(
        "127.0.0.1",
        "+LOCAL@127.0.0.1/,REMOTE@127.0.0.1/",
        &["--input", "text", "--seq", "41", "--level", "3"],
        b"hello\nw\x01rld\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got.len(), 2);
    for (index, (datagram, text)) in got.iter().zip([&b"hello"[..], b"w\\x01rld"]).enumerate() {
        let Ok(Datagram::Extended(record)) = Datagram::parse(datagram) else {
            panic!("not extended: {}", datagram.escape_ascii());
        };
        assert_eq!(record.header.fields.seq, 41 + index as u64);
        assert_eq!(record.header.fields.level, 3);
        assert_eq!(record.header.fields.facility, 1);
        // The wire text is escaped as printk escapes it, then '\n'.
        assert_eq!(record.body, [text, b"\n"].concat());
        let head = format!("11,{},", 41 + index);
        assert!(datagram.starts_with(head.as_bytes()));
    }
}

#[test]
fn kmsg_records_keep_their_dictionary_and_release() {
    let input =
        b"6,1,2,-;first\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:03.0\n4,2,3,c,caller=T7;second\n";
    let (code, stderr, _, got) = send_udp(
        "127.0.0.1",
        "+rLOCAL@127.0.0.1/,REMOTE@127.0.0.1/",
        &["--release", "6.1.0-test"],
        input,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        got,
        [
            b"6.1.0-test,6,1,2,-;first\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:03.0\n".to_vec(),
            b"6.1.0-test,4,2,3,c,caller=T7;second\n".to_vec()
        ]
    );
}

#[test]
fn plain_target_gets_console_lines() {
    // The console prints "[sssss.uuuuuu] " before each line (ts_usec is the time since
    // ncrx started for text input), one datagram per record.
    let (code, stderr, _, got) = send_udp(
        "127.0.0.1",
        "LOCAL@127.0.0.1/,REMOTE@127.0.0.1/",
        &["--input", "text"],
        b"eth0: link up\nsecond\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got.len(), 2);
    for (datagram, text) in got.iter().zip(["eth0: link up\n", "second\n"]) {
        let line = String::from_utf8(datagram.clone()).unwrap();
        let (time, rest) = line.split_at(15);
        assert_eq!(rest, text);
        assert!(
            time.starts_with("[    0.") && time.ends_with("] "),
            "{line:?}"
        );
        assert!(time[7..13].bytes().all(|b| b.is_ascii_digit()), "{line:?}");
    }
    // printk.time=0 and the syslog prefix; a /dev/kmsg record's escapes undone, its
    // dictionary left out; records at or above the console loglevel not sent.
    let (code, stderr, _, got) = send_udp(
        "127.0.0.1",
        "LOCAL@127.0.0.1/,REMOTE@127.0.0.1/",
        &["--no-time", "--syslog", "--console-loglevel", "7"],
        b"14,5,6000001,-;a\\x5cb\\x0ac\n SUBSYSTEM=net\n7,6,6000002,-;debug\n3,7,7123456,c,caller=T9;err\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got, [b"<14>a\\b\n<14>c\n".to_vec(), b"<3>err\n".to_vec()]);
    assert!(
        stderr.contains("3 records read, 2 datagrams sent"),
        "{stderr}"
    );
    let (code, stderr, _, got) = send_udp(
        "127.0.0.1",
        "LOCAL@127.0.0.1/,REMOTE@127.0.0.1/",
        &["--console-caller"],
        b"3,7,7123456,c,caller=T9;err\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got, [b"[    7.123456][    T9] err\n".to_vec()]);
}

#[test]
fn ipv6_loopback() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("note: no IPv6 loopback here; test skipped");
        return;
    }
    let (code, stderr, _, got) = send_udp(
        "::1",
        "+LOCAL@::1/,REMOTE@::1/",
        &["--input", "text"],
        b"over v6\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with(b";over v6\n"), "{}", got[0].escape_ascii());
}

#[test]
fn json_records_are_formatted_as_printk_does() {
    let input = concat!(
        r#"{"type":"record","seq":5,"level":3,"facility":0,"ts_usec":99,"flag":"c","caller":"T42","text":"tab\there \\ é","dict":[["SUBSYSTEM","net"],["DEVICE","n2"]]}"#,
        "\n",
        r#"{"type":"lost","source":"x","first_seq":6,"last_seq":7}"#,
        "\n",
        r#"{"type":"record","seq":8,"level":6,"ts_usec":1,"text":"a\\","escaped":true}"#,
        "\n",
        "not json\n",
        r#"{"type":"record","seq":9,"level":6,"ts_usec":2,"text":"last"}"#,
        "\n"
    );
    let (code, stderr, _, got) = send_udp(
        "127.0.0.1",
        "+LOCAL@127.0.0.1/,REMOTE@127.0.0.1/",
        &["--input", "json"],
        input.as_bytes(),
    );
    // The bad line was skipped: exit code 1, the records were sent; the one in wire form
    // ("escaped") as it is, its dangling backslash included.
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("input record 4: not a JSON line of ncrx"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 bad records skipped, 1 other lines skipped"),
        "{stderr}"
    );
    assert_eq!(
        got,
        [
            b"3,5,99,c,caller=T42;tab\\x09here \\x5c \\xc3\\xa9\n SUBSYSTEM=net\n DEVICE=n2\n"
                .to_vec(),
            b"6,8,1,-;a\\\n".to_vec(),
            b"6,9,2,-;last\n".to_vec()
        ]
    );
}

#[test]
fn long_text_is_fragmented() {
    let line = "x".repeat(1500) + "\n";
    let (code, stderr, _, got) = send_udp(
        "127.0.0.1",
        "+LOCAL@127.0.0.1/,REMOTE@127.0.0.1/",
        &[
            "--input",
            "text",
            "--seq",
            "3",
            "--facility",
            "0",
            "--level",
            "6",
        ],
        line.as_bytes(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got.len(), 2);
    let first = Datagram::parse(&got[0]).unwrap();
    let Datagram::Extended(first) = first else {
        panic!("not extended");
    };
    let ncfrag = first.header.ncfrag.expect("a fragment");
    assert_eq!((ncfrag.offset, ncfrag.total), (0, 1501));
    assert_eq!(got[0].len(), 1000);
}

#[test]
fn reliable_resends_what_the_receiver_asks_for() {
    use std::io::Write;
    use std::process::Stdio;

    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let remote = receiver.local_addr().unwrap().port();
    let mut buf = [0u8; 2048];
    for _ in 0..5 {
        let local = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = format!("+{local}@127.0.0.1/,{remote}@127.0.0.1/");
        let mut child = common::ncrx()
            .args([
                "send",
                "--reliable",
                "--linger-ms",
                "10000",
                "--input",
                "text",
                "--target",
                &spec,
            ])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"zero\none\ntwo\n").unwrap();
        drop(stdin);
        let mut first = Vec::new();
        while first.len() < 3 {
            let Ok((len, from)) = receiver.recv_from(&mut buf) else {
                break;
            };
            assert_eq!(from.port(), local);
            first.push(buf[..len].to_vec());
        }
        if first.is_empty() {
            // The local port was taken in the meantime: ncrx exited with 6; try another.
            assert_eq!(child.wait().unwrap().code(), Some(6));
            continue;
        }
        assert_eq!(first.len(), 3);
        for (seq, text) in [(0, "zero"), (1, "one"), (2, "two")] {
            let Ok(Datagram::Extended(record)) = Datagram::parse(&first[seq]) else {
                panic!("not extended");
            };
            assert_eq!(record.header.fields.seq, seq as u64);
            assert_eq!(record.body, format!("{text}\n").as_bytes());
        }
        // "Record 1 never arrived": ack 0, ask for 1.
        let sender = SocketAddr::from(([127, 0, 0, 1], local));
        receiver.send_to(b"ncrx0 1", sender).unwrap();
        let (len, _) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], &first[1][..], "record 1 re-sent as it was");
        // Everything acknowledged: the sender is done well before its 10 s linger.
        let asked = std::time::Instant::now();
        receiver.send_to(b"ncrx2", sender).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(asked.elapsed() < Duration::from_secs(5));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        assert!(
            stderr.contains("3 records read, 4 datagrams sent (1 re-sent on request or in emergency), 0 records never acknowledged"),
            "{stderr}"
        );
        return;
    }
    panic!("no free local port in 5 tries");
}

/// One message of the configfs_userdata capture: its seq, frames, and the per-message
/// values only the kernel knew (the CPU and task that sent it) or that the workload
/// changed while it ran (the `rig_cfg` value, `host` removed, `cpu_nr_enabled` cleared).
struct UserdataMessage {
    seq: u64,
    frames: Vec<Vec<u8>>,
    cpu: Option<String>,
    taskname: String,
    rig_cfg: String,
    host: bool,
    msgid: u32,
}

/// The body text of ` KEY=VALUE\n` in `body`, if present.
fn line_value(body: &[u8], key: &str) -> Option<String> {
    let needle = format!("\n {key}=");
    let at = body
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?
        + needle.len();
    let end = at + body[at..].iter().position(|&b| b == b'\n')?;
    Some(String::from_utf8_lossy(&body[at..end]).into_owned())
}

/// The capture's messages: frames grouped by seq, bodies (fragments in order) searched for
/// the values that change from message to message.
fn userdata_messages(pcap: &Path) -> Vec<UserdataMessage> {
    let mut messages: Vec<(u64, Vec<Vec<u8>>, Vec<u8>)> = Vec::new();
    for frame in captured_udp(pcap, 6666) {
        let parsed = Frame::parse(&frame).unwrap();
        let (header, body) = netconsole_proto::Header::parse(parsed.payload()).unwrap();
        let seq = header.fields.seq;
        let body = body.to_vec();
        match messages.last_mut() {
            Some((last, frames, bodies))
                if *last == seq && header.ncfrag.is_some_and(|f| f.offset > 0) =>
            {
                frames.push(frame);
                bodies.extend_from_slice(&body);
            }
            _ => messages.push((seq, vec![frame], body)),
        }
    }
    messages
        .into_iter()
        .map(|(seq, frames, body)| UserdataMessage {
            seq,
            frames,
            cpu: line_value(&body, "cpu"),
            taskname: line_value(&body, "taskname").expect("taskname sent"),
            // A record cut at 2048 bytes has its first userdata line on the text's line.
            rig_cfg: String::from_utf8_lossy(&body)
                .split(" rig_cfg=")
                .nth(1)
                .and_then(|rest| rest.split('\n').next())
                .expect("rig_cfg sent")
                .to_owned(),
            host: line_value(&body, "host").is_some(),
            msgid: line_value(&body, "msgid").unwrap().parse().unwrap(),
        })
        .collect()
}

/// `ncrx send` of one run of the configfs_userdata capture (see [`reproduce_userdata`]):
/// the frames written.
fn send_userdata_run(
    first: &UserdataMessage,
    input: &Path,
    out: &Path,
    ip_id: u16,
    msgid: u32,
) -> Vec<Vec<u8>> {
    let (ip, id) = (ip_id.to_string(), msgid.to_string());
    let rig_cfg = format!("rig_cfg={}", first.rig_cfg);
    let mut args = vec![
        "--release",
        "7.3.4+deb13-amd64",
        "--ip-id",
        &ip,
        "--msgid",
        &id,
        "--userdata",
        &rig_cfg,
    ];
    if first.host {
        args.extend(["--userdata", "host=qemu-tcg-guest"]);
    }
    args.extend(["--userdata", r"odd=spaces and;semi,comma=eq\back"]);
    args.extend(["--sysdata-taskname", &first.taskname]);
    match &first.cpu {
        Some(cpu) => args.extend([
            "--sysdata",
            "cpu,taskname,release,msgid",
            "--sysdata-cpu",
            cpu,
        ]),
        None => args.extend(["--sysdata", "taskname,release,msgid"]),
    }
    args.push(input.to_str().unwrap());
    let spec = "+r6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57";
    let (code, _, stderr) = common::send_pcap(spec, out, &args, b"");
    assert_eq!(code, 0, "{stderr}");
    read_pcap(out)
}

/// Linux 7.3 configfs target with userdata and sysdata (guest-info.txt gives the
/// configuration: release=1, userdata rig_cfg, host, odd, all four sysdata fields): the
/// capture's `kmsg.raw` through `ncrx send --userdata ... --sysdata ...` gives its frames
/// byte for byte. ncrx is run once per run of messages with the same CPU, task name and
/// configuration (those come from the capture: no `/dev/kmsg` record holds them); the
/// msgid and IPv4 id go on from run to run as counted here (`whole`), or, for a sample of
/// the capture's messages, start each run where the capture's do.
fn reproduce_userdata(dir: &Path, whole: bool) -> usize {
    let pcap = dir.join("frames.pcap");
    let messages = userdata_messages(&pcap);
    let raw = std::fs::read(dir.join("kmsg.raw")).unwrap();
    let kmsg: std::collections::BTreeMap<u64, &[u8]> = raw
        .split(|&b| b == 0x1e)
        .filter(|r| !r.is_empty())
        .map(|r| (netconsole_proto::Header::parse(r).unwrap().0.fields.seq, r))
        .collect();
    let scratch = scratch("userdata");
    let mut ip_id = first_ip_id(&pcap, 6666);
    let mut msgid = 1u32;
    let mut compared = 0;
    let mut runs = 0;
    let mut start = 0;
    while start < messages.len() {
        let first = &messages[start];
        let same = |(i, m): (usize, &UserdataMessage)| {
            (&m.cpu, &m.taskname, &m.rig_cfg, m.host)
                == (&first.cpu, &first.taskname, &first.rig_cfg, first.host)
                && m.msgid == first.msgid + i as u32
        };
        let end = start
            + messages[start..]
                .iter()
                .enumerate()
                .take_while(|&m| same(m))
                .count();
        let captured_ip_id = u16::from_be_bytes([first.frames[0][18], first.frames[0][19]]);
        if whole {
            assert_eq!(
                (first.msgid, captured_ip_id),
                (msgid, ip_id),
                "seq {}",
                first.seq
            );
        } else {
            (msgid, ip_id) = (first.msgid, captured_ip_id);
        }
        let input = scratch.join(format!("run{runs}.kmsg"));
        let mut records = Vec::new();
        for message in &messages[start..end] {
            records.extend_from_slice(kmsg[&message.seq]);
            records.push(0x1e);
        }
        std::fs::write(&input, records).unwrap();
        let out = scratch.join(format!("run{runs}.pcap"));
        let ours = send_userdata_run(first, &input, &out, ip_id, msgid);
        let theirs: Vec<&Vec<u8>> = messages[start..end]
            .iter()
            .flat_map(|m| &m.frames)
            .collect();
        assert_eq!(
            ours.len(),
            theirs.len(),
            "run {runs} from seq {}",
            first.seq
        );
        for (a, b) in ours.iter().zip(theirs) {
            assert_eq!(a.escape_ascii().to_string(), b.escape_ascii().to_string());
        }
        compared += ours.len();
        ip_id = ip_id.wrapping_add(ours.len() as u16);
        msgid += (end - start) as u32;
        runs += 1;
        start = end;
    }
    compared
}

#[test]
fn userdata_sample_in_the_repository_reproduces_byte_for_byte() {
    let data = common::data("linux-7.3-configfs_userdata-sample");
    let frames = reproduce_userdata(&data, false);
    assert!(frames > 30, "{frames}");
}

#[test]
fn userdata_kernel_capture_reproduces_byte_for_byte() {
    let Some(root) = shared_captures() else {
        return;
    };
    let frames = reproduce_userdata(&root.join("linux-7.3/configfs_userdata"), true);
    eprintln!("linux-7.3/configfs_userdata: {frames} frames reproduced");
    assert!(frames > 400, "{frames}");
}

/// Runs `ncrx send --input text --target <spec>` with `lines`, the local port tried again
/// (up to 5 times) when another program took it meanwhile (exit code 6): the result and
/// the port.
fn send_from_a_free_port(
    spec: impl Fn(u16) -> String,
    extra: &[&str],
    lines: &[u8],
) -> ((i32, String, String), u16) {
    for _ in 0..5 {
        let local = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = spec(local);
        let mut args = vec!["send", "--input", "text", "--target", &spec];
        args.extend_from_slice(extra);
        let result = parts(&run(&args, lines));
        if result.0 == 6 && result.2.contains("in use") {
            continue;
        }
        return (result, local);
    }
    panic!("no free port in 5 tries");
}

#[test]
fn ipv4_and_ipv6_targets_send_from_the_same_port() {
    // The kernel sends to both from 6665: one socket per address family, the IPv6 one
    // IPv6-only, else the second bind fails with "address in use".
    let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let v6 = UdpSocket::bind("[::1]:0").unwrap();
    for socket in [&v4, &v6] {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    let (p4, p6) = (
        v4.local_addr().unwrap().port(),
        v6.local_addr().unwrap().port(),
    );
    let ((code, _, stderr), local) = send_from_a_free_port(
        |local| format!("+{local}@/,{p4}@127.0.0.1/;+{local}@/,{p6}@::1/"),
        &[],
        b"both\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("1 records read, 2 datagrams sent"),
        "{stderr}"
    );
    let mut buf = [0u8; 256];
    for (socket, ip) in [(&v4, "127.0.0.1"), (&v6, "::1")] {
        let (len, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(from, SocketAddr::new(ip.parse().unwrap(), local));
        assert!(buf[..len].ends_with(b";both\n"));
    }
}

#[test]
fn a_broadcast_target_is_sent_to() {
    // 127.255.255.255 is the loopback's broadcast address (`ip route show table local`):
    // sending there needs SO_BROADCAST, as 255.255.255.255 does, and stays on this machine.
    let receiver = UdpSocket::bind("127.255.255.255:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = receiver.local_addr().unwrap().port();
    let ((code, _, stderr), local) = send_from_a_free_port(
        |local| format!("+{local}@/,{port}@127.255.255.255/"),
        &[],
        b"to everyone\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let mut buf = [0u8; 256];
    let (len, from) = receiver.recv_from(&mut buf).unwrap();
    assert_eq!(from.port(), local);
    assert!(buf[..len].ends_with(b";to everyone\n"));
}

#[test]
fn reliable_send_never_acknowledged_exits_7() {
    // A receiver that reads but never answers.
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    let ((code, _, stderr), _) = send_from_a_free_port(
        |local| format!("+{local}@127.0.0.1/,{port}@127.0.0.1/"),
        &["--reliable", "--linger-ms", "200"],
        b"a\nb\nc\n",
    );
    assert_eq!(code, 7, "{stderr}");
    assert!(stderr.contains("3 records never acknowledged,"), "{stderr}");
    assert!(
        stderr.contains("ncrx: error: 3 records never acknowledged within --linger-ms 200"),
        "{stderr}"
    );
}

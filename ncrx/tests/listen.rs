//! `ncrx listen` as a subprocess on 127.0.0.1: records sent from the test (extended with a
//! dictionary, fragmented out of order, plain, and reliable with a dropped datagram answered
//! by a retransmission request), checked field by field; SIGTERM flushes the hole as lost,
//! prints per-source counts and exits 0.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStderr};
use std::time::{Duration, Instant};

use common::scratch;
use netconsole_proto::{ExtFragments, MAX_PRINT_CHUNK, Response, SendOptions};
use serde_json::Value;

/// Starts `ncrx listen --bind 127.0.0.1:<free port> extra...`.
fn listener(extra: &[&str]) -> (Child, SocketAddr, BufReader<ChildStderr>) {
    let (child, bind, banner, stderr) = common::spawn_bound(&["listen"], extra);
    assert!(
        banner.starts_with(&format!("ncrx: receiving netconsole on {bind}")),
        "{banner}"
    );
    (child, bind.parse().unwrap(), stderr)
}

fn terminate(child: &mut Child) -> i32 {
    common::signal(child, "TERM");
    child.wait().unwrap().code().expect("exited")
}

/// Waits for a response packet asking for `seq` (acks may come first).
fn wait_for_request(socket: &UdpSocket, seq: u64) -> (u64, Vec<u64>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            let response = Response::parse(&buf[..len]).expect("a response packet");
            let missing: Vec<u64> = response.missing().collect();
            if missing.contains(&seq) {
                return (response.ack(), missing);
            }
        }
    }
    panic!("no retransmission request for {seq}");
}

#[test]
fn records_fragments_plain_and_a_retransmitted_hole() {
    let (mut child, target, mut stderr) = listener(&["--format", "json"]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let plain = UdpSocket::bind("127.0.0.1:0").unwrap();

    // The kernel's first record after boot is number 0 (a stream starting later asks for
    // the numbers before it).
    kernel.send_to(b"6,0,500,-;zero\n", target).unwrap();
    kernel
        .send_to(b"6,1,1000,-;first\n SUBSYSTEM=net\n DEVICE=n2\n", target)
        .unwrap();
    // A 1500-byte record in ncfrag fragments made as the kernel makes them, last one first.
    let long = format!("4,2,2000,-;{}\n", "x".repeat(1500));
    let mut fragments = ExtFragments::new(long.as_bytes(), SendOptions::default()).unwrap();
    let mut datagrams = Vec::new();
    let mut out = [0u8; MAX_PRINT_CHUNK];
    while let Some(len) = fragments.write_next(&mut out) {
        datagrams.push(out[..len].to_vec());
    }
    assert_eq!(datagrams.len(), 2);
    for datagram in datagrams.iter().rev() {
        kernel.send_to(datagram, target).unwrap();
    }
    plain.send_to(b"eth0: link up\n", target).unwrap();
    // Record 3 is "lost" on the way: the receiver asks for it (after 0.5 s, half its reorder
    // window for a sender that has not answered yet).
    kernel.send_to(b"6,4,4000,-;four\n", target).unwrap();
    let (ack, missing) = wait_for_request(&kernel, 3);
    assert_eq!((ack, missing), (2, vec![3]));
    kernel.send_to(b"6,3,3000,c;three\n", target).unwrap();
    // Record 5 never comes; record 6 waits behind the hole until SIGTERM flushes it.
    kernel.send_to(b"6,6,6000,-;six\n", target).unwrap();
    // A fragment that claims bytes past its own total: counted for its source, not fatal.
    kernel
        .send_to(b"6,7,7000,-,ncfrag=900/10;x", target)
        .unwrap();

    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    while lines.len() < 6 {
        let mut line = String::new();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "{lines:?}");
        lines.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(terminate(&mut child), 0);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    lines.extend(
        rest.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()),
    );
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();

    let kernel_source = kernel.local_addr().unwrap().to_string();
    let (ours, theirs): (Vec<&Value>, Vec<&Value>) =
        lines.iter().partition(|l| l["source"] == kernel_source);
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["type"], "plain");
    assert_eq!(theirs[0]["text"], "eth0: link up\n");
    assert_eq!(theirs[0]["source"], plain.local_addr().unwrap().to_string());

    let kinds: Vec<String> = ours
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["type"],
                l["seq"].as_u64().or(l["first_seq"].as_u64()).unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "\"record\" 0",
            "\"record\" 1",
            "\"record\" 2",
            "\"record\" 3",
            "\"record\" 4",
            "\"lost\" 5",
            "\"record\" 6"
        ]
    );
    assert_eq!(ours[1]["text"], "first");
    assert_eq!(
        ours[1]["dict"],
        serde_json::json!([["SUBSYSTEM", "net"], ["DEVICE", "n2"]])
    );
    assert_eq!(ours[1]["ts_usec"], 1000);
    assert_eq!(ours[2]["level"], 4);
    assert_eq!(ours[2]["text"], "x".repeat(1500));
    assert_eq!(ours[2]["truncated"], false);
    assert_eq!(ours[3]["flag"], "c");
    assert_eq!(ours[3]["out_of_order"], false);
    assert_eq!(ours[5]["last_seq"], 5);
    assert!(
        report.contains(&format!(
            "{kernel_source}: 6 records, 1 lost, 0 out of order, 0 incomplete, 0 restarts, 0 plain, 1 bad datagrams"
        )),
        "{report}"
    );
    assert!(report.contains("responses sent"), "{report}");
}

/// Waits until `path` holds at least `lines` whole lines and returns them.
fn lines_of(path: &std::path::Path, lines: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') && text.lines().count() >= lines {
            return text.lines().map(str::to_owned).collect();
        }
        assert!(
            Instant::now() < deadline,
            "no {lines} lines in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads an RFC 3339 receive time.
fn time_of(received: &str) -> jiff::Timestamp {
    assert_eq!(received.len(), 27, "{received}: UTC with microseconds");
    assert!(received.ends_with('Z'), "{received}");
    received.parse().unwrap()
}

#[test]
fn one_file_per_source() {
    let dir = scratch("listen-dir");
    let (mut child, target, _stderr) = listener(&["--dir", dir.to_str().unwrap()]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = jiff::Timestamp::now();
    kernel
        .send_to(b"3,0,12345678,-;disk error\n", target)
        .unwrap();
    // Files are named by host: the address without its port when there is no name.
    let file = dir.join("127.0.0.1.log");
    let lines = lines_of(&file, 1);
    let after = jiff::Timestamp::now();
    // A record right after the first is held back (lines are handed to the files' thread
    // at most every 100 ms), and still written with nothing more coming and no signal.
    kernel.send_to(b"3,1,12345679,-;again\n", target).unwrap();
    let both = lines_of(&file, 2);
    assert!(both[1].ends_with("#1 [   12.345679] <3> again"), "{both:?}");
    assert_eq!(terminate(&mut child), 0);
    let (received, rest) = lines[0].split_once(' ').unwrap();
    let received = time_of(received);
    assert!(before <= received && received <= after, "{received}");
    assert_eq!(
        rest,
        format!(
            "{} #0 [   12.345678] <3> disk error",
            kernel.local_addr().unwrap()
        )
    );
}

#[test]
fn json_lines_carry_host_and_receive_time_and_hosts_name_senders() {
    let dir = scratch("listen-hosts");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "# test fleet\n127.0.0.1 web1 web1.example\n").unwrap();
    let (mut child, target, _stderr) = listener(&[
        "--format",
        "json",
        "--hosts",
        hosts.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = jiff::Timestamp::now();
    kernel.send_to(b"6,0,1000,-;zero\n", target).unwrap();
    kernel.send_to(b"6,2,3000,-;two\n", target).unwrap();
    lines_of(&dir.join("web1.jsonl"), 1);
    let after = jiff::Timestamp::now();
    assert_eq!(terminate(&mut child), 0);
    let lines = lines_of(&dir.join("web1.jsonl"), 3);
    let values: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let source = kernel.local_addr().unwrap().to_string();
    let kinds: Vec<(&str, &str, &str)> = values
        .iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap(),
                v["source"].as_str().unwrap(),
                v["host"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("record", source.as_str(), "web1"),
            ("lost", source.as_str(), "web1"),
            ("record", source.as_str(), "web1")
        ]
    );
    let first = time_of(values[0]["received"].as_str().unwrap());
    assert!(before <= first && first <= after, "{first}");
    // The hole and the record behind it came out at SIGTERM, later.
    assert!(time_of(values[2]["received"].as_str().unwrap()) >= first);
}

#[test]
fn sighup_reopens_the_files_for_logrotate() {
    let dir = scratch("listen-hup");
    let (mut child, target, _stderr) =
        listener(&["--dir", dir.to_str().unwrap(), "--time", "kernel"]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let source = kernel.local_addr().unwrap();
    let file = dir.join("127.0.0.1.log");
    kernel.send_to(b"6,0,1000000,-;before\n", target).unwrap();
    lines_of(&file, 1);
    // What logrotate does: move the file, then SIGHUP.
    let rotated = dir.join("127.0.0.1.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    common::signal(&child, "HUP");
    // The signal is taken within a few milliseconds; a record sent before that would still
    // go to the moved file, so wait until the listener says it reopened.
    std::thread::sleep(Duration::from_millis(300));
    kernel.send_to(b"6,1,2000000,-;after\n", target).unwrap();
    let after = lines_of(&file, 1);
    assert_eq!(terminate(&mut child), 0);
    assert_eq!(after, [format!("{source} #1 [    2.000000] <6> after")]);
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap(),
        format!("{source} #0 [    1.000000] <6> before\n")
    );
}

#[test]
fn threads_shard_senders_and_keep_each_in_order() {
    let (mut child, target, mut stderr) = listener(&["--threads", "3", "--format", "json"]);
    let senders: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for seq in 0..=2 {
        for (index, sender) in senders.iter().enumerate() {
            let record = format!("6,{seq},{seq}000,-;sender {index} record {seq}\n");
            sender.send_to(record.as_bytes(), target).unwrap();
        }
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    while lines.len() < 12 {
        let mut line = String::new();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "{lines:?}");
        lines.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    for (index, sender) in senders.iter().enumerate() {
        let source = sender.local_addr().unwrap().to_string();
        let texts: Vec<&str> = lines
            .iter()
            .filter(|l| l["source"] == source)
            .map(|l| l["text"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..=2)
            .map(|seq| format!("sender {index} record {seq}"))
            .collect();
        assert_eq!(texts, expected);
        assert!(
            report.contains(&format!("{source}: 3 records, 0 lost")),
            "{report}"
        );
    }
}

#[test]
fn ack_acknowledges_retired_records() {
    let (mut child, target, _stderr) = listener(&["--ack", "50"]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    kernel.send_to(b"6,0,1000,-;zero\n", target).unwrap();
    kernel.send_to(b"6,1,2000,-;one\n", target).unwrap();
    kernel
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 1500];
    let mut acked = None;
    while Instant::now() < deadline && acked != Some(1) {
        if let Ok((len, from)) = kernel.recv_from(&mut buf) {
            assert_eq!(
                from, target,
                "the response comes from the address the records went to"
            );
            let response = Response::parse(&buf[..len]).expect("a response packet");
            assert_eq!(response.missing().count(), 0, "nothing is missing");
            acked = Some(response.ack());
        }
    }
    assert_eq!(acked, Some(1), "records 0 and 1 acknowledged");
    assert_eq!(terminate(&mut child), 0);
}

#[test]
fn without_ack_the_libncrx_preset_stays_silent() {
    let (mut child, target, _stderr) = listener(&["--preset", "libncrx"]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    kernel.send_to(b"6,10,1000,-;one\n", target).unwrap();
    kernel
        .set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    let mut buf = [0u8; 1500];
    assert!(kernel.recv_from(&mut buf).is_err(), "no ack without --ack");
    assert_eq!(terminate(&mut child), 0);
}

/// Waits for `child` to exit, for at most `limit` (a hang detector, not a timing check):
/// its exit code, or `None` when it was still running (it is then killed).
fn exit_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Sends SIGTERM to a listener whose output is stalled: its exit code (`None` if it was
/// still running 20 s later) and its stderr.
fn stop_stalled(mut child: Child, mut stderr: BufReader<ChildStderr>) -> (Option<i32>, String) {
    common::signal(&child, "TERM");
    let code = exit_within(&mut child, Duration::from_secs(20));
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    (code, report)
}

/// Makes `path` a named pipe: a file that takes nothing until somebody opens it to read.
fn mkfifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

/// The stop summary's counts for `source` (`ncrx: SOURCE: N records, ...`): its records.
fn records_reported(report: &str, source: SocketAddr) -> u64 {
    let prefix = format!("ncrx: {source}: ");
    report
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counts for {source}:\n{report}"))
}

/// Nobody reads the listener's standard output: once the pipe is full, the writer thread's
/// writes block; once its queue is full too (16 MiB), the listener says so; at SIGTERM it
/// gives the output its time, then gives up what it could not write, says how much, gives
/// the usual summary (with every record received) and exits 3.
#[test]
fn sigterm_with_a_stalled_output_says_what_was_not_written_and_exits() {
    let (child, target, stderr) = listener(&["--format", "json", "--threads", "1"]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = "y".repeat(1000);
    // 20 MB of lines, at about 12,000 records a second.
    for seq in 1..=20_000u64 {
        let record = format!("6,{seq},{seq},-;{text}\n");
        kernel.send_to(record.as_bytes(), target).unwrap();
        if seq % 60 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Let the listener take them and block on the full pipe.
    std::thread::sleep(Duration::from_millis(500));
    let (code, report) = stop_stalled(child, stderr);
    assert_eq!(code, Some(3), "{report}");
    assert!(
        report.contains("ncrx: writing standard output is not keeping up: "),
        "{report}"
    );
    let stalled = report
        .lines()
        .find(|l| l.contains("the output is stalled"))
        .unwrap_or_else(|| panic!("{report}"));
    let bytes: u64 = stalled
        .split(": ")
        .nth(3)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stalled}"));
    // The pipe holds 64 KiB of the 20 MB of lines; what the listener had gathered and queued
    // when its queue filled is what it holds and reports (the rest waited in the socket).
    assert!(bytes > 1000, "{stalled}");
    // The thread finished: the summary came, with what was received. The queue filled, so
    // at least 16 MiB less one 256 KiB batch of lines of at most 1,300 bytes were made
    // (12,700 lines; what the socket still held at the stop stays unread).
    let records = records_reported(&report, kernel.local_addr().unwrap());
    assert!((12_700..=20_000).contains(&records), "{records}: {report}");
    assert!(
        report.contains(&format!("ncrx: all sources: {records} records, ")),
        "{report}"
    );
}

/// A `--dir` file that never takes anything (a named pipe nobody opens; a hung network file
/// system): SIGTERM still ends the listener, which says what it could not write and exits 3.
#[test]
fn sigterm_with_a_stalled_dir_file_says_so_and_exits() {
    let dir = scratch("listen-dir-hung");
    mkfifo(&dir.join("127.0.0.1.log"));
    let (child, target, stderr) = listener(&["--dir", dir.to_str().unwrap(), "--threads", "1"]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..100u64 {
        let record = format!("6,{seq},{seq},-;record {seq}\n");
        kernel.send_to(record.as_bytes(), target).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, report) = stop_stalled(child, stderr);
    assert_eq!(code, Some(3), "{report}");
    assert!(
        report.contains(
            "ncrx: stopped: the output is stalled (a --dir file takes nothing: a hung disk or \
             network file system): "
        ),
        "{report}"
    );
    // Every record was received, and the summary says so.
    assert_eq!(
        records_reported(&report, kernel.local_addr().unwrap()),
        100,
        "{report}"
    );
}

/// One thread receiving on an IPv4 and an IPv6 socket: an IPv6 sender's address comes whole
/// after an IPv4 sender's (a reused message header once cut it to its first 64 bits).
#[test]
fn an_ipv6_sender_after_an_ipv4_one_keeps_its_whole_address() {
    let port = common::free_port();
    let (mut child, banner, mut stderr) = common::spawn_piped(&[
        "listen".into(),
        "--format".into(),
        "json".into(),
        "--threads".into(),
        "1".into(),
        "--bind".into(),
        format!("127.0.0.1:{port}"),
        "--bind".into(),
        format!("[::1]:{port}"),
    ]);
    assert!(
        banner.starts_with("ncrx: receiving netconsole on "),
        "{banner}"
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut sources = Vec::new();
    for (local, target) in [
        ("127.0.0.1:0", format!("127.0.0.1:{port}")),
        ("[::1]:0", format!("[::1]:{port}")),
        ("127.0.0.1:0", format!("127.0.0.1:{port}")),
        ("[::1]:0", format!("[::1]:{port}")),
    ] {
        let sender = UdpSocket::bind(local).unwrap();
        sender.send_to(b"6,0,1000,-;hello\n", &target).unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            json["source"],
            sender.local_addr().unwrap().to_string(),
            "{line}"
        );
        sources.push(sender);
    }
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(report.contains("ncrx: stopped: 4 sources, "), "{report}");
}

/// SIGUSR1 and SIGUSR2 (another daemon's rotation signals) are said and ignored: the record
/// held behind a hole still comes out at the stop.
#[test]
fn sigusr1_and_sigusr2_are_ignored_and_said() {
    let (mut child, target, mut stderr) = listener(&["--threads", "1"]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    kernel.send_to(b"6,101,1000,-;first\n", target).unwrap();
    kernel.send_to(b"6,103,3000,-;held\n", target).unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.ends_with("first\n"), "{line}");
    for signal in ["USR1", "USR2"] {
        common::signal(&child, signal);
        let mut said = String::new();
        stderr.read_line(&mut said).unwrap();
        assert!(said.starts_with("ncrx: SIGUSR1/SIGUSR2 ignored"), "{said}");
    }
    assert_eq!(terminate(&mut child), 0);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains(" lost #102..#102\n") && rest.ends_with("held\n"),
        "{rest}"
    );
}

/// The README's `ncrx listen --time kernel` session, replayed on a port of its own with the
/// README's sender script done here: the same lines on standard output and in the stop
/// summary (the sender's address in place of `127.0.0.1:6665`), and the same answer.
#[test]
fn the_readmes_listen_session_is_what_listen_does() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("$ ncrx listen --time kernel\n")
        .expect("the README's listen session");
    let block = &readme[start..];
    let block = &block[..block.find("```").unwrap()];
    let mut shown = block.lines().skip(2); // the command and the start-up line
    let output: Vec<&str> = shown.by_ref().take_while(|l| !l.starts_with('#')).collect();
    let answer = shown.find(|l| !l.starts_with('#')).unwrap();
    let (mut child, target, mut stderr) = listener(&["--time", "kernel"]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |records: &[(u64, &str)]| {
        for (seq, text) in records {
            let record = format!("6,{seq},{},-;{text}\n", seq * 1000);
            kernel.send_to(record.as_bytes(), target).unwrap();
        }
    };
    send(&[(101, "first"), (102, "two"), (104, "four")]);
    kernel
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 100];
    let (len, _) = kernel.recv_from(&mut buf).unwrap();
    let got = String::from_utf8_lossy(&buf[..len]);
    assert!(
        answer.starts_with(&format!("(b'{got}', ")),
        "{answer} against {got}"
    );
    send(&[(103, "three"), (106, "six")]);
    kernel
        .send_to(b"6,107,107000,-,ncfrag=50/10;x\n", target)
        .unwrap();
    assert_eq!(terminate(&mut child), 0);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    let source = kernel.local_addr().unwrap().to_string();
    let expected = |summary: bool| -> Vec<String> {
        output
            .iter()
            .filter(|l| l.starts_with("ncrx: ") == summary)
            .map(|l| l.replace("127.0.0.1:6665", &source))
            .collect()
    };
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected(false));
    assert_eq!(report.lines().collect::<Vec<_>>(), expected(true));
}

/// A sender whose every record is still held at the stop (record 1 of a fresh boot waits
/// for 0) has its bad datagram in its own line of the summary, as in the totals.
#[test]
fn a_sender_with_only_held_records_has_its_bad_datagrams_in_its_summary_line() {
    let (mut child, target, mut stderr) = listener(&["--threads", "1"]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    kernel.send_to(b"6,1,1000,-;first\n", target).unwrap();
    // A fragment whose offset is past its total.
    kernel
        .send_to(b"6,2,2000,-,ncfrag=50/10;x\n", target)
        .unwrap();
    // The request for 0 (half a second on) says both were taken; record 1 is held for 1 s.
    let (_, missing) = wait_for_request(&kernel, 0);
    assert_eq!(missing, [0]);
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(
        report.contains(" 1 bad datagrams (1 tracked at stop"),
        "{report}"
    );
    let source = kernel.local_addr().unwrap();
    assert!(
        report.contains(&format!(
            "ncrx: {source}: 1 records, 1 lost, 0 out of order, 0 incomplete, 0 restarts, 0 \
             plain, 1 bad datagrams\n"
        )),
        "{report}"
    );
}

#[test]
fn senders_past_max_sources_are_refused_counted_and_shown() {
    let (mut child, target, mut stderr) = listener(&["--max-sources", "2", "--threads", "1", "-v"]);
    let senders: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (index, sender) in senders.iter().enumerate() {
        let record = format!("6,0,1000,-;sender {index}\n");
        sender.send_to(record.as_bytes(), target).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    while lines.len() < 2 {
        let mut line = String::new();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "{lines:?}");
        lines.push(line);
    }
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    let refused = senders[2].local_addr().unwrap();
    assert!(
        report.contains(&format!("ncrx: refused a datagram from {refused}")),
        "{report}"
    );
    assert!(report.contains(" 1 refused datagrams,"), "{report}");
    assert!(lines[0].ends_with("sender 0\n") && lines[1].ends_with("sender 1\n"));
}

#[test]
fn threads_refuse_to_share_a_port_another_program_receives_on() {
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap().to_string();
    let output = common::run(&["listen", "--bind", &addr, "--threads", "2"], b"");
    let (code, _, stderr) = common::parts(&output);
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains(&format!("another program already receives on {addr}")),
        "{stderr}"
    );
}

#[test]
fn a_file_per_source_and_format_never_mixes_text_and_json() {
    let dir = scratch("listen-formats");
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let source = kernel.local_addr().unwrap();
    for (format, seq) in [("text", 0), ("json", 0)] {
        let (mut child, target, _stderr) =
            listener(&["--dir", dir.to_str().unwrap(), "--format", format]);
        let record = format!("6,{seq},1000,-;record {seq}\n");
        kernel.send_to(record.as_bytes(), target).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(terminate(&mut child), 0);
    }
    let text = std::fs::read_to_string(dir.join("127.0.0.1.log")).unwrap();
    let json = std::fs::read_to_string(dir.join("127.0.0.1.jsonl")).unwrap();
    assert_eq!(
        text.split_once(' ').unwrap().1,
        format!("{source} #0 [    0.001000] <6> record 0\n")
    );
    let line: Value = serde_json::from_str(json.trim_end()).unwrap();
    assert_eq!(
        (line["seq"].as_u64(), line["text"].as_str()),
        (Some(0), Some("record 0"))
    );
}

#[test]
fn an_unwritable_dir_fails_at_start_with_a_clear_message() {
    let dir = scratch("listen-not-a-dir");
    let file = dir.join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let output = common::run(
        &[
            "listen",
            "--bind",
            "127.0.0.1:0",
            "--dir",
            file.to_str().unwrap(),
        ],
        b"",
    );
    let (code, _, stderr) = common::parts(&output);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot write files in {}: not a directory",
            file.display()
        )),
        "{stderr}"
    );
}

/// Reads the metric `name` from the server at `addr` until `wanted` holds for its value (the
/// threads publish once a second), and returns that value.
fn metric_until(addr: &str, name: &str, wanted: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (value, page) = common::metric_if_shown(addr, name);
        if let Some(value) = value.filter(|&v| wanted(v)) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stays at {value:?}: {page}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/metrics` with a query gets the same page (5 records counted); `HEAD` its headers only.
fn query_and_head_are_served(addr: &str) {
    let (status, queried) = common::http_get(addr, "/metrics?name[]=ncrx_records_total", "*/*");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(queried.contains("\nncrx_records_total 5\n"), "{queried}");
    let head = {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(stream, "HEAD /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n") && head.contains("Content-Length: "),
        "{head}"
    );
}

#[test]
fn metrics_are_served_for_prometheus_and_promtool_accepts_them() {
    let (mut child, target, mut stderr) = listener(&[
        "--metrics",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--metrics-sources",
        "1",
    ]);
    let addr = common::metrics_addr(&mut stderr);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in [0, 1, 2, 4] {
        let record = format!("6,{seq},{seq}000,-;record {seq}\n");
        kernel.send_to(record.as_bytes(), target).unwrap();
    }
    kernel
        .send_to(b"6,99999999999999999999999,1,-;seq over u64\n", target)
        .unwrap();
    other.send_to(b"6,0,1000,-;other\n", target).unwrap();
    // The threads publish once a second; wait until the counts are all in.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, body) = common::http_get(&addr, "/metrics", "text/plain");
        assert_eq!(status, "HTTP/1.1 200 OK");
        if body.contains("\nncrx_records_total 5\n")
            && body.contains("\nncrx_malformed_datagrams_total 1\n")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        text.contains("# TYPE ncrx_records_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE ncrx_oldest_hole_age_seconds gauge\n"),
        "{text}"
    );
    assert!(text.contains("\nncrx_sources 2\n"), "{text}");
    // The hole at 3 was asked for (a sender not known to answer: once, at 0.5 s); no ack.
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert!(value("ncrx_retransmission_requests_total") >= 1, "{text}");
    assert_eq!(value("ncrx_acks_total"), 0, "{text}");
    assert_eq!(
        value("ncrx_responses_total"),
        value("ncrx_retransmission_requests_total")
    );
    assert!(text.contains("\nncrx_datagrams_total 6\n"), "{text}");
    // One sender with series at most: the one with the most records.
    let source = kernel.local_addr().unwrap();
    assert!(
        text.contains(&format!(
            "ncrx_source_records_total{{host=\"127.0.0.1\",source=\"{source}\"}} 4\n"
        )),
        "{text}"
    );
    assert_eq!(
        text.matches("ncrx_source_records_total{").count(),
        1,
        "{text}"
    );
    let (_, open) = common::http_get(
        &addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0",
    );
    assert!(open.ends_with("# EOF\n") && open.contains("# TYPE ncrx_records counter\n"));
    assert_eq!(
        common::http_get(&addr, "/other", "*/*").0,
        "HTTP/1.1 404 Not Found"
    );
    query_and_head_are_served(&addr);
    assert_eq!(terminate(&mut child), 0);

    if let Some(promtool) = common::tool("promtool") {
        use std::io::Write;
        let mut check = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = check.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn systemd_socket_activation_and_notifications() {
    use std::os::unix::net::UnixDatagram;
    let dir = scratch("listen-systemd");
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The socket systemd would bind (ncrx.socket), passed as fd 3 with LISTEN_FDS=1: the
    // shell puts it there and execs ncrx, so LISTEN_PID and WATCHDOG_PID are ncrx's pid.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = socket.local_addr().unwrap();
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "export LISTEN_PID=$$ WATCHDOG_PID=$$; exec \"$0\" listen --format json --bind 127.0.0.1:9 --threads 1 3<&0 0</dev/null",
            env!("CARGO_BIN_EXE_ncrx"),
        ])
        .env("LISTEN_FDS", "1")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            socket,
        )))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut next_message = || match notify.recv(&mut buf) {
        Ok(len) => String::from_utf8_lossy(&buf[..len]).into_owned(),
        Err(error) => {
            let _ = child.kill();
            let mut report = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut report);
            panic!("no notification ({error}); ncrx said: {report}");
        }
    };
    assert_eq!(next_message(), "READY=1\n");
    // Fed at half the 200 ms timeout while the thread goes round.
    assert_eq!(next_message(), "WATCHDOG=1\n");
    assert_eq!(next_message(), "WATCHDOG=1\n");
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    kernel.send_to(b"6,0,1000,-;activated\n", target).unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["text"], "activated");
    assert_eq!(terminate(&mut child), 0);
    let mut rest = Vec::new();
    while let Ok(len) = notify.recv(&mut buf) {
        let message = String::from_utf8_lossy(&buf[..len]).into_owned();
        let last = message == "STOPPING=1\n";
        rest.push(message);
        if last {
            break;
        }
    }
    assert_eq!(
        rest.last().map(String::as_str),
        Some("STOPPING=1\n"),
        "{rest:?}"
    );
    let mut report = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut report)
        .unwrap();
    // The --bind given is not bound, and the operator is told.
    assert!(
        report.starts_with(
            "ncrx: socket activation: --bind is ignored, the 1 sockets systemd passed are \
             received on\n"
        ),
        "{report}"
    );
    assert!(
        report.contains(&format!("\nncrx: receiving netconsole on {target}\n")),
        "{report}"
    );
}

/// A stock kernel never answers retransmission requests: with the default settings the
/// records behind a hole come out within the receiver's reorder window (1 s), and the hole
/// as lost, while the listener runs.
#[test]
fn a_sender_that_never_answers_does_not_hold_back_the_records_after_a_hole() {
    let (mut child, target, _stderr) = listener(&["--format", "json"]);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in [0u64, 1, 3, 4] {
        kernel
            .send_to(
                format!("6,{seq},{seq}000,-;record {seq}\n").as_bytes(),
                target,
            )
            .unwrap();
    }
    let sent = jiff::Timestamp::now();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    while lines.len() < 5 {
        let mut line = String::new();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "{lines:?}");
        lines.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    // Everything came out before the stop.
    assert_eq!(terminate(&mut child), 0);
    let kinds: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["type"].as_str().unwrap(),
                l["seq"].as_u64().or(l["first_seq"].as_u64()).unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        ["record 0", "record 1", "lost 2", "record 3", "record 4"]
    );
    // The receiver's protocol timer, read off its own receive times: record 3 waited the
    // 1 s reorder window, not libncrx's 30 s message timeout.
    let released = time_of(lines[3]["received"].as_str().unwrap());
    let waited = released.duration_since(sent);
    assert!(
        waited < jiff::SignedDuration::from_millis(1500),
        "record 3 came out {waited:?} after it was sent"
    );
}

/// Waits up to `wait` for a datagram on `socket`.
fn datagram_within(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1500];
    socket
        .recv_from(&mut buf)
        .ok()
        .map(|(len, _)| buf[..len].to_vec())
}

/// After an ICMP port unreachable for a sender, the listener sends it nothing more; a
/// sender whose port is open still gets its requests.
#[test]
fn after_a_port_unreachable_nothing_more_is_sent_to_that_sender() {
    let (mut child, target, mut stderr) = listener(&["--format", "json", "--threads", "1"]);
    // The kernel whose port closes, and one whose port stays open (the control).
    let closing = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_addr = closing.local_addr().unwrap();
    let open = UdpSocket::bind("127.0.0.1:0").unwrap();
    for socket in [&closing, &open] {
        for seq in [0u64, 2] {
            socket
                .send_to(
                    format!("6,{seq},{seq}000,-;record {seq}\n").as_bytes(),
                    target,
                )
                .unwrap();
        }
    }
    drop(closing);
    // The request for 1 reaches both: the open one reads it, the closed port answers with
    // ICMP port unreachable.
    let request = datagram_within(&open, Duration::from_secs(5)).expect("a request for 1");
    assert_eq!(
        Response::parse(&request)
            .unwrap()
            .missing()
            .collect::<Vec<_>>(),
        [1]
    );
    std::thread::sleep(Duration::from_millis(300));
    // The port opens again and new holes keep appearing for both: the open one is still
    // asked (the requests are spaced out, so a few seconds of holes), the other never.
    let reopened = UdpSocket::bind(closed_addr).unwrap();
    let (mut asked_open, mut asked_reopened) = (0, 0);
    let mut seq = 4u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) && asked_open == 0
        || started.elapsed() < Duration::from_secs(3)
    {
        for socket in [&reopened, &open] {
            for n in [seq, seq + 2] {
                socket
                    .send_to(format!("6,{n},{n}000,-;record {n}\n").as_bytes(), target)
                    .unwrap();
            }
        }
        seq += 3;
        if datagram_within(&open, Duration::from_millis(100)).is_some() {
            asked_open += 1;
        }
        if datagram_within(&reopened, Duration::from_millis(100)).is_some() {
            asked_reopened += 1;
        }
    }
    assert!(asked_open > 0, "the control sender was never asked again");
    assert_eq!(
        asked_reopened, 0,
        "a request reached a sender whose port was closed"
    );
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(report.contains(" 1 port unreachable"), "{report}");
}

/// A file that cannot be written (here: a directory sits where the sender's file goes) is
/// counted and reported, and the listener goes on writing the other senders' files.
#[test]
fn a_file_that_cannot_be_written_is_counted_and_the_rest_goes_on() {
    let dir = scratch("listen-write-error");
    std::fs::create_dir(dir.join("127.0.0.1.log")).unwrap();
    let (mut child, target, mut stderr) =
        listener(&["--dir", dir.to_str().unwrap(), "--time", "kernel"]);
    let blocked = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    for seq in 0..3u64 {
        for socket in [&blocked, &other] {
            socket
                .send_to(
                    format!("6,{seq},{seq}000,-;record {seq}\n").as_bytes(),
                    target,
                )
                .unwrap();
        }
    }
    let lines = lines_of(&dir.join("127.0.0.2.log"), 3);
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    let source = other.local_addr().unwrap();
    assert_eq!(
        lines,
        (0..3)
            .map(|seq| format!("{source} #{seq} [    0.00{seq}000] <6> record {seq}"))
            .collect::<Vec<_>>()
    );
    assert!(
        report.contains(" lines not written so far; last: ")
            && report.contains("127.0.0.1.log: Is a directory"),
        "{report}"
    );
    assert!(
        report.contains("ncrx: 3 lines could not be written"),
        "{report}"
    );
}

/// `count` sockets on consecutive loopback addresses from `first`.
fn senders_from(first: std::net::Ipv4Addr, count: u32) -> Vec<UdpSocket> {
    (0..count)
        .map(|i| UdpSocket::bind((std::net::Ipv4Addr::from(u32::from(first) + i), 0)).unwrap())
        .collect()
}

/// Record `seq` from every sender.
fn send_round(senders: &[UdpSocket], seq: u64, target: SocketAddr) {
    for sender in senders {
        let record = format!("6,{seq},{seq}000,-;record {seq}\n");
        sender.send_to(record.as_bytes(), target).unwrap();
    }
}

/// How many descriptors `child` has open.
fn open_descriptors(child: &Child) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .count()
}

/// More senders than files kept open (271 under an open-file limit of 400): every file gets
/// its lines, and the listener's open descriptors stay bounded.
#[test]
fn more_senders_than_open_files_each_get_their_file() {
    let dir = scratch("listen-many-files");
    let (mut child, bind, _banner, _stderr) = common::spawn_bound_in(
        &["bash", "-c", "ulimit -n 400 && exec \"$0\" \"$@\""],
        &["listen"],
        &[
            "--dir",
            dir.to_str().unwrap(),
            "--time",
            "kernel",
            "--threads",
            "1",
        ],
        std::process::Stdio::null,
    );
    let target: SocketAddr = bind.parse().unwrap();
    let senders = senders_from(std::net::Ipv4Addr::new(127, 3, 0, 1), 300);
    for seq in 0..2u64 {
        send_round(&senders, seq, target);
        // Each round is written (and its files opened) before the next.
        std::thread::sleep(Duration::from_millis(400));
    }
    let open = open_descriptors(&child);
    assert_eq!(terminate(&mut child), 0);
    // 400 - 128 set aside - 1 socket.
    assert!(open <= 271 + 16, "{open} descriptors open");
    for sender in &senders {
        let ip = sender.local_addr().unwrap().ip();
        let lines = lines_of(&dir.join(format!("{ip}.log")), 2);
        assert_eq!(lines.len(), 2, "{ip}");
        assert!(lines[1].ends_with("record 1"), "{lines:?}");
    }
}

/// Under a low open-file limit that cannot be raised (300, soft and hard, as `ulimit -n`
/// sets it), four threads with more senders than the limit share it out: the listener says
/// how many files each keeps open, every line reaches its file, nothing is counted as a
/// write error, and the process stays under the limit. (Each thread kept 256 before, so
/// `Too many open files` lost lines as soon as the threads together passed the limit.)
#[test]
fn four_threads_share_a_low_open_file_limit_and_lose_no_line() {
    let dir = scratch("listen-nofile");
    let (mut child, bind, banner, mut stderr) = common::spawn_bound_in(
        &["bash", "-c", "ulimit -n 300 && exec \"$0\" \"$@\""],
        &["listen"],
        &[
            "--threads",
            "4",
            "--time",
            "kernel",
            "--dir",
            dir.to_str().unwrap(),
        ],
        std::process::Stdio::null,
    );
    assert!(banner.contains("(4 threads, SO_REUSEPORT)"), "{banner}");
    let target: SocketAddr = bind.parse().unwrap();
    let senders = senders_from(std::net::Ipv4Addr::new(127, 5, 0, 1), 400);
    let mut most_open = 0;
    for seq in 0..3u64 {
        send_round(&senders, seq, target);
        std::thread::sleep(Duration::from_millis(400));
        most_open = most_open.max(open_descriptors(&child));
    }
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    // (300 - 128 set aside - 4 sockets) / 4 threads.
    assert!(
        report.starts_with("ncrx: the open-file limit is 300: each thread keeps at most 42 files"),
        "{report}"
    );
    assert!(!report.contains("write error"), "{report}");
    assert!(!report.contains("could not be written"), "{report}");
    assert!(
        report.contains("all sources: 1200 records, 0 lost"),
        "{report}"
    );
    // 4 threads x 42 files, 4 sockets, the standard streams.
    assert!(
        most_open <= 4 * 42 + 4 + 3 + 8,
        "{most_open} descriptors open"
    );
    for sender in &senders {
        let ip = sender.local_addr().unwrap().ip();
        let lines = lines_of(&dir.join(format!("{ip}.log")), 3);
        assert_eq!(lines.len(), 3, "{ip}");
        for (seq, line) in lines.iter().enumerate() {
            assert!(line.ends_with(&format!("record {seq}")), "{ip}: {lines:?}");
        }
    }
}

/// Standard output on a full disk (`/dev/full`): the listener goes on receiving, counts the
/// lines it could not write, says so on stderr, and at SIGTERM exits 0 with every record
/// counted.
#[test]
fn a_full_standard_output_is_counted_and_the_listener_goes_on() {
    let (mut child, bind, banner, mut stderr) =
        common::spawn_bound_to(&["listen"], &["--format", "json", "--threads", "1"], || {
            std::fs::File::options()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full")
                .into()
        });
    assert!(
        banner.starts_with("ncrx: receiving netconsole on"),
        "{banner}"
    );
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..100u64 {
        let record = format!("6,{seq},{seq}000,-;record {seq}\n");
        kernel.send_to(record.as_bytes(), &bind).unwrap();
        if seq == 49 {
            // The first writes fail meanwhile; the listener must still be there after.
            std::thread::sleep(Duration::from_millis(300));
            assert!(child.try_wait().unwrap().is_none(), "the listener stopped");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the listener stopped");
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(
        report.contains("lines not written so far; last: standard output: No space left on device"),
        "{report}"
    );
    assert!(
        report.contains("all sources: 100 records, 0 lost"),
        "{report}"
    );
    assert!(
        report.contains("ncrx: 100 lines could not be written ("),
        "{report}"
    );
    assert!(!report.contains("error: "), "{report}");
}

/// Standard output closed by its reader (`ncrx listen | head -3`): the listener stops with
/// the file-error code, and its report still counts what every thread received.
#[test]
fn a_closed_standard_output_stops_the_listener_with_its_counts() {
    let (mut child, target, mut stderr) = listener(&["--format", "json", "--threads", "1"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0u64;
    let mut send = |n: u64| {
        for _ in 0..n {
            let record = format!("6,{sent},{sent}000,-;record {sent}\n");
            kernel.send_to(record.as_bytes(), target).unwrap();
            sent += 1;
        }
    };
    send(3);
    for _ in 0..3 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("\"type\":\"record\""), "{line}");
    }
    drop(stdout);
    // The next write finds the pipe closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the listener did not stop");
        send(5);
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert_eq!(code, Some(3), "{report}");
    assert!(
        report.contains("error: cannot write to standard output: Broken pipe"),
        "{report}"
    );
    // Every record the listener took is counted (it may stop before reading the last ones
    // sent), and all but the three read went unwritten.
    let records: u64 = report
        .split("all sources: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        records > 3 && records <= sent,
        "{records} of {sent}: {report}"
    );
    assert!(
        report.contains(&format!(
            "ncrx: {} lines could not be written (",
            records - 3
        )),
        "{report}"
    );
}

/// The --dir directory removed while the listener runs (its files with it, open) is made
/// again at the next lines, with no SIGHUP: for a new sender, and for the senders whose
/// files were open (which were written to the deleted files until a SIGHUP before the
/// directory was checked at each batch).
#[test]
fn a_removed_dir_is_made_again() {
    let dir = scratch("listen-dir-removed");
    let (mut child, target, mut stderr) =
        listener(&["--dir", dir.to_str().unwrap(), "--time", "kernel"]);
    let senders = senders_from(std::net::Ipv4Addr::new(127, 6, 0, 1), 3);
    send_round(&senders[..2], 0, target);
    std::thread::sleep(Duration::from_millis(400));
    // Removed while its files are open, and no SIGHUP: the next lines go to a new
    // directory, not to the open files of the removed one.
    std::fs::remove_dir_all(&dir).unwrap();
    send_round(&senders[..2], 1, target);
    // A sender not seen before.
    send_round(&senders[2..], 0, target);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(!report.contains("write error"), "{report}");
    for (n, sender) in senders.iter().enumerate() {
        let ip = sender.local_addr().unwrap().ip();
        let lines = lines_of(&dir.join(format!("{ip}.log")), 1);
        assert_eq!(lines.len(), 1, "{ip}: {lines:?}");
        let last = if n < 2 { "record 1" } else { "record 0" };
        assert!(lines[0].ends_with(last), "{ip}: {lines:?}");
    }
}

/// A sender's file moved (a rotation with no SIGHUP) or deleted (a clean-up job) while the
/// listener holds it open is made again at its path by the sender's next line, well within
/// the 10 s after which an idle file is closed: its lines do not go on into the moved file,
/// nor into a deleted file that nobody can read.
#[test]
fn a_moved_or_deleted_file_is_made_again_with_no_sighup() {
    let dir = scratch("listen-file-moved");
    let (mut child, target, mut stderr) =
        listener(&["--dir", dir.to_str().unwrap(), "--time", "kernel"]);
    let senders = senders_from(std::net::Ipv4Addr::new(127, 6, 1, 1), 3);
    let files: Vec<std::path::PathBuf> = senders
        .iter()
        .map(|s| dir.join(format!("{}.log", s.local_addr().unwrap().ip())))
        .collect();
    send_round(&senders, 0, target);
    std::thread::sleep(Duration::from_millis(400));
    std::fs::rename(&files[0], dir.join("rotated")).unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    send_round(&senders, 1, target);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(!report.contains("write error"), "{report}");
    let ends = |path: &std::path::Path, records: &[&str]| {
        let lines = lines_of(path, records.len());
        assert_eq!(lines.len(), records.len(), "{}: {lines:?}", path.display());
        for (line, record) in lines.iter().zip(records) {
            assert!(line.ends_with(record), "{}: {lines:?}", path.display());
        }
    };
    ends(&dir.join("rotated"), &["record 0"]);
    ends(&files[0], &["record 1"]);
    ends(&files[1], &["record 1"]);
    ends(&files[2], &["record 0", "record 1"]);
}

/// Where inotify refuses to watch the --dir directory (its limits reached; here a user
/// namespace that allows no inotify instance), the listener says so once, not once a
/// thread, and goes on writing every line to its file.
#[test]
fn a_dir_that_inotify_cannot_watch_is_said_once_and_written() {
    let Some(unshare) = common::tool("unshare") else {
        return;
    };
    let dir = scratch("listen-unwatched");
    let (mut child, bind, banner, mut stderr) = common::spawn_bound_in(
        &[
            unshare.to_str().unwrap(),
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            "echo 0 > /proc/sys/user/max_inotify_instances && exec \"$0\" \"$@\"",
        ],
        &["listen"],
        &[
            "--dir",
            dir.to_str().unwrap(),
            "--time",
            "kernel",
            "--threads",
            "2",
        ],
        std::process::Stdio::null,
    );
    assert!(
        banner.starts_with(&format!("ncrx: cannot watch {}", dir.display()))
            && banner.contains("EMFILE")
            && banner.contains("fs.inotify.max_user_instances"),
        "{banner}"
    );
    // The message comes when the output is set up, before the sockets: nothing is sent
    // until the listener says it receives.
    let mut receiving = String::new();
    stderr.read_line(&mut receiving).unwrap();
    assert!(
        receiving.starts_with(&format!("ncrx: receiving netconsole on {bind}")),
        "{receiving}"
    );
    let target: SocketAddr = bind.parse().unwrap();
    let senders = senders_from(std::net::Ipv4Addr::new(127, 6, 2, 1), 4);
    send_round(&senders, 0, target);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(!report.contains("cannot watch"), "{report}");
    assert!(
        report.contains("all sources: 4 records, 0 lost"),
        "{report}"
    );
    for sender in &senders {
        let ip = sender.local_addr().unwrap().ip();
        let lines = lines_of(&dir.join(format!("{ip}.log")), 1);
        assert_eq!(lines.len(), 1, "{ip}: {lines:?}");
        assert!(lines[0].ends_with("record 0"), "{ip}: {lines:?}");
    }
}

/// Records the receiver drops are counted, never silently gone: a copy of a record already
/// taken shows in the metrics as a duplicate, and records far behind what a sender already
/// delivered (with later timestamps, so not a restart) are in the stop summary and the
/// metrics as dropped.
#[test]
fn records_the_receiver_drops_are_counted() {
    let (mut child, target, mut stderr) = listener(&["--threads", "1", "--metrics", "127.0.0.1:0"]);
    let addr = common::metrics_addr(&mut stderr);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    for record in [
        "6,100000,5001000,-;a\n",
        "6,100001,5001001,-;b\n",
        "6,100001,5001001,-;b\n",
        "6,10,7000010,-;c10\n",
        "6,11,7000011,-;c11\n",
    ] {
        kernel.send_to(record.as_bytes(), target).unwrap();
    }
    let name = "ncrx_dropped_records_total{reason=\"duplicate\"}";
    assert_eq!(metric_until(&addr, name, |v| v > 0), 1);
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(
        report.contains("all sources: 2 records, 0 lost"),
        "{report}"
    );
    assert!(
        report.contains(
            "ncrx: records dropped: 2 (0 claiming a sequence number already taken, 2 too far \
             behind to tell from records delivered, 0 ahead of a stream that went on, 0 stale \
             emergency, 0 over the byte budget); 1 duplicates ignored"
        ),
        "{report}"
    );
}

/// Datagrams of any size UDP carries are taken whole: a 65,000-byte extended record comes
/// out with all its text (not marked cut), a 65,507-byte plain datagram (the most IPv4
/// carries) with all its bytes, and nothing is counted oversized.
#[test]
fn the_longest_datagrams_are_taken_whole() {
    let (mut child, target, mut stderr) = listener(&["--threads", "1", "--format", "json"]);
    // Read while it writes: the lines are longer than a pipe holds.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = "A".repeat(65_000);
    kernel
        .send_to(format!("6,0,1000,-;{text}\n").as_bytes(), target)
        .unwrap();
    let plain = "p".repeat(65_507);
    kernel.send_to(plain.as_bytes(), target).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(terminate(&mut child), 0);
    let out = reader.join().unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["type"], "record");
    assert_eq!(lines[0]["text"], text.as_str());
    assert_eq!(lines[0]["truncated"], false);
    assert_eq!(lines[1]["type"], "plain");
    assert_eq!(lines[1]["text"], plain.as_str());
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(report.contains(", 0 oversized,"), "{report}");
}

/// `--bind ADDR:0` with several threads: the kernel picks the port once, every thread
/// binds that port (not a port each), and the start-up line says which it is.
#[test]
fn port_zero_is_one_port_for_every_thread() {
    let args = ["listen", "--bind", "127.0.0.1:0", "--threads", "3"];
    let (mut child, banner, _stderr) = common::spawn_piped(&args.map(String::from));
    let port: u16 = banner
        .strip_prefix("ncrx: receiving netconsole on 127.0.0.1:")
        .and_then(|rest| rest.strip_suffix(" (3 threads, SO_REUSEPORT)\n"))
        .unwrap_or_else(|| panic!("{banner}"))
        .parse()
        .unwrap();
    assert_ne!(port, 0);
    // The listener's sockets, by inode, in /proc/net/udp: three, all on that port.
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .filter_map(|fd| {
            let link = std::fs::read_link(fd.ok()?.path()).ok()?;
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            inodes.iter().any(|i| i == fields[9]).then(|| {
                let (_, port) = fields[1].split_once(':').unwrap();
                u16::from_str_radix(port, 16).unwrap()
            })
        })
        .collect();
    assert_eq!(ports, [port; 3], "{table}");
    assert_eq!(terminate(&mut child), 0);
}

/// The kernel's drops are counted: the listener is stopped (SIGSTOP) with a receive buffer
/// of the kernel's minimum, 100 records are sent (the buffer keeps a few, the kernel drops
/// the rest), and after SIGCONT one more record shows the hole. The metrics and the stop
/// summary give the same count of kernel drops, and it is exactly the records lost.
#[test]
fn the_kernels_drops_are_counted_in_the_metrics_and_at_stop() {
    let (mut child, target, mut stderr) = listener(&[
        "--threads",
        "1",
        "--recv-buffer",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let addr = common::metrics_addr(&mut stderr);
    assert_eq!(metric_until(&addr, "ncrx_kernel_drops_total", |_| true), 0);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    common::signal(&child, "STOP");
    for seq in 0..100 {
        let record = format!("6,{seq},{seq}000,-;record {seq}\n");
        kernel.send_to(record.as_bytes(), target).unwrap();
    }
    common::signal(&child, "CONT");
    std::thread::sleep(Duration::from_millis(300));
    kernel
        .send_to(b"6,100,100000,-;record 100\n", target)
        .unwrap();
    let drops = metric_until(&addr, "ncrx_kernel_drops_total", |v| v > 0);
    assert!(drops >= 50, "{drops} kernel drops");
    assert_eq!(terminate(&mut child), 0);
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(
        report.contains(&format!(", {drops} kernel drops,")),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "all sources: {} records, {drops} lost,",
            101 - drops
        )),
        "{report}"
    );
}

/// What a listener in its own user, mount and pid namespaces, with `/proc` mounted there by
/// `mount` (a shell command), says at start (up to the metrics line), shows on its metrics
/// page, writes for two records from each of 3 senders, and says at the stop.
fn listen_with_proc(mount: &str) -> (String, String, String, String) {
    let Some(unshare) = common::tool("unshare") else {
        return Default::default();
    };
    let script = format!("{mount} && exec \"$0\" \"$@\"");
    let (mut child, bind, banner, mut stderr) = common::spawn_bound_in(
        &[
            unshare.to_str().unwrap(),
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--fork",
            "sh",
            "-c",
            &script,
        ],
        &["listen"],
        &[
            "--time",
            "kernel",
            "--threads",
            "2",
            "--metrics",
            "127.0.0.1:0",
        ],
        std::process::Stdio::piped,
    );
    assert!(
        banner.starts_with("ncrx: receiving netconsole on"),
        "{banner}"
    );
    let mut said = String::new();
    while !said.contains("metrics on") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{said}");
        said.push_str(&line);
    }
    let metrics = said
        .lines()
        .find_map(|l| l.strip_prefix("ncrx: metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap()
        .to_owned();
    // Once both threads published (the drops are left out until then).
    std::thread::sleep(Duration::from_millis(300));
    let (_, page) = common::http_get(&metrics, "/metrics", "text/plain");
    let target: SocketAddr = bind.parse().unwrap();
    let senders = senders_from(std::net::Ipv4Addr::new(127, 6, 3, 1), 3);
    send_round(&senders, 0, target);
    send_round(&senders, 1, target);
    std::thread::sleep(Duration::from_millis(400));
    let mut stdout = child.stdout.take().unwrap();
    // unshare --fork ignores SIGTERM itself and does not pass it on: the listener, its
    // child, is stopped, and unshare exits with its status.
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let listener = std::fs::read_to_string(&children).unwrap();
    let listener = listener.split_whitespace().next().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", listener])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    (said, page, out, report)
}

/// Where `/proc/net` is hidden (a proc mounted with `subset=pid`, as systemd's
/// `ProcSubset=pid` mounts it), the kernel's drop counter is still read, from
/// `/proc/self/net`: nothing is said at start, the metrics and the summary count 0.
#[test]
fn where_proc_net_is_hidden_the_drops_are_still_counted() {
    let (said, page, out, report) = listen_with_proc("mount -t proc -o subset=pid proc /proc");
    if said.is_empty() {
        return; // no unshare here (said by common::tool)
    }
    assert!(
        !said.contains("cannot read the kernel's drop counter"),
        "{said}"
    );
    assert!(page.contains("\nncrx_kernel_drops_total 0\n"), "{page}");
    assert_eq!(
        out.lines().filter(|l| l.contains("record 1")).count(),
        3,
        "{out}"
    );
    assert!(
        report.contains("0 oversized, 0 kernel drops, 0 port unreachable"),
        "{report}"
    );
    assert!(
        report.contains("all sources: 6 records, 0 lost"),
        "{report}"
    );
}

/// Where the kernel's drop counter cannot be read (no `/proc` at all: an empty file system
/// in its place), the listener says so at start, the stop summary says the drops are
/// unknown instead of "0 kernel drops", and the metrics leave the counter out. Records are
/// received as ever.
#[test]
fn a_drop_counter_that_cannot_be_read_is_said_not_shown_as_zero() {
    let (said, page, out, report) = listen_with_proc("mount -t tmpfs none /proc");
    if said.is_empty() {
        return; // no unshare here (said by common::tool)
    }
    assert!(
        said.contains("ncrx: cannot read the kernel's drop counter (")
            && said.contains("/proc must be mounted"),
        "{said}"
    );
    assert!(page.contains("ncrx_records_total"), "{page}");
    assert!(!page.contains("kernel_drops"), "{page}");
    assert_eq!(
        out.lines().filter(|l| l.contains("record 1")).count(),
        3,
        "{out}"
    );
    assert!(
        report.contains("0 oversized, kernel drops unknown, 0 port unreachable"),
        "{report}"
    );
    assert!(
        report.contains("all sources: 6 records, 0 lost"),
        "{report}"
    );
}

/// Sends 12,000 records of 100 bytes from one sender at about 12,000 a second, in bursts of
/// 60: far within a socket buffer of 256 KiB while the receiving thread reads, far beyond it
/// if that thread stopped for a second. Returns how many.
fn send_paced(target: SocketAddr) -> u64 {
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = "z".repeat(100);
    let records = 12_000u64;
    for seq in 0..records {
        let record = format!("6,{seq},{seq},-;{text}\n");
        kernel.send_to(record.as_bytes(), target).unwrap();
        if seq % 60 == 59 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    records
}

/// Stops the listener, and checks that the kernel dropped none of the `records` sent and
/// that `reader` (which counts the output's lines) saw them all.
fn all_out_with_no_kernel_drop(
    mut child: Child,
    mut stderr: BufReader<ChildStderr>,
    reader: std::thread::JoinHandle<usize>,
    records: u64,
) {
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(terminate(&mut child), 0);
    let lines = reader.join().unwrap();
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert!(report.contains(" 0 kernel drops"), "{report}");
    assert!(
        report.contains(&format!("all sources: {records} records, 0 lost")),
        "{report}"
    );
    assert_eq!(lines as u64, records, "{report}");
}

/// A reader of standard output that stops for a while (a stalled disk, a busy pipeline)
/// holds up the listener's writer thread, not its receiving thread: the records sent
/// meanwhile wait in the writer's queue instead of overflowing the socket buffer, and all of
/// them come out once the reader goes on. (When the receiving thread wrote itself, it
/// stopped reading its socket as soon as the 64 KiB pipe was full.)
#[test]
fn a_reader_that_pauses_makes_the_kernel_drop_nothing() {
    // A socket buffer of 256 KiB (whatever net.core.rmem_max allows): about 600 of these
    // datagrams.
    let (mut child, target, stderr) = listener(&[
        "--format",
        "json",
        "--threads",
        "1",
        "--recv-buffer",
        "262144",
    ]);
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        // Reads nothing for 1.5 s, then everything.
        std::thread::sleep(Duration::from_millis(1500));
        BufReader::new(stdout).lines().count()
    });
    let records = send_paced(target);
    all_out_with_no_kernel_drop(child, stderr, reader, records);
}

/// A `--dir` file that takes nothing for a while (a stalled disk, a hung network file
/// system; here a named pipe that nobody opens yet) holds up the listener's file writer
/// thread, not its receiving thread: the records sent meanwhile wait in the writer's queue
/// (`ncrx_unwritten_bytes` says how much) instead of overflowing the socket buffer, and every
/// line comes out once the file takes them. (When the receiving thread wrote the files
/// itself, it stopped reading its socket at the first open.)
#[test]
fn a_stalled_dir_file_makes_the_kernel_drop_nothing() {
    let dir = scratch("listen-dir-stalled");
    let fifo = dir.join("127.0.0.1.jsonl");
    mkfifo(&fifo);
    let (child, target, mut stderr) = listener(&[
        "--dir",
        dir.to_str().unwrap(),
        "--format",
        "json",
        "--threads",
        "1",
        "--recv-buffer",
        "262144",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let addr = common::metrics_addr(&mut stderr);
    let (open, opened) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let _ = opened.recv_timeout(Duration::from_secs(30));
        let file = std::fs::File::open(&fifo).unwrap();
        BufReader::new(file).lines().count()
    });
    let records = send_paced(target);
    // Nothing is written yet: all the lines wait (about 3 MB of them).
    metric_until(&addr, "ncrx_unwritten_bytes", |bytes| bytes > 2_000_000);
    open.send(()).unwrap();
    metric_until(&addr, "ncrx_unwritten_bytes", |bytes| bytes == 0);
    all_out_with_no_kernel_drop(child, stderr, reader, records);
}

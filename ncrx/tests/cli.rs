//! The command line itself: every subcommand's `--help`, and every error path with its exit
//! code and a message that says what is wrong. No panic anywhere.

mod common;

use std::fs::File;
use std::net::UdpSocket;
use std::time::Duration;

use common::{parts, run, scratch, write_pcap};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    let (code, stdout, _) = parts(&run(&["--help"], b""));
    assert_eq!(code, 0);
    for word in [
        "listen",
        "decode",
        "send",
        "sim",
        "oops",
        "Exit codes:",
        "  6  socket error",
        "Examples",
        "  ncrx listen ",
    ] {
        assert!(stdout.contains(word), "{word} missing from:\n{stdout}");
    }
    let subcommands: [&[&str]; 8] = [
        &["listen"],
        &["decode"],
        &["send"],
        &["sim"],
        &["oops", "listen"],
        &["oops", "decode"],
        &["oops", "send"],
        &["oops"],
    ];
    for subcommand in subcommands {
        let mut args = subcommand.to_vec();
        args.push("--help");
        let (code, stdout, stderr) = parts(&run(&args, b""));
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stdout.starts_with(char::is_uppercase), "{args:?}: {stdout}");
        assert!(
            stdout.contains("Example"),
            "{args:?} has no example:\n{stdout}"
        );
        assert!(
            stdout.contains(&format!("ncrx {}", subcommand.join(" "))),
            "{args:?}"
        );
    }
}

#[test]
fn sim_reports_and_is_deterministic() {
    let args = [
        "sim",
        "--records",
        "2000",
        "--loss",
        "0.2",
        "--reverse-loss",
        "0.1",
        "--dup",
        "0.01",
        "--seed",
        "7",
        "--json",
    ];
    let (code, first, stderr) = parts(&run(&args, b""));
    assert_eq!(code, 0, "{stderr}");
    let (_, second, _) = parts(&run(&args, b""));
    assert_eq!(first, second, "same seed, same report");
    let report: serde_json::Value = serde_json::from_str(first.trim()).unwrap();
    assert_eq!(report["type"], "sim");
    assert_eq!(report["sent"], 2000);
    let accounted = ["delivered", "late", "lost", "incomplete", "unseen"]
        .iter()
        .map(|k| report[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(accounted, 2000, "{report}");
    assert!(report["delivered"].as_u64().unwrap() > 1900, "{report}");
    assert!(
        report["retransmitted"].as_u64().unwrap() > 0,
        "retransmissions: {report}"
    );
    assert_eq!(
        report["to_receiver"].as_u64(),
        Some(2000 + report["retransmitted"].as_u64().unwrap())
    );
    assert_eq!(report["violations"], serde_json::json!([]));
    let (code, text, _) = parts(&run(&["sim", "--records", "100"], b""));
    assert_eq!(code, 0);
    assert!(
        text.contains("sent 100, delivered 100 (100.000%)"),
        "{text}"
    );
    assert!(text.ends_with("invariants: all hold\n"), "{text}");
    let (code, _, stderr) = parts(&run(&["sim", "--loss", "1.5"], b""));
    assert_eq!(code, 2);
    assert!(stderr.contains("1.5 is not a probability"), "{stderr}");
    assert_no_panic(&stderr);
}

#[test]
fn sim_reports_delivery_delays_in_virtual_time() {
    // The link delay the simulator uses; every record takes exactly that without loss.
    let link = ncrx_core::sim::SimConfig::default().delay.as_micros();
    let report = |loss: &str| -> serde_json::Value {
        let (code, stdout, stderr) = parts(&run(
            &["sim", "--records", "3000", "--loss", loss, "--json"],
            b"",
        ));
        assert_eq!(code, 0, "{stderr}");
        // stderr is not a terminal here (and --json): no progress bar, nothing at all.
        assert_eq!(stderr, "");
        serde_json::from_str(stdout.trim()).unwrap()
    };
    let delay = |r: &serde_json::Value, k: &str| u128::from(r[k].as_u64().unwrap());
    let clean = report("0");
    assert_eq!(delay(&clean, "delay_p50_us"), link, "{clean}");
    assert_eq!(delay(&clean, "delay_p99_us"), link, "{clean}");
    let lossy = report("0.2");
    assert!(delay(&lossy, "delay_p50_us") <= delay(&lossy, "delay_p99_us"));
    assert!(
        delay(&lossy, "delay_p99_us") > delay(&clean, "delay_p99_us"),
        "{lossy}"
    );
    // The text report has the same figures.
    let (code, text, stderr) = parts(&run(&["sim", "--records", "3000"], b""));
    assert_eq!(code, 0);
    assert_eq!(stderr, "", "no progress bar when stderr is not a terminal");
    let ms = format!("{}.{:03} ms", link / 1000, link % 1000);
    assert!(
        text.contains(&format!("p50 {ms}, p99 {ms}, max {ms}")),
        "{text}"
    );
}

/// Runs `ncrx args...` on a terminal (util-linux `script` gives it a pseudo-terminal):
/// everything it wrote there, or `None` where `script` is missing.
fn on_a_terminal(args: &str) -> Option<String> {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_ncrx"));
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    assert!(output.status.success(), "{output:?}");
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn sim_progress_bar_only_on_a_terminal() {
    let Some(shown) = on_a_terminal("sim --records 30000 --loss 0.1") else {
        eprintln!("note: no `script` here to give ncrx a terminal; test skipped");
        return;
    };
    // indicatif's bar, drawn on stderr while the records are pushed, then cleared.
    assert!(shown.contains("/30,000 records ("), "{shown}");
    assert!(shown.contains("invariants: all hold"), "{shown}");
    for quiet in ["sim --records 3000 --quiet", "sim --records 3000 --json"] {
        let quiet = on_a_terminal(quiet).unwrap();
        assert!(!quiet.contains("records ("), "{quiet}");
    }
}

/// Values `listen` could never use are refused before anything is bound.
#[test]
fn listen_refuses_impossible_values() {
    for (args, said) in [
        (
            &["--recv-buffer", "1073741824"][..],
            "a receive buffer is 1 to 1073741823 bytes",
        ),
        (
            &["--bind", "[fe80::1%no-such-if0]:6666"],
            "no-such-if0 is not a network interface here",
        ),
        (
            &["--format-limit", "0"],
            "a format limit is 256 to 65536 bytes",
        ),
    ] {
        let mut all = vec!["listen"];
        all.extend_from_slice(args);
        let (code, _, stderr) = parts(&run(&all, b""));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
}

#[test]
fn decode_error_paths() {
    let (code, _, stderr) = parts(&run(&["decode", "/nonexistent/x.pcap"], b""));
    assert_eq!(code, 3, "{stderr}");
    let dir = scratch("decode-errors");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello\n").unwrap();
    let (code, _, stderr) = parts(&run(&["decode", text.to_str().unwrap()], b""));
    assert_eq!(code, 4, "{stderr}");
    // An empty but valid capture: nothing to say, success.
    let empty = dir.join("empty.pcap");
    write_pcap(&empty, &[]);
    let (code, stdout, stderr) = parts(&run(&["decode", empty.to_str().unwrap()], b""));
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    // A format limit no kernel has (0 would mangle every record) is a usage error.
    for limit in ["0", "255", "65537"] {
        let args = ["decode", "--format-limit", limit, empty.to_str().unwrap()];
        let (code, _, stderr) = parts(&run(&args, b""));
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains("a format limit is 256 to 65536 bytes"),
            "{stderr}"
        );
    }
    let args = ["decode", "--format-limit", "256", empty.to_str().unwrap()];
    assert_eq!(parts(&run(&args, b"")).0, 0);
}

#[test]
fn missing_file_exits_3() {
    let (code, _, stderr) = parts(&run(&["oops", "decode", "/nonexistent/x.pcap"], b""));
    assert_eq!(code, 3);
    assert!(
        stderr.contains("cannot open /nonexistent/x.pcap: No such file"),
        "{stderr}"
    );
    let (code, _, stderr) = parts(&run(
        &[
            "send",
            "--target",
            "+@/,@127.0.0.1/",
            "/nonexistent/records",
        ],
        b"",
    ));
    assert_eq!(code, 3);
    assert!(
        stderr.contains("cannot open /nonexistent/records"),
        "{stderr}"
    );
}

#[test]
fn not_a_capture_exits_4() {
    let dir = scratch("not-pcap");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "6,1,2,-;this is a log, not a capture\n").unwrap();
    let (code, _, stderr) = parts(&run(&["oops", "decode", text.to_str().unwrap()], b""));
    assert_eq!(code, 4);
    assert!(
        stderr.contains("notes.txt: not a pcap or pcapng capture (it starts with 36 2c 31 2c, which is neither the pcap nor the pcapng magic number)"),
        "{stderr}"
    );
    let empty = dir.join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let (code, _, stderr) = parts(&run(&["oops", "decode", empty.to_str().unwrap()], b""));
    assert_eq!(code, 4);
    assert!(stderr.contains("(it is empty)"), "{stderr}");
    // A pcap magic with the rest of the header missing: said in words, not "bad header:
    // Error reading bytes".
    let short = dir.join("short.pcap");
    std::fs::write(&short, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0]).unwrap();
    let (code, _, stderr) = parts(&run(&["oops", "decode", short.to_str().unwrap()], b""));
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("(it ends inside the 24-byte pcap file header, after 6 of 24 bytes)"),
        "{stderr}"
    );
    assert_no_panic(&stderr);
    // The 20 first bytes of a real capture.
    let capture = std::fs::read("tests/data/linux-7.3-ext-seq700-715/frames.pcap").unwrap();
    std::fs::write(&short, &capture[..20]).unwrap();
    let (code, _, stderr) = parts(&run(&["decode", short.to_str().unwrap()], b""));
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("short.pcap: not a pcap or pcapng capture (it ends inside the 24-byte pcap file header, after 20 of 24 bytes)"),
        "{stderr}"
    );
    // The same from standard input.
    let (code, _, stderr) = parts(&run(&["decode", "-"], &capture[..20]));
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("standard input: not a pcap or pcapng capture (it ends inside"),
        "{stderr}"
    );
}

#[test]
fn unsupported_link_type_exits_4_and_names_it() {
    let dir = scratch("linktype");
    let pcap = dir.join("sll.pcap");
    let header = PcapHeader {
        datalink: DataLink::IEEE802_11,
        ..PcapHeader::default()
    };
    drop(PcapWriter::with_header(File::create(&pcap).unwrap(), header).unwrap());
    let (code, _, stderr) = parts(&run(&["oops", "decode", pcap.to_str().unwrap()], b""));
    assert_eq!(code, 4);
    assert!(
        stderr.contains("unsupported link type 105; captures of Ethernet (1), Linux cooked LINUX_SLL (113) and LINUX_SLL2 (276), and raw IP"),
        "{stderr}"
    );

    let pcapng = dir.join("raw.pcapng");
    let mut writer = PcapNgWriter::new(File::create(&pcapng).unwrap()).unwrap();
    writer
        .write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::NULL,
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
    writer
        .write_pcapng_block(
            pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::ZERO,
                original_len: 4,
                data: (&[0x45u8, 0, 0, 4][..]).into(),
                options: vec![],
            },
        )
        .unwrap();
    drop(writer);
    let (code, _, stderr) = parts(&run(&["oops", "decode", pcapng.to_str().unwrap()], b""));
    assert_eq!(code, 4);
    assert!(
        stderr.contains("unsupported link type NULL (0); captures"),
        "{stderr}"
    );
}

#[test]
fn bad_target_exits_2_saying_what_is_wrong() {
    let cases = [
        ("6665@10.0.0.1", "missing '/' in target 1"),
        ("@/,@10.0.0.999/", "bad IP address in target 1"),
        (
            "r@/,@10.0.0.1/",
            "release prepend requires extended mode (+) in target 1",
        ),
        ("@/,70000@10.0.0.1/", "bad port in target 1"),
        (
            "@/,@10.0.0.1/;@/,@10.0.0.2/zz",
            "bad MAC address in target 2",
        ),
        (
            "@10.0.0.2/,@2001:db8::2/",
            "local and remote IP versions differ",
        ),
    ];
    for (spec, message) in cases {
        let (code, _, stderr) = parts(&run(&["send", "--target", spec], b""));
        assert_eq!(code, 2, "{spec}");
        assert!(stderr.contains(message), "{spec}: {stderr}");
        assert!(stderr.contains("invalid value"), "{stderr}");
        assert_no_panic(&stderr);
    }
    // --pcap needs a source IP to write frames.
    let dir = scratch("pcap-needs-ip");
    let out = dir.join("out.pcap");
    let (code, _, stderr) = common::send_pcap("+@/,@10.0.0.1/", &out, &[], b"");
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--pcap needs the source IP of target 1"),
        "{stderr}"
    );
    // --ip-id only means something with --pcap.
    let (code, _, _) = parts(&run(
        &["send", "--target", "+@/,@10.0.0.1/", "--ip-id", "5"],
        b"",
    ));
    assert_eq!(code, 2);
}

#[test]
fn reliable_needs_extended_udp_targets() {
    let (code, _, stderr) = parts(&run(
        &[
            "send",
            "--reliable",
            "--input",
            "text",
            "--target",
            "@/,@127.0.0.1/",
        ],
        b"",
    ));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--reliable needs extended targets ('+'); target 1 is plain"),
        "{stderr}"
    );
    let (code, _, stderr) = parts(&run(
        &[
            "send",
            "--reliable",
            "--target",
            "+@10.0.0.1/,@10.0.0.2/",
            "--pcap",
            "x.pcap",
        ],
        b"",
    ));
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn port_in_use_exits_6() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (code, _, stderr) = parts(&run(&["oops", "listen", "--bind", &addr.to_string()], b""));
    assert_eq!(code, 6);
    assert!(
        stderr.contains(&format!("cannot bind {addr}: Address already in use")),
        "{stderr}"
    );
    assert!(stderr.contains("another program is bound"), "{stderr}");
    let (code, _, stderr) = parts(&run(&["listen", "--bind", &addr.to_string()], b""));
    assert_eq!(code, 6);
    assert!(stderr.contains("Address already in use"), "{stderr}");
    let spec = format!("+{}@127.0.0.1/,6666@127.0.0.1/", addr.port());
    let (code, _, stderr) = parts(&run(
        &["send", "--target", &spec, "--input", "text"],
        b"x\n",
    ));
    assert_eq!(code, 6);
    assert!(stderr.contains("Address already in use"), "{stderr}");
    drop(taken);
}

#[test]
fn bad_kmsg_records_are_skipped_with_exit_1() {
    let dir = scratch("bad-kmsg");
    let out = dir.join("out.pcap");
    let (code, _, stderr) = common::send_pcap(
        "+@10.0.0.1/,@10.0.0.2/",
        &out,
        &[],
        b"6,1,2,-;good\nthis is not a record\n6,2,3,-;good too\n",
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("input record 2: not a /dev/kmsg record"),
        "{stderr}"
    );
    assert_eq!(common::read_pcap(&out).len(), 2);
}

#[test]
fn sim_closed_or_full_stdout_is_a_file_error_not_a_panic() {
    // `ncrx sim | head -0`: the reader is gone before the report is written.
    let mut child = common::ncrx()
        .args(["sim", "--records", "2000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let (code, _, stderr) = parts(&child.wait_with_output().unwrap());
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("cannot write to standard output: Broken pipe"),
        "{stderr}"
    );
    assert_no_panic(&stderr);
    // `ncrx sim > /dev/full`.
    if let Ok(full) = File::options().write(true).open("/dev/full") {
        let output = common::ncrx()
            .args(["sim", "--records", "100"])
            .stdout(full)
            .output()
            .unwrap();
        let (code, _, stderr) = parts(&output);
        assert_eq!(code, 3, "{stderr}");
        assert!(stderr.contains("No space left on device"), "{stderr}");
        assert_no_panic(&stderr);
    }
}

#[test]
fn sim_fragment_every_small_values_fragment() {
    // Without loss every record is one datagram, plus one more per extra fragment of a long
    // record (1200 to 3600 bytes: 2 to 4 fragments).
    let datagrams = |every: &str| -> u64 {
        let (code, stdout, stderr) = parts(&run(
            &[
                "sim",
                "--records",
                "60",
                "--fragment-every",
                every,
                "--json",
            ],
            b"",
        ));
        assert_eq!(code, 0, "{stderr}");
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(report["delivered"], 60, "{report}");
        assert_eq!(report["violations"], serde_json::json!([]));
        report["to_receiver"].as_u64().unwrap()
    };
    assert_eq!(datagrams("0"), 60);
    for (every, long) in [("1", 60), ("2", 30), ("3", 20), ("60", 1)] {
        let sent = datagrams(every);
        assert!(
            (60 + long..=60 + 3 * long).contains(&sent),
            "--fragment-every {every}: {sent} datagrams for {long} long records"
        );
    }
    // 61 > 60 records: none is the 61st.
    assert_eq!(datagrams("61"), 60);
}

#[test]
fn sim_says_how_far_it_is_when_stderr_is_not_a_terminal() {
    // A progress line every millisecond: a run of 20,000 records writes some, each with the
    // records pushed (the first may come before any, without an estimate).
    let (code, stdout, stderr) = parts(&run(
        &["sim", "--records", "20000", "--progress-interval", "0.001"],
        b"",
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.ends_with("invariants: all hold\n"), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "no progress line");
    for line in &lines {
        assert!(line.starts_with("ncrx: sim: "), "{line}");
        assert!(line.contains(" of 20000 records pushed ("), "{line}");
        assert!(
            line.ends_with(" s left")
                || line.ends_with("no estimate yet")
                || line.contains("(100.0%)"),
            "{line}"
        );
    }
    // --quiet: none.
    let (_, _, stderr) = parts(&run(
        &[
            "sim",
            "--records",
            "20000",
            "--progress-interval",
            "0.001",
            "--quiet",
        ],
        b"",
    ));
    assert_eq!(stderr, "");
    let (code, _, stderr) = parts(&run(&["sim", "--progress-interval", "0"], b""));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("not a number of seconds above 0"),
        "{stderr}"
    );
}

#[test]
fn sim_zero_sources_is_refused() {
    let (code, stdout, stderr) = parts(&run(&["sim", "--sources", "0"], b""));
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains("--sources must be at least 1"), "{stderr}");
}

/// A `console` block of a README: its commands (continuation lines joined) and the output
/// each shows.
#[derive(Debug)]
struct Example {
    /// The README and line of the block.
    place: String,
    /// (command, expected output lines).
    steps: Vec<(String, Vec<String>)>,
}

/// The ```console blocks of `text`.
fn console_blocks(readme: &str, text: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        if line != "```console" {
            continue;
        }
        let mut example = Example {
            place: format!("{readme}:{}", number + 1),
            steps: Vec::new(),
        };
        let mut continued = false;
        for (_, line) in lines.by_ref() {
            if line == "```" {
                break;
            }
            if continued {
                let (command, _) = example.steps.last_mut().unwrap();
                command.push('\n');
                command.push_str(line);
                continued = line.ends_with('\\');
            } else if let Some(command) = line.strip_prefix("$ ") {
                example.steps.push((command.to_owned(), Vec::new()));
                continued = line.ends_with('\\');
            } else if let Some((_, output)) = example.steps.last_mut() {
                output.push(line.to_owned());
            }
        }
        // A blank line between commands separates them; it is not output.
        for (_, output) in &mut example.steps {
            while output.last().is_some_and(String::is_empty) {
                output.pop();
            }
        }
        examples.push(example);
    }
    examples
}

/// The first lines of `text`, each cut at 200 characters, for a failure message.
fn shortened(text: &str) -> String {
    text.lines()
        .take(40)
        .map(|line| line.chars().take(200).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `actual` is what the README's `expected` line shows: equal, or, where the README
/// shortened it with `…`, the pieces around each `…` in order.
fn line_matches(expected: &str, actual: &str) -> bool {
    let pieces: Vec<&str> = expected.split('…').collect();
    if pieces.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the output lines match the README's; a line that is only `…` stands for any
/// number of lines.
fn output_matches(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "…" => {
            (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| line_matches(first, line) && output_matches(rest, more)),
    }
}

#[test]
fn readme_output_matching() {
    assert!(line_matches("abc", "abc"));
    assert!(!line_matches("abc", "abcd"));
    assert!(line_matches("ab…", "abcd"));
    assert!(!line_matches("ab…", "xbcd"));
    assert!(line_matches("a…c…e", "abcde"));
    assert!(!line_matches("a…c…e", "abde"));
    // "aa…aa" needs four bytes, not two overlapping.
    assert!(!line_matches("aa…aa", "aaa"));
    let expected: Vec<String> = ["one", "…", "four"].map(str::to_owned).to_vec();
    assert!(output_matches(&expected, &["one", "two", "three", "four"]));
    assert!(output_matches(&expected, &["one", "four"]));
    assert!(!output_matches(&expected, &["one", "two"]));
    assert!(!output_matches(&expected, &["one", "four", "five"]));
    let blocks = console_blocks(
        "x",
        "text\n```console\n$ a \\\n  b\nout\n\n$ c\n```\n```console\n$ d\n```\n",
    );
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        blocks[0].steps,
        [
            ("a \\\n  b".to_owned(), vec!["out".to_owned()]),
            ("c".to_owned(), vec![])
        ]
    );
}

#[test]
fn readme_examples_reproduce_what_the_readmes_show() {
    // Every console block of ncrx/README.md and of the workspace README is run with bash,
    // stdout and stderr together as on a terminal, in a scratch directory where `tests`
    // (and `ncrx`) lead to this crate's, with the built ncrx first in PATH; the output must
    // be what the README shows. Skipped: blocks that need what a test cannot run here
    // (`ncrx listen`, which needs a sender and prints receive times; a Python receiver; the timed figures).
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ncrx"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut checked = 0;
    for (readme, file) in [
        ("ncrx/README.md", manifest.join("README.md")),
        ("README.md", manifest.join("../README.md")),
    ] {
        let text = std::fs::read_to_string(&file).unwrap();
        for example in console_blocks(readme, &text) {
            let all: Vec<&str> = example.steps.iter().map(|(c, _)| c.as_str()).collect();
            let all = all.join("\n");
            if all.contains("ncrx listen")
                || all.contains("/usr/bin/time")
                || example
                    .steps
                    .iter()
                    .any(|(_, out)| out.iter().any(|l| l.starts_with("# ")))
            {
                continue;
            }
            let dir = scratch("readme");
            std::os::unix::fs::symlink(manifest.join("tests"), dir.join("tests")).unwrap();
            std::os::unix::fs::symlink(manifest, dir.join("ncrx")).unwrap();
            for (command, expected) in &example.steps {
                let command = command.replace("cargo run -q --release -p ncrx --", "ncrx");
                // stdout and stderr as one stream, as a terminal shows them.
                let merged = std::process::Command::new("bash")
                    .args(["-c", &format!("{{ {command}\n}} 2>&1")])
                    .current_dir(&dir)
                    .env("PATH", &path)
                    .output()
                    .unwrap();
                assert!(merged.status.code().is_some(), "{command}: killed");
                let text = String::from_utf8_lossy(&merged.stdout);
                // sim's progress lines, written when a run takes longer than 5 s, depend on
                // the machine's speed and load: not part of what the README shows.
                let actual: Vec<&str> = text
                    .lines()
                    .filter(|line| !line.starts_with("ncrx: sim: "))
                    .collect();
                assert!(
                    output_matches(expected, &actual),
                    "{}: `{command}` shows\n{}\nbut prints\n{}",
                    example.place,
                    shortened(&expected.join("\n")),
                    shortened(&text)
                );
            }
            checked += 1;
        }
    }
    // The session, plain, userdata, oops, sim and error blocks, and the workspace README's.
    assert!(checked >= 7, "only {checked} README blocks checked");
}

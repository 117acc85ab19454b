//! `ncrx oops decode` and `ncrx oops listen` on dumps made by the netoops encoder: files,
//! text and JSON lines, partial dumps, bad frames, truncated captures, pcapng timestamps,
//! and a live listener on 127.0.0.1 stopped by SIGTERM.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::{parts, run, scratch, write_pcap};
use netoops_proto::{
    DumpEncoder, DumpMeta, DumpType, PtRegs, V3Fields, X86ArchData, netoops_frame_config,
};
use netpoll_frame::{FrameBuilder, MacAddr};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use serde_json::Value;

/// A kernel log of `len` text bytes (never NUL), different per `seed`.
fn log(len: usize, seed: u8) -> Vec<u8> {
    let line = format!("<4>[ {seed:3}.000000] RIP: 0010:crash_the_kernel+0x{seed:02x}/0x40\n");
    line.bytes().cycle().take(len).collect()
}

/// Every frame the kernel sends for one dump (three passes), from `source` to `destination`.
fn dump_frames(meta: &DumpMeta, log: &[u8], source: &str, destination: &str) -> Vec<Vec<u8>> {
    let source: IpAddr = source.parse().unwrap();
    let destination: IpAddr = destination.parse().unwrap();
    let mut config = netoops_frame_config(source, destination);
    config.source_mac = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    let mut builder = FrameBuilder::new(&config).unwrap();
    let mut encoder = DumpEncoder::new(meta, b"", log).unwrap();
    let mut frames = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(len) = encoder.write_next_frame(&mut builder, &mut buf).unwrap() {
        frames.push(buf[..len].to_vec());
    }
    frames
}

fn timed(frames: Vec<Vec<u8>>, start_ms: u64) -> Vec<(Duration, Vec<u8>)> {
    frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| (Duration::from_millis(start_ms + i as u64), f))
        .collect()
}

fn v3_meta(dump_id: u16) -> DumpMeta {
    let mut user_blob = [0u8; 128];
    user_blob[..7].copy_from_slice(b"rack-42");
    DumpMeta::v3(
        dump_id,
        DumpType::PrintkBufferSoft,
        b"6.1.0-56-amd64",
        V3Fields {
            boot_id: 99,
            user_blob,
            arch_data: X86ArchData {
                vendor: 0,
                family: 6,
                model: 85,
                stepping: 7,
                regs: PtRegs::ZERO_X86_64,
            },
        },
    )
}

#[test]
fn complete_dump_to_file_and_text_line() {
    let dir = scratch("oops-complete");
    let pcap = dir.join("dump.pcap");
    let log = log(3000, 1);
    let meta = DumpMeta::v2(7, DumpType::PrintkBuffer, b"2.6.37");
    let frames = dump_frames(&meta, &log, "192.0.2.1", "192.0.2.2");
    assert_eq!(frames.len(), 9, "3 packets, 3 passes");
    write_pcap(&pcap, &timed(frames, 1_000));
    let out_dir = dir.join("dumps");
    let output = run(
        &[
            "oops",
            "decode",
            pcap.to_str().unwrap(),
            "--dir",
            out_dir.to_str().unwrap(),
        ],
        b"",
    );
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, 0, "{stderr}");
    let file = out_dir.join("192.0.2.1:2004-7.log");
    assert_eq!(
        stdout,
        format!(
            "oops 192.0.2.1:2004 dump_id=7 v2 type=1 kernel=2.6.37 complete packets=3 missing=- bytes=3000 file={}\n",
            file.display()
        )
    );
    let contents = std::fs::read(&file).unwrap();
    let expected_head = "source: 192.0.2.1:2004\ndump_id: 7\nversion: 2\ndump_type: 1\narch: 2\nkernel_version: 2.6.37\nstatus: complete\npacket_count: 3\nmissing: -\nbytes: 3000\n\n";
    assert_eq!(
        String::from_utf8_lossy(&contents[..expected_head.len()]),
        expected_head
    );
    assert_eq!(&contents[expected_head.len()..], &log[..]);
    assert!(
        stderr.contains("9 frames: 9 UDP datagrams to port 2004"),
        "{stderr}"
    );
    assert!(stderr.contains("1 dumps complete, 0 partial"), "{stderr}");

    // The same capture decoded again into the same directory, twice: the first file stays
    // as it was, the others get the next free numbered names.
    let first = std::fs::read(&file).unwrap();
    std::fs::write(out_dir.join("192.0.2.1:2004-7.3.log"), b"someone else's").unwrap();
    for again in ["192.0.2.1:2004-7.2.log", "192.0.2.1:2004-7.4.log"] {
        let (code, stdout, stderr) = parts(&run(
            &[
                "oops",
                "decode",
                pcap.to_str().unwrap(),
                "--dir",
                out_dir.to_str().unwrap(),
            ],
            b"",
        ));
        assert_eq!(code, 0, "{stderr}");
        let again = out_dir.join(again);
        assert!(
            stdout.ends_with(&format!("file={}\n", again.display())),
            "{stdout}"
        );
        assert_eq!(std::fs::read(&again).unwrap(), first);
    }
    assert_eq!(std::fs::read(&file).unwrap(), first);
    assert_eq!(
        std::fs::read(out_dir.join("192.0.2.1:2004-7.3.log")).unwrap(),
        b"someone else's"
    );
}

#[test]
fn open_dump_at_end_of_capture_is_partial_in_json() {
    let dir = scratch("oops-partial");
    let pcap = dir.join("dump.pcap");
    let log = log(5000, 2);
    let meta = v3_meta(300);
    let mut frames = dump_frames(&meta, &log, "2001:db8::1", "2001:db8::2");
    // The machine died after the first pass (packet 0, the tail, goes first), and packet 1
    // of it was lost.
    frames.truncate(5);
    frames.remove(1);
    write_pcap(&pcap, &timed(frames, 0));
    let out_dir = dir.join("dumps");
    let output = run(
        &[
            "oops",
            "decode",
            pcap.to_str().unwrap(),
            "--format",
            "json",
            "--dir",
            out_dir.to_str().unwrap(),
        ],
        b"",
    );
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].starts_with(r#"{"type":"oops","#), "{stdout}");
    let json: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(json["source"], "[2001:db8::1]:2004");
    assert_eq!(json["dump_id"], 300);
    assert_eq!(json["version"], 3);
    assert_eq!(json["dump_type"], 3);
    assert_eq!(json["kernel_version"], "6.1.0-56-amd64");
    assert_eq!(json["complete"], false);
    assert_eq!(json["status"], "end_of_input");
    assert_eq!(json["packets"], 5);
    assert_eq!(json["missing"], serde_json::json!([1]));
    // Packet 1 holds log bytes 3072..4096 (packet 0 is the tail): 4 KiB arrived.
    assert_eq!(json["bytes"], 5000 - 1024);
    let file = out_dir.join("[2001:db8::1]:2004-300.log");
    assert_eq!(json["file"], file.display().to_string());
    let contents = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
    assert!(
        contents.contains("boot_id: 99\nuser_blob: rack-42\n"),
        "{contents}"
    );
    assert!(contents.contains("cpu: vendor 0 family 6 model 85 stepping 7\n"));
    assert!(contents.contains("status: end_of_input\n"));
    assert!(contents.contains("missing: 1\n"));
    let body = contents.split_once("\n\n").unwrap().1.as_bytes();
    assert_eq!(body, [&log[..3072], &log[4096..]].concat());
}

#[test]
fn bad_frames_are_counted_not_fatal() {
    let dir = scratch("oops-bad");
    let pcap = dir.join("dump.pcap");
    let log = log(2500, 3);
    let meta = DumpMeta::v2(1, DumpType::PrintkBuffer, b"5.10.0");
    let mut frames = dump_frames(&meta, &log, "10.0.0.9", "10.0.0.1");
    // Damage the IPv4 header of two frames of the second pass: the dump is still complete.
    frames[3][14 + 8] ^= 0x40;
    frames[4][14 + 8] ^= 0x40;
    // And an ARP frame, which is other traffic, not bad.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    frames.insert(0, arp);
    write_pcap(&pcap, &timed(frames, 0));
    let (code, stdout, stderr) = parts(&run(&["oops", "decode", pcap.to_str().unwrap()], b""));
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.starts_with("oops 10.0.0.9:2004 dump_id=1 v2 type=1 kernel=5.10.0 complete packets=3 missing=- bytes=2500"), "{stdout}");
    assert!(
        stderr.contains("frame 5: bad frame skipped: IPv4 header checksum"),
        "{stderr}"
    );
    assert!(stderr.contains("10 frames: 7 UDP datagrams to port 2004, 0 to other ports, 1 other traffic, 2 bad frames"), "{stderr}");
}

#[test]
fn truncated_capture_keeps_what_came_before() {
    let dir = scratch("oops-truncated");
    let pcap = dir.join("dump.pcap");
    let first = dump_frames(
        &DumpMeta::v2(5, DumpType::PrintkBuffer, b"4.19"),
        &log(1500, 4),
        "10.0.0.5",
        "10.0.0.1",
    );
    let second = dump_frames(
        &DumpMeta::v2(6, DumpType::PrintkBuffer, b"4.19"),
        &log(1500, 5),
        "10.0.0.6",
        "10.0.0.1",
    );
    let mut frames = first;
    frames.extend(second.into_iter().take(1));
    write_pcap(&pcap, &timed(frames, 0));
    let bytes = std::fs::read(&pcap).unwrap();
    std::fs::write(&pcap, &bytes[..bytes.len() - 100]).unwrap();
    let (code, stdout, stderr) = parts(&run(&["oops", "decode", pcap.to_str().unwrap()], b""));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stdout.starts_with("oops 10.0.0.5:2004 dump_id=5 v2 type=1 kernel=4.19 complete packets=2"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stderr.contains("capture truncated: the file ends inside the packet after frame 6"),
        "{stderr}"
    );
}

#[test]
fn pcapng_timestamps_drive_the_collector_timeout() {
    // Pass 1 loses packet 2; pass 2 comes 20 s later. With the capture's timestamps read
    // right (in the interface's if_tsresol unit, plus its if_tsoffset), the first dump
    // times out (10 s) before pass 2, which then makes a second, complete dump. Read in
    // another unit, pass 2 would come 20 ms (or 20,000 s) later and the dumps would differ.
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    let log = log(2100, 6);
    let meta = DumpMeta::v2(9, DumpType::PrintkBuffer, b"3.2.0");
    let frames = dump_frames(&meta, &log, "192.0.2.7", "192.0.2.2");
    // (options, units per second, offset in seconds)
    let units: [(Vec<InterfaceDescriptionOption<'static>>, u128, u64); 3] = [
        (vec![], 1_000_000, 0),
        (
            vec![
                InterfaceDescriptionOption::IfTsResol(9),
                InterfaceDescriptionOption::IfTsOffset(1_000),
            ],
            1_000_000_000,
            1_000,
        ),
        (
            vec![InterfaceDescriptionOption::IfTsResol(0x80 + 20)],
            1 << 20,
            0,
        ),
    ];
    for (options, per_second, offset) in units {
        let dir = scratch("oops-pcapng");
        let path = dir.join("dump.pcapng");
        let mut writer = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: pcap_file::DataLink::ETHERNET,
                snaplen: 0,
                options,
            })
            .unwrap();
        let start_us: u128 = 1_700_000_000_000_000 - u128::from(offset) * 1_000_000;
        for (index, frame) in frames.iter().enumerate().take(6) {
            if index == 2 {
                continue; // packet 2 of pass 1
            }
            let us = start_us
                + if index < 3 {
                    index as u128
                } else {
                    20_000_000 + index as u128
                };
            let count = us * per_second / 1_000_000;
            writer
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 0,
                    // pcap-file writes this count as is: in the interface's unit.
                    timestamp: Duration::from_nanos(u64::try_from(count).unwrap()),
                    original_len: frame.len() as u32,
                    data: frame.as_slice().into(),
                    options: vec![],
                })
                .unwrap();
        }
        drop(writer);
        let out_dir = dir.join("dumps");
        let (code, stdout, stderr) = parts(&run(
            &[
                "oops",
                "decode",
                path.to_str().unwrap(),
                "--dir",
                out_dir.to_str().unwrap(),
            ],
            b"",
        ));
        assert_eq!(code, 0, "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{per_second}: {stdout}");
        assert!(
            lines[0].contains("dump_id=9 v2 type=1 kernel=3.2.0 timed_out packets=3 missing=2 "),
            "{stdout}"
        );
        assert!(
            lines[1].contains(
                "dump_id=9 v2 type=1 kernel=3.2.0 complete packets=3 missing=- bytes=2100"
            ),
            "{stdout}"
        );
        assert!(out_dir.join("192.0.2.7:2004-9.log").is_file());
        assert!(
            std::fs::read(out_dir.join("192.0.2.7:2004-9.2.log"))
                .unwrap()
                .ends_with(&log)
        );
    }
}

#[test]
fn port_filter() {
    let dir = scratch("oops-port");
    let pcap = dir.join("dump.pcap");
    let frames = dump_frames(
        &DumpMeta::v2(2, DumpType::PrintkBuffer, b"x"),
        &log(100, 7),
        "10.0.0.2",
        "10.0.0.1",
    );
    write_pcap(&pcap, &timed(frames, 0));
    let (code, stdout, stderr) = parts(&run(
        &[
            "oops",
            "decode",
            pcap.to_str().unwrap(),
            "--port",
            "6666",
            "--port",
            "9",
        ],
        b"",
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("3 frames: 0 UDP datagrams to port 6666,9, 3 to other ports"),
        "{stderr}"
    );
}

#[test]
fn live_listener_writes_dumps_and_flushes_on_sigterm() {
    let dir = scratch("oops-listen");
    let (mut child, bind, banner, mut stderr) = common::spawn_bound(
        &["oops", "listen"],
        &["--format", "json", "--dir", dir.to_str().unwrap()],
    );
    assert_eq!(
        banner,
        format!("ncrx: collecting netoops dumps on {bind}\n")
    );

    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target: SocketAddr = bind.parse().unwrap();
    // One whole dump, and the first two packets of another.
    let log_a = log(2000, 8);
    let mut encoder = DumpEncoder::new(
        &DumpMeta::v2(11, DumpType::PrintkBuffer, b"6.6.0"),
        b"",
        &log_a,
    )
    .unwrap();
    let mut buf = [0u8; 2048];
    while let Some(len) = encoder.write_next(&mut buf).unwrap() {
        sender.send_to(&buf[..len], target).unwrap();
    }
    let log_b = log(4000, 9);
    let mut encoder = DumpEncoder::new(
        &DumpMeta::v2(12, DumpType::PrintkBuffer, b"6.6.0"),
        b"",
        &log_b,
    )
    .unwrap();
    for _ in 0..2 {
        let len = encoder.write_next(&mut buf).unwrap().unwrap();
        sender.send_to(&buf[..len], target).unwrap();
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let json: Value = serde_json::from_str(&first).unwrap();
    let source = sender.local_addr().unwrap().to_string();
    assert_eq!(json["source"], source);
    assert_eq!(json["dump_id"], 11);
    assert_eq!(json["complete"], true);
    assert_eq!(json["bytes"], 2000);

    // Stop it at once: the two packets of dump 12 are in its socket's queue (loopback
    // delivers on send); the listener takes what is queued before it flushes.
    common::signal(&child, "TERM");
    let mut second = String::new();
    stdout.read_line(&mut second).unwrap();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    let json: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(json["dump_id"], 12);
    assert_eq!(json["complete"], false);
    assert_eq!(json["status"], "end_of_input");
    assert_eq!(json["missing"], serde_json::json!([2, 3]));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("stopped: 8 datagrams, 0 refused"), "{rest}");
    assert!(dir.join(format!("{source}-11.log")).is_file());
    assert!(dir.join(format!("{source}-12.log")).is_file());
}

/// On `[::]` (IPv4 and IPv6), an IPv4 sender is shown and named as `listen` shows it,
/// `127.0.0.1:PORT`, not as the IPv4-mapped `[::ffff:127.0.0.1]:PORT`.
#[test]
fn an_ipv4_sender_to_a_dual_stack_listener_is_shown_as_ipv4() {
    let dir = scratch("oops-listen-v6");
    let port = common::free_port();
    let (mut child, banner, _stderr) = common::spawn_piped(&[
        "oops".into(),
        "listen".into(),
        "--format".into(),
        "json".into(),
        "--bind".into(),
        format!("[::]:{port}"),
        "--dir".into(),
        dir.to_str().unwrap().into(),
    ]);
    assert_eq!(
        banner,
        format!("ncrx: collecting netoops dumps on [::]:{port}\n")
    );
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dumped = log(1500, 3);
    let mut encoder = DumpEncoder::new(
        &DumpMeta::v2(5, DumpType::PrintkBuffer, b"6.6.0"),
        b"",
        &dumped,
    )
    .unwrap();
    let mut buf = [0u8; 2048];
    while let Some(len) = encoder.write_next(&mut buf).unwrap() {
        sender.send_to(&buf[..len], ("127.0.0.1", port)).unwrap();
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // A SIGHUP (logrotate's, meant for `ncrx listen`) does not end the collector.
    common::signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended oops listen"
    );
    common::signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let json: Value = serde_json::from_str(&line).unwrap();
    let source = sender.local_addr().unwrap().to_string();
    assert_eq!(json["source"], source, "{line}");
    assert_eq!(json["complete"], true, "{line}");
    assert!(dir.join(format!("{source}-5.log")).is_file());
}

/// The command that made `tests/data/netoops-sample/crash.pcap` (the README's sample), with
/// the capture written to `out`.
fn sample_command(out: &Path) -> Vec<String> {
    let data = common::data("netoops-sample");
    [
        "oops",
        "send",
        "--source",
        "2001:db8::1",
        "--target",
        "2001:db8::2",
        "--pcap",
        out.to_str().unwrap(),
        "--time",
        "1700000000",
        "--v3",
        "--dump-id",
        "300",
        "--dump-type",
        "soft",
        "--release",
        "6.1.0-56-amd64",
        "--boot-id",
        "99",
        "--user-blob",
        "rack-42",
        "--cpu",
        "0,6,85,7",
        "--passes",
        "1",
        "--lose",
        "1",
        data.join("log.txt").to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn oops_send_remakes_the_sample_capture_byte_for_byte() {
    let dir = scratch("oops-send-sample");
    let out = dir.join("crash.pcap");
    let args = sample_command(&out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = parts(&run(&args, b""));
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    assert!(
        stderr.contains("dump 300 of 5000 log bytes: 5 packets, 1 passes, 4 datagrams written to"),
        "{stderr}"
    );
    let sample = common::data("netoops-sample/crash.pcap");
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&sample).unwrap(),
        "the sample differs from what the command writes"
    );
    // What the README shows for it.
    let (code, stdout, stderr) = parts(&run(
        &[
            "oops",
            "decode",
            sample.to_str().unwrap(),
            "--format",
            "json",
        ],
        b"",
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "{\"type\":\"oops\",\"source\":\"[2001:db8::1]:2004\",\"dump_id\":300,\"version\":3,\"dump_type\":3,\"kernel_version\":\"6.1.0-56-amd64\",\"complete\":false,\"status\":\"end_of_input\",\"packets\":5,\"missing\":[1],\"bytes\":3976}\n"
    );
}

#[test]
fn oops_send_over_udp_sends_three_passes() {
    use netoops_proto::Packet;
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let target = collector.local_addr().unwrap().to_string();
    let text = log(2500, 4);
    let (code, _, stderr) = parts(&run(
        &[
            "oops",
            "send",
            "--source",
            "127.0.0.1:0",
            "--target",
            &target,
            "--release",
            "6.6.0",
            "--dump-id",
            "77",
        ],
        &text,
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("dump 77 of 2500 log bytes: 3 packets, 3 passes, 9 datagrams sent to"),
        "{stderr}"
    );
    let mut buf = [0u8; 2048];
    let mut numbers = Vec::new();
    let mut source = None;
    for _ in 0..9 {
        let (len, from) = collector.recv_from(&mut buf).unwrap();
        assert!(source.is_none_or(|s| s == from), "one socket");
        source = Some(from);
        let packet = Packet::parse(&buf[..len]).unwrap();
        assert_eq!(packet.meta().dump_id, 77);
        assert_eq!(packet.meta().kernel_release(), b"6.6.0");
        numbers.push(packet.packet_no());
    }
    assert_eq!(numbers, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
}

#[test]
fn oops_send_errors_say_what_is_wrong() {
    let dir = scratch("oops-send-errors");
    let out = dir.join("x.pcap");
    for (args, stdin, message) in [
        (
            vec!["--target", "192.0.2.2", "--pcap", out.to_str().unwrap()],
            &b"log\n"[..],
            "--pcap needs --source",
        ),
        (
            vec!["--target", "192.0.2.2", "--lose", "1"],
            &b"log\n"[..],
            "--lose 1: the dump has packets 0 to 0 only",
        ),
        (vec!["--target", "192.0.2.2"], &b""[..], "the log is empty"),
        (
            vec!["--target", "crash.example.com"],
            &b"log\n"[..],
            "host names are not resolved",
        ),
        (
            vec!["--target", "::1", "--source", "127.0.0.1:0"],
            &b"log\n"[..],
            "not of the same IP version",
        ),
    ] {
        let mut full = vec!["oops", "send"];
        full.extend(args);
        let (code, _, stderr) = parts(&run(&full, stdin));
        assert_eq!(code, 2, "{full:?}: {stderr}");
        assert!(stderr.contains(message), "{full:?}: {stderr}");
    }
}

/// A dump file that cannot be written (here the directory was replaced by a file) is said
/// on stderr and counted, its line still comes out, and the listener goes on: the next dump,
/// once the file is gone, gets its file in the directory made again.
#[test]
fn live_listener_goes_on_when_a_dump_file_cannot_be_written() {
    let dir = scratch("oops-listen-gone");
    let (mut child, bind, _banner, mut stderr) = common::spawn_bound(
        &["oops", "listen"],
        &["--format", "json", "--dir", dir.to_str().unwrap()],
    );
    let target: SocketAddr = bind.parse().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let source = sender.local_addr().unwrap().to_string();
    let dump_log = log(1500, 3);
    let send = |dump_id: u16| {
        let mut encoder = DumpEncoder::new(
            &DumpMeta::v2(dump_id, DumpType::PrintkBuffer, b"6.6.0"),
            b"",
            &dump_log,
        )
        .unwrap();
        let mut buf = [0u8; 2048];
        while let Some(len) = encoder.write_next(&mut buf).unwrap() {
            sender.send_to(&buf[..len], target).unwrap();
        }
    };
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();

    std::fs::remove_dir(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    send(21);
    stdout.read_line(&mut line).unwrap();
    let json: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (json["dump_id"].as_u64(), json["complete"].as_bool()),
        (Some(21), Some(true))
    );
    assert_eq!(json["file"], Value::Null);
    assert!(child.try_wait().unwrap().is_none(), "the listener stopped");

    // Gone altogether: the listener makes it again.
    std::fs::remove_file(&dir).unwrap();
    send(22);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let json: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["dump_id"], 22);
    let file = dir.join(format!("{source}-22.log"));
    assert_eq!(json["file"], file.display().to_string());
    let written = std::fs::read(&file).unwrap();
    assert!(written.ends_with(&dump_log));

    common::signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut report = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut report).unwrap();
    assert!(
        report.contains(&format!("ncrx: dump 21 from {source}: cannot create ")),
        "{report}"
    );
    assert!(report.contains("its file is not kept"), "{report}");
    assert!(report.contains("2 dumps complete, 0 partial"), "{report}");
    assert!(
        report.contains("ncrx: 1 dump files and 0 lines could not be written"),
        "{report}"
    );
    assert!(dir.join(format!("{source}-22.log")).is_file());
    assert!(!dir.join(format!("{source}-21.log")).exists());
}

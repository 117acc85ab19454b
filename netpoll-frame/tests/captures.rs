//! Kernel-exact frames: every UDP frame captured from Linux 7.3 and 6.1 parses, and rebuilding
//! it with the builder from the parsed fields and payload gives back every byte, with nothing
//! after them: netpoll does not pad frames to Ethernet's 60-byte minimum.
//!
//! The sample in `tests/data/` always runs; the full captures run too when `../shared/captures`
//! is beside the workspace (their absence skips that test with a note, and fails it under
//! `CI=true`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use netpoll_frame::{Frame, FrameBuilder, FrameConfig, IpIdPolicy, IpInfo, ParseError};

fn read_frames(path: &Path) -> Vec<Vec<u8>> {
    testkit::read_pcap(path)
        .into_iter()
        .map(|packet| packet.data)
        .collect()
}

/// Ethernet's minimum frame length without the frame check sequence: shorter frames get
/// padding on a real wire, unless the sender leaves them short.
const ETHERNET_MIN_LEN: usize = 60;

struct Tally {
    udp: usize,
    other: usize,
    /// UDP frames shorter than [`ETHERNET_MIN_LEN`].
    short: usize,
}

/// Parses and rebuilds every frame of one capture; returns how many were UDP and how many not,
/// and how many UDP frames were short.
/// `complete`: the capture holds every frame the machine sent, so IPv4 ids must follow on.
fn check_capture(path: &Path, complete: bool) -> Tally {
    let frames = read_frames(path);
    let mut builders: HashMap<(std::net::SocketAddr, std::net::SocketAddr), FrameBuilder> =
        HashMap::new();
    // The kernel's IPv4 id counter is one per machine, shared by all targets.
    let mut machine_ip_id: Option<u16> = None;
    let mut tally = Tally {
        udp: 0,
        other: 0,
        short: 0,
    };
    let mut rebuilt = vec![0u8; 70_000];
    for (index, bytes) in frames.iter().enumerate() {
        let frame = match Frame::parse(bytes) {
            Ok(frame) => frame,
            Err(ParseError::NotUdp(_)) => {
                tally.other += 1;
                continue;
            }
            Err(error) => panic!("{}: frame {index} does not parse: {error}", path.display()),
        };
        tally.udp += 1;
        // The kernel's constant header values.
        match frame.ip() {
            IpInfo::V4 {
                id,
                ttl,
                tos,
                dont_fragment,
                options_len,
            } => {
                assert_eq!(
                    (ttl, tos, dont_fragment, options_len),
                    (64, 0, false, 0),
                    "frame {index}"
                );
                if complete {
                    let expected = machine_ip_id.map_or(1, |last| last.wrapping_add(1));
                    assert_eq!(
                        id,
                        expected,
                        "{}: frame {index}: ids count frames from 1",
                        path.display()
                    );
                    machine_ip_id = Some(id);
                }
            }
            IpInfo::V6 {
                hop_limit,
                traffic_class,
                flow_label,
                extension_len,
            } => {
                assert_eq!(
                    (hop_limit, traffic_class, flow_label, extension_len),
                    (32, 0, 0, 0),
                    "frame {index}"
                );
            }
            _ => unreachable!("netpoll sends IPv4 or IPv6"),
        }
        assert_ne!(
            frame.udp_checksum(),
            0,
            "the kernel always computes the UDP checksum"
        );

        let builder = builders
            .entry((frame.source(), frame.destination()))
            .or_insert_with(|| {
                let mut config = FrameConfig::new(frame.source().ip(), frame.destination().ip());
                config.source_port = frame.source().port();
                config.destination_port = frame.destination().port();
                config.source_mac = frame.source_mac();
                config.destination_mac = frame.destination_mac();
                config.vlan = frame.vlan();
                config.ip_id = IpIdPolicy::Counter {
                    next: frame.ipv4_id().unwrap_or(0),
                };
                FrameBuilder::new(&config).expect("config from a parsed frame")
            });
        let len = builder
            .build_with_ip_id(frame.ipv4_id().unwrap_or(0), frame.payload(), &mut rebuilt)
            .expect("rebuild");
        // netpoll does not pad: what was captured is exactly the rebuilt frame, with no byte
        // after the UDP datagram, even below Ethernet's minimum.
        assert_eq!(
            bytes.len(),
            len,
            "{}: frame {index} of {} bytes, rebuilt {len}",
            path.display(),
            bytes.len()
        );
        assert_eq!(
            &rebuilt[..len],
            bytes.as_slice(),
            "{}: frame {index} differs",
            path.display()
        );
        tally.short += usize::from(len < ETHERNET_MIN_LEN);
    }
    tally
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn sample_frames_rebuild_byte_for_byte() {
    let dir = manifest_dir().join("tests/data");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/data") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "pcap") {
            let tally = check_capture(&path, false);
            // make_sample.py keeps at least 4 UDP frames and one other frame per capture.
            assert!(
                tally.udp >= 4,
                "{}: {} UDP frames",
                path.display(),
                tally.udp
            );
            assert_eq!(tally.other, 1, "{}", path.display());
            checked += 1;
        }
    }
    assert_eq!(checked, 9, "one sample per capture folder");
}

#[test]
fn all_captured_frames_rebuild_byte_for_byte() {
    let captures = testkit::captures_or_skip();
    if captures.is_empty() {
        return;
    }
    for capture in &captures {
        let tally = check_capture(&capture.pcap(), true);
        // The capture's own summary counts its frames independently of this parser.
        let summary =
            std::fs::read_to_string(capture.dir.join("summary.json")).expect("summary.json");
        let udp_count = json_count(&summary, "\"udp\": ");
        let other_count = json_count(&summary, "\"ip-other\": ");
        assert_eq!(
            (tally.udp, tally.other),
            (udp_count, other_count),
            "{}",
            capture.name()
        );
        // The frames that would be padded if netpoll padded, counted with another pcap reader:
        // the plain targets' shortest lines ("D\n", "END\n", a timestamp before an empty
        // line), 44 to 58 bytes on the wire. The extended records are all longer.
        let kernel_case = (capture.kernel.as_str(), capture.case.as_str());
        let short = match kernel_case {
            ("linux-6.1", "plain") => 4,
            ("linux-7.3", "plain") => 5,
            _ if testkit::KNOWN.contains(&kernel_case) => 0,
            _ => continue,
        };
        assert_eq!(
            tally.short,
            short,
            "{}: frames below {ETHERNET_MIN_LEN} bytes",
            capture.name()
        );
    }
}

/// The first number after `key` in the summary's `frames_by_kind` object.
fn json_count(summary: &str, key: &str) -> usize {
    let start = summary.find("\"frames_by_kind\"").expect("frames_by_kind");
    let rest = &summary[start..];
    let at = rest.find(key).expect("key in frames_by_kind") + key.len();
    rest[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .expect("count")
}

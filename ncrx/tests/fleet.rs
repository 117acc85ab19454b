//! `ncrx listen` in front of a fleet: `FLEET_SOURCES` senders (10,000 in the test suite;
//! `.ci/run` runs 100,000 against a release build), each a distinct address and port on
//! loopback, send `RECORDS` records each. With the default settings every record comes
//! out, in order per sender, nothing is refused, the kernel drops nothing, and the
//! listener's resident memory stays within [`BASE_BYTES`] + [`BYTES_PER_SOURCE`] per sender.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Child, ChildStdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Records per sender.
const RECORDS: u64 = 3;
/// Records in flight at most (sent, not yet on the listener's stdout).
const WINDOW: u64 = 2000;
/// The listener's resident memory before any sender: binary, threads, batch buffers.
const BASE_BYTES: u64 = 48 << 20;
/// Resident memory per idle sender, all told: its stream (ncrx-core's small idle source),
/// the receiver's tables, the output's per-sender counts and name. Measured in the
/// session's last `.ci/run`: 3,322 bytes for 100,000 senders (release build).
const BYTES_PER_SOURCE: u64 = 4 * 1024;

/// Sender `i`: 127.0.{1,2,...}.1, ports 20,000 to 59,999.
fn sender(i: u64) -> SocketAddr {
    let block = u8::try_from(i / 40_000 + 1).expect("at most 10 million senders");
    let port = u16::try_from(20_000 + i % 40_000).expect("a port");
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, block, 1), port))
}

/// Reads the JSON lines: per sender, the next seq expected; counts records in order and
/// anything else.
fn read_records(
    stdout: ChildStdout,
    seen: Arc<AtomicU64>,
) -> thread::JoinHandle<(HashMap<String, u64>, u64)> {
    thread::spawn(move || {
        // Per sender, the next seq expected: records are numbered from 0, as a kernel's.
        let mut next: HashMap<String, u64> = HashMap::new();
        let mut unexpected = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let field = |name: &str| {
                line.split(&format!("\"{name}\":")).nth(1).map(|rest| {
                    rest.trim_start_matches('"')
                        .split(['"', ','])
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
            };
            let (Some(source), Some(seq)) = (field("source"), field("seq")) else {
                unexpected += 1;
                continue;
            };
            let expected = next.entry(source).or_insert(0);
            if seq.parse() == Ok(*expected) {
                *expected += 1;
                seen.fetch_add(1, Ordering::Release);
            } else {
                unexpected += 1;
            }
        }
        (next, unexpected)
    })
}

/// Resident memory of a process, in bytes (`VmRSS`), and its peak (`VmHWM`).
fn memory(child: &Child) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let kib = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

#[test]
fn a_fleet_of_senders_is_served_with_the_defaults() {
    let sources: u64 = std::env::var("FLEET_SOURCES").map_or(10_000, |v| v.parse().unwrap());
    let (mut child, bind, _banner, mut stderr) =
        common::spawn_bound(&["listen"], &["--format", "json"]);
    let target: SocketAddr = bind.parse().unwrap();
    let (base, _) = memory(&child);
    let seen = Arc::new(AtomicU64::new(0));
    let reader = read_records(child.stdout.take().unwrap(), Arc::clone(&seen));
    let started = Instant::now();
    let mut sent = 0u64;
    for seq in 0..RECORDS {
        for i in 0..sources {
            let deadline = Instant::now() + Duration::from_secs(60);
            while sent - seen.load(Ordering::Acquire) >= WINDOW {
                assert!(
                    Instant::now() < deadline && child.try_wait().unwrap().is_none(),
                    "the listener stopped following after {} records",
                    seen.load(Ordering::Acquire)
                );
                thread::sleep(Duration::from_micros(200));
            }
            let socket = UdpSocket::bind(sender(i)).unwrap();
            let record = format!("6,{seq},{seq}000,-;sender {i} record {seq}\n");
            socket.send_to(record.as_bytes(), target).unwrap();
            sent += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.load(Ordering::Acquire) < sent {
        assert!(
            Instant::now() < deadline,
            "{} of {sent} records came out",
            seen.load(Ordering::Acquire)
        );
        thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let (rss, peak) = memory(&child);
    common::signal(&child, "TERM");
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{report}");
    let (next, unexpected) = reader.join().unwrap();
    println!(
        "fleet: {sources} senders, {sent} records in {:.1} s; resident {} MiB at start, {} MiB with every sender idle (peak {} MiB): {} bytes per sender",
        elapsed.as_secs_f64(),
        base >> 20,
        rss >> 20,
        peak >> 20,
        rss.saturating_sub(base) / sources
    );
    assert_eq!(unexpected, 0, "{report}");
    assert_eq!(next.len() as u64, sources);
    assert!(next.values().all(|&n| n == RECORDS));
    assert!(
        report.contains(&format!(
            "ncrx: stopped: {sources} sources, 0 malformed datagrams,"
        )) && report.contains(" 0 refused datagrams,")
            && report.contains(" 0 kernel drops,"),
        "{report}"
    );
    assert!(
        peak <= BASE_BYTES + sources * BYTES_PER_SOURCE,
        "peak resident memory {peak} bytes for {sources} senders: over {BASE_BYTES} + {BYTES_PER_SOURCE} per sender"
    );
}

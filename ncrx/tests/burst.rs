//! `ncrx listen` under a burst of good records mixed with garbage on 127.0.0.1.
//!
//! One sender sends `BURST_DATAGRAMS` datagrams (100,000 by default; .ci/run sends a million
//! against a release build), every other one a record `6,<seq>,<ts>,-;burst <seq>` and the
//! others garbage that looks extended but does not parse. The sender keeps at most
//! [`WINDOW`] datagrams in flight (sent, but not yet seen on the listener's stdout), so it
//! never outruns the listener; the test checks that:
//!
//! - every good record comes out once, in order (the lines counted and their numbers read);
//! - the garbage is counted: the SIGTERM report's malformed count equals what was sent;
//! - the kernel dropped nothing for the listener's socket (`drops` of its `/proc/net/udp` line);
//!
//! and prints the rate sustained (datagrams per second, wall clock, nothing asserted on it).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::process::{Child, ChildStdout, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use netconsole_proto::Datagram;

/// Datagrams in flight at most (good and garbage), well under what the socket buffer holds;
/// `BURST_WINDOW` sets another (to look for the rate where the kernel starts dropping).
const WINDOW: u64 = 512;

/// Garbage that looks like extended records or responses but does not parse: each is counted
/// as malformed by the receiver.
const GARBAGE: [&[u8]; 3] = [
    b"6,99999999999999999999999,1,-;seq over u64\n",
    b"6,12,34,-,ncfrag=900/100;offset past the total",
    b"ncrx12 x",
];

/// Starts `ncrx listen --bind 127.0.0.1:<free port>`.
fn listener() -> (Child, u16) {
    for _ in 0..5 {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bind = format!("127.0.0.1:{port}");
        let mut child = common::ncrx()
            .args(["listen", "--bind", &bind])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut banner = [0u8; 256];
        let stderr = child.stderr.as_mut().unwrap();
        let mut read = 0;
        while !banner[..read].contains(&b'\n') {
            let n = stderr.read(&mut banner[read..]).unwrap();
            assert_ne!(n, 0, "ncrx ended before its banner");
            read += n;
        }
        let banner = String::from_utf8_lossy(&banner[..read]).into_owned();
        if banner.contains("in use") {
            assert_eq!(child.wait().unwrap().code(), Some(6));
            continue;
        }
        assert!(
            banner.starts_with(&format!("ncrx: receiving netconsole on {bind}")),
            "{banner}"
        );
        return (child, port);
    }
    panic!("no free port in 5 tries");
}

/// The kernel's drop count for the UDP socket bound to 127.0.0.1:`port`.
fn kernel_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let local = format!("0100007F:{port:04X}");
    let line = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .expect("the listener's socket in /proc/net/udp");
    line.split_whitespace()
        .nth(12)
        .expect("a drops column")
        .parse()
        .expect("a number")
}

/// Reads the listener's stdout: each record line is "<source> #<seq> [<time>] <level> burst
/// <seq>", and the numbers must be 1, 2, 3... with nothing else between. `seen` follows the
/// count of records in order; the thread returns it and the first line that broke the order
/// (a loss, a record out of place), reading on to the end so that the listener never blocks.
fn count_records(
    stdout: ChildStdout,
    seen: Arc<AtomicU64>,
) -> thread::JoinHandle<(u64, Option<String>)> {
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        // Records come numbered from 0, as a kernel's after boot; `seen` counts them.
        let mut next = 0u64;
        let mut unexpected = None;
        while lines.read_line(&mut line).unwrap() != 0 {
            let expected = format!(" #{next} ");
            if unexpected.is_none()
                && line.contains(&expected)
                && line.trim_end().ends_with(&format!("burst {next}"))
            {
                next += 1;
                seen.store(next, Ordering::Release);
            } else if unexpected.is_none() {
                unexpected = Some(format!("after {next} records: {line:?}"));
            }
            line.clear();
        }
        (next, unexpected)
    })
}

/// Whether the listener still runs and its output still follows the records sent.
fn stalled(child: &mut Child, reader: &thread::JoinHandle<(u64, Option<String>)>) -> bool {
    reader.is_finished() || child.try_wait().unwrap().is_some()
}

/// Sends `total` datagrams to the connected `sender`, every other one a record and the rest
/// garbage, never more than `window` ahead of the records `seen` on stdout; panics when the
/// listener `stalled` or nothing came out for a long while.
fn send_burst(
    sender: &UdpSocket,
    total: u64,
    window: u64,
    seen: &AtomicU64,
    stalled: &mut dyn FnMut() -> bool,
    port: u16,
) {
    let mut datagram = Vec::with_capacity(64);
    let mut good_sent = 0u64;
    for i in 0..total {
        // In flight: every datagram sent after the last record seen on stdout (the `s`-th record
        // was datagram `2s - 2`).
        let mut waited = 0u32;
        loop {
            let through = (2 * seen.load(Ordering::Acquire)).saturating_sub(1);
            if i.saturating_sub(through) < window {
                break;
            }
            waited += 1;
            assert!(
                waited % 1000 != 0 || !stalled(),
                "the listener stopped following after {} records (kernel drops {})",
                seen.load(Ordering::Acquire),
                kernel_drops(port)
            );
            assert!(
                waited < 200_000,
                "no record on stdout for a long while after {} (kernel drops {})",
                seen.load(Ordering::Acquire),
                kernel_drops(port)
            );
            thread::sleep(Duration::from_micros(50));
        }
        if i % 2 == 0 {
            let seq = good_sent;
            good_sent += 1;
            datagram.clear();
            datagram
                .extend_from_slice(format!("6,{seq},{},-;burst {seq}\n", seq * 10 + 10).as_bytes());
            sender.send(&datagram).unwrap();
        } else {
            sender
                .send(GARBAGE[(i / 2) as usize % GARBAGE.len()])
                .unwrap();
        }
    }
}

/// The listener, killed if the test fails before it ends it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().is_ok_and(|status| status.is_none()) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn a_burst_of_good_and_garbage_loses_nothing() {
    for garbage in GARBAGE {
        assert!(
            Datagram::parse(garbage).is_err(),
            "{garbage:?} must be malformed"
        );
    }
    let total: u64 = std::env::var("BURST_DATAGRAMS").map_or(100_000, |v| v.parse().unwrap());
    let window: u64 = std::env::var("BURST_WINDOW").map_or(WINDOW, |v| v.parse().unwrap());
    let good_count = total.div_ceil(2);
    let garbage_count = total / 2;

    let (child, port) = listener();
    let mut running = Running(child);
    let child = &mut running.0;
    let stdout = child.stdout.take().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let reader = count_records(stdout, Arc::clone(&seen));

    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.connect(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    send_burst(
        &sender,
        total,
        window,
        &seen,
        &mut || stalled(child, &reader),
        port,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.load(Ordering::Acquire) < good_count {
        assert!(
            Instant::now() < deadline && !stalled(child, &reader),
            "records missing on stdout after {} (kernel drops {}, listener {:?})",
            seen.load(Ordering::Acquire),
            kernel_drops(port),
            child.try_wait()
        );
        thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    let drops = kernel_drops(port);

    common::signal(child, "TERM");
    let mut report = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut report)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{report}");
    assert_eq!(reader.join().unwrap(), (good_count, None));

    let rate = u128::from(total) * 1_000_000 / elapsed.as_micros().max(1);
    println!(
        "burst: {total} datagrams ({good_count} records, {garbage_count} garbage) in {:.2} s: {rate} datagrams/s sustained, window {window}, kernel drops {drops}",
        elapsed.as_secs_f64()
    );
    assert_eq!(
        drops, 0,
        "the kernel dropped datagrams for the listener's socket"
    );
    let source = sender.local_addr().unwrap();
    assert!(
        report.contains(&format!(
            "{source}: {good_count} records, 0 lost, 0 out of order, 0 incomplete, 0 restarts, 0 plain"
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "ncrx: stopped: 1 sources, {garbage_count} malformed datagrams"
        )),
        "{report}"
    );
    // The listener read its socket's drop counter too.
    assert!(report.contains(", 0 kernel drops,"), "{report}");
}

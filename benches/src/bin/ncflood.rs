//! `ncflood`: a netconsole flood on loopback, to measure a receiver daemon (ncrx listen,
//! netconsd) under load, and a checker of what the daemon wrote.
//!
//! ```text
//! ncflood send --target 127.0.0.1:6666 --senders 1000 --records 500 --rate 300000
//! ncflood check --format ncrx-json out.jsonl --senders 1000 --records 500
//! ```
//!
//! `send`: N senders, each a UDP socket bound to its own loopback address (127.1.x.y, port
//! 6665; netconsd keys hosts by address alone) or, with `--ports`, to 127.0.0.1 and its own
//! port. Each sends `--records` extended records numbered from 0 (as a kernel's after boot), about `--size` bytes each;
//! (`--first-seq` sets the first, to go on from an earlier run); every `--fragment-every`-th record is 1,500 bytes long and goes as two `ncfrag`
//! fragments, as the kernel sends it. The senders take turns, a batch of `--batch` datagrams
//! each per `sendmmsg` call, paced to `--rate` datagrams a second (0: as fast as it can).
//! When the generator itself falls behind (descheduled on a busy machine), it does not catch
//! up in a burst beyond 2 ms worth of datagrams: the rest of the debt is forgiven and its
//! longest stall reported, so the rate a run sustained is the rate it sent at.
//! `--loss P` leaves out that share of the datagrams (seeded, so the same run leaves out the
//! same ones). Traffic goes only to loopback: any other target is refused.
//!
//! `check`: reads a daemon's output and counts, per sender, the records that came out in
//! order (0, 1, 2...), those missing, and anything out of place. It exits 1 unless every
//! record of every sender came out exactly once, in order.

#![allow(
    clippy::cast_precision_loss,
    reason = "rates, shares and the dice are f64 figures, not exact counts"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IoSlice};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use netpoll_frame::{NETCONSOLE_DESTINATION_PORT, NETCONSOLE_SOURCE_PORT};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};

const USAGE: &str = "\
usage:
  ncflood send [--target 127.0.0.1:6666] [--senders N] [--ports] [--records N] [--size BYTES]
               [--fragment-every K] [--rate DATAGRAMS/S] [--batch N] [--loss P] [--seed S]
               [--max-seconds S] [--first-seq N]
  ncflood check --format ncrx-json|ncrx-text|netconsd FILE --senders N --records N [--ports]";

/// The body of a long record: 1,500 bytes, two fragments of at most 1,000.
const LONG_TEXT: usize = 1500;
/// The kernel's fragment payload limit (`MAX_PRINT_CHUNK`).
const CHUNK: usize = 1000;

/// Options that take a value.
const VALUED: &[&str] = &[
    "target",
    "senders",
    "records",
    "size",
    "fragment-every",
    "rate",
    "batch",
    "loss",
    "seed",
    "max-seconds",
    "first-seq",
    "format",
];

struct Options {
    values: HashMap<String, String>,
    flags: Vec<String>,
    positional: Vec<String>,
}

impl Options {
    /// The arguments, or what is wrong with them.
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut values = HashMap::new();
        let mut flags = Vec::new();
        let mut positional = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            if let Some(name) = arg.strip_prefix("--") {
                if name == "ports" || name == "help" {
                    flags.push(name.to_owned());
                } else if !VALUED.contains(&name) {
                    return Err(format!("unknown option --{name}"));
                } else if let Some(value) = args.get(i + 1) {
                    values.insert(name.to_owned(), value.clone());
                    i += 1;
                } else {
                    return Err(format!("--{name} needs a value"));
                }
            } else if arg == "-h" {
                flags.push("help".to_owned());
            } else {
                positional.push(arg.clone());
            }
            i += 1;
        }
        Ok(Options {
            values,
            flags,
            positional,
        })
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.values.get(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("--{name}: cannot read {v:?}\n{USAGE}"))
        })
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

/// Sender `i`'s address: 127.1.x.y:6665, or 127.0.0.1 with its own port.
fn sender_addr(i: usize, ports: bool) -> SocketAddr {
    if ports {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            u16::try_from(20_000 + i).expect("at most 45,535 senders with --ports"),
        )
    } else {
        let i = u32::try_from(i).expect("sender index") + 1;
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + i);
        SocketAddr::new(IpAddr::V4(ip), NETCONSOLE_SOURCE_PORT)
    }
}

/// A small deterministic generator (splitmix64) for `--loss`.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes the datagrams of record `seq` of sender `sender` into `out` (one, or two
/// fragments).
fn record_datagrams(sender: usize, seq: u64, size: usize, long: bool, out: &mut Vec<Vec<u8>>) {
    let ts = seq * 1000;
    let head = format!("6,{seq},{ts},-");
    if long {
        let mut text = format!("flood {sender} {seq} long ");
        while text.len() < LONG_TEXT - 1 {
            text.push('x');
        }
        text.push('\n');
        let body = text.as_bytes();
        for offset in (0..body.len()).step_by(CHUNK) {
            let end = (offset + CHUNK).min(body.len());
            let mut datagram = format!("{head},ncfrag={offset}/{};", body.len()).into_bytes();
            datagram.extend_from_slice(&body[offset..end]);
            out.push(datagram);
        }
    } else {
        let mut text = format!("{head};flood {sender} {seq} ");
        while text.len() < size.saturating_sub(1) {
            text.push('x');
        }
        text.push('\n');
        out.push(text.into_bytes());
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one loop: fill each sender's batch, send it, pace"
)]
fn send(options: &Options) -> ExitCode {
    let target: SocketAddr = options.get(
        "target",
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), NETCONSOLE_DESTINATION_PORT),
    );
    if !target.ip().is_loopback() {
        eprintln!("ncflood: {target} is not a loopback address; ncflood sends only to loopback");
        return ExitCode::from(2);
    }
    let SocketAddr::V4(target4) = target else {
        eprintln!("ncflood: the target must be IPv4 loopback (127.0.0.0/8)");
        return ExitCode::from(2);
    };
    let senders: usize = options.get("senders", 1);
    let ports = options.flag("ports");
    let records: u64 = options.get("records", 1000);
    let size: usize = options.get("size", 100);
    let fragment_every: u64 = options.get("fragment-every", 0);
    let rate: f64 = options.get("rate", 0.0);
    let batch: usize = options.get("batch", 32).clamp(1, 1024);
    let loss: f64 = options.get("loss", 0.0);
    let mut dice = Dice(options.get("seed", 1));
    let max_seconds: f64 = options.get("max-seconds", 120.0);

    let sockets: Vec<UdpSocket> = (0..senders)
        .map(|i| {
            let addr = sender_addr(i, ports);
            UdpSocket::bind(addr).unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"))
        })
        .collect();
    let destination = SockaddrIn::from(target4);
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let first_seq: u64 = options.get("first-seq", 0);
    let records = first_seq + records - 1;
    let mut next_seq = vec![first_seq; senders];
    let mut queued: Vec<Vec<Vec<u8>>> = vec![Vec::new(); senders];
    let started = Instant::now();
    let (mut sent, mut left_out, mut send_errors) = (0u64, 0u64, 0u64);
    let mut records_sent = 0u64;
    let mut last_progress = started;
    // Datagrams the pacing no longer asks for (the generator fell behind), and the most.
    let (mut forgiven, mut worst_lag) = (0.0f64, 0.0f64);
    let burst = (rate * 0.002).max(batch as f64);
    loop {
        let mut any = false;
        for sender in 0..senders {
            // Fill this sender's queue with up to a batch of datagrams.
            let queue = &mut queued[sender];
            while queue.len() < batch && next_seq[sender] <= records {
                let seq = next_seq[sender];
                let long = fragment_every > 0 && seq.is_multiple_of(fragment_every);
                let mut datagrams = Vec::new();
                record_datagrams(sender, seq, size, long, &mut datagrams);
                for datagram in datagrams {
                    if loss > 0.0 && dice.next() < loss {
                        left_out += 1;
                    } else {
                        queue.push(datagram);
                    }
                }
                next_seq[sender] += 1;
                records_sent += 1;
            }
            if queue.is_empty() {
                continue;
            }
            any = true;
            let take = queue.len().min(batch);
            let slices: Vec<[IoSlice<'_>; 1]> =
                queue[..take].iter().map(|d| [IoSlice::new(d)]).collect();
            let addrs: Vec<Option<SockaddrIn>> = vec![Some(destination); take];
            let result = sendmmsg(
                sockets[sender].as_raw_fd(),
                &mut headers,
                &slices,
                &addrs,
                [],
                MsgFlags::empty(),
            )
            .map(Iterator::count);
            drop(slices);
            if let Ok(n) = result {
                sent += n as u64;
                queue.drain(..n);
            } else {
                // The socket buffer is full: let the receiver catch up.
                send_errors += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            // Pacing: never ahead of the rate.
            if rate > 0.0 {
                let lag = started.elapsed().as_secs_f64() * rate - forgiven - sent as f64;
                worst_lag = worst_lag.max(lag);
                if lag > burst {
                    forgiven += lag - burst;
                }
                loop {
                    let due = started.elapsed().as_secs_f64() * rate - forgiven;
                    if (sent as f64) <= due {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "ncflood: {sent} datagrams sent in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        if !any || started.elapsed().as_secs_f64() >= max_seconds {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "ncflood: {senders} senders, {records_sent} records, {sent} datagrams sent ({left_out} left out, {send_errors} send errors) in {elapsed:.3} s: {:.0} datagrams/s",
        sent as f64 / elapsed.max(1e-9)
    );
    if rate > 0.0 {
        println!(
            "ncflood: pacing: the generator fell behind by at most {:.1} ms, {forgiven:.0} datagrams not caught up",
            worst_lag / rate * 1000.0
        );
    }
    ExitCode::SUCCESS
}

/// The sender and sequence number of one output line, if it is a record.
fn parse_line(format: &str, line: &str) -> Option<(String, u64)> {
    match format {
        "ncrx-json" => {
            if !line.starts_with("{\"type\":\"record\"") {
                return None;
            }
            let source = line.split("\"source\":\"").nth(1)?.split('"').next()?;
            let seq = line
                .split("\"seq\":")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((source.to_owned(), seq))
        }
        "ncrx-text" => {
            let (source, rest) = line.split_once(" #")?;
            let seq = rest.split(' ').next()?.parse().ok()?;
            Some((source.to_owned(), seq))
        }
        "netconsd" => {
            // "<address right-aligned in 40>: <version> S<seq> T<ts> F<f>/L<l> <text>"
            let (source, rest) = line.split_once(": ")?;
            let seq = rest.split(" S").nth(1)?.split(' ').next()?.parse().ok()?;
            Some((source.trim().trim_start_matches("::ffff:").to_owned(), seq))
        }
        _ => panic!("unknown format {format}\n{USAGE}"),
    }
}

fn check(options: &Options) -> ExitCode {
    let format: String = options.get("format", "ncrx-json".to_owned());
    let senders: usize = options.get("senders", 1);
    let records: u64 = options.get("records", 1000);
    let ports = options.flag("ports");
    let Some(path) = options.positional.get(1) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut next: HashMap<String, u64> = (0..senders)
        .map(|i| {
            let addr = sender_addr(i, ports);
            let key = if format == "netconsd" {
                addr.ip().to_string()
            } else {
                addr.to_string()
            };
            (key, 0)
        })
        .collect();
    let (mut in_order, mut out_of_place, mut unknown) = (0u64, 0u64, 0u64);
    for line in BufReader::new(file).lines() {
        let line = line.expect("readable output");
        let Some((source, seq)) = parse_line(&format, &line) else {
            continue;
        };
        match next.get_mut(&source) {
            Some(expected) if *expected == seq => {
                *expected += 1;
                in_order += 1;
            }
            Some(_) => out_of_place += 1,
            None => unknown += 1,
        }
    }
    let missing: u64 = next.values().map(|n| records - (*n).min(records)).sum();
    let complete = next.values().filter(|n| **n == records).count();
    println!(
        "ncflood check: {in_order} records in order, {missing} missing, {out_of_place} out of place, {unknown} from unknown senders; {complete} of {senders} senders complete"
    );
    if missing == 0 && out_of_place == 0 && unknown == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("ncflood: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.flags.iter().any(|f| f == "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match options.positional.first().map(String::as_str) {
        Some("send") => send(&options),
        Some("check") => check(&options),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

//! `--reliable`: one `netconsole_proto::Sender` per target, driven with real time
//! while a reader thread feeds it the input's messages.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use netconsole_proto::{MAX_PRINT_CHUNK, Response, Sender as ReliableSender, SenderConfig};
use netpoll_frame::Instant;

use super::extradata::Extradata;
use super::input::Input;
use super::sink::{BoundSockets, Sink, bind_targets};
use super::{Counts, Sender};
use crate::cli::SendArgs;
use crate::error::{Failure, Outcome};

/// The longest the loop sleeps between looks at the sockets.
const TICK: Duration = Duration::from_millis(20);

struct Target {
    /// Index of the socket in the bound sockets (shared by targets with the same
    /// source address).
    socket: usize,
    to: SocketAddr,
    sender: ReliableSender,
}

fn socket_failure(what: &'static str, addr: SocketAddr) -> impl FnOnce(io::Error) -> Failure {
    move |source| Failure::Socket { what, addr, source }
}

type Sockets = BoundSockets;

fn open(args: &SendArgs, release: Option<&str>) -> Result<(Sockets, Vec<Target>), Failure> {
    for (index, target) in args.target.targets.iter().enumerate() {
        if !target.extended {
            return Err(Failure::Usage(format!(
                "--reliable needs extended targets ('+'); target {} is plain",
                index + 1
            )));
        }
    }
    let (sockets, destinations) = bind_targets(&args.target.targets)?;
    for (local, socket) in &sockets {
        socket
            .set_nonblocking(true)
            .map_err(socket_failure("cannot configure", *local))?;
    }
    let mut targets = Vec::new();
    for (target, (socket, to)) in args.target.targets.iter().zip(destinations) {
        let mut config = SenderConfig::default();
        if target.release {
            if let Some(release) = release {
                config = config.with_release(release.as_bytes());
            }
        }
        targets.push(Target {
            socket,
            to,
            sender: ReliableSender::new(config),
        });
    }
    Ok((sockets, targets))
}

/// Hands every response waiting on the sockets to the target it comes from.
fn receive(sockets: &Sockets, targets: &mut [Target], now: Instant, buf: &mut [u8]) {
    for (index, (_, socket)) in sockets.iter().enumerate() {
        // Until nothing more is waiting (WouldBlock), or an error such as the ICMP port
        // unreachable of a receiver not started yet.
        while let Ok((len, from)) = socket.recv_from(buf) {
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            let Some(target) = targets
                .iter_mut()
                .find(|t| t.socket == index && t.to == from)
            else {
                continue;
            };
            match Response::parse(&buf[..len]) {
                Ok(response) => target.sender.handle_response(now, &response),
                Err(error) => eprintln!("ncrx: bad response from {from}: {error}"),
            }
        }
    }
}

/// Runs `ncrx send --reliable`.
pub(super) fn run(
    args: &SendArgs,
    release: Option<String>,
    reader: Input,
    live: bool,
) -> Result<Outcome, Failure> {
    let (sockets, mut targets) = open(args, release.as_deref())?;
    let start = std::time::Instant::now();
    let now = || Instant::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let linger = Duration::from_millis(args.linger_ms);
    // Bounded: a slow network side holds the reader back instead of reading all of stdin
    // into memory.
    let (queue, messages) = mpsc::sync_channel::<Vec<u8>>(1024);
    let mut sent = 0u64;
    let mut refused = 0u64;
    let read: Result<Counts, Failure> = thread::scope(|scope| {
        let reading = scope.spawn(move || {
            let mut sender = Sender {
                args,
                release,
                sink: Sink::Reliable(queue),
                counts: Counts::default(),
                console: Vec::new(),
                extradata: Extradata::default(),
            };
            sender.read(reader, live).map(|()| sender.counts)
        });
        let mut input_done: Option<Instant> = None;
        let mut out = [0u8; MAX_PRINT_CHUNK];
        let mut buf = [0u8; 2048];
        loop {
            let deadline = targets.iter().filter_map(|t| t.sender.poll_timeout()).min();
            let wait = deadline
                .map_or(TICK, |d| d.saturating_duration_since(now()))
                .min(TICK);
            if input_done.is_none() {
                match messages.recv_timeout(wait) {
                    Ok(msg) => {
                        for target in &mut targets {
                            if let Err(error) = target.sender.push(now(), &msg) {
                                refused += 1;
                                eprintln!("ncrx: record not queued for {}: {error}", target.to);
                            }
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => input_done = Some(now()),
                }
            } else {
                thread::sleep(wait);
            }
            receive(&sockets, &mut targets, now(), &mut buf);
            for target in &mut targets {
                let now = now();
                if target.sender.poll_timeout().is_some_and(|d| d <= now) {
                    target.sender.handle_timeout(now);
                }
                while let Some(len) = target.sender.poll_transmit(&mut out) {
                    sockets[target.socket]
                        .1
                        .send_to(&out[..len], target.to)
                        .map_err(socket_failure("cannot send to", target.to))?;
                    sent += 1;
                }
            }
            if let Some(done) = input_done {
                let acked = targets.iter().all(|t| t.sender.unacked() == 0);
                if acked || now().saturating_duration_since(done) >= linger {
                    break;
                }
            }
        }
        reading
            .join()
            .unwrap_or_else(|_| Err(Failure::Usage("the input reader failed".into())))
    });
    let counts = read?;
    let unacked: usize = targets.iter().map(|t| t.sender.unacked()).sum();
    let resent: u64 = targets.iter().map(|t| t.sender.stats().retransmitted).sum();
    eprintln!(
        "ncrx: {} records read, {sent} datagrams sent ({resent} re-sent on request or in emergency), {unacked} records never acknowledged, {} bad records skipped, {} other lines skipped",
        counts.records,
        counts.bad + refused,
        counts.skipped
    );
    if unacked > 0 {
        return Err(Failure::Unacknowledged {
            records: unacked,
            linger_ms: args.linger_ms,
        });
    }
    Ok(Outcome {
        bad_data: counts.bad + refused > 0,
        truncated: false,
        unwritten: false,
    })
}

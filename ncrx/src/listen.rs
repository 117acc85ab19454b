//! `ncrx listen`: the UDP receiver, `ncrx_core::Receiver` driven with real time.
//!
//! One thread per bound socket receives datagrams and hands them, with their arrival time, to
//! the main loop, which feeds the receiver, runs its timers at the deadlines it asks for,
//! writes the events out, and sends the receiver's response packets (retransmission requests,
//! acks) back to each sender from the socket its datagrams came to. SIGINT or SIGTERM stops
//! it: everything held is flushed (holes come out as `lost`), counts go to stderr, exit 0.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ncrx_core::{Receiver, ReceiverConfig};
use netpoll_frame::Instant;

use crate::cli::{ListenArgs, Preset};
use crate::decode::{Output, feed};
use crate::error::{Failure, Outcome};
use crate::oops::{bind_udp, receive_until_stopped};

/// How often blocked receivers look at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The largest datagram read from a socket.
const MAX_DATAGRAM: usize = 65_536;
/// Senders remembered for replies; past this the table starts again (a sender then gets
/// its replies from the first socket of its address family until it sends again).
const MAX_REPLY_ROUTES: usize = 65_536;
/// Datagrams handed from the socket threads to the receiver and not yet taken. When the
/// receiver falls behind, the socket threads wait, the sockets' kernel buffers fill and the
/// kernel drops (and counts) what does not fit: memory stays bounded (at most this many
/// datagrams of up to 64 KiB) whatever the senders do.
const ARRIVALS_QUEUED: usize = 1024;
/// The default port of netconsole receivers.
const DEFAULT_PORT: u16 = 6666;

/// A sender as the receiver keys it: IPv4 senders seen on a dual-stack socket are shown and
/// keyed as IPv4, not as `::ffff:a.b.c.d`.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Binds the sockets: the `--bind` addresses, or `[::]:6666` (IPv4 too), falling back to
/// `0.0.0.0:6666` on a machine without IPv6.
fn bind_all(
    binds: &[SocketAddr],
    reuse_port: bool,
) -> Result<Vec<(SocketAddr, UdpSocket)>, Failure> {
    let mut sockets = Vec::new();
    if binds.is_empty() {
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), DEFAULT_PORT);
        match bind_udp(any6, reuse_port) {
            Ok(socket) => sockets.push((any6, socket)),
            Err(Failure::Socket { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
                ) || source.raw_os_error() == Some(97) =>
            {
                let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT);
                sockets.push((any4, bind_udp(any4, reuse_port)?));
            }
            Err(other) => return Err(other),
        }
    }
    for &addr in binds {
        sockets.push((addr, bind_udp(addr, reuse_port)?));
    }
    for (addr, socket) in &sockets {
        socket
            .set_read_timeout(Some(POLL_INTERVAL))
            .map_err(|source| Failure::Socket {
                what: "cannot set a timeout on",
                addr: *addr,
                source,
            })?;
    }
    Ok(sockets)
}

/// A datagram as a worker hands it over.
struct Arrival {
    socket: usize,
    from: SocketAddr,
    payload: Vec<u8>,
    at: Instant,
}

/// A flag that SIGINT and SIGTERM set (the listeners then flush and stop).
pub(crate) fn stop_on_signals() -> Result<Arc<AtomicBool>, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|source| {
            Failure::Stream {
                what: "cannot install a signal handler",
                source,
            }
        })?;
    }
    Ok(stop)
}

/// `ncrx listen`.
pub(crate) fn run(args: &ListenArgs) -> Result<Outcome, Failure> {
    let threads = args.threads.max(1);
    let mut shards = Vec::new();
    for _ in 0..threads {
        shards.push(bind_all(&args.bind, threads > 1)?);
    }
    let stop = stop_on_signals()?;
    for (addr, _) in &shards[0] {
        if threads > 1 {
            eprintln!("ncrx: receiving netconsole on {addr} ({threads} threads, SO_REUSEPORT)");
        } else {
            eprintln!("ncrx: receiving netconsole on {addr}");
        }
    }
    let start = std::time::Instant::now();
    if threads == 1 {
        shard(args, shards.remove(0), &stop, start)?;
        return Ok(Outcome::default());
    }
    thread::scope(|scope| {
        let running: Vec<_> = shards
            .into_iter()
            .map(|sockets| scope.spawn(|| shard(args, sockets, &stop, start)))
            .collect();
        let mut result = Ok(());
        for handle in running {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| Err(Failure::Usage("a listener thread failed".into())));
            if outcome.is_err() {
                // One shard failing (e.g. stdout closed) stops the others too.
                stop.store(true, Ordering::Relaxed);
                if result.is_ok() {
                    result = outcome;
                }
            }
        }
        result
    })?;
    Ok(Outcome::default())
}

/// One receiver with its sockets, until `stop`.
fn shard(
    args: &ListenArgs,
    sockets: Vec<(SocketAddr, UdpSocket)>,
    stop: &Arc<AtomicBool>,
    start: std::time::Instant,
) -> Result<(), Failure> {
    let now =
        move || Instant::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));

    let (sender, arrivals) = mpsc::sync_channel::<Arrival>(ARRIVALS_QUEUED);
    let mut workers = Vec::new();
    let mut reply_sockets = Vec::new();
    for (index, (addr, socket)) in sockets.into_iter().enumerate() {
        let receiving = socket.try_clone().map_err(|source| Failure::Socket {
            what: "cannot share",
            addr,
            source,
        })?;
        reply_sockets.push((addr, socket));
        let sender = sender.clone();
        let stop = Arc::clone(stop);
        workers.push(thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            receive_until_stopped(&receiving, addr, &stop, &mut buf, |from, payload| {
                let arrival = Arrival {
                    socket: index,
                    from,
                    payload: payload.to_vec(),
                    at: now(),
                };
                sender.send(arrival).is_ok()
            });
        }));
    }
    drop(sender);

    let mut config = match args.preset {
        Preset::Libncrx => ReceiverConfig::libncrx(),
        Preset::Netconsd => ReceiverConfig::daemon(),
    };
    if let Some(ms) = args.ack {
        config.stream.ack_interval = Some(Duration::from_millis(ms));
    }
    let mut rx: Receiver<SocketAddr> = Receiver::new(config);
    let mut output = Output::new(args.format, args.format_limit, args.dir.clone())?;
    let mut replies = Replies {
        sockets: reply_sockets,
        routes: HashMap::new(),
        buf: vec![0u8; 2048],
        sent: 0,
        failed: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let wait = rx.poll_timeout().map_or(POLL_INTERVAL, |deadline| {
            deadline.saturating_duration_since(now()).min(POLL_INTERVAL)
        });
        match arrivals.recv_timeout(wait) {
            Ok(arrival) => replies.take(&mut rx, &mut output, &arrival, args.verbose),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if rx.poll_timeout().is_some_and(|deadline| deadline <= now()) {
            rx.handle_timeout(now());
        }
        step(&mut rx, &mut output, &mut replies)?;
    }
    for worker in workers {
        let _ = worker.join();
    }
    // What arrived before the workers stopped, then everything held.
    while let Ok(arrival) = arrivals.try_recv() {
        replies.take(&mut rx, &mut output, &arrival, args.verbose);
    }
    step(&mut rx, &mut output, &mut replies)?;
    let malformed = rx.stats().streams.malformed;
    rx.handle_timeout(Instant::MAX);
    step(&mut rx, &mut output, &mut replies)?;
    eprintln!(
        "ncrx: stopped: {} sources, {malformed} malformed datagrams, {} responses sent, {} failed",
        rx.stats().sources_created,
        replies.sent,
        replies.failed
    );
    output.report_counts();
    Ok(())
}

/// The sockets and where each sender's replies go.
struct Replies {
    sockets: Vec<(SocketAddr, UdpSocket)>,
    /// Sender (canonical) → (socket index, the address as that socket saw it).
    routes: HashMap<SocketAddr, (usize, SocketAddr)>,
    buf: Vec<u8>,
    sent: u64,
    failed: u64,
}

impl Replies {
    /// Feeds one arrival to the receiver and remembers how to answer its sender.
    fn take(
        &mut self,
        rx: &mut Receiver<SocketAddr>,
        output: &mut Output,
        arrival: &Arrival,
        verbose: bool,
    ) {
        let source = canonical(arrival.from);
        if self.routes.len() >= MAX_REPLY_ROUTES && !self.routes.contains_key(&source) {
            self.routes.clear();
        }
        self.routes.insert(source, (arrival.socket, arrival.from));
        feed(rx, output, arrival.at, source, &arrival.payload, verbose);
    }

    /// Sends every response packet the receiver has.
    fn send_all(&mut self, rx: &mut Receiver<SocketAddr>) {
        while let Some((destination, len)) = rx.poll_transmit(&mut self.buf) {
            let (index, to) = self.routes.get(&destination).copied().unwrap_or_else(|| {
                let index = self
                    .sockets
                    .iter()
                    .position(|(addr, _)| addr.is_ipv4() == destination.is_ipv4())
                    .unwrap_or(0);
                (index, destination)
            });
            match self.sockets[index].1.send_to(&self.buf[..len], to) {
                Ok(_) => self.sent += 1,
                Err(error) => {
                    self.failed += 1;
                    eprintln!("ncrx: cannot send a response to {destination}: {error}");
                }
            }
        }
    }
}

/// Writes out the events, sends the responses, flushes.
fn step(
    rx: &mut Receiver<SocketAddr>,
    output: &mut Output,
    replies: &mut Replies,
) -> Result<(), Failure> {
    while let Some((source, event)) = rx.poll_event() {
        output.event(source, &event)?;
    }
    replies.send_all(rx);
    output.flush()
}

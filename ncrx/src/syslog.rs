//! `ncrx listen --syslog tcp://HOST:PORT` (or `udp://`): every record forwarded as an
//! RFC 5424 message, into the log pipeline a fleet already runs (rsyslog, syslog-ng, and
//! from them files, Kafka, Elasticsearch).
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME kernel - MSGID [ncrx@32473 source=.. seq=.. ts_usec=..][dict@32473 KEY=..] MSG
//! ```
//!
//! - PRI: the record's facility × 8 + level (a facility over 23, which syslog does not have,
//!   as `user`, the facility then in structured data); TIMESTAMP: when ncrx received it; HOSTNAME: the
//!   sender's name (`--hosts`, `--resolve`) or address; APP-NAME `kernel`.
//! - MSGID: `-` for a record, `lost`, `incomplete`, `restart` or `plain` for the others.
//! - Structured data: `ncrx@32473` (32473 is the private enterprise number RFC 5612 sets
//!   aside for documentation) with the source, seq, ts_usec, flag and caller, and
//!   `dict@32473` with the dictionary, userdata and sysdata lines.
//! - TCP frames are octet-counted (RFC 6587: `LENGTH SP MESSAGE`); over UDP each message is
//!   one datagram.
//!
//! The listener threads hand over their messages a batch at a time. One forwarding thread
//! owns the connection: it reconnects with backoff (100 ms doubling to 5 s) and keeps what
//! waits in memory up to `--syslog-buffer` bytes; past it the oldest batches go, counted. A
//! TCP peer that closes (a restart) may not have read what was written just before: after a
//! reconnect the batches written in the last [`REPLAY`] are sent again, so a restart costs
//! duplicates, not records.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The structured-data ID of ncrx's own fields.
pub(crate) const SD_ID: &str = "ncrx@32473";
/// The structured-data ID of the record's dictionary, userdata and sysdata.
pub(crate) const SD_DICT: &str = "dict@32473";
/// After a reconnect, batches written within this before the connection broke are sent
/// again.
pub(crate) const REPLAY: Duration = Duration::from_secs(2);
/// Backoff between connection attempts: from the first to the last, doubling.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A UDP collector's refusals, and lost connections, are said at most this often ([`Throttle`]).
const REFUSED_SAID: Duration = Duration::from_secs(60);
/// Batches handed over and not yet taken by the forwarding thread, at most.
const HANDOFF: usize = 1024;
/// The longest message sent over UDP (rsyslog's default maximum is 8 KiB).
const UDP_MAX: usize = 8192;

/// Where to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) tcp: bool,
    /// `HOST:PORT`, resolved at each connection.
    pub(crate) address: String,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let (tcp, address) = if let Some(rest) = url.strip_prefix("tcp://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("udp://") {
            (false, rest)
        } else {
            return Err(format!(
                "{url}: expected tcp://HOST:PORT or udp://HOST:PORT"
            ));
        };
        let port_ok = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!(
                "{url}: expected tcp://HOST:PORT or udp://HOST:PORT"
            ));
        }
        Ok(Target {
            tcp,
            address: address.to_owned(),
        })
    }
}

/// Messages gathered by a listener thread: octet-counted frames.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) frames: Vec<u8>,
    pub(crate) messages: u64,
}

/// What the forwarding thread did.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) sent: AtomicU64,
    /// Messages dropped: the buffer was full (or the hand-over queue was).
    pub(crate) dropped: AtomicU64,
    pub(crate) resent: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) connected: AtomicBool,
}

/// The listener threads' side of the forwarder.
#[derive(Clone)]
pub(crate) struct Forwarder {
    handoff: SyncSender<Batch>,
    pub(crate) stats: Arc<Stats>,
}

impl Forwarder {
    /// Hands a batch over; when the forwarding thread is that far behind, the batch is
    /// dropped and counted.
    pub(crate) fn send(&self, batch: Batch) {
        if batch.messages == 0 {
            return;
        }
        let messages = batch.messages;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.handoff.try_send(batch)
        {
            self.stats.dropped.fetch_add(messages, Ordering::Relaxed);
        }
    }
}

/// Starts the forwarding thread. It ends when every [`Forwarder`] is gone and what it holds
/// is sent, or `linger` after that when the peer does not take it.
pub(crate) fn start(
    target: Target,
    buffer: usize,
    linger: Duration,
) -> (Forwarder, JoinHandle<()>) {
    let (handoff, batches) = mpsc::sync_channel(HANDOFF);
    let stats = Arc::new(Stats::default());
    let thread_stats = Arc::clone(&stats);
    let handle = thread::spawn(move || {
        Forwarding {
            target,
            buffer,
            linger,
            stats: thread_stats,
            pending: VecDeque::new(),
            pending_bytes: 0,
            written: VecDeque::new(),
            connection: None,
            backoff: BACKOFF_FIRST,
            next_attempt: Instant::now(),
            warned: false,
            refused_said: Throttle::default(),
            lost_said: Throttle::default(),
        }
        .run(&batches);
    });
    (Forwarder { handoff, stats }, handle)
}

enum Connection {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

struct Forwarding {
    target: Target,
    buffer: usize,
    linger: Duration,
    stats: Arc<Stats>,
    pending: VecDeque<Batch>,
    pending_bytes: usize,
    /// Batches written on the current connection within [`REPLAY`], oldest first.
    written: VecDeque<(Instant, Batch)>,
    connection: Option<Connection>,
    backoff: Duration,
    next_attempt: Instant,
    warned: bool,
    /// A UDP collector's refusals (port unreachable), said at most once a minute.
    refused_said: Throttle,
    /// Lost connections, said at most once a minute (a collector that accepts and closes
    /// would otherwise fill stderr).
    lost_said: Throttle,
}

impl Forwarding {
    fn run(mut self, batches: &Receiver<Batch>) {
        let mut closing: Option<Instant> = None;
        loop {
            let wait = if self.pending.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            match batches.recv_timeout(wait) {
                Ok(batch) => self.queue(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    closing.get_or_insert_with(Instant::now);
                }
            }
            while let Ok(batch) = batches.try_recv() {
                self.queue(batch);
            }
            if let Some(since) = closing {
                if self.pending.is_empty() || since.elapsed() >= self.linger {
                    break;
                }
            }
            if self.pending.is_empty() {
                self.check_peer();
                continue;
            }
            if self.connection.is_none() && !self.connect() {
                thread::sleep(Duration::from_millis(20).min(self.linger));
                continue;
            }
            self.write_front();
        }
        let left: u64 = self.pending.iter().map(|b| b.messages).sum();
        self.stats.dropped.fetch_add(left, Ordering::Relaxed);
    }

    /// Queues a batch, dropping the oldest ones past the buffer bound.
    fn queue(&mut self, batch: Batch) {
        self.pending_bytes += batch.frames.len();
        self.pending.push_back(batch);
        while self.pending_bytes > self.buffer && self.pending.len() > 1 {
            if let Some(old) = self.pending.pop_front() {
                self.pending_bytes -= old.frames.len();
                self.stats
                    .dropped
                    .fetch_add(old.messages, Ordering::Relaxed);
            }
        }
    }

    fn connect(&mut self) -> bool {
        if Instant::now() < self.next_attempt {
            return false;
        }
        match self.open() {
            Ok(connection) => {
                self.connection = Some(connection);
                self.stats.connections.fetch_add(1, Ordering::Relaxed);
                self.stats.connected.store(true, Ordering::Relaxed);
                self.backoff = BACKOFF_FIRST;
                if self.warned {
                    eprintln!("ncrx: syslog: connected to {} again", self.target.address);
                    self.warned = false;
                }
                true
            }
            Err(error) => {
                if !self.warned {
                    eprintln!(
                        "ncrx: syslog: cannot reach {}: {error}; retrying with backoff, \
                         keeping up to {} bytes",
                        self.target.address, self.buffer
                    );
                    self.warned = true;
                }
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                false
            }
        }
    }

    fn open(&self) -> io::Result<Connection> {
        let addrs: Vec<SocketAddr> = self.target.address.to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            if self.target.tcp {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(stream) => {
                        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
                        stream.set_nodelay(true)?;
                        return Ok(Connection::Tcp(stream));
                    }
                    Err(error) => last = error,
                }
            } else {
                let local: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().map_err(io::Error::other)?
                } else {
                    "[::]:0".parse().map_err(io::Error::other)?
                };
                let socket = UdpSocket::bind(local)?;
                socket.connect(addr)?;
                return Ok(Connection::Udp(socket));
            }
        }
        Err(last)
    }

    /// Notices a TCP peer that closed while nothing was to be sent.
    fn check_peer(&mut self) {
        if let Some(Connection::Tcp(stream)) = &self.connection {
            let mut byte = [0u8; 1];
            let _ = stream.set_nonblocking(true);
            // A collector sends nothing: end of stream or an error means it went away.
            let closed = match (&*stream).read(&mut byte) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            };
            let _ = stream.set_nonblocking(false);
            if closed {
                self.broken(&io::Error::from(io::ErrorKind::ConnectionReset));
            }
        }
        let now = Instant::now();
        while self
            .written
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > REPLAY)
        {
            self.written.pop_front();
        }
    }

    fn write_front(&mut self) {
        self.check_peer();
        let Some(connection) = &mut self.connection else {
            return;
        };
        let Some(batch) = self.pending.pop_front() else {
            return;
        };
        self.pending_bytes -= batch.frames.len();
        let result = match connection {
            Connection::Tcp(stream) => stream.write_all(&batch.frames).map(|()| 0),
            Connection::Udp(socket) => send_datagrams(socket, &batch.frames),
        };
        match result {
            Ok(refused) => {
                if refused > 0 {
                    self.refused(refused);
                }
                self.stats.sent.fetch_add(
                    batch.messages - refused.min(batch.messages),
                    Ordering::Relaxed,
                );
                if self.target.tcp {
                    self.written.push_back((Instant::now(), batch));
                }
            }
            Err(error) => {
                self.pending_bytes += batch.frames.len();
                self.pending.push_front(batch);
                self.broken(&error);
            }
        }
    }

    /// A UDP collector refused `messages` (its port is closed: ICMP port unreachable): they
    /// are counted dropped, and said at most once a minute, not once a message. Nothing is
    /// reconnected, as UDP has no connection to lose.
    fn refused(&mut self, messages: u64) {
        self.stats.dropped.fetch_add(messages, Ordering::Relaxed);
        if let Some(count) = self.refused_said.note(messages) {
            eprintln!(
                "ncrx: syslog: {} refuses datagrams (port unreachable: is the collector \
                 running?): {count} messages dropped",
                self.target.address,
            );
        }
    }

    /// The connection broke: what was written in the last [`REPLAY`] goes again, first.
    fn broken(&mut self, error: &io::Error) {
        self.connection = None;
        self.stats.connected.store(false, Ordering::Relaxed);
        // Said within the minute: counted, said with the next.
        if let Some(lost) = self.lost_said.note(1) {
            let also = if lost > 1 {
                format!(" ({} more times since the last message)", lost - 1)
            } else {
                String::new()
            };
            eprintln!(
                "ncrx: syslog: connection to {} lost ({error}){also}; reconnecting",
                self.target.address
            );
            // Its reconnection is said too.
            self.warned = true;
        }
        while let Some((_, batch)) = self.written.pop_back() {
            self.stats
                .resent
                .fetch_add(batch.messages, Ordering::Relaxed);
            self.stats.sent.fetch_sub(batch.messages, Ordering::Relaxed);
            self.pending_bytes += batch.frames.len();
            self.pending.push_front(batch);
        }
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

/// Says something at most once every [`REFUSED_SAID`], with how many times it happened since
/// it was last said.
#[derive(Default)]
struct Throttle {
    /// When it was last said, and how many times it happened since.
    said: Option<(Instant, u64)>,
}

impl Throttle {
    /// It happened `times` more: `Some` with the count to say (these and those unsaid since
    /// the last time) when it is to be said now.
    fn note(&mut self, times: u64) -> Option<u64> {
        let now = Instant::now();
        match &mut self.said {
            Some((said, unsaid)) if now.duration_since(*said) < REFUSED_SAID => {
                *unsaid += times;
                None
            }
            _ => {
                let unsaid = self.said.map_or(0, |(_, unsaid)| unsaid);
                self.said = Some((now, 0));
                Some(unsaid + times)
            }
        }
    }
}

/// Sends each octet-counted frame of `frames` as one datagram; how many the collector
/// refused (a send that reports the port unreachable, from an earlier datagram's ICMP: the
/// datagrams keep going, as the collector may be back for the next).
fn send_datagrams(socket: &UdpSocket, mut frames: &[u8]) -> io::Result<u64> {
    let mut refused = 0;
    while let Some(space) = frames.iter().position(|&b| b == b' ') {
        let len: usize = std::str::from_utf8(&frames[..space])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| io::Error::other("bad frame"))?;
        let end = (space + 1 + len).min(frames.len());
        let message = &frames[space + 1..end];
        match socket.send(&message[..message.len().min(UDP_MAX)]) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => refused += 1,
            Err(error) => return Err(error),
        }
        frames = &frames[end..];
    }
    Ok(refused)
}

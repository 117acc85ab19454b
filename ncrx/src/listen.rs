//! `ncrx listen`: the UDP receiver, `ncrx_core::Receiver` driven with real time.
//!
//! Each thread owns its sockets (one per bound address, `SO_REUSEPORT` when there are several
//! threads, so that the kernel shards senders over them), its receiver and its output. It
//! reads a batch of datagrams per system call, feeds them to the receiver, writes the events
//! into a buffer, sends the receiver's responses from the socket the sender's datagrams came
//! to, and writes the buffer when the sockets have nothing more to give, when it is full, and
//! at least every [`FLUSH_INTERVAL`]. The output (standard output, or the files of `--dir`)
//! is written by a thread of the sink's, which takes whole batches (see
//! `sink::WRITER_BATCHES`); the files' lines are handed to it at most every 100 ms (see
//! `sink::DIR_LINGER`). Nothing is allocated or handed to another thread per datagram.
//! While datagrams keep coming, it sleeps [`COALESCE`] between reads rather than waking for
//! each datagram.
//!
//! SIGINT or SIGTERM stops it: each thread reads what its sockets still hold, flushes what
//! its receiver holds (holes come out as `lost`), writes it out and reports; the totals go to
//! stderr. When an output is stalled (a reader that does not read), the listener does not
//! wait for it beyond [`GIVE_UP_AFTER`]: what it holds is given up, the threads report, and
//! it says how many bytes could not be written and exits with the file-error code (at
//! [`STOP_GRACE`] it exits even without the threads' reports).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use ncrx_core::{Receiver, ReceiverConfig};
use netconsole_proto::param::DEFAULT_REMOTE_PORT as DEFAULT_PORT;
use netpoll_frame::Instant;

use crate::cli::{ListenArgs, Preset};
use crate::error::{EXIT_IO, Failure, Outcome};
use crate::metrics::{self, Board, PUBLISH_INTERVAL, Snapshot};
use crate::names::{Names, read_hosts};
use crate::net::{self, Batch, Listening, canonical};
use crate::sink::{Counts, Sink, SinkOptions, show_malformed};
use crate::syslog::{self, Forwarder};

/// Output is written at least this often while datagrams keep coming.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// The longest a thread waits for its sockets before looking at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// While datagrams keep coming, a thread that emptied its sockets sleeps this long before
/// reading again, instead of waking for the next datagram: one wake-up then reads up to a
/// millisecond's worth (at 100,000 datagrams/s, 100 instead of the 19–22 measured), so that the
/// system calls of a wake-up (`recvmmsg`, `write`, `poll`) are shared by more datagrams. A
/// record waits at most this much longer. Shortened to what the socket's buffer holds
/// (see [`coalesce_for`]).
const COALESCE: Duration = Duration::from_millis(1);
/// Below this, a sleep saves nothing over waiting for the sockets.
const COALESCE_MIN: Duration = Duration::from_micros(200);
/// The fastest a socket is taken to fill, for the sleep to leave half its buffer free: a
/// margin of three times the fastest loopback flood measured here (about 660,000 a second).
const FILL_RATE: u64 = 2_000_000;
/// What the kernel charges a socket's buffer for one datagram, taken large: a 101-byte
/// datagram was measured at 832 bytes; a longer one costs more.
const CHARGE: u64 = 2048;
/// After a stop, how long the threads may take to write what they hold; past it, what a
/// stalled output holds is given up, and each thread reports without it.
const GIVE_UP_AFTER: Duration = Duration::from_millis(650);
/// After a stop, how long the threads may take to end at all (a thread that has not by
/// then cannot report: the listener says what it could not write and exits).
const STOP_GRACE: Duration = Duration::from_millis(950);
/// After a stop, how long a thread goes on reading what its sockets had queued.
const DRAIN_LIMIT: Duration = Duration::from_millis(300);
/// How often each thread looks at the kernel's drop counter of its sockets.
const DROPS_CHECK: Duration = Duration::from_secs(60);
/// Per-source counts are printed at stop up to this many sources (all of them with -v).
const PER_SOURCE_SHOWN: usize = 64;
/// At the stop, how long syslog messages still held may take to reach the collector.
const SYSLOG_LINGER: Duration = Duration::from_secs(2);
/// Threads by default at most.
const MAX_DEFAULT_THREADS: usize = 16;
/// The largest response packet (`netconsole_proto::MAX_RESPONSE` fits).
const RESPONSE_BUFFER: usize = 2048;

/// What the threads share: the stop flag, and what the main thread needs to know about a
/// thread that does not finish.
struct Shared {
    stop: Arc<AtomicBool>,
    /// Set by SIGHUP, taken by the main thread.
    hangup: Arc<AtomicBool>,
    /// Set by SIGUSR1 or SIGUSR2, taken by the main thread (which says they are ignored).
    user: Arc<AtomicBool>,
    /// Counts the SIGHUPs taken: a thread that sees it change reopens its files.
    reopen: AtomicUsize,
    /// Bytes handed to a write that has not returned yet.
    writing: AtomicUsize,
    /// Threads that finished.
    finished: AtomicUsize,
    /// The stop gives up on a stalled output ([`GIVE_UP_AFTER`]; the sinks'
    /// `SinkOptions::give_up`).
    give_up: Arc<AtomicBool>,
    /// Each thread's loop count: the watchdog is fed only while every thread goes round.
    beats: Vec<AtomicUsize>,
}

/// What a thread reports when it ends.
#[derive(Debug, Default)]
struct Report {
    counts: Counts,
    per_source: Vec<(SocketAddr, Counts)>,
    sources: usize,
    sources_created: u64,
    sources_evicted: u64,
    refused: u64,
    malformed: u64,
    oversized: u64,
    responses_sent: u64,
    /// Of the responses sent, those that asked for nothing (acks).
    acks_sent: u64,
    responses_failed: u64,
    port_unreachable: u64,
    kernel_drops: u64,
    /// The receiver's stream counters (what it dropped, by reason).
    streams: ncrx_core::StreamStats,
    /// Some socket's drop counter could not be read (see [`Listening::kernel_drops`]).
    drops_unknown: bool,
    lines_not_written: u64,
    /// Bytes of lines given up at stop: the output was stalled.
    given_up: usize,
    write_errors: u64,
    /// The last write error, with the file (or standard output) it happened to.
    last_write_error: Option<String>,
}

impl Report {
    fn add(&mut self, other: Report) {
        self.counts += other.counts;
        self.per_source.extend(other.per_source);
        self.sources += other.sources;
        self.sources_created += other.sources_created;
        self.sources_evicted += other.sources_evicted;
        self.refused += other.refused;
        self.malformed += other.malformed;
        self.oversized += other.oversized;
        self.responses_sent += other.responses_sent;
        self.acks_sent += other.acks_sent;
        self.responses_failed += other.responses_failed;
        self.port_unreachable += other.port_unreachable;
        self.kernel_drops += other.kernel_drops;
        self.streams += other.streams;
        self.drops_unknown |= other.drops_unknown;
        self.lines_not_written += other.lines_not_written;
        self.given_up += other.given_up;
        self.write_errors += other.write_errors;
        self.last_write_error = other.last_write_error.or(self.last_write_error.take());
    }
}

/// The default thread count: one per CPU this process may run on (its affinity mask and
/// cgroup quota, as the standard library reads them), at most [`MAX_DEFAULT_THREADS`].
fn default_threads() -> usize {
    thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MAX_DEFAULT_THREADS)
}

/// How long a thread may sleep between reads while datagrams keep coming: [`COALESCE`], or
/// less when its smallest socket buffer would be half full sooner at [`FILL_RATE`]; zero
/// (wait for the sockets instead) below [`COALESCE_MIN`], as with the kernel's default
/// buffer of 208 KiB.
fn coalesce_for(smallest_buffer: usize) -> Duration {
    let datagrams = u64::try_from(smallest_buffer).unwrap_or(u64::MAX) / CHARGE;
    let half_full = Duration::from_micros((datagrams / 2).saturating_mul(1_000_000) / FILL_RATE);
    let sleep = half_full.min(COALESCE);
    if sleep < COALESCE_MIN {
        Duration::ZERO
    } else {
        sleep
    }
}

/// Binds every thread's sockets. The default is `[::]:6666` (IPv4 too), or `0.0.0.0:6666`
/// on a machine without IPv6. With several threads the addresses are first checked to be
/// free, so that the listener never joins another program's `SO_REUSEPORT` group.
/// Two `--bind` addresses that would take the same datagrams (the same address twice, or
/// one that an unspecified address of the same port takes too: `[::]` takes IPv4 as well),
/// and why.
fn overlapping(addrs: &[SocketAddr]) -> Option<(SocketAddr, SocketAddr, &'static str)> {
    let takes = |wide: SocketAddr, other: SocketAddr| {
        let (wide_ip, other_ip) = (wide.ip().to_canonical(), other.ip().to_canonical());
        if wide_ip == other_ip {
            Some("the same address twice")
        } else if wide.is_ipv6() && wide_ip.is_unspecified() {
            Some("[::] receives on every IPv6 and IPv4 address")
        } else if wide_ip.is_unspecified() && other_ip.is_ipv4() {
            Some("0.0.0.0 receives on every IPv4 address")
        } else {
            None
        }
    };
    for (i, &a) in addrs.iter().enumerate() {
        for &b in &addrs[i + 1..] {
            if a.port() != b.port() || a.port() == 0 {
                continue;
            }
            if let Some(why) = takes(a, b).or_else(|| takes(b, a)) {
                return Some((a, b, why));
            }
        }
    }
    None
}

fn bind_shards(args: &ListenArgs, threads: usize) -> Result<Vec<Vec<Listening>>, Failure> {
    if let Some((a, b, why)) = overlapping(&args.bind) {
        return Err(Failure::Usage(format!(
            "--bind {a} and --bind {b} overlap ({why}): give only one"
        )));
    }
    let mut addrs = args.bind.clone();
    if addrs.is_empty() {
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), DEFAULT_PORT);
        let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT);
        let ipv6 =
            std::net::UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0)).is_ok();
        addrs.push(if ipv6 { any6 } else { any4 });
    }
    if threads > 1 {
        for &addr in &addrs {
            if let Some(source) = net::in_use(addr) {
                return Err(Failure::Socket {
                    what: "another program already receives on",
                    addr,
                    source,
                });
            }
        }
    }
    let mut shards: Vec<Vec<Listening>> = Vec::with_capacity(threads);
    for _ in 0..threads {
        let mut sockets = Vec::with_capacity(addrs.len());
        for &addr in &addrs {
            sockets.push(net::bind_listener(addr, threads > 1, args.recv_buffer)?);
        }
        // Port 0: the port the kernel chose for the first thread is every thread's.
        addrs = sockets.iter().map(|s| s.addr).collect();
        shards.push(sockets);
    }
    Ok(shards)
}

/// The sockets of each thread, and how many threads: those systemd passed (socket
/// activation) to one thread, else [`bind_shards`].
fn shards(args: &ListenArgs, threads: usize) -> Result<(usize, Vec<Vec<Listening>>), Failure> {
    Ok(match activated_sockets(args)? {
        Some(sockets) => {
            if !args.bind.is_empty() {
                eprintln!(
                    "ncrx: socket activation: --bind is ignored, the {} sockets systemd passed \
                     are received on",
                    sockets.len()
                );
            }
            if threads > 1 {
                eprintln!(
                    "ncrx: socket activation: one thread receives on the {} sockets passed \
                     (run without ncrx.socket for one thread per CPU)",
                    sockets.len()
                );
            }
            (1, vec![sockets])
        }
        None => (threads, bind_shards(args, threads)?),
    })
}

/// The sinks' options: format, files, times, names (the hosts file read now).
fn sink_options(args: &ListenArgs) -> Result<SinkOptions, Failure> {
    let hosts = match &args.hosts {
        Some(path) => read_hosts(path)?,
        None => std::collections::HashMap::new(),
    };
    Ok(SinkOptions {
        format: args.format,
        format_limit: args.format_limit,
        dir: args.dir.clone(),
        time: args.time,
        stamp: true,
        names: Names::new(hosts, args.resolve),
        syslog: args.syslog.is_some(),
        max_open_files: crate::sink::MAX_OPEN_FILES,
        keep_going: true,
        give_up: Arc::default(),
    })
}

/// The soft limit on open files raised to the hard limit, as daemons do: the soft limit of
/// 1,024 that shells and systemd units give by default guards `select()`, which ncrx does not
/// use. Returns the soft limit in force (`None` when it cannot be read).
fn raise_open_files_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    // The kernel refuses more than `fs.nr_open` (1,048,576 by default), even as a hard
    // limit of "unlimited".
    let wanted = hard.min(1 << 20);
    if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
        return Some(wanted);
    }
    Some(soft)
}

/// Raises the open-file limit and gives each thread its share for `--dir` files, saying so
/// when the share is less than [`FEW_OPEN_FILES`].
fn share_open_files(options: &mut SinkOptions, shards: &[Vec<Listening>], threads: usize) {
    let Some(limit) = raise_open_files_limit() else {
        return;
    };
    let sockets = shards.iter().map(Vec::len).sum();
    options.max_open_files = files_per_thread(limit, threads, sockets);
    if options.dir.is_some() && options.max_open_files < FEW_OPEN_FILES {
        eprintln!(
            "ncrx: the open-file limit is {limit}: each thread keeps at most {} files of --dir \
             open, and opens and closes the others as their lines come (raise it with \
             `ulimit -n` or LimitNOFILE=)",
            options.max_open_files
        );
    }
}

/// Below this many `--dir` files kept open per thread, the listener says that the open-file
/// limit is low.
const FEW_OPEN_FILES: usize = 256;

/// File descriptors set aside from the open-file limit for all but `--dir` files: standard
/// streams, metrics and syslog connections, name lookups.
const RESERVED_FDS: u64 = 128;

/// How many `--dir` files each of `threads` threads may keep open under an open-file limit
/// of `limit` with `sockets` sockets bound: [`MAX_OPEN_FILES`](crate::sink::MAX_OPEN_FILES),
/// or an equal share of what the sockets and [`RESERVED_FDS`] leave; at least 1.
fn files_per_thread(limit: u64, threads: usize, sockets: usize) -> usize {
    let left = limit
        .saturating_sub(RESERVED_FDS)
        .saturating_sub(u64::try_from(sockets).unwrap_or(u64::MAX));
    let share = left / u64::try_from(threads.max(1)).unwrap_or(u64::MAX);
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(1, crate::sink::MAX_OPEN_FILES)
}

/// Says where the listener receives, and whether the kernel granted the buffer asked for.
fn announce(shards: &[Vec<Listening>], threads: usize, asked: usize) {
    for socket in &shards[0] {
        if threads > 1 {
            eprintln!(
                "ncrx: receiving netconsole on {} ({threads} threads, SO_REUSEPORT)",
                socket.addr
            );
        } else {
            eprintln!("ncrx: receiving netconsole on {}", socket.addr);
        }
    }
    // Linux reports twice what it grants (the other half is its own bookkeeping).
    let granted = shards[0][0].granted_buffer / 2;
    if granted < asked {
        eprintln!(
            "ncrx: the kernel granted a receive buffer of {granted} bytes of the {asked} asked \
             for; bursts may be dropped: raise it with `sysctl -w net.core.rmem_max={asked}` \
             (or run with CAP_NET_ADMIN)"
        );
    }
    // Every thread's sockets are alike: the first one's say whether drops can be counted.
    if let Some(error) = shards[0].iter().find_map(|s| s.kernel_drops().err()) {
        eprintln!(
            "ncrx: cannot read the kernel's drop counter ({error}): datagrams the kernel drops \
             will not be counted (it is read from /proc/self/net: /proc must be mounted)"
        );
    }
}

/// The sockets systemd passed (`LISTEN_FDS`, socket activation), set up as the listener
/// sets up its own; `None` when it passed none.
fn activated_sockets(args: &ListenArgs) -> Result<Option<Vec<Listening>>, Failure> {
    let mut passed = listenfd::ListenFd::from_env();
    if passed.len() == 0 {
        return Ok(None);
    }
    let mut sockets = Vec::with_capacity(passed.len());
    for index in 0..passed.len() {
        let socket = passed
            .take_udp_socket(index)
            .map_err(|source| Failure::Stream {
                what: "LISTEN_FDS: a socket passed is not a UDP socket",
                source,
            })?;
        if let Some(socket) = socket {
            sockets.push(net::adopt(socket, args.recv_buffer)?);
        }
    }
    if sockets.is_empty() {
        return Ok(None);
    }
    Ok(Some(sockets))
}

/// `ncrx listen`.
pub(crate) fn run(args: &ListenArgs) -> Result<Outcome, Failure> {
    let threads = args
        .threads
        .map_or_else(default_threads, usize::from)
        .max(1);
    let mut sink_options = sink_options(args)?;
    // Checked before any socket is bound, so that a bad directory fails fast (without a
    // thread for standard output: this sink writes nothing).
    Sink::new(&SinkOptions {
        keep_going: false,
        ..sink_options.clone()
    })?;
    let (threads, shards) = shards(args, threads)?;
    let stop = net::stop_on_signals()?;
    announce(&shards, threads, args.recv_buffer);
    share_open_files(&mut sink_options, &shards, threads);
    let hangup = net::flag_on_signals(&[signal_hook::consts::SIGHUP])?;
    // Another daemon's rotation signal (SIGUSR1 is common) must not end the listener
    // without a flush: it is said and ignored.
    let user = net::flag_on_signals(&[signal_hook::consts::SIGUSR1, signal_hook::consts::SIGUSR2])?;
    let shared = Arc::new(Shared {
        stop,
        hangup,
        user,
        reopen: AtomicUsize::new(0),
        writing: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        give_up: Arc::clone(&sink_options.give_up),
        beats: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
    });
    let board = match args.metrics {
        Some(addr) => {
            let board = Board::new(threads, args.metrics_sources);
            let bound = metrics::serve(addr, board.clone())?;
            eprintln!("ncrx: metrics on http://{bound}/metrics");
            Some(board)
        }
        None => None,
    };
    let forwarding = args.syslog.clone().map(|target| {
        eprintln!(
            "ncrx: forwarding to syslog at {} ({})",
            target.address,
            if target.tcp {
                "TCP, octet counting"
            } else {
                "UDP"
            }
        );
        syslog::start(target, args.syslog_buffer, SYSLOG_LINGER)
    });
    let forwarder = forwarding.as_ref().map(|(f, _)| f.clone());
    if let (Some(board), Some(forwarder)) = (&board, &forwarder) {
        board.show_syslog(Arc::clone(&forwarder.stats));
    }
    let epoch = StdInstant::now();
    let max_sources = usize::try_from(args.max_sources)
        .unwrap_or(usize::MAX)
        .div_ceil(threads);
    let mut handles = Vec::with_capacity(threads);
    for (index, sockets) in shards.into_iter().enumerate() {
        let shard = ShardStart {
            index,
            threads,
            args: args.clone(),
            sink_options: sink_options.clone(),
            sockets,
            max_sources,
            epoch,
            forwarder: forwarder.clone(),
            board: board.clone(),
        };
        handles.push(spawn_shard(shard, Arc::clone(&shared)));
    }
    // systemd (Type=notify): ready once every socket is bound and the threads run.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    supervise(&shared, threads, args.dir.is_some());
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let (mut total, failure) = join_shards(handles);
    drop(forwarder);
    finish_forwarding(forwarding);
    print_report(&mut total, args.verbose);
    if total.given_up > 0 {
        eprintln!(
            "ncrx: stopped: the output is stalled ({}): {} bytes could not be written (the \
             counts above are what was received)",
            stalled_why(args.dir.is_some()),
            total.given_up
        );
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(Outcome {
            unwritten: total.given_up > 0,
            ..Outcome::default()
        }),
    }
}

/// Lets the syslog forwarder send what it holds (for at most [`SYSLOG_LINGER`]), and says
/// what it did.
fn finish_forwarding(forwarding: Option<(Forwarder, thread::JoinHandle<()>)>) {
    let Some((forwarder, thread)) = forwarding else {
        return;
    };
    let stats = Arc::clone(&forwarder.stats);
    drop(forwarder);
    let _ = thread.join();
    eprintln!(
        "ncrx: syslog: {} messages sent ({} sent again after a reconnect), {} dropped \
         (buffer full, collector away at stop, or refused over UDP), {} connections",
        stats.sent.load(Ordering::Relaxed),
        stats.resent.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
        stats.connections.load(Ordering::Relaxed)
    );
}

/// A receiving thread: its report and a failure of its output, or the failure that kept
/// it from starting.
type ShardHandle = thread::JoinHandle<Result<(Report, Option<Failure>), Failure>>;

/// What a receiving thread starts with.
struct ShardStart {
    index: usize,
    threads: usize,
    args: ListenArgs,
    sink_options: SinkOptions,
    sockets: Vec<Listening>,
    max_sources: usize,
    epoch: StdInstant,
    forwarder: Option<Forwarder>,
    board: Option<Board>,
}

/// Starts a receiving thread. It runs until the stop, then keeps its sockets open until
/// every thread has stopped reading: closed sooner, the kernel would hand their senders to
/// the threads still reading, as new senders (the supervisor gives up waiting after
/// [`STOP_GRACE`]).
fn spawn_shard(start: ShardStart, shared: Arc<Shared>) -> ShardHandle {
    thread::spawn(move || {
        let board = start.board.map(|board| (start.index, board));
        let result = Shard::new(
            &start.args,
            &start.sink_options,
            start.sockets,
            start.max_sources,
            start.epoch,
            start.forwarder,
        )
        .map(|mut shard| (shard.run(start.index, &shared, board.as_ref()), shard));
        if result.is_err() {
            shared.stop.store(true, Ordering::Relaxed);
        }
        shared.finished.fetch_add(1, Ordering::Release);
        let deadline = StdInstant::now() + STOP_GRACE;
        while shared.finished.load(Ordering::Acquire) < start.threads
            && StdInstant::now() < deadline
        {
            thread::sleep(Duration::from_millis(5));
        }
        result.map(|(outcome, _sockets_closed_now)| outcome)
    })
}

/// The threads' reports summed, and the first failure of one.
fn join_shards(handles: Vec<ShardHandle>) -> (Report, Option<Failure>) {
    let mut total = Report::default();
    let mut failure = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok((report, failed))) => {
                total.add(report);
                failure = failure.or(failed);
            }
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(_) => {
                failure = failure.or(Some(Failure::Usage("a listener thread failed".into())));
            }
        }
    }
    (total, failure)
}

/// Passes SIGHUP on to the threads until a stop or until every thread ended, then gives them
/// [`STOP_GRACE`] to finish; when one cannot (its output is stalled), says so and exits.
fn supervise(shared: &Shared, threads: usize, files: bool) {
    let mut watchdog_usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
        .then(|| Duration::from_micros(watchdog_usec / 2));
    let mut fed = StdInstant::now();
    let mut beats: Vec<usize> = vec![0; threads];
    while !shared.stop.load(Ordering::Relaxed) && shared.finished.load(Ordering::Acquire) < threads
    {
        if let Some(interval) = watchdog {
            // Fed at half its timeout, and only when every thread went round its loop
            // since the last time (a thread stuck on a stalled output stops the feeding,
            // and systemd restarts the service).
            if fed.elapsed() >= interval {
                let now: Vec<usize> = shared
                    .beats
                    .iter()
                    .map(|b| b.load(Ordering::Acquire))
                    .collect();
                if now.iter().zip(&beats).all(|(now, before)| now != before) {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    fed = StdInstant::now();
                    beats = now;
                }
            }
        }
        if shared.hangup.swap(false, Ordering::AcqRel) {
            shared.reopen.fetch_add(1, Ordering::AcqRel);
            if files {
                eprintln!("ncrx: SIGHUP: reopening the files");
            }
        }
        if shared.user.swap(false, Ordering::AcqRel) {
            eprintln!(
                "ncrx: SIGUSR1/SIGUSR2 ignored (SIGHUP reopens the --dir files; SIGTERM stops)"
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let stopped = StdInstant::now();
    let all_done = || shared.finished.load(Ordering::Acquire) >= threads;
    while !all_done() && stopped.elapsed() < STOP_GRACE {
        if stopped.elapsed() >= GIVE_UP_AFTER {
            shared.give_up.store(true, Ordering::Release);
        }
        thread::sleep(Duration::from_millis(5));
    }
    if !all_done() {
        eprintln!(
            "ncrx: stopped: the output is stalled ({}): {} bytes could not be written; {} \
             of {threads} threads could not finish",
            stalled_why(files),
            shared.writing.load(Ordering::Acquire),
            threads - shared.finished.load(Ordering::Acquire)
        );
        std::process::exit(i32::from(EXIT_IO));
    }
}

/// Why an output does not take its lines, as the stop says it.
fn stalled_why(files: bool) -> &'static str {
    if files {
        "a --dir file takes nothing: a hung disk or network file system"
    } else {
        "nobody reads it"
    }
}

fn print_report(total: &mut Report, verbose: bool) {
    let drops = if total.drops_unknown {
        "kernel drops unknown".to_owned()
    } else {
        format!("{} kernel drops", total.kernel_drops)
    };
    eprintln!(
        "ncrx: stopped: {} sources, {} malformed datagrams, {} responses sent, {} failed, \
         {} refused datagrams, {} oversized, {drops}, {} port unreachable",
        total.sources_created,
        total.malformed,
        total.responses_sent,
        total.responses_failed,
        total.refused,
        total.oversized,
        total.port_unreachable
    );
    eprintln!(
        "ncrx: all sources: {} ({} tracked at stop, {} evicted)",
        total.counts, total.sources, total.sources_evicted
    );
    let dropped = total.streams;
    let records = metrics::dropped_records(&dropped);
    if records + dropped.duplicates > 0 {
        eprintln!(
            "ncrx: records dropped: {} ({} claiming a sequence number already taken, {} too \
             far behind to tell from records delivered, {} ahead of a stream that went on, {} \
             stale emergency, {} over the byte budget); {} duplicates ignored",
            records,
            dropped.conflicts,
            dropped.forgotten,
            dropped.out_of_order_dropped,
            dropped.stale_emergency,
            dropped.over_budget,
            dropped.duplicates
        );
    }
    if total.lines_not_written > 0 {
        eprintln!(
            "ncrx: {} lines could not be written ({} write errors; last: {})",
            total.lines_not_written,
            total.write_errors,
            total.last_write_error.as_deref().unwrap_or("none")
        );
    }
    if verbose || total.per_source.len() <= PER_SOURCE_SHOWN {
        total.per_source.sort_by_key(|(source, _)| *source);
        for (source, counts) in &total.per_source {
            eprintln!("ncrx: {source}: {counts}");
        }
    } else {
        eprintln!(
            "ncrx: ({} sources: per-source counts with -v)",
            total.per_source.len()
        );
    }
}

/// One thread's sockets, receiver and output.
struct Shard {
    sockets: Vec<Listening>,
    rx: Receiver<SocketAddr>,
    sink: Sink,
    batch: Batch,
    /// See [`coalesce_for`].
    coalesce: Duration,
    response: Vec<u8>,
    errors: Vec<bool>,
    epoch: StdInstant,
    verbose: bool,
    report: Report,
    drops_checked: StdInstant,
    drops_seen: u64,
    forwarder: Option<Forwarder>,
}

impl Shard {
    fn new(
        args: &ListenArgs,
        sink_options: &SinkOptions,
        sockets: Vec<Listening>,
        max_sources: usize,
        epoch: StdInstant,
        forwarder: Option<Forwarder>,
    ) -> Result<Self, Failure> {
        let mut config = match args.preset {
            Preset::Default => ReceiverConfig::default(),
            Preset::Libncrx => ReceiverConfig::libncrx(),
            Preset::Netconsd => ReceiverConfig::daemon(),
        };
        if let Some(ms) = args.ack {
            config.stream.ack_interval = Some(Duration::from_millis(ms));
        }
        config.max_sources = max_sources;
        let errors = vec![false; sockets.len()];
        let smallest = sockets.iter().map(|s| s.granted_buffer).min();
        let coalesce = coalesce_for(smallest.unwrap_or(0));
        Ok(Shard {
            sockets,
            coalesce,
            rx: Receiver::new(config),
            sink: Sink::new(sink_options)?,
            batch: Batch::new(),
            response: vec![0; RESPONSE_BUFFER],
            errors,
            epoch,
            verbose: args.verbose,
            report: Report::default(),
            drops_checked: StdInstant::now(),
            drops_seen: 0,
            forwarder,
        })
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Receives until the stop, then drains, flushes and reports. A failure of standard
    /// output (its reader is gone) stops the listener; this thread's report is still given,
    /// with the failure.
    fn run(
        &mut self,
        index: usize,
        shared: &Shared,
        board: Option<&(usize, Board)>,
    ) -> (Report, Option<Failure>) {
        let mut failed = None;
        let mut last_flush = StdInstant::now();
        let mut last_publish = StdInstant::now();
        let mut stopped_at: Option<StdInstant> = None;
        let mut reopened = shared.reopen.load(Ordering::Acquire);
        if let Some(board) = board {
            // The page is right from the start (whether drops can be counted, for one).
            self.publish(board);
        }
        loop {
            shared.beats[index].fetch_add(1, Ordering::Release);
            let reopen = shared.reopen.load(Ordering::Acquire);
            if reopen != reopened {
                reopened = reopen;
                if let Err(error) = self.flush(shared) {
                    failed = Some(error);
                    break;
                }
                self.sink.reopen();
            }
            if stopped_at.is_none() && shared.stop.load(Ordering::Relaxed) {
                stopped_at = Some(StdInstant::now());
            }
            // Idle: every socket gave less than a full batch, so it had nothing more queued
            // (not asking again saves a call that would only say so).
            let (idle, received) = self.receive_all();
            self.run_timers();
            self.send_responses();
            if idle || self.sink.full() || last_flush.elapsed() >= FLUSH_INTERVAL {
                if let Err(error) = self.flush(shared) {
                    failed = Some(error);
                    break;
                }
                last_flush = StdInstant::now();
                self.sink.report_write_errors(last_flush);
                self.check_drops(false);
                if let Some(board) = board {
                    if last_publish.elapsed() >= PUBLISH_INTERVAL {
                        last_publish = StdInstant::now();
                        self.publish(board);
                    }
                }
            }
            if let Some(at) = stopped_at {
                // Given up on a stalled output, what the sockets still hold stays unread:
                // the thread has only the time to report.
                if idle || at.elapsed() >= DRAIN_LIMIT || shared.give_up.load(Ordering::Acquire) {
                    break;
                }
                continue;
            }
            if idle && received > 0 && !self.coalesce.is_zero() {
                // Datagrams are coming: let some more arrive (see COALESCE).
                thread::sleep(self.coalesce);
            } else if idle {
                self.wait_for_datagrams();
            }
        }
        // Everything held comes out: holes as lost, sources flushed.
        let malformed = self.rx.stats().streams.malformed;
        self.collect_malformed();
        let sources = self.rx.sources();
        self.sink.set_received(std::time::SystemTime::now());
        let evicted = self.rx.stats().sources_evicted;
        self.sink.closing();
        self.rx.handle_timeout(Instant::MAX);
        let sink = &mut self.sink;
        self.rx
            .drain_events(|source, event| sink.event(*source, &event));
        self.send_responses();
        if failed.is_none() {
            failed = self.flush(shared).err();
        }
        // Standard output's thread writes what it was handed (the supervisor says how much
        // is left if it cannot), then says whether its reader went away meanwhile.
        let unwritten = self.sink.unwritten();
        shared.writing.fetch_add(unwritten, Ordering::AcqRel);
        self.sink.finish();
        shared.writing.fetch_sub(unwritten, Ordering::AcqRel);
        if failed.is_none() {
            failed = self.sink.flush().err();
        }
        // What standard output could not take by now is counted as not written.
        self.sink.discard();
        if failed.is_some() {
            // One thread's output failing (standard output closed) stops the others too.
            shared.stop.store(true, Ordering::Relaxed);
        }
        self.check_drops(true);
        let stats = self.rx.stats();
        let mut report = std::mem::take(&mut self.report);
        report.counts = self.sink.totals();
        report.counts.malformed = malformed;
        report.per_source = self.sink.per_source().map(|(s, c)| (*s, *c)).collect();
        report.sources = sources;
        report.sources_created = stats.sources_created;
        report.streams = stats.streams;
        report.sources_evicted = evicted;
        report.refused = stats.refused;
        report.malformed = malformed;
        report.lines_not_written = self.sink.write_errors.lines_lost;
        report.given_up = self.sink.given_up();
        report.write_errors = self.sink.write_errors.errors;
        report.last_write_error = self.sink.write_errors.last().map(str::to_owned);
        (report, failed)
    }

    /// Waits until a socket has a datagram, the receiver's next timer, or the sink's lines
    /// are due, for at most [`POLL_INTERVAL`].
    fn wait_for_datagrams(&mut self) {
        let wait = self.rx.poll_timeout().map_or(POLL_INTERVAL, |deadline| {
            deadline
                .saturating_duration_since(self.now())
                .min(POLL_INTERVAL)
        });
        // Lines the sink holds back (see `sink::DIR_LINGER`) are written in time.
        let wait = self
            .sink
            .flush_due()
            .map_or(wait, |due| wait.min(due.max(Duration::from_millis(1))));
        if net::wait(&self.sockets, wait, &mut self.errors).is_err() {
            thread::sleep(Duration::from_millis(1));
        }
        self.take_errors();
    }

    /// The counters as the metrics show them.
    fn snapshot(&self, per_source: usize) -> Snapshot {
        let stats = self.rx.stats();
        let mut counts = self.sink.totals();
        counts.malformed = stats.streams.malformed;
        let mut busiest = if per_source > 0 {
            self.sink.busiest(per_source)
        } else {
            Vec::new()
        };
        for (_, source, counts) in &mut busiest {
            if let Some(stream) = self.rx.stream(source) {
                counts.malformed = stream.stats().malformed;
            }
        }
        Snapshot {
            counts,
            datagrams: stats.streams.datagrams + stats.streams.plain + stats.streams.malformed,
            refused: stats.refused,
            oversized: self.report.oversized,
            responses: self.report.responses_sent,
            acks: self.report.acks_sent,
            responses_failed: self.report.responses_failed,
            requested: stats.streams.requested,
            port_unreachable: self.report.port_unreachable,
            kernel_drops: self.report.kernel_drops,
            streams: stats.streams,
            kernel_drops_unknown: self.report.drops_unknown,
            write_errors: self.sink.write_errors.errors,
            lines_not_written: self.sink.write_errors.lines_lost,
            sources: self.rx.sources() as u64,
            sources_evicted: stats.sources_evicted,
            held_bytes: self.rx.held_bytes() as u64,
            unwritten_bytes: self.sink.unwritten() as u64,
            oldest_hole_seconds: self.rx.oldest_hole().map_or(0.0, |found| {
                self.now().saturating_duration_since(found).as_secs_f64()
            }),
            per_source: busiest,
        }
    }

    /// The kernel's drop counters of this thread's sockets, summed, and whether one could
    /// not be read.
    fn drops_now(&self) -> (u64, bool) {
        let mut unknown = false;
        let drops = self
            .sockets
            .iter()
            .filter_map(|socket| socket.kernel_drops().map_err(|_| unknown = true).ok())
            .sum();
        (drops, unknown)
    }

    /// Publishes this thread's counters (slot `index` of the board).
    fn publish(&mut self, (index, board): &(usize, Board)) {
        self.take_drops();
        board.publish(*index, self.snapshot(board.per_source));
    }

    /// Puts the kernel's drop counters in the report.
    fn take_drops(&mut self) {
        (self.report.kernel_drops, self.report.drops_unknown) = self.drops_now();
    }

    /// Per-source malformed counts, taken from the receiver's streams before they are
    /// flushed (a source's stream counts what it could not parse).
    fn collect_malformed(&mut self) {
        for (source, stream) in self.rx.streams() {
            self.sink.set_malformed(*source, stream.stats().malformed);
        }
    }

    /// One batch from each socket: whether none filled a whole batch (the sockets had
    /// nothing more queued when read), and how many datagrams came.
    fn receive_all(&mut self) -> (bool, usize) {
        let mut drained = true;
        let mut received = 0;
        for index in 0..self.sockets.len() {
            match self.batch.receive(&self.sockets[index]) {
                Ok(0) => continue,
                Ok(n) => {
                    received += n;
                    drained &= n < net::BATCH;
                }
                Err(error) => {
                    // An ICMP error queued for the socket is reported by the next receive.
                    if error.kind() != std::io::ErrorKind::ConnectionRefused {
                        eprintln!(
                            "ncrx: receive error on {}: {error}",
                            self.sockets[index].addr
                        );
                    }
                    self.errors[index] = true;
                    continue;
                }
            }
            let now = self.now();
            self.sink.set_received(std::time::SystemTime::now());
            let sink = &mut self.sink;
            for (received, bytes) in self.batch.datagrams() {
                let source = canonical(received.from);
                if received.cut {
                    // Only an IPv6 jumbogram is longer than a slot: not taken, as it cannot
                    // be taken whole.
                    self.report.oversized += 1;
                    if self.verbose {
                        eprintln!(
                            "ncrx: a datagram from {source} longer than {} bytes was dropped",
                            net::SLOT
                        );
                    }
                    continue;
                }
                if self.verbose {
                    feed_verbose(&mut self.rx, sink, now, source, bytes);
                } else {
                    self.rx
                        .handle_datagram_and_drain(now, &source, bytes, |source, event| {
                            sink.event(*source, &event);
                        });
                }
            }
        }
        if self.errors.iter().any(|&e| e) {
            self.take_errors();
        }
        (drained, received)
    }

    /// Reads the sockets' ICMP errors: a sender whose port is closed.
    fn take_errors(&mut self) {
        for index in 0..self.sockets.len() {
            if !std::mem::take(&mut self.errors[index]) {
                continue;
            }
            let now = self.now();
            let rx = &mut self.rx;
            let (unreachable, _other) = net::take_errors(&self.sockets[index].socket, |source| {
                // Nothing more is sent to it until it shows it answers (ncrx-core).
                rx.handle_unreachable(now, &source);
            });
            self.report.port_unreachable += unreachable;
        }
    }

    fn run_timers(&mut self) {
        let now = self.now();
        if self
            .rx
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            self.sink.set_received(std::time::SystemTime::now());
            self.rx.handle_timeout(now);
            let sink = &mut self.sink;
            self.rx
                .drain_events(|source, event| sink.event(*source, &event));
        }
    }

    /// Sends every response the receiver has, from the socket of the sender's address
    /// family (the first one that has it).
    fn send_responses(&mut self) {
        while let Some((destination, len)) = self.rx.poll_transmit(&mut self.response) {
            let index = self
                .sockets
                .iter()
                .position(|s| {
                    s.addr.is_ipv6() && s.addr.ip().is_unspecified()
                        || s.addr.is_ipv4() == destination.is_ipv4()
                })
                .unwrap_or(0);
            let bytes = &self.response[..len];
            let mut sent = net::send_from(&self.sockets[index], bytes, destination);
            if sent
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
            {
                // An ICMP error for an earlier response (to another sender, maybe) is
                // reported by the next send: this one did not go. The error queue says whom
                // it was about; the send is tried once more.
                self.errors[index] = true;
                sent = net::send_from(&self.sockets[index], bytes, destination);
            }
            match sent {
                Ok(_) => {
                    self.report.responses_sent += 1;
                    // An ack asks for nothing; a retransmission request names numbers.
                    let asks = netconsole_proto::Response::parse(bytes)
                        .is_ok_and(|response| response.missing().next().is_some());
                    if !asks {
                        self.report.acks_sent += 1;
                    }
                }
                Err(error) => {
                    self.report.responses_failed += 1;
                    if self.verbose {
                        eprintln!("ncrx: cannot send a response to {destination}: {error}");
                    }
                }
            }
        }
        if self.errors.iter().any(|&e| e) {
            self.take_errors();
        }
    }

    fn flush(&mut self, shared: &Shared) -> Result<(), Failure> {
        if let (Some(forwarder), Some(batch)) = (&self.forwarder, self.sink.take_syslog()) {
            forwarder.send(batch);
        }
        // With standard output's queue full, `flush` waits for its thread: what it has not
        // written counts then too.
        let pending = self.sink.unwritten();
        shared.writing.fetch_add(pending, Ordering::AcqRel);
        let result = self.sink.flush();
        shared.writing.fetch_sub(pending, Ordering::AcqRel);
        result
    }

    /// Reports new kernel drops at most once a minute (and at stop).
    fn check_drops(&mut self, at_stop: bool) {
        if !at_stop && self.drops_checked.elapsed() < DROPS_CHECK {
            return;
        }
        self.drops_checked = StdInstant::now();
        self.take_drops();
        let drops = self.report.kernel_drops;
        if drops > self.drops_seen && !at_stop {
            eprintln!(
                "ncrx: the kernel dropped {} datagrams for this listener in the last minute \
                 (its receive buffer was full)",
                drops - self.drops_seen
            );
        }
        self.drops_seen = drops;
    }
}

/// [`Receiver::handle_datagram_and_drain`], showing on stderr a datagram the receiver found
/// malformed, or a sender it refused.
fn feed_verbose(
    rx: &mut Receiver<SocketAddr>,
    sink: &mut Sink,
    now: Instant,
    source: SocketAddr,
    payload: &[u8],
) {
    let malformed = |rx: &Receiver<SocketAddr>| rx.stream(&source).map(|s| s.stats().malformed);
    let before = malformed(rx);
    rx.handle_datagram_and_drain(now, &source, payload, |source, event| {
        sink.event(*source, &event);
    });
    match (before, malformed(rx)) {
        (_, None) => eprintln!(
            "ncrx: refused a datagram from {source}: {} senders are tracked already",
            rx.sources()
        ),
        (before, Some(after)) if after > before.unwrap_or(0) => show_malformed(source, payload),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_that_take_the_same_datagrams_overlap() {
        let addrs = |list: &[&str]| -> Vec<SocketAddr> {
            list.iter().map(|a| a.parse().unwrap()).collect()
        };
        let why = |list: &[&str]| overlapping(&addrs(list)).map(|(_, _, why)| why);
        assert_eq!(
            why(&["[::]:6666", "0.0.0.0:6666"]),
            Some("[::] receives on every IPv6 and IPv4 address")
        );
        assert_eq!(
            why(&["10.0.0.1:6666", "[::]:6666"]),
            Some("[::] receives on every IPv6 and IPv4 address")
        );
        assert_eq!(
            why(&["10.0.0.1:6666", "0.0.0.0:6666"]),
            Some("0.0.0.0 receives on every IPv4 address")
        );
        assert_eq!(
            why(&["[::1]:1", "127.0.0.1:2", "[::1]:1"]),
            Some("the same address twice")
        );
        assert_eq!(
            why(&["[::ffff:10.0.0.1]:6666", "10.0.0.1:6666"]),
            Some("the same address twice")
        );
        // Other ports, other addresses, an IPv6 address beside 0.0.0.0, ports the kernel picks.
        assert_eq!(why(&["0.0.0.0:6666", "[::]:6667"]), None);
        assert_eq!(
            why(&["127.0.0.1:6666", "[::1]:6666", "10.0.0.1:6666"]),
            None
        );
        assert_eq!(why(&["0.0.0.0:6666", "[::1]:6666"]), None);
        assert_eq!(why(&["127.0.0.1:0", "127.0.0.1:0"]), None);
    }

    #[test]
    fn dir_files_share_the_open_file_limit() {
        use crate::sink::MAX_OPEN_FILES;
        // The usual hard limits leave every thread its full count.
        assert_eq!(files_per_thread(524_288, 16, 32), MAX_OPEN_FILES);
        // A soft limit of 1,024 that could not be raised: 4 threads, 4 sockets, 128 set
        // aside, (1024 - 128 - 4) / 4 = 223 each, which together fit.
        assert_eq!(files_per_thread(1024, 4, 4), 223);
        assert!(4 * 223 + 4 + RESERVED_FDS as usize <= 1024);
        assert_eq!(files_per_thread(1024, 1, 2), 894);
        assert_eq!(files_per_thread(1 << 20, 1, 2), MAX_OPEN_FILES);
        assert_eq!(files_per_thread(300, 4, 4), 42);
        // Below what is set aside, one file each (and a full table closes files to open).
        assert_eq!(files_per_thread(64, 2, 2), 1);
        assert_eq!(files_per_thread(0, 0, 0), 1);
    }

    #[test]
    fn the_sleep_between_reads_leaves_half_the_buffer_free() {
        // What ncrx asks for (8 MiB, read back doubled): 4,096 datagrams to half full, 2 ms
        // at the fill rate, so the whole millisecond.
        assert_eq!(coalesce_for(16 << 20), COALESCE);
        // 2 MiB granted: 512 datagrams to half full, 256 µs.
        assert_eq!(coalesce_for(2 << 20), Duration::from_micros(256));
        // The kernel's default buffer (212,992 asked, 425,984 granted): 104 datagrams, 52 µs,
        // too short to be worth it: wait for the sockets instead.
        assert_eq!(coalesce_for(425_984), Duration::ZERO);
        assert_eq!(coalesce_for(0), Duration::ZERO);
        assert_eq!(coalesce_for(usize::MAX), COALESCE);
    }
}

//! `ncrx oops decode|listen`: netoops dumps out of a capture or off the network, rebuilt by
//! `netoops_proto::Collector`.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime};

use netoops_proto::{
    Collector, CollectorConfig, Dump, DumpEncoder, DumpMeta, DumpStatus, DumpType, Event, PtRegs,
    USER_BLOB_LEN, V3Fields, X86ArchData, netoops_frame_config,
};
use netpoll_frame::{FrameBuilder, Instant};
use pcap_file::pcap::{PcapPacket, PcapWriter};

use crate::capture;
use crate::cli::{Format, OopsDecodeArgs, OopsDumpType, OopsListenArgs, OopsOutput, OopsSendArgs};
use crate::error::{Failure, Outcome};
use crate::json::{self, JsonOops};

/// How often blocked receivers look at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The largest datagram read from a socket.
const MAX_DATAGRAM: usize = 65_536;

/// Writes dumps: a file each under `--dir`, a line each on stdout.
struct DumpSink<'a> {
    output: &'a OopsOutput,
    complete: u64,
    partial: u64,
    /// A listener's: a dump file that cannot be written (a full disk, no permission),
    /// or a stdout line that cannot (but for a closed pipe), is counted and said on stderr,
    /// and the listener goes on. A capture's decode stops at the first.
    keep_going: bool,
    /// Dumps whose file could not be written (`keep_going`).
    files_not_written: u64,
    /// Lines that standard output did not take (`keep_going`).
    lines_not_written: u64,
}

/// The most numbered names tried for one dump before giving up.
const MAX_SUFFIX: u32 = 100_000;

/// Creates a new file for a dump: `DIR/<source>-<dump_id>.log`, or when that exists (a dump
/// of the same source and id written before, in this run or an earlier one)
/// `<source>-<dump_id>.2.log`, `.3.log`, ...: a dump file is never overwritten. A directory
/// removed since the start is made again.
fn create_dump_file(
    dir: &Path,
    source: SocketAddr,
    dump_id: u16,
) -> Result<(PathBuf, File), Failure> {
    let mut path = dir.join(format!("{source}-{dump_id}.log"));
    let mut made_dir = false;
    let mut n = 2;
    while n <= MAX_SUFFIX + 1 {
        match File::options().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                path = dir.join(format!("{source}-{dump_id}.{n}.log"));
                n += 1;
            }
            // The directory was removed since the start: made again once.
            Err(error)
                if error.kind() == io::ErrorKind::NotFound
                    && !made_dir
                    && fs::create_dir_all(dir).is_ok() =>
            {
                made_dir = true;
            }
            Err(source) => {
                return Err(Failure::File {
                    what: "cannot create",
                    path,
                    source,
                });
            }
        }
    }
    Err(Failure::File {
        what: "cannot create",
        path,
        source: io::Error::other(format!(
            "{MAX_SUFFIX} files of this dump exist already; move them away"
        )),
    })
}

impl<'a> DumpSink<'a> {
    fn new(output: &'a OopsOutput, keep_going: bool) -> Result<Self, Failure> {
        if let Some(dir) = &output.dir {
            fs::create_dir_all(dir).map_err(|source| Failure::File {
                what: "cannot create directory",
                path: dir.clone(),
                source,
            })?;
        }
        Ok(DumpSink {
            output,
            complete: 0,
            partial: 0,
            keep_going,
            files_not_written: 0,
            lines_not_written: 0,
        })
    }

    /// Takes every event out of `collector`; `status_override` names dumps flushed at the end.
    fn drain(
        &mut self,
        collector: &mut Collector<SocketAddr>,
        status_override: Option<&'static str>,
    ) -> Result<(), Failure> {
        while let Some(event) = collector.poll_event() {
            match event {
                Event::Dump(dump) => self.write(&dump, status_override)?,
                other => eprintln!("ncrx: unknown collector event: {other:?}"),
            }
        }
        Ok(())
    }

    fn write(
        &mut self,
        dump: &Dump<SocketAddr>,
        status_override: Option<&'static str>,
    ) -> Result<(), Failure> {
        let status = status_override.unwrap_or(match dump.status() {
            DumpStatus::Complete => "complete",
            DumpStatus::TimedOut => "timed_out",
            DumpStatus::Evicted => "evicted",
            _ => "partial",
        });
        if dump.is_complete() {
            self.complete += 1;
        } else {
            self.partial += 1;
        }
        let path = match &self.output.dir {
            Some(dir) => match write_dump_file(dir, dump, status) {
                Ok(path) => Some(path),
                Err(failure) if self.keep_going => {
                    self.files_not_written += 1;
                    eprintln!(
                        "ncrx: dump {} from {}: {failure}; its file is not kept",
                        dump.meta().dump_id,
                        dump.source()
                    );
                    None
                }
                Err(failure) => return Err(failure),
            },
            None => None,
        };
        let meta = dump.meta();
        let line = match self.output.format {
            Format::Json => json::to_line(&json::JsonLine::Oops(JsonOops {
                source: dump.source().to_string(),
                dump_id: meta.dump_id,
                version: meta.version().number(),
                dump_type: meta.dump_type.number(),
                kernel_version: String::from_utf8_lossy(meta.kernel_release()).into_owned(),
                complete: dump.is_complete(),
                status: status.to_owned(),
                packets: dump.packet_count(),
                missing: dump.missing().to_vec(),
                bytes: dump.log().len(),
                file: path.as_ref().map(|p| p.display().to_string()),
            })),
            Format::Text => {
                let mut line = format!(
                    "oops {} dump_id={} v{} type={} kernel={} {} packets={} missing={} bytes={}",
                    dump.source(),
                    meta.dump_id,
                    meta.version().number(),
                    meta.dump_type.number(),
                    String::from_utf8_lossy(meta.kernel_release()),
                    status,
                    dump.packet_count(),
                    missing_list(dump.missing()),
                    dump.log().len(),
                );
                if let Some(path) = &path {
                    let _ = write!(line, " file={}", path.display());
                }
                line
            }
        };
        let mut stdout = io::stdout().lock();
        match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
            Err(error) if self.keep_going && error.kind() != io::ErrorKind::BrokenPipe => {
                self.lines_not_written += 1;
                eprintln!(
                    "ncrx: dump {} from {}: cannot write its line to standard output: {error}",
                    meta.dump_id,
                    dump.source()
                );
                Ok(())
            }
            written => written.map_err(|source| Failure::Stream {
                what: "cannot write to standard output",
                source,
            }),
        }
    }
}

/// Writes `dump` into a new file under `dir` (see [`create_dump_file`]): its metadata,
/// then its log, synced. A file that could not be written whole is removed.
fn write_dump_file(dir: &Path, dump: &Dump<SocketAddr>, status: &str) -> Result<PathBuf, Failure> {
    let (path, mut file) = create_dump_file(dir, *dump.source(), dump.meta().dump_id)?;
    let mut contents = metadata(dump, status).into_bytes();
    contents.push(b'\n');
    contents.extend_from_slice(dump.log());
    match file.write_all(&contents).and_then(|()| file.sync_data()) {
        Ok(()) => Ok(path),
        Err(source) => {
            drop(file);
            let _ = fs::remove_file(&path);
            Err(Failure::File {
                what: "cannot write",
                path,
                source,
            })
        }
    }
}

fn missing_list(missing: &[u32]) -> String {
    if missing.is_empty() {
        return "-".to_owned();
    }
    let numbers: Vec<String> = missing.iter().map(u32::to_string).collect();
    numbers.join(",")
}

/// The metadata block at the top of a dump file, one `key: value` line each.
fn metadata(dump: &Dump<SocketAddr>, status: &str) -> String {
    let meta = dump.meta();
    let mut text = String::new();
    let _ = writeln!(text, "source: {}", dump.source());
    let _ = writeln!(text, "dump_id: {}", meta.dump_id);
    let _ = writeln!(text, "version: {}", meta.version().number());
    let _ = writeln!(text, "dump_type: {}", meta.dump_type.number());
    let _ = writeln!(text, "arch: {}", meta.arch);
    let _ = writeln!(
        text,
        "kernel_version: {}",
        String::from_utf8_lossy(meta.kernel_release())
    );
    if let Some(v3) = &meta.v3 {
        let _ = writeln!(text, "boot_id: {}", v3.boot_id);
        let blob_end = v3
            .user_blob
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1);
        let _ = writeln!(
            text,
            "user_blob: {}",
            v3.user_blob[..blob_end].escape_ascii()
        );
        let arch = &v3.arch_data;
        let _ = writeln!(
            text,
            "cpu: vendor {} family {} model {} stepping {}",
            arch.vendor, arch.family, arch.model, arch.stepping
        );
    }
    let _ = writeln!(text, "status: {status}");
    let _ = writeln!(text, "packet_count: {}", dump.packet_count());
    let _ = writeln!(text, "missing: {}", missing_list(dump.missing()));
    let _ = writeln!(text, "bytes: {}", dump.log().len());
    text
}

/// Feeds one datagram; a datagram the collector refuses is reported and counted.
fn feed(
    collector: &mut Collector<SocketAddr>,
    now: Instant,
    source: SocketAddr,
    payload: &[u8],
    rejected: &mut u64,
) {
    if let Err(error) = collector.handle_datagram(now, source, payload) {
        *rejected += 1;
        eprintln!("ncrx: datagram from {source} refused: {error}");
    }
}

/// `ncrx oops decode`.
pub(crate) fn decode(args: &OopsDecodeArgs) -> Result<Outcome, Failure> {
    let mut sink = DumpSink::new(&args.output, false)?;
    let mut collector = Collector::new(CollectorConfig::default());
    let mut rejected = 0;
    let summary = capture::read_capture(
        &args.file,
        &args.port,
        args.checksums.policy(),
        |datagram| {
            let frame = &datagram.frame;
            feed(
                &mut collector,
                datagram.time,
                frame.source(),
                frame.payload(),
                &mut rejected,
            );
            sink.drain(&mut collector, None)
        },
        // Each dump's line is written (and flushed) as it comes out.
        || Ok(()),
    )?;
    // The capture has ended: time runs out for every dump still open.
    collector.handle_timeout(Instant::MAX);
    sink.drain(&mut collector, Some("end_of_input"))?;
    eprintln!(
        "ncrx: {}: {}; {} dumps complete, {} partial, {} datagrams refused",
        capture::display_name(&args.file),
        summary.describe(&args.port),
        sink.complete,
        sink.partial,
        rejected
    );
    Ok(Outcome {
        bad_data: summary.bad_frames > 0 || rejected > 0,
        truncated: summary.truncated.is_some(),
        unwritten: false,
    })
}

/// The receive buffer asked for: a burst of a few thousand datagrams waits there instead of
/// being dropped.
const RECEIVE_BUFFER: usize = 4 << 20;

/// `ncrx oops listen`.
pub(crate) fn listen(args: &OopsListenArgs) -> Result<Outcome, Failure> {
    // The directory is made before any socket is bound: a bad one fails at once.
    let mut sink = DumpSink::new(&args.output, true)?;
    let mut sockets = Vec::new();
    for &addr in &args.bind {
        let socket = crate::net::bind_listener(addr, false, RECEIVE_BUFFER)?.socket;
        socket
            .set_nonblocking(false)
            .and_then(|()| socket.set_read_timeout(Some(POLL_INTERVAL)))
            .map_err(|source| Failure::Socket {
                what: "cannot set a timeout on",
                addr,
                source,
            })?;
        sockets.push((addr, socket));
    }
    let stop = crate::net::stop_on_signals()?;
    // A SIGHUP meant for `ncrx listen` (logrotate's) must not end a collector mid-dump.
    let _ignored = crate::net::flag_on_signals(&[signal_hook::consts::SIGHUP])?;
    let start = std::time::Instant::now();
    let now =
        move || Instant::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    // Bounded like `listen`'s: a collector that falls behind leaves the datagrams to the
    // kernel's socket buffer (which drops and counts), not to this process's memory.
    let (sender, receiver) = mpsc::sync_channel::<(SocketAddr, Vec<u8>, Instant)>(1024);
    let mut workers = Vec::new();
    for (addr, socket) in sockets {
        eprintln!("ncrx: collecting netoops dumps on {addr}");
        let sender = sender.clone();
        let stop = Arc::clone(&stop);
        workers.push(thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            crate::net::receive_until_stopped(&socket, addr, &stop, &mut buf, |from, payload| {
                sender.send((from, payload.to_vec(), now())).is_ok()
            });
        }));
    }
    drop(sender);

    let mut collector = Collector::new(CollectorConfig::default());
    let mut rejected = 0;
    while !stop.load(Ordering::Relaxed) {
        let wait = collector.poll_timeout().map_or(POLL_INTERVAL, |deadline| {
            deadline.saturating_duration_since(now()).min(POLL_INTERVAL)
        });
        match receiver.recv_timeout(wait) {
            Ok((from, payload, at)) => feed(&mut collector, at, from, &payload, &mut rejected),
            Err(mpsc::RecvTimeoutError::Timeout) => collector.handle_timeout(now()),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        sink.drain(&mut collector, None)?;
    }
    for worker in workers {
        let _ = worker.join();
    }
    // Whatever arrived before the workers stopped.
    while let Ok((from, payload, at)) = receiver.try_recv() {
        feed(&mut collector, at, from, &payload, &mut rejected);
    }
    sink.drain(&mut collector, None)?;
    collector.handle_timeout(Instant::MAX);
    sink.drain(&mut collector, Some("end_of_input"))?;
    let stats = collector.stats();
    eprintln!(
        "ncrx: stopped: {} datagrams, {} refused, {} duplicates, {} dumps complete, {} partial",
        stats.datagrams, rejected, stats.duplicates, sink.complete, sink.partial
    );
    if sink.files_not_written > 0 || sink.lines_not_written > 0 {
        eprintln!(
            "ncrx: {} dump files and {} lines could not be written (see above)",
            sink.files_not_written, sink.lines_not_written
        );
    }
    Ok(Outcome::default())
}

/// `ncrx oops send`: a dump encoded by `netoops_proto::DumpEncoder`, to UDP or into a pcap.
pub(crate) fn send(args: &OopsSendArgs) -> Result<Outcome, Failure> {
    let log = read_log(args.file.as_deref())?;
    if log.is_empty() {
        return Err(Failure::Usage(
            "the log is empty: netoops sends nothing for an empty log".into(),
        ));
    }
    let meta = dump_meta(args)?;
    let mut encoder = DumpEncoder::new(&meta, b"", &log)
        .map_err(|e| Failure::Usage(format!("cannot encode the dump: {e}")))?;
    let count = encoder.packet_count();
    if let Some(&bad) = args.lose.iter().find(|n| **n >= count) {
        return Err(Failure::Usage(format!(
            "--lose {bad}: the dump has packets 0 to {} only",
            count - 1
        )));
    }
    let passes = u32::from(args.passes);
    let mut sink = OopsSink::open(args)?;
    let mut packet = vec![0u8; encoder.packet_len()];
    let mut sent = 0u64;
    for index in 0.. {
        let Some(packet_no) = encoder.packet_no_at(index) else {
            break;
        };
        let pass = index as u32 / count;
        if pass >= passes {
            break;
        }
        if pass == 0 && args.lose.contains(&packet_no) {
            continue;
        }
        let len = encoder
            .write_packet(packet_no, &mut packet)
            .map_err(|e| Failure::Usage(format!("cannot encode packet {packet_no}: {e}")))?;
        sink.send(&packet[..len])?;
        sent += 1;
    }
    encoder.rewind();
    let destination = sink.finish()?;
    eprintln!(
        "ncrx: dump {} of {} log bytes: {count} packets, {passes} passes, {sent} datagrams {destination}",
        args.dump_id,
        log.len()
    );
    Ok(Outcome::default())
}

/// The log bytes: a file, or standard input.
fn read_log(file: Option<&Path>) -> Result<Vec<u8>, Failure> {
    match file {
        Some(path) if path.as_os_str() != "-" => fs::read(path).map_err(|source| Failure::File {
            what: "cannot read",
            path: path.to_owned(),
            source,
        }),
        _ => {
            let mut log = Vec::new();
            io::Read::read_to_end(&mut io::stdin(), &mut log).map_err(|source| {
                Failure::Stream {
                    what: "cannot read standard input",
                    source,
                }
            })?;
            Ok(log)
        }
    }
}

/// The dump's header fields from the command line.
fn dump_meta(args: &OopsSendArgs) -> Result<DumpMeta, Failure> {
    let release = match &args.release {
        Some(release) => release.clone(),
        None => fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| r.trim_end().to_owned())
            .map_err(|source| Failure::File {
                what: "cannot read the kernel release (give --release) from",
                path: PathBuf::from("/proc/sys/kernel/osrelease"),
                source,
            })?,
    };
    let dump_type = match args.dump_type {
        OopsDumpType::Oops => DumpType::PrintkBuffer,
        OopsDumpType::Soft => DumpType::PrintkBufferSoft,
    };
    if !args.v3 {
        return Ok(DumpMeta::v2(args.dump_id, dump_type, release.as_bytes()));
    }
    let mut user_blob = [0u8; USER_BLOB_LEN];
    let blob = args.user_blob.as_bytes();
    if blob.len() > USER_BLOB_LEN {
        return Err(Failure::Usage(format!(
            "--user-blob is {} bytes; the kernel keeps at most {USER_BLOB_LEN}",
            blob.len()
        )));
    }
    user_blob[..blob.len()].copy_from_slice(blob);
    let [vendor, family, model, stepping] = args.cpu;
    Ok(DumpMeta::v3(
        args.dump_id,
        dump_type,
        release.as_bytes(),
        V3Fields {
            boot_id: args.boot_id,
            user_blob,
            arch_data: X86ArchData {
                vendor,
                family,
                model,
                stepping,
                regs: PtRegs::ZERO_X86_64,
            },
        },
    ))
}

/// Where `oops send` puts the packets.
enum OopsSink {
    Udp {
        socket: UdpSocket,
        to: SocketAddr,
    },
    Pcap {
        path: PathBuf,
        writer: PcapWriter<io::BufWriter<File>>,
        builder: FrameBuilder,
        time: Duration,
        frame: Vec<u8>,
    },
}

impl OopsSink {
    fn open(args: &OopsSendArgs) -> Result<Self, Failure> {
        let to = args.target;
        if let Some(path) = &args.pcap {
            let Some(source) = args.source else {
                return Err(Failure::Usage(
                    "--pcap needs --source (the address the frames come from)".into(),
                ));
            };
            let mut config = netoops_frame_config(source.ip(), to.ip());
            config.source_port = source.port();
            config.destination_port = to.port();
            config.source_mac = args.source_mac;
            config.destination_mac = args.target_mac;
            let builder = FrameBuilder::new(&config)
                .map_err(|e| Failure::Usage(format!("--source {source} and --target {to}: {e}")))?;
            let file = File::create(path).map_err(|source| Failure::File {
                what: "cannot create",
                path: path.clone(),
                source,
            })?;
            let writer = PcapWriter::new(io::BufWriter::new(file))
                .map_err(|e| capture::pcap_write_failure(path, e))?;
            let time = match args.time {
                Some(seconds) => Duration::from_secs(seconds),
                None => SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            };
            return Ok(OopsSink::Pcap {
                path: path.clone(),
                writer,
                builder,
                time,
                frame: vec![0; 2048],
            });
        }
        let source = args.source.unwrap_or_else(|| {
            let ip = if to.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            SocketAddr::new(ip, netoops_proto::NETOOPS_PORT)
        });
        if source.is_ipv4() != to.is_ipv4() {
            return Err(Failure::Usage(format!(
                "--source {source} and --target {to} are not of the same IP version"
            )));
        }
        let socket = crate::net::bind_sender(source)?;
        Ok(OopsSink::Udp { socket, to })
    }

    fn send(&mut self, packet: &[u8]) -> Result<(), Failure> {
        match self {
            OopsSink::Udp { socket, to } => {
                socket
                    .send_to(packet, *to)
                    .map_err(|source| Failure::Socket {
                        what: "cannot send to",
                        addr: *to,
                        source,
                    })?;
            }
            OopsSink::Pcap {
                path,
                writer,
                builder,
                time,
                frame,
            } => {
                let len = builder
                    .build(packet, frame)
                    .map_err(|e| Failure::Usage(format!("cannot build a frame: {e}")))?;
                writer
                    .write_packet(&PcapPacket::new(*time, len as u32, &frame[..len]))
                    .map_err(|e| capture::pcap_write_failure(path, e))?;
                *time += Duration::from_millis(1);
            }
        }
        Ok(())
    }

    /// Flushes a pcap; says where the packets went.
    fn finish(self) -> Result<String, Failure> {
        match self {
            OopsSink::Udp { to, .. } => Ok(format!("sent to {to}")),
            OopsSink::Pcap { path, writer, .. } => {
                writer
                    .into_writer()
                    .flush()
                    .map_err(|source| Failure::File {
                        what: "cannot write",
                        path: path.clone(),
                        source,
                    })?;
                Ok(format!("written to {}", path.display()))
            }
        }
    }
}

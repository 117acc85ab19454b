//! `ncrx send`: the kernel's netconsole sender in user space.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::SystemTime;

use netconsole_proto::console::{ConsoleOptions, ConsoleRecord, format_console};
use netconsole_proto::format::{
    DictEntry, KmsgRecord, SendOptions, Sysdata, format_userdata, userdata_len,
};
use netconsole_proto::received::{ReceivedRecord, RecordError};
use netconsole_proto::{
    Body, ExtFragments, Header, MAX_PRINT_CHUNK, format_kmsg, plain_chunks, unescape,
};
use netpoll_frame::{FrameBuilder, FrameConfig, MacAddr};
use pcap_file::pcap::{PcapPacket, PcapWriter};

use crate::capture;
use crate::cli::{ConsoleArgs, InputFormat, OwnedTarget, SendArgs, SysdataField};
use crate::error::{Failure, Outcome};
use crate::input::KmsgRecords;
use crate::json::{JsonLine, JsonRecord};
use crate::net;

/// Where datagrams go: UDP sockets, or frames in a pcap file.
enum Sink {
    /// `--reliable`: whole messages go to the thread running the reliable senders.
    Reliable(mpsc::SyncSender<Vec<u8>>),
    Udp {
        /// Per target: the socket (shared by targets with the same local address) and the
        /// destination.
        sockets: Vec<(usize, SocketAddr)>,
        bound: Vec<(SocketAddr, UdpSocket)>,
    },
    Pcap {
        path: PathBuf,
        writer: PcapWriter<BufWriter<File>>,
        builders: Vec<FrameBuilder>,
        /// The machine-wide IPv4 id counter (shared by all targets, as the kernel's).
        ip_id: u16,
        frame: Vec<u8>,
    },
}

impl Sink {
    fn open(args: &SendArgs) -> Result<Self, Failure> {
        let targets = &args.target.targets;
        if let Some(path) = &args.pcap {
            let mut builders = Vec::new();
            for (index, target) in targets.iter().enumerate() {
                let Some(local_ip) = target.local_ip else {
                    return Err(Failure::Usage(format!(
                        "--pcap needs the source IP of target {} in --target (src-ip after '@')",
                        index + 1
                    )));
                };
                let mut config = FrameConfig::new(local_ip, target.remote_ip);
                config.source_mac = target.local_mac.unwrap_or(MacAddr::ZERO);
                config.destination_mac = target.remote_mac;
                config.source_port = target.local_port;
                config.destination_port = target.remote_port;
                let builder = FrameBuilder::new(&config)
                    .map_err(|e| Failure::Usage(format!("target {}: {e}", index + 1)))?;
                builders.push(builder);
            }
            let file = File::create(path).map_err(|source| Failure::File {
                what: "cannot create",
                path: path.clone(),
                source,
            })?;
            let writer = PcapWriter::new(BufWriter::new(file))
                .map_err(|e| capture::pcap_write_failure(path, e))?;
            return Ok(Sink::Pcap {
                path: path.clone(),
                writer,
                builders,
                ip_id: args.ip_id,
                frame: vec![0; 2048],
            });
        }
        let (bound, sockets) = bind_targets(targets)?;
        Ok(Sink::Udp { sockets, bound })
    }

    fn send(&mut self, target: usize, payload: &[u8]) -> Result<(), Failure> {
        match self {
            // Messages, not datagrams, go to the reliable senders (see `send_extended`).
            Sink::Reliable(_) => Ok(()),
            Sink::Udp { sockets, bound } => {
                let (socket, to) = sockets[target];
                bound[socket]
                    .1
                    .send_to(payload, to)
                    .map_err(|source| Failure::Socket {
                        what: "cannot send to",
                        addr: to,
                        source,
                    })?;
                Ok(())
            }
            Sink::Pcap {
                path,
                writer,
                builders,
                ip_id,
                frame,
            } => {
                let len = builders[target]
                    .build_with_ip_id(*ip_id, payload, frame)
                    .map_err(|e| Failure::Usage(format!("cannot build a frame: {e}")))?;
                *ip_id = ip_id.wrapping_add(1);
                let timestamp = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                let packet = PcapPacket::new(timestamp, len as u32, &frame[..len]);
                writer
                    .write_packet(&packet)
                    .map_err(|e| capture::pcap_write_failure(path, e))?;
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<(), Failure> {
        if let Sink::Pcap { path, writer, .. } = self {
            writer
                .into_writer()
                .flush()
                .map_err(|source| Failure::File {
                    what: "cannot write",
                    path,
                    source,
                })?;
        }
        Ok(())
    }
}

/// The local address a target sends from: its source IP, or the wildcard of the target's
/// address family, and its source port.
fn local_address(target: &OwnedTarget) -> SocketAddr {
    let ip = target.local_ip.unwrap_or(match target.remote_ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    SocketAddr::new(ip, target.local_port)
}

/// Sockets bound for sending, with their local address.
pub(crate) type BoundSockets = Vec<(SocketAddr, UdpSocket)>;

/// Binds one socket per distinct local address of `targets` (targets with the same source
/// address and port share it): the sockets, and per target its socket's index and
/// destination.
pub(crate) fn bind_targets(
    targets: &[OwnedTarget],
) -> Result<(BoundSockets, Vec<(usize, SocketAddr)>), Failure> {
    let mut bound: Vec<(SocketAddr, UdpSocket)> = Vec::new();
    let mut sockets = Vec::new();
    for target in targets {
        let local = local_address(target);
        let index = if let Some(index) = bound.iter().position(|(addr, _)| *addr == local) {
            index
        } else {
            bound.push((local, net::bind_sender(local)?));
            bound.len() - 1
        };
        sockets.push((index, SocketAddr::new(target.remote_ip, target.remote_port)));
    }
    Ok((bound, sockets))
}

/// This machine's kernel release, for `r` targets when `--release` is not given.
fn local_release() -> Result<String, Failure> {
    let path = Path::new("/proc/sys/kernel/osrelease");
    fs::read_to_string(path)
        .map(|s| s.trim_end().to_owned())
        .map_err(|source| Failure::File {
            what: "cannot read the kernel release (give --release) from",
            path: path.to_owned(),
            source,
        })
}

/// Counts for the closing line.
#[derive(Debug, Default)]
struct Counts {
    records: u64,
    datagrams: u64,
    bad: u64,
    skipped: u64,
}

/// The sender: targets, options and the sink.
struct Sender<'a> {
    args: &'a SendArgs,
    release: Option<String>,
    sink: Sink,
    counts: Counts,
    /// The console text of one record for plain targets (the console buffer).
    console: Vec<u8>,
    /// userdata and sysdata of extended targets.
    extradata: Extradata,
}

/// What extended targets append to every message: userdata lines (formatted once), sysdata
/// (formatted per message: the msgid counts per target).
#[derive(Default)]
struct Extradata {
    userdata: Vec<u8>,
    cpu: bool,
    /// `--sysdata-cpu`, else the CPU ncrx runs on at each message.
    fixed_cpu: Option<u32>,
    taskname: Option<Vec<u8>>,
    release: Option<Vec<u8>>,
    /// The next msgid per target, when enabled.
    msgid: Option<Vec<u32>>,
    sysdata: Vec<u8>,
}

impl Extradata {
    fn new(args: &SendArgs, release: Option<&str>) -> Result<Self, Failure> {
        let extra = &args.extradata;
        let entries: Vec<(&[u8], &[u8])> = extra
            .userdata
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let mut userdata = vec![0; userdata_len(&entries)];
        let len = format_userdata(&entries, &mut userdata)
            .map_err(|e| Failure::Usage(format!("--userdata: {e}")))?;
        userdata.truncate(len);
        let has = |field| extra.sysdata.contains(&field);
        let taskname = if has(SysdataField::Taskname) {
            Some(match &extra.sysdata_taskname {
                Some(name) => name.clone().into_bytes(),
                None => own_task_name(),
            })
        } else {
            None
        };
        let release = if has(SysdataField::Release) {
            Some(
                release
                    .map_or_else(local_release, |r| Ok(r.to_owned()))?
                    .into_bytes(),
            )
        } else {
            None
        };
        Ok(Extradata {
            userdata,
            cpu: has(SysdataField::Cpu),
            fixed_cpu: extra.sysdata_cpu,
            taskname,
            release,
            msgid: has(SysdataField::Msgid).then(|| vec![extra.msgid; args.target.targets.len()]),
            sysdata: Vec::new(),
        })
    }

    /// Formats the sysdata lines of the next message to `target` into `self.sysdata`;
    /// returns their length.
    fn next_sysdata(&mut self, target: usize) -> usize {
        let mut sysdata = Sysdata::default();
        if self.cpu {
            sysdata.cpu = Some(self.fixed_cpu.unwrap_or_else(current_cpu));
        }
        sysdata.taskname = self.taskname.as_deref();
        sysdata.release = self.release.as_deref();
        if let Some(ids) = &mut self.msgid {
            sysdata.msgid = Some(ids[target]);
            ids[target] = ids[target].wrapping_add(1);
        }
        self.sysdata.resize(sysdata.formatted_len(), 0);
        // Sized for these lines: formatting cannot fail.
        sysdata.format_into(&mut self.sysdata).unwrap_or(0)
    }
}

/// This process's task name (`/proc/self/comm`, as the kernel's `current->comm`).
fn own_task_name() -> Vec<u8> {
    fs::read("/proc/self/comm").map_or_else(
        |_| b"ncrx".to_vec(),
        |mut name| {
            if name.last() == Some(&b'\n') {
                name.pop();
            }
            name
        },
    )
}

/// The CPU this process last ran on (`/proc/self/stat`, field 39), 0 when unknown.
fn current_cpu() -> u32 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name in parentheses start at field 3.
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_ascii_whitespace().nth(39 - 3)?.parse().ok()
        })
        .unwrap_or(0)
}

/// How plain targets' console formats records (`--console-*`, `--no-time`, `--syslog`).
fn console_options(args: &ConsoleArgs) -> ConsoleOptions {
    let mut options = ConsoleOptions::default();
    options.time = !args.no_time;
    options.caller = args.console_caller;
    options.syslog = args.syslog;
    options.buffer_size = args.console_buffer;
    options
}

impl Sender<'_> {
    /// Sends one formatted extended message (what `/dev/kmsg` returns) to every extended
    /// target, fragmented as `send_ext_msg_udp` does.
    fn send_extended(
        &mut self,
        msg: &[u8],
        release: Option<&str>,
        appended: &[u8],
    ) -> Result<(), Failure> {
        if let Sink::Reliable(queue) = &self.sink {
            if !appended.is_empty() {
                // The reliable sender appends nothing: the lines go with the message.
                let mut whole = msg.to_vec();
                whole.extend_from_slice(appended);
                return queue.send(whole).map_err(|_| Failure::Stream {
                    what: "the reliable sender stopped",
                    source: io::Error::other("reliable sender gone"),
                });
            }
            // The network side has stopped (a socket failed): stop reading.
            return queue.send(msg.to_vec()).map_err(|_| Failure::Stream {
                what: "the reliable sender stopped",
                source: io::Error::other("reliable sender gone"),
            });
        }
        let mut out = [0u8; MAX_PRINT_CHUNK];
        for (index, target) in self.args.target.targets.iter().enumerate() {
            if !target.extended {
                continue;
            }
            let mut options = SendOptions::default();
            if target.release {
                options.release = release.or(self.release.as_deref()).map(str::as_bytes);
            }
            let sysdata_len = self.extradata.next_sysdata(index);
            // The record's own appended lines (a received record's userdata and sysdata),
            // then the configured userdata.
            let userdata: std::borrow::Cow<'_, [u8]> = if appended.is_empty() {
                self.extradata.userdata.as_slice().into()
            } else {
                [appended, &self.extradata.userdata].concat().into()
            };
            options.userdata = &userdata;
            options.sysdata = &self.extradata.sysdata[..sysdata_len];
            let mut fragments = match ExtFragments::new(msg, options) {
                Ok(fragments) => fragments,
                Err(error) => {
                    self.bad(&format!("record not sent to target {}: {error}", index + 1));
                    continue;
                }
            };
            while let Some(len) = fragments.write_next(&mut out) {
                self.sink.send(index, &out[..len])?;
                self.counts.datagrams += 1;
            }
        }
        Ok(())
    }

    /// Whether any target is plain (so records need their console text).
    fn has_plain_targets(&self) -> bool {
        self.args.target.targets.iter().any(|t| !t.extended)
    }

    /// Whether the console loglevel lets a record of `level` out (`suppress_message_printing`).
    fn printed(&self, level: u8) -> bool {
        netconsole_proto::console::printed_on_console(level, self.args.console.console_loglevel)
    }

    /// Sends `record` to every plain target as the console prints it
    /// (`netconsole_proto::console::format_console`), in 1000-byte chunks.
    fn send_console(&mut self, record: &ConsoleRecord<'_>) -> Result<(), Failure> {
        if !self.has_plain_targets() {
            return Ok(());
        }
        let options = console_options(&self.args.console);
        let mut console = std::mem::take(&mut self.console);
        let len = format_console(record, &options, &mut console);
        let result = self.send_plain(&console[..len]);
        self.console = console;
        result
    }

    /// Sends console text to every plain target, cut in 1000-byte chunks.
    fn send_plain(&mut self, text: &[u8]) -> Result<(), Failure> {
        for (index, target) in self.args.target.targets.iter().enumerate() {
            if target.extended {
                continue;
            }
            for chunk in plain_chunks(text) {
                self.sink.send(index, chunk)?;
                self.counts.datagrams += 1;
            }
        }
        Ok(())
    }

    /// Reads every record of the input and sends it.
    fn read(&mut self, reader: BufReader<Box<dyn Read + Send>>, live: bool) -> Result<(), Failure> {
        match self.args.input {
            InputFormat::Kmsg => self.kmsg(KmsgRecords::new(reader, live)),
            InputFormat::Json => self.json(reader),
            InputFormat::Text => self.text(reader),
        }
    }

    fn bad(&mut self, why: &str) {
        self.counts.bad += 1;
        eprintln!("ncrx: input record {}: {why}", self.counts.records);
    }

    fn kmsg(
        &mut self,
        mut records: KmsgRecords<BufReader<Box<dyn Read + Send>>>,
    ) -> Result<(), Failure> {
        loop {
            let record = match records.next_record() {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(()),
                // /dev/kmsg: records were overwritten before we read them.
                Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                    eprintln!("ncrx: some kernel records were overwritten before they were read");
                    continue;
                }
                Err(source) => {
                    return Err(Failure::Stream {
                        what: "cannot read the input",
                        source,
                    });
                }
            };
            if record.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.counts.records += 1;
            let header = match Header::parse(&record) {
                Ok((header, rest)) => (header, rest.len()),
                Err(error) => {
                    self.bad(&format!("not a /dev/kmsg record: {error}"));
                    continue;
                }
            };
            if !self.printed(header.0.level) {
                self.counts.skipped += 1;
                continue;
            }
            self.send_extended(&record, None, &[])?;
            if self.has_plain_targets() {
                let (header, body_len) = header;
                // The console prints the raw text (escapes undone), without the dictionary.
                let body = Body::parse(&record[record.len() - body_len..]);
                let (text, _) = unescape(body.text());
                let mut console =
                    ConsoleRecord::new(header.level, header.seq, header.ts_usec, &text);
                console.facility = header.facility;
                console.caller = header.caller;
                self.send_console(&console)?;
            }
        }
    }

    fn json(&mut self, reader: BufReader<Box<dyn Read + Send>>) -> Result<(), Failure> {
        for line in reader.lines() {
            let line = line.map_err(|source| Failure::Stream {
                what: "cannot read the input",
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            self.counts.records += 1;
            match serde_json::from_str::<JsonLine>(&line) {
                Ok(JsonLine::Record(record)) => {
                    if !self.printed(record.meta.level) {
                        self.counts.skipped += 1;
                        continue;
                    }
                    match format_json_record(&record, self.args.record_limit) {
                        Ok((msg, appended)) => {
                            self.send_extended(&msg, record.meta.release.as_deref(), &appended)?;
                            let text = if record.escaped {
                                unescape(record.text.as_bytes()).0
                            } else {
                                record.text.as_bytes().into()
                            };
                            let mut console = ConsoleRecord::new(
                                record.meta.level,
                                record.meta.seq,
                                record.meta.ts_usec,
                                &text,
                            );
                            console.facility = record.meta.facility;
                            console.caller =
                                record.meta.caller.as_deref().and_then(|c| c.parse().ok());
                            self.send_console(&console)?;
                        }
                        Err(why) => self.bad(&why),
                    }
                }
                Ok(JsonLine::Plain(plain)) if plain.escaped => {
                    self.send_plain(&unescape(plain.text.as_bytes()).0)?;
                }
                Ok(JsonLine::Plain(plain)) => self.send_plain(plain.text.as_bytes())?,
                Ok(_) => self.counts.skipped += 1,
                Err(error) => self.bad(&format!("not a JSON line of ncrx: {error}")),
            }
        }
        Ok(())
    }

    fn text(&mut self, reader: BufReader<Box<dyn Read + Send>>) -> Result<(), Failure> {
        let start = std::time::Instant::now();
        let mut buf = vec![0u8; self.args.record_limit];
        for (seq, line) in (self.args.seq..).zip(reader.split(b'\n')) {
            let line = line.map_err(|source| Failure::Stream {
                what: "cannot read the input",
                source,
            })?;
            self.counts.records += 1;
            if !self.printed(self.args.level) {
                self.counts.skipped += 1;
                continue;
            }
            let ts_usec = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            let mut record = KmsgRecord::new(self.args.level, seq, ts_usec, &line);
            record.facility = self.args.facility;
            let len = format_kmsg(&record, &mut buf);
            let msg = buf[..len].to_vec();
            self.send_extended(&msg, None, &[])?;
            let mut console = ConsoleRecord::new(self.args.level, seq, ts_usec, &line);
            console.facility = self.args.facility;
            self.send_console(&console)?;
        }
        Ok(())
    }
}

/// The message of a JSON `record` and the lines netconsole appends to it: the JSON fields
/// given to `netconsole_proto::received::ReceivedRecord`, which writes them as the sender's
/// kernel did (printk's part, cut at `limit` unless already printk's output, then the
/// appended userdata and sysdata).
fn format_json_record(record: &JsonRecord, limit: usize) -> Result<(Vec<u8>, Vec<u8>), String> {
    let meta = &record.meta;
    let seq = meta.seq;
    let lines: Vec<DictEntry<'_>> = record
        .dict
        .iter()
        .map(|(key, value)| DictEntry {
            key: key.as_bytes(),
            value: value.as_bytes(),
        })
        .collect();
    let mut fields = ReceivedRecord::new(meta.level, seq, meta.ts_usec, record.text.as_bytes());
    fields.facility = meta.facility;
    fields.flag = meta.flag.as_bytes();
    fields.caller = meta.caller.as_deref().map(str::as_bytes);
    fields.lines = &lines;
    fields.wire = record.escaped;
    fields.cut = record.truncated;
    fields.format_limit = limit;
    let why = |error| match error {
        RecordError::Flag => format!("seq {seq}: flag {:?} is not -, c or +", meta.flag),
        RecordError::Caller(_) => {
            format!(
                "seq {seq}: bad caller {:?}",
                meta.caller.as_deref().unwrap_or("")
            )
        }
        other => format!("seq {seq}: {other}"),
    };
    let mut message = vec![0; fields.message_capacity().map_err(why)?];
    let len = fields.format_message(&mut message).map_err(why)?;
    message.truncate(len);
    let mut appended = vec![0; fields.appended_len()];
    fields
        .format_appended(&mut appended)
        .map_err(|e| e.to_string())?;
    Ok((message, appended))
}

/// Runs `ncrx send`.
pub(crate) fn run(args: &SendArgs) -> Result<Outcome, Failure> {
    if args.record_limit < 64 {
        return Err(Failure::Usage(format!(
            "--record-limit {} is too small (printk's buffers are 2048 or 8192 bytes)",
            args.record_limit
        )));
    }
    if args.console.console_buffer < 2 {
        return Err(Failure::Usage(format!(
            "--console-buffer {} is too small (the kernel's is 1024 or 2048 bytes)",
            args.console.console_buffer
        )));
    }
    let targets = &args.target.targets;
    let release = if targets.iter().any(|t| t.release) {
        Some(match &args.release {
            Some(release) => release.clone(),
            None => local_release()?,
        })
    } else {
        None
    };
    let (reader, live): (Box<dyn Read + Send>, bool) = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            let file = File::open(path).map_err(|source| Failure::File {
                what: "cannot open",
                path: path.clone(),
                source,
            })?;
            (Box::new(file), false)
        }
        _ => {
            let stdin = io::stdin();
            let regular = stdin_is_regular_file();
            (Box::new(stdin), !regular)
        }
    };
    // A /dev/kmsg record is at most 8 KiB and must be read whole in one read().
    let reader = BufReader::with_capacity(64 * 1024, reader);
    if args.reliable {
        return reliable::run(args, release, reader, live);
    }
    let mut sender = Sender {
        args,
        release,
        sink: Sink::open(args)?,
        counts: Counts::default(),
        console: vec![0; args.console.console_buffer],
        extradata: Extradata::new(args, args.release.as_deref())?,
    };
    sender.read(reader, live)?;
    let Sender { sink, counts, .. } = sender;
    sink.finish()?;
    let destination = match &args.pcap {
        Some(path) => format!("written to {}", path.display()),
        None => "sent".to_owned(),
    };
    eprintln!(
        "ncrx: {} records read, {} datagrams {destination}, {} bad records skipped, {} other lines skipped",
        counts.records, counts.datagrams, counts.bad, counts.skipped
    );
    Ok(Outcome {
        bad_data: counts.bad > 0,
        truncated: false,
    })
}

mod reliable {
    //! `--reliable`: one `netconsole_proto::sender::Sender` per target, driven with real time
    //! while a reader thread feeds it the input's messages.

    use std::io::{self, BufReader, Read};
    use std::net::SocketAddr;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use netconsole_proto::sender::{Sender as ReliableSender, SenderConfig};
    use netconsole_proto::{MAX_PRINT_CHUNK, Response};
    use netpoll_frame::Instant;

    use super::{Counts, Extradata, Sender, Sink, bind_targets};
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

    type Sockets = super::BoundSockets;

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
        reader: BufReader<Box<dyn Read + Send>>,
        live: bool,
    ) -> Result<Outcome, Failure> {
        let (sockets, mut targets) = open(args, release.as_deref())?;
        let start = std::time::Instant::now();
        let now =
            || Instant::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
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
        })
    }
}

/// Whether standard input is a regular file (then it is read like a file, not live).
fn stdin_is_regular_file() -> bool {
    fs::metadata("/dev/stdin").is_ok_and(|m| m.file_type().is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_json_records_are_named_by_seq_and_field() {
        let why = |line: &str| {
            let Ok(JsonLine::Record(record)) = serde_json::from_str::<JsonLine>(line) else {
                panic!("not a record line: {line}");
            };
            format_json_record(&record, 2048).unwrap_err()
        };
        let line =
            |extra: &str| format!(r#"{{"type":"record","seq":5,"ts_usec":1,"text":"t",{extra}}}"#);
        assert_eq!(
            why(&line(r#""level":6,"flag":"x""#)),
            r#"seq 5: flag "x" is not -, c or +"#
        );
        assert_eq!(
            why(&line(r#""level":6,"caller":"X1""#)),
            r#"seq 5: bad caller "X1""#
        );
        assert_eq!(why(&line(r#""level":9"#)), "seq 5: level 9 is not 0..7");
    }
}

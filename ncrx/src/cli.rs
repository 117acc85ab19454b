//! The command line: subcommands, options, their help and examples.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use netconsole_proto::param::{self, Device, Target};
use netconsole_proto::{MAX_EXTRADATA_NAME_LEN, MAX_EXTRADATA_VALUE_LEN};
use netpoll_frame::MacAddr;

use crate::error::exit_codes_help;

/// netconsole / netoops from user space: decode captures, send like a kernel, collect
/// crash dumps.
#[derive(Debug, Parser)]
#[command(
    name = "ncrx",
    version,
    about = "Linux netconsole / netoops tool: decode captures, send like a kernel, collect crash dumps",
    after_help = concat!(
        "Examples (each subcommand's --help has more):\n",
        "  ncrx listen                           # receive netconsole on [::]:6666\n",
        "  ncrx listen --format json --dir /var/log/netconsole\n",
        "  ncrx decode capture.pcap              # records out of a tcpdump capture\n",
        "  echo hello | ncrx send --input text --target '+6665@127.0.0.1/,6666@127.0.0.1/'\n",
        "  ncrx oops listen --dir /var/crash/netoops\n",
        "  ncrx sim --records 100000 --loss 0.1\n",
        "\n",
        exit_codes_help!()
    ),
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Receive netconsole from a fleet over UDP (the ncrx-core receiver, real time).
    #[command(after_help = concat!(
        "Examples:\n",
        "  ncrx listen                                  # [::]:6666, IPv4 and IPv6, text lines\n",
        "  ncrx listen --bind 0.0.0.0:6666 --format json --preset netconsd\n",
        "  ncrx listen --dir /var/log/netconsole        # one file per sender\n",
        "  ncrx listen --threads 4                      # 4 receivers, senders sharded by the kernel\n\n",
        "Datagrams are read in batches (recvmmsg) and lines written in batches: when the sockets\n",
        "have nothing more, and at least every 100 ms, by a thread of their own that queues up\n",
        "to 16 MiB while a write stalls (--dir files: each sender's lines in one write, at most\n",
        "every 100 ms). The kernel's drops for the sockets (their receive buffer was full) are\n",
        "counted and reported; so are senders refused. Records come out in sequence order as\n",
        "the receiver releases them; retransmission requests and acks go back to each sender's\n",
        "address and port. On SIGINT/SIGTERM everything held is flushed (holes as 'lost'),\n",
        "counts go to stderr, exit code 0 (3 when an output is still stalled 0.65 s later: what\n",
        "it holds is given up and said, with the counts of what was received)."
    ))]
    Listen(ListenArgs),
    /// Decode netconsole records from a pcap/pcapng capture (through the ncrx-core receiver).
    #[command(after_help = concat!(
        "Examples:\n  ncrx decode frames.pcap --port 6666 --format json\n",
        "  sudo tcpdump -i any -U -w - udp port 6666 | ncrx decode -   # live\n\n",
        "Captures: pcap or pcapng, read once as a stream (files, pipes, FIFOs, '-'); link types\n",
        "Ethernet, Linux cooked (LINUX_SLL, LINUX_SLL2: tcpdump -i any) and raw IP.\n",
        "Frames are verified (checksums) and fed to the receiver with the capture's timestamps\n",
        "as time; records come out in sequence order, holes as 'lost', and at the end of the\n",
        "capture everything still held is flushed. Text lines: SOURCE #SEQ [TIME] <LEVEL> TEXT\n",
        "(text as printk escapes it); JSON lines: see the README."
    ))]
    Decode(DecodeArgs),
    /// Send log records as a kernel's netconsole would (UDP, or frames into a pcap).
    #[command(after_help = concat!(
        "Examples:\n",
        "  # forward this machine's log, extended format, to a receiver on 10.0.0.2:6666\n",
        "  sudo ncrx send --target +@/,@10.0.0.2/ < /dev/kmsg\n",
        "  # write the frames a kernel would send into a capture instead\n",
        "  ncrx send --target '+6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57' \\\n",
        "      --pcap out.pcap --ip-id 1 records.kmsg\n",
        "  # plain text lines to a local receiver, extended\n",
        "  echo hello | ncrx send --input text --target +@127.0.0.1/,6666@127.0.0.1/\n",
        "  # a plain target gets the console line '[    5.123456] text' (Linux 5.10-6.2 buffer)\n",
        "  ncrx send --target 6665@192.0.2.1/,6666@192.0.2.2/ --console-buffer 1024 < /dev/kmsg\n",
        "  # userdata and sysdata, as a Linux 6.15+ configfs target with them configured\n",
        "  ncrx send --target +r@/,@10.0.0.2/ --userdata host=web1 --userdata dc=fra \\\n",
        "      --sysdata cpu,taskname,release,msgid < /dev/kmsg\n",
        "  # reliable: answer retransmission requests of an ncrx/netconsd receiver\n",
        "  sudo ncrx send --reliable --target +@/,@10.0.0.2/ < /dev/kmsg\n\n",
        "SPEC is the kernel's netconsole= syntax (IP addresses, not host names; IPv4 and IPv6\n",
        "targets may share the source port, broadcast targets are allowed):\n",
        "  [+][r][src-port]@[src-ip]/[dev],[tgt-port]@<tgt-ip>/[tgt-mac][;more targets]\n",
        "  + extended records, r release prepend (needs +), dev containing ':' is the source MAC;\n",
        "  defaults: source port 6665, target port 6666, target MAC broadcast.\n\n",
        "Input formats:\n",
        "  kmsg  /dev/kmsg records: 'prefix,seq,ts_usec,flag[,caller=..];escaped text' then\n",
        "        ' KEY=VALUE' continuation lines; records may also be separated by 0x1e.\n",
        "  json  the JSON lines `ncrx decode --format json` writes (type \"record\" / \"plain\").\n",
        "  text  one record per line; seq counts from --seq, ts_usec is the time since start."
    ))]
    Send(SendArgs),
    /// Deterministic simulation: reliable senders, a lossy network, the ncrx-core receiver.
    #[command(after_help = concat!(
        "Examples:\n",
        "  ncrx sim --records 100000 --loss 0.1 --seed 7\n",
        "  ncrx sim --sources 8 --loss 0.3 --reverse-loss 0.3 --reorder 0.05 --dup 0.01 --reboot-at 500 --json\n\n",
        "Virtual time jumps from deadline to deadline, so runs are fast and the same seed gives\n",
        "the same report. Every record must be delivered once in order or reported lost; broken\n",
        "invariants are listed and make the exit code 1. A progress bar is drawn on stderr when\n",
        "it is a terminal (not with --json or --quiet); otherwise a progress line with the time\n",
        "left every --progress-interval seconds, 5 by default (not with --quiet). The delivery delay is\n",
        "virtual time from a record's first transmission to its release by the receiver (link\n",
        "delay 5 ms). A closed or full standard output is a file error (exit code 3)."
    ))]
    Sim(SimArgs),
    /// Collect netoops crash dumps (live, or from a capture), or send one as a kernel does.
    #[command(after_help = concat!(
        "Examples:\n",
        "  ncrx oops listen --dir /var/crash/netoops      # UDP port 2004, IPv4 and IPv6\n",
        "  ncrx oops decode crash.pcap --format json\n",
        "  ncrx oops send --source 127.0.0.1:0 --target 127.0.0.1 dmesg.txt  # to the listener above"
    ))]
    Oops {
        #[command(subcommand)]
        command: OopsCommand,
    },
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One readable line per item.
    Text,
    /// One JSON object per line (see the README for the schema).
    Json,
}

/// The times text lines show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TimeShown {
    /// The kernel's `[seconds.micro]` since the sender's boot.
    Kernel,
    /// When ncrx received it (RFC 3339 UTC, microseconds), first on the line.
    Received,
    /// Both.
    Both,
}

/// Receiver parameter presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Preset {
    /// For stock kernels and reliable senders alike: libncrx's values, but a hole of a sender
    /// that has never answered a request is given up after 1 s (mainline Linux never
    /// answers), requests to it are rate-limited, and the head of a freshly booted stream is
    /// asked for.
    Default,
    /// libncrx's values exactly: 8192 slots, retransmit 1 s, give up after 30 s, no acks.
    Libncrx,
    /// The production daemon's: 512 slots, every timer 200 ms, acks on.
    Netconsd,
}

/// `ncrx listen`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ListenArgs {
    /// Address and port to receive on (repeatable; default `[::]:6666`, IPv4 and IPv6; two
    /// that would take the same datagrams, as `0.0.0.0:6666` beside `[::]:6666`, are refused).
    /// A link-local IPv6 address takes its interface by name or number, `[fe80::1%eth0]:6666`.
    /// Example: `--bind 0.0.0.0:6666 --bind [::1]:6666`.
    #[arg(long, value_name = "ADDR:PORT", value_parser = bind_addr)]
    pub(crate) bind: Vec<SocketAddr>,
    /// Output format. Example: `--format json`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// The times text lines show: the receive time first, the kernel's `[seconds]` after
    /// the sequence number, or both (JSON lines always carry `received` and `ts_usec`).
    /// Example: `--time kernel`.
    #[arg(long, value_enum, default_value_t = TimeShown::Both)]
    pub(crate) time: TimeShown,
    /// Write one file per sender into this directory, appended: `DIR/HOST.log` (text) or
    /// `DIR/HOST.jsonl` (JSON), HOST its name or its address. Checked at start; SIGHUP
    /// reopens every file (for logrotate), and a file moved or deleted is made again at its
    /// path by its next line. Example: `--dir /var/log/netconsole`.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Names of senders, in /etc/hosts syntax (`ADDRESS NAME`), shown as `host` in JSON,
    /// in text lines and in --dir file names. Example: `--hosts /etc/ncrx/hosts`.
    #[arg(long, value_name = "FILE")]
    pub(crate) hosts: Option<PathBuf>,
    /// Look senders' names up in reverse DNS (off the receive path, cached; until a name
    /// comes, the address is shown). Example: `--resolve`.
    #[arg(long)]
    pub(crate) resolve: bool,
    /// Receiver parameters. Example: `--preset netconsd`.
    #[arg(long, value_enum, default_value_t = Preset::Default)]
    pub(crate) preset: Preset,
    /// Acknowledge retired records (`ncrx<seq>` to the sender) this many milliseconds after
    /// they are retired, so reliable senders can drop them (200 when given without a value;
    /// the netconsd preset acks every 200 ms already). Example: `--ack 100`.
    #[arg(long, value_name = "MS", num_args = 0..=1, default_missing_value = "200",
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub(crate) ack: Option<u64>,
    /// The senders' printk format limit in bytes, 256 to 65536 (default: found per record;
    /// see `ncrx decode --help`). Example: `--format-limit 2048`.
    #[arg(long, value_name = "BYTES", value_parser = format_limit)]
    pub(crate) format_limit: Option<usize>,
    /// Show each datagram the receiver counts as malformed, each sender refused, and the
    /// counts of every source tracked at stop (those of a source evicted before are in the
    /// totals), on stderr.
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Receiver threads: each binds the addresses with SO_REUSEPORT, the kernel shards
    /// senders over them by a hash of their address and port, each runs its own receiver
    /// (default: one per CPU this process may run on, at most 16). A sender that sends to two
    /// --bind addresses may reach two threads and have its records written twice: use
    /// --threads 1 for that. Example: `--threads 2`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) threads: Option<u16>,
    /// Receive buffer asked for each socket, in bytes, at most 1073741823 (the kernel's
    /// limit; it may grant less: see the start-up message). Example: `--recv-buffer 33554432`.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20, value_parser = recv_buffer)]
    pub(crate) recv_buffer: usize,
    /// Most senders tracked at once, shared equally by the threads (each tracks at most N
    /// divided by the thread count, rounded up: the kernel spreads senders over the threads by
    /// a hash, so the total reached depends on how evenly); a sender past its thread's share
    /// is refused (counted, shown with -v) unless one quiet for 10 s can be evicted. Example:
    /// `--max-sources 5000`.
    #[arg(long, value_name = "N", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 26)))]
    pub(crate) max_sources: u64,
    /// Forward every record (and loss, restart, plain text) as RFC 5424 syslog to a
    /// collector: TCP with octet counting (RFC 6587), or UDP. HOSTNAME is the sender's
    /// name, APP-NAME `kernel`, TIMESTAMP the receive time; seq, ts_usec and the dictionary
    /// go in structured data. Example: `--syslog tcp://127.0.0.1:514`.
    #[arg(long, value_name = "URL", value_parser = clap::value_parser!(crate::syslog::Target))]
    pub(crate) syslog: Option<crate::syslog::Target>,
    /// Bytes of syslog messages kept while the collector is away; past it the oldest are
    /// dropped and counted. Example: `--syslog-buffer 67108864`.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub(crate) syslog_buffer: usize,
    /// Serve live counters for Prometheus at http://ADDR:PORT/metrics (OpenMetrics text).
    /// Example: `--metrics 127.0.0.1:9466`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) metrics: Option<SocketAddr>,
    /// Per-sender series in the metrics for at most this many senders (those with the most
    /// records); 0 turns them off. Example: `--metrics-sources 0`.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) metrics_sources: usize,
}

/// `ncrx decode`.
#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// The pcap or pcapng capture: a file, a pipe or FIFO, or '-' for standard input
    /// (`tcpdump -w - | ncrx decode -` decodes live, packet by packet).
    pub(crate) file: PathBuf,
    /// Destination UDP port to decode (repeatable).
    #[arg(long, value_name = "N", default_values_t = [param::DEFAULT_REMOTE_PORT])]
    pub(crate) port: Vec<u16>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// Write one file per sender into this directory, appended: DIR/ADDRESS.log (text) or
    /// DIR/ADDRESS.jsonl (JSON). Example: `--dir /tmp/records`.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// The sender's printk format limit in bytes, where it cuts records. Default: found per
    /// record: a text running past 2048 bytes (Linux 6.3+) followed only by ` key=value`
    /// lines is a cut record with userdata/sysdata after it (Linux 6.9+); anything else is
    /// not cut (older kernels format up to 8192 bytes). Give 2048 or 8192 to impose one
    /// (256 to 65536 are taken). Example: `--format-limit 8192`.
    #[arg(long, value_name = "BYTES", value_parser = format_limit)]
    pub(crate) format_limit: Option<usize>,
    /// Show each datagram the receiver counts as malformed on stderr.
    #[arg(short, long)]
    pub(crate) verbose: bool,
    #[command(flatten)]
    pub(crate) checksums: ChecksumArgs,
}

/// How UDP checksums of a capture are checked (`decode`, `oops decode`).
#[derive(Debug, Args)]
pub(crate) struct ChecksumArgs {
    /// Count datagrams whose UDP checksum was left unfilled by checksum offload as bad
    /// frames. By default they are decoded and counted apart as "not verified": a capture
    /// made on the sending host (tcpdump -i lo) shows only the pseudo-header's sum there.
    /// Example: ncrx decode --strict-checksums frames.pcap
    #[arg(long)]
    pub(crate) strict_checksums: bool,
}

impl ChecksumArgs {
    /// The policy `netpoll-frame` applies.
    pub(crate) fn policy(&self) -> netpoll_frame::ChecksumPolicy {
        if self.strict_checksums {
            netpoll_frame::ChecksumPolicy::Strict
        } else {
            netpoll_frame::ChecksumPolicy::AllowUnfilled
        }
    }
}

/// An address to bind: `IP:PORT`, `[IPV6]:PORT`, or `[IPV6%SCOPE]:PORT` with the scope an
/// interface's number or its name (as `ping` and `ip` take it).
fn bind_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let scoped = text
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("]:"))
        .and_then(|(host, port)| Some((host.split_once('%')?, port)));
    let Some(((ip, interface), port)) = scoped else {
        return Err(format!(
            "{text} is not an address and port (IP:PORT, [IPV6]:PORT, [IPV6%INTERFACE]:PORT)"
        ));
    };
    let ip: std::net::Ipv6Addr = ip
        .parse()
        .map_err(|e| format!("{ip} is not an IPv6 address: {e}"))?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("{port} is not a port: {e}"))?;
    let scope = nix::net::if_::if_nametoindex(interface)
        .map_err(|e| format!("{interface} is not a network interface here: {e}"))?;
    Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
        ip, port, 0, scope,
    )))
}

/// A socket receive buffer size: the kernel takes at most `INT_MAX / 2` (it doubles what
/// it grants, in an `int`), so a larger one could never be granted.
fn recv_buffer(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(bytes) if (1..=1_073_741_823).contains(&bytes) => Ok(bytes),
        Ok(_) => Err("a receive buffer is 1 to 1073741823 bytes (the kernel's limit)".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// A printk format limit: 2048 (Linux 6.3+) and 8192 (before) are the kernel's; a limit
/// shorter than a record's header, or longer than a datagram, makes no sense.
fn format_limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(limit) if (256..=65_536).contains(&limit) => Ok(limit),
        Ok(_) => Err(
            "a format limit is 256 to 65536 bytes (the kernel's: 2048, or 8192 before Linux 6.3)"
                .into(),
        ),
        Err(error) => Err(error.to_string()),
    }
}

/// A probability, 0 to 1.
fn probability(text: &str) -> Result<f64, String> {
    let p: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

/// Seconds between progress lines: above 0, at most a day.
fn progress_interval(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if seconds > 0.0 && seconds <= 86_400.0 {
        Ok(seconds)
    } else {
        Err(format!(
            "{text} is not a number of seconds above 0 and at most 86400"
        ))
    }
}

/// `ncrx sim`.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Records each source sends.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) records: u64,
    /// Sources (senders), interleaved; at least 1. Many sources make a long run: progress
    /// and the time left are shown on stderr (see below).
    #[arg(long, default_value_t = 1)]
    pub(crate) sources: u32,
    /// Probability that a datagram to the receiver is lost.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub(crate) loss: f64,
    /// Probability that a response to a sender is lost.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub(crate) reverse_loss: f64,
    /// Probability that a packet is delayed past later ones.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub(crate) reorder: f64,
    /// Probability that a packet is delivered twice.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub(crate) dup: f64,
    /// The first source reboots after this many records.
    #[arg(long, value_name = "K")]
    pub(crate) reboot_at: Option<u64>,
    /// Every N-th record of each source is long enough (1200 to 3600 bytes) to be sent in
    /// ncfrag fragments: the records whose seq + 1 is a multiple of N, so 1 fragments every
    /// record, 2 every second one (0: never). Example: --fragment-every 10.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) fragment_every: u64,
    /// Turn retransmission off (responses never reach the senders).
    #[arg(long)]
    pub(crate) no_retransmission: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Print the report as one JSON object (no progress bar).
    #[arg(long)]
    pub(crate) json: bool,
    /// When stderr is not a terminal: seconds between progress lines (records pushed, time
    /// left). Example: --progress-interval 60 for a log file.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = progress_interval)]
    pub(crate) progress_interval: f64,
    /// No progress bar (it is drawn on stderr only when stderr is a terminal).
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

/// The input formats of `ncrx send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InputFormat {
    /// `/dev/kmsg` records.
    Kmsg,
    /// JSON lines as `ncrx decode --format json` writes them.
    Json,
    /// Plain text, one record per line.
    Text,
}

/// One target of `--target`, owned (the crate's [`Target`] borrows the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedTarget {
    /// `+`.
    pub(crate) extended: bool,
    /// `r`.
    pub(crate) release: bool,
    /// Source port.
    pub(crate) local_port: u16,
    /// Source IP, if given.
    pub(crate) local_ip: Option<IpAddr>,
    /// Source MAC, when the device field is a MAC.
    pub(crate) local_mac: Option<MacAddr>,
    /// Target port.
    pub(crate) remote_port: u16,
    /// Target IP.
    pub(crate) remote_ip: IpAddr,
    /// Target MAC.
    pub(crate) remote_mac: MacAddr,
}

impl From<&Target<'_>> for OwnedTarget {
    fn from(target: &Target<'_>) -> Self {
        OwnedTarget {
            extended: target.extended,
            release: target.release,
            local_port: target.local_port,
            local_ip: target.local_ip,
            local_mac: match target.device {
                Device::Mac(mac) => Some(mac),
                Device::Name(_) => None,
            },
            remote_port: target.remote_port,
            remote_ip: target.remote_ip,
            remote_mac: target.remote_mac,
        }
    }
}

/// The parsed `--target` value: one or more targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetSpec {
    /// The targets, in the order given.
    pub(crate) targets: Vec<OwnedTarget>,
}

impl TargetSpec {
    /// clap's value parser: the kernel's own `netconsole=` syntax, with the crate's error
    /// saying what is wrong and which target it is in.
    pub(crate) fn parse_arg(spec: &str) -> Result<Self, String> {
        let targets = param::parse_targets(spec).map_err(|e| e.to_string())?;
        let mut owned = Vec::new();
        for (index, target) in targets.enumerate() {
            let target = target.map_err(|e| {
                let mut message = format!(
                    "{e} in target {} of a netconsole= value ([+][r][src-port]@[src-ip]/[dev],[tgt-port]@<tgt-ip>/[tgt-mac])",
                    index + 1
                );
                if let Some(name) = host_name_in(spec) {
                    let _ = write!(
                        message,
                        "; {name:?} is a host name, and netconsole= takes IP addresses only, as \
                         the kernel's parameter does: resolve it first, e.g. \
                         --target \"...@$(getent ahostsv4 {name} | head -n1 | cut -d' ' -f1)/\""
                    );
                }
                message
            })?;
            owned.push(OwnedTarget::from(&target));
        }
        Ok(TargetSpec { targets: owned })
    }
}

/// The first source or target IP field of a `netconsole=` value that looks like a host name
/// (letters, digits, '-' and '.', with a letter beyond hexadecimal, not an IP address).
fn host_name_in(spec: &str) -> Option<&str> {
    spec.split(';')
        .flat_map(|target| target.split(','))
        .filter_map(|half| {
            let (_, after) = half.split_once('@')?;
            Some(after.split('/').next().unwrap_or(after))
        })
        .find(|field| {
            !field.is_empty()
                && field.parse::<IpAddr>().is_err()
                && field
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && field
                    .bytes()
                    .any(|b| b.is_ascii_alphabetic() && !b.is_ascii_hexdigit())
        })
}

/// `ncrx send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Where to send, in the kernel's netconsole= syntax (several targets separated by ';').
    #[arg(long, value_name = "SPEC", value_parser = TargetSpec::parse_arg)]
    pub(crate) target: TargetSpec,
    /// Format of the input records.
    #[arg(long, value_enum, default_value_t = InputFormat::Kmsg)]
    pub(crate) input: InputFormat,
    /// Read the records from this file instead of standard input ('-' is standard input).
    #[arg(value_name = "INPUT")]
    pub(crate) file: Option<PathBuf>,
    /// Write the frames into this pcap file instead of sending them.
    #[arg(long, value_name = "FILE")]
    pub(crate) pcap: Option<PathBuf>,
    /// IPv4 identification of the first frame written with --pcap (then +1 per frame, shared
    /// by all targets, as the kernel's counter).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "pcap")]
    pub(crate) ip_id: u16,
    /// Kernel release to prepend for targets with 'r' (default: this machine's release).
    #[arg(long, value_name = "RELEASE")]
    pub(crate) release: Option<String>,
    /// printk's buffer size for records formatted from json/text input: 2048 cuts like
    /// Linux 6.3+ (PRINTK_MESSAGE_MAX), 8192 like older kernels (CONSOLE_EXT_LOG_MAX).
    #[arg(long, value_name = "BYTES", default_value_t = 2048)]
    pub(crate) record_limit: usize,
    /// Level of text input records (0 emerg .. 7 debug).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(0..=7))]
    pub(crate) level: u8,
    /// Facility of text input records (1 = user, as for writes to /dev/kmsg).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=31))]
    pub(crate) facility: u8,
    /// Sequence number of the first text input record.
    #[arg(long, default_value_t = 0)]
    pub(crate) seq: u64,
    /// Reliable netconsole: keep what is not acknowledged, answer the receiver's
    /// retransmission requests, re-send on its own when acks stop (extended targets, UDP).
    /// Records still unacknowledged --linger-ms after the input ends make the exit code 7.
    #[arg(long, conflicts_with_all = ["pcap", "userdata", "sysdata"])]
    pub(crate) reliable: bool,
    /// How plain targets' consoles print records.
    #[command(flatten)]
    pub(crate) console: ConsoleArgs,
    /// What extended targets append to each message (Linux 6.9+).
    #[command(flatten)]
    pub(crate) extradata: ExtradataArgs,
    /// With --reliable: after the input ends, how long to wait for the last acks.
    #[arg(long, value_name = "MS", default_value_t = 3000, requires = "reliable")]
    pub(crate) linger_ms: u64,
}

/// The console format of plain targets (`ncrx send`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Plain targets (the console line)")]
pub(crate) struct ConsoleArgs {
    /// Plain targets: the console buffer in bytes, its terminating NUL included: 2048
    /// (PRINTK_MESSAGE_MAX, Linux 6.3+) or 1024 (CONSOLE_LOG_MAX, 5.10 to 6.2). A record's
    /// lines that do not fit are not printed.
    #[arg(long, value_name = "BYTES", default_value_t = 2048)]
    pub(crate) console_buffer: usize,
    /// Plain targets: no `[    5.123456] ` time prefix (printk.time=0).
    #[arg(long)]
    pub(crate) no_time: bool,
    /// Plain targets: the `[  T123]` caller prefix (CONFIG_PRINTK_CALLER), from `caller=`.
    #[arg(long)]
    pub(crate) console_caller: bool,
    /// Plain targets: the `<PRI>` prefix (console_msg_format=syslog).
    #[arg(long)]
    pub(crate) syslog: bool,
    /// The console loglevel: records of this level or higher are not sent to any target,
    /// as the kernel suppresses them on consoles (8, as loglevel=8: every record).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=8))]
    pub(crate) console_loglevel: u8,
}

/// A `sysdata` field (configfs `userdata/<field>_enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SysdataField {
    /// ` cpu=<n>` (`cpu_nr_enabled`).
    #[value(alias = "cpu_nr")]
    Cpu,
    /// ` taskname=<comm>` (`taskname_enabled`).
    Taskname,
    /// ` release=<release>` (`release_enabled`).
    Release,
    /// ` msgid=<n>` (`msgid_enabled`).
    Msgid,
}

/// userdata and sysdata of extended targets (`ncrx send`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Extended targets: userdata and sysdata (Linux 6.9+ configfs)")]
pub(crate) struct ExtradataArgs {
    /// Userdata (configfs `userdata/KEY/value`), repeatable: ` KEY=VALUE\n` after every
    /// extended message, in the order given, unescaped; empty values are skipped as the
    /// kernel skips them. VALUE at most 199 bytes, KEY at most 53.
    #[arg(long, value_name = "KEY=VALUE", value_parser = userdata_entry)]
    pub(crate) userdata: Vec<(String, String)>,
    /// Sysdata after the userdata (configfs `userdata/*_enabled`, Linux 6.15+), a
    /// comma-separated list; always sent in the kernel's order cpu, taskname, release, msgid.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FIELD,...")]
    pub(crate) sysdata: Vec<SysdataField>,
    /// The `cpu=` value. Default: the CPU ncrx is running on when it sends, as the kernel
    /// sends the CPU that runs netconsole.
    #[arg(long, value_name = "N")]
    pub(crate) sysdata_cpu: Option<u32>,
    /// The `taskname=` value. Default: ncrx's own task name, as the kernel sends the name of
    /// the task that runs netconsole.
    #[arg(long, value_name = "NAME")]
    pub(crate) sysdata_taskname: Option<String>,
    /// The `msgid=` of the first message to each target (the kernel's counter gives 1 to the
    /// first message after the target is enabled; +1 per message, wrapping).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) msgid: u32,
}

/// The longest userdata value a kernel holds: its buffer less the NUL (`strscpy` into
/// `struct userdatum`'s `value` keeps at most that many bytes).
pub(crate) const USERDATA_VALUE_MAX: usize = MAX_EXTRADATA_VALUE_LEN - 1;
/// The longest userdata key.
pub(crate) const USERDATA_KEY_MAX: usize = MAX_EXTRADATA_NAME_LEN;

/// `--userdata KEY=VALUE`.
fn userdata_entry(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} has no '=' (KEY=VALUE)"))?;
    if key.is_empty() || key.len() > USERDATA_KEY_MAX || key.contains(['/', '\n']) {
        return Err(format!(
            "userdata key {key:?} must be 1 to {USERDATA_KEY_MAX} bytes without '/' or a newline"
        ));
    }
    if value.len() > USERDATA_VALUE_MAX || value.contains('\n') {
        return Err(format!(
            "userdata value of {key} must be at most {USERDATA_VALUE_MAX} bytes without a newline"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `ncrx oops ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum OopsCommand {
    /// Collect dumps from UDP (default port 2004) until SIGINT/SIGTERM.
    #[command(after_help = concat!(
        "Example:\n  ncrx oops listen --bind 0.0.0.0:2004 --dir /var/crash/netoops\n\n",
        "Each complete or timed-out dump goes to DIR/<source>-<dump_id>.log (metadata, a blank\n",
        "line, then the log bytes) and one line per dump is printed. On SIGINT/SIGTERM the dumps\n",
        "still open are written as partial, counts go to stderr, and the exit code is 0."
    ))]
    Listen(OopsListenArgs),
    /// Collect dumps from a pcap/pcapng capture.
    #[command(after_help = concat!(
        "Example:\n  ncrx oops decode crash.pcapng --dir dumps --format json\n\n",
        "Each complete or timed-out dump goes to DIR/<source>-<dump_id>.log (metadata, a blank\n",
        "line, then the log bytes) and one line per dump is printed; dumps still open at the end\n",
        "of the capture come out as partial."
    ))]
    Decode(OopsDecodeArgs),
    /// Send a crash dump as a kernel's netoops does (UDP, or frames into a pcap).
    #[command(after_help = concat!(
        "Examples:\n",
        "  # the log read from a file, to a collector on 10.0.0.2 (port 2004)\n",
        "  ncrx oops send --target 10.0.0.2 dmesg.txt\n",
        "  # a version 3 dump into a capture, packet 1 lost and the machine dead after pass 1\n",
        "  ncrx oops send --source 2001:db8::1 --target 2001:db8::2 --pcap crash.pcap --v3 \\\n",
        "      --dump-id 300 --lose 1 --passes 1 log.txt\n\n",
        "The dump is encoded by netoops-proto as the kernel encodes it: the log cut in 1024-byte\n",
        "packets sent newest first, three passes, UDP port 2004 both ways and no UDP checksum on\n",
        "IPv4. The log is the input's bytes (the newer of the kernel's two log segments)."
    ))]
    Send(OopsSendArgs),
}

/// The type of a dump (`ncrx oops send --dump-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OopsDumpType {
    /// 1: an oops or a panic.
    Oops,
    /// 3: a "soft" dump, taken without a crash.
    Soft,
}

/// An address with an optional port: `10.0.0.2`, `10.0.0.2:2004`, `2001:db8::2`,
/// `[2001:db8::2]:2004`; the port is 2004 (netoops's) when not given.
pub(crate) fn netoops_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, netoops_proto::NETOOPS_PORT));
    }
    text.parse().map_err(|_| {
        format!(
            "{text:?} is not an IP address or ADDR:PORT (10.0.0.2, 10.0.0.2:2004, 2001:db8::2, \
             [2001:db8::2]:2004); host names are not resolved"
        )
    })
}

/// `VENDOR,FAMILY,MODEL,STEPPING`, four numbers 0 to 255.
fn cpu_identity(text: &str) -> Result<[u8; 4], String> {
    let numbers: Vec<u8> = text
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format!("{text:?}: four numbers 0 to 255 expected (VENDOR,FAMILY,MODEL,STEPPING)")
        })?;
    numbers.try_into().map_err(|_| {
        format!("{text:?}: four numbers expected (VENDOR,FAMILY,MODEL,STEPPING), e.g. 0,6,85,7")
    })
}

/// A MAC address `aa:bb:cc:dd:ee:ff`.
fn mac_address(text: &str) -> Result<netpoll_frame::MacAddr, String> {
    text.parse()
        .map_err(|e| format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff): {e}"))
}

/// `ncrx oops send`.
#[derive(Debug, Args)]
pub(crate) struct OopsSendArgs {
    /// The collector: an IP address, with a port when not 2004.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = netoops_address)]
    pub(crate) target: SocketAddr,
    /// The address (and port, default 2004) the dump comes from; required with --pcap. Over
    /// UDP the socket is bound to it (port 0: any free port).
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = netoops_address)]
    pub(crate) source: Option<SocketAddr>,
    /// The log to send (default: standard input; '-' is standard input too).
    #[arg(value_name = "LOG")]
    pub(crate) file: Option<PathBuf>,
    /// Write the frames into this pcap file instead of sending them.
    #[arg(long, value_name = "FILE")]
    pub(crate) pcap: Option<PathBuf>,
    /// With --pcap: the source MAC address of the frames.
    #[arg(long, value_name = "MAC", value_parser = mac_address, default_value = "52:54:00:12:34:56", requires = "pcap")]
    pub(crate) source_mac: netpoll_frame::MacAddr,
    /// With --pcap: the destination MAC address (the kernel's default is broadcast).
    #[arg(long, value_name = "MAC", value_parser = mac_address, default_value = "ff:ff:ff:ff:ff:ff", requires = "pcap")]
    pub(crate) target_mac: netpoll_frame::MacAddr,
    /// With --pcap: the time of the first frame, in seconds since the Unix epoch (default:
    /// now); frames follow 1 ms apart. A fixed time makes the capture reproducible.
    #[arg(long, value_name = "SECONDS", requires = "pcap")]
    pub(crate) time: Option<u64>,
    /// The dump id (the kernel's `(jiffies / HZ) & 0xffff` when the dump began).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) dump_id: u16,
    /// Why the dump was taken.
    #[arg(long, value_enum, default_value_t = OopsDumpType::Oops)]
    pub(crate) dump_type: OopsDumpType,
    /// The kernel release in the header (default: this machine's).
    #[arg(long, value_name = "RELEASE")]
    pub(crate) release: Option<String>,
    /// A version 3 dump (boot id, user blob, x86 arch data) instead of version 2.
    #[arg(long)]
    pub(crate) v3: bool,
    /// Version 3: the boot id (sysfs `netoops_boot_id`).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "v3")]
    pub(crate) boot_id: u32,
    /// Version 3: the user blob (sysfs), at most 128 bytes.
    #[arg(long, value_name = "TEXT", default_value = "", requires = "v3")]
    pub(crate) user_blob: String,
    /// Version 3: the crashing CPU as VENDOR,FAMILY,MODEL,STEPPING (x86 numbers).
    #[arg(long, value_name = "V,F,M,S", value_parser = cpu_identity, default_value = "0,0,0,0", requires = "v3")]
    pub(crate) cpu: [u8; 4],
    /// How many of the kernel's three passes are sent (fewer: the machine died before).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub(crate) passes: u8,
    /// A packet number not sent in the first pass (repeatable), as if the network lost it.
    #[arg(long, value_name = "PACKET_NO")]
    pub(crate) lose: Vec<u32>,
}

/// Output options shared by both `oops` subcommands.
#[derive(Debug, Args)]
pub(crate) struct OopsOutput {
    /// Write each dump into DIR/<source>-<dump_id>.log; a file is never overwritten: when
    /// the name exists (the same dump decoded twice, a dump id reused), the next free of
    /// <source>-<dump_id>.2.log, .3.log, ... is taken. Example: --dir /var/crash/netoops.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Output format of the line printed per dump.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// `ncrx oops listen`.
#[derive(Debug, Args)]
pub(crate) struct OopsListenArgs {
    /// Address and port to receive on (repeatable; a link-local IPv6 address takes its
    /// interface by name or number, `[fe80::1%eth0]:2004`).
    #[arg(long, value_name = "ADDR:PORT", default_value = "[::]:2004", value_parser = bind_addr)]
    pub(crate) bind: Vec<SocketAddr>,
    #[command(flatten)]
    pub(crate) output: OopsOutput,
}

/// `ncrx oops decode`.
#[derive(Debug, Args)]
pub(crate) struct OopsDecodeArgs {
    /// The pcap or pcapng capture: a file, a pipe or FIFO, or '-' for standard input.
    pub(crate) file: PathBuf,
    /// Destination UDP port of the netoops traffic (repeatable).
    #[arg(long, value_name = "N", default_value = "2004")]
    pub(crate) port: Vec<u16>,
    #[command(flatten)]
    pub(crate) output: OopsOutput,
    #[command(flatten)]
    pub(crate) checksums: ChecksumArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn bind_addresses_take_an_interface_by_name_or_number() {
        let lo = nix::net::if_::if_nametoindex("lo").expect("a loopback interface");
        let scoped = |text| match bind_addr(text) {
            Ok(SocketAddr::V6(v6)) => Ok((v6.ip().to_string(), v6.port(), v6.scope_id())),
            Ok(other) => Err(other.to_string()),
            Err(error) => Err(error),
        };
        assert_eq!(
            scoped("[fe80::1%lo]:6666"),
            Ok(("fe80::1".into(), 6666, lo))
        );
        assert_eq!(scoped("[fe80::1%7]:6666"), Ok(("fe80::1".into(), 6666, 7)));
        assert_eq!(scoped("[::]:6666"), Ok(("::".into(), 6666, 0)));
        assert_eq!(
            bind_addr("127.0.0.1:6666"),
            Ok("127.0.0.1:6666".parse().unwrap())
        );
        let error = bind_addr("[fe80::1%no-such-if0]:6666").unwrap_err();
        assert!(
            error.starts_with("no-such-if0 is not a network interface here"),
            "{error}"
        );
        let error = bind_addr("[fe80::1%lo]:http").unwrap_err();
        assert!(error.starts_with("http is not a port"), "{error}");
        let error = bind_addr("localhost:6666").unwrap_err();
        assert!(error.contains("is not an address and port"), "{error}");
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["ncrx", "oops", "decode", "x.pcap"]).unwrap();
        let Command::Oops {
            command: OopsCommand::Decode(args),
        } = cli.command
        else {
            panic!("not oops decode");
        };
        assert_eq!(args.port, [2004]);
        assert_eq!(args.output.format, Format::Text);
        let cli = Cli::try_parse_from(["ncrx", "oops", "listen"]).unwrap();
        let Command::Oops {
            command: OopsCommand::Listen(args),
        } = cli.command
        else {
            panic!("not oops listen");
        };
        assert_eq!(args.bind, ["[::]:2004".parse::<SocketAddr>().unwrap()]);
        let cli = Cli::try_parse_from(["ncrx", "decode", "x.pcap"]).unwrap();
        let Command::Decode(args) = cli.command else {
            panic!("not decode");
        };
        assert_eq!(args.port, [6666]);
    }

    #[test]
    fn bad_target_is_a_usage_error_saying_what_is_wrong() {
        let error = Cli::try_parse_from(["ncrx", "send", "--target", "6665@10.0.0.1"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("missing '/'"), "{error}");
    }

    #[test]
    fn userdata_and_sysdata_options() {
        let cli = Cli::try_parse_from([
            "ncrx",
            "send",
            "--target",
            "+@/,@10.0.0.1/",
            "--userdata",
            "k=v=w",
            "--userdata",
            "empty=",
            "--sysdata",
            "msgid,cpu_nr",
        ])
        .unwrap();
        let Command::Send(args) = cli.command else {
            panic!("not send");
        };
        assert_eq!(
            args.extradata.userdata,
            [("k".into(), "v=w".into()), ("empty".into(), String::new())]
        );
        assert_eq!(
            args.extradata.sysdata,
            [SysdataField::Msgid, SysdataField::Cpu]
        );
        assert_eq!(args.extradata.msgid, 1);
        let long = format!("k={}", "v".repeat(USERDATA_VALUE_MAX + 1));
        for (bad, message) in [
            ("novalue", "has no '='"),
            ("=v", "must be 1 to 53 bytes"),
            ("a/b=v", "without '/'"),
            (long.as_str(), "at most 199 bytes"),
        ] {
            let error = Cli::try_parse_from([
                "ncrx",
                "send",
                "--target",
                "+@/,@10.0.0.1/",
                "--userdata",
                bad,
            ])
            .unwrap_err();
            assert_eq!(error.exit_code(), 2);
            assert!(error.to_string().contains(message), "{bad}: {error}");
        }
        let error = Cli::try_parse_from([
            "ncrx",
            "send",
            "--target",
            "+@/,@10.0.0.1/",
            "--sysdata",
            "cpu,pid",
        ])
        .unwrap_err();
        assert!(error.to_string().contains("'pid'"), "{error}");
    }

    #[test]
    fn repeatable_ports() {
        let cli = Cli::try_parse_from([
            "ncrx", "oops", "decode", "x.pcap", "--port", "1", "--port", "2",
        ])
        .unwrap();
        let Command::Oops {
            command: OopsCommand::Decode(args),
        } = cli.command
        else {
            panic!("not oops decode");
        };
        assert_eq!(args.port, [1, 2]);
    }

    #[test]
    fn capture_spec() {
        let spec = TargetSpec::parse_arg(
            "+6665@192.0.2.1/52:54:00:12:34:56,6666@192.0.2.2/52:54:00:12:34:57",
        )
        .unwrap();
        let [target] = &spec.targets[..] else {
            panic!("one target expected");
        };
        assert!(target.extended && !target.release);
        assert_eq!(target.local_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(
            target.local_mac,
            Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert_eq!(
            target.remote_mac,
            MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x57])
        );
        assert_eq!((target.local_port, target.remote_port), (6665, 6666));
    }

    #[test]
    fn host_names_are_named_as_such() {
        assert_eq!(
            host_name_in("+@/,@logs.example.com/"),
            Some("logs.example.com")
        );
        assert_eq!(host_name_in("@myhost/,@10.0.0.1/"), Some("myhost"));
        // Addresses, MACs, interface names and a missing '/' are not host names.
        assert_eq!(
            host_name_in("+6665@192.0.2.1/eth0,6666@192.0.2.2/52:54:00:12:34:57"),
            None
        );
        assert_eq!(host_name_in("@/,@2001:db8::2/"), None);
        assert_eq!(host_name_in("+6665@192.0.2.1,6666@192.0.2.2/"), None);
        assert_eq!(
            host_name_in("@/,@cafe/"),
            None,
            "hexadecimal only: not said to be a name"
        );
        let error = TargetSpec::parse_arg("+@/,@logs.example.com/").unwrap_err();
        assert!(
            error.starts_with("bad IP address in target 1")
                && error.contains(
                    "\"logs.example.com\" is a host name, and netconsole= takes IP addresses only"
                )
                && error.contains("getent ahostsv4 logs.example.com"),
            "{error}"
        );
        let error = TargetSpec::parse_arg("@/,@10.0.0.300/").unwrap_err();
        assert!(!error.contains("host name"), "{error}");
    }

    #[test]
    fn errors_name_the_problem_and_the_target() {
        let error = TargetSpec::parse_arg("@/,@10.0.0.1/;@/,@10.0.0.300/").unwrap_err();
        assert!(error.starts_with("bad IP address in target 2"), "{error}");
        let error = TargetSpec::parse_arg("r@/,@10.0.0.1/").unwrap_err();
        assert!(
            error.contains("release prepend requires extended mode"),
            "{error}"
        );
    }
}

//! Exit codes and the errors that end a command.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything went well.
pub(crate) const EXIT_OK: u8 = 0;
/// The command ran to the end but saw bad data (bad frames, rejected datagrams, bad input
/// records); what was good was processed.
pub(crate) const EXIT_BAD_DATA: u8 = 1;
/// Bad command line (clap's own code for usage errors).
pub(crate) const EXIT_USAGE: u8 = 2;
/// A file could not be opened, read or written.
pub(crate) const EXIT_IO: u8 = 3;
/// The file is not a pcap/pcapng capture, or of a link type that cannot be decoded.
pub(crate) const EXIT_NOT_A_CAPTURE: u8 = 4;
/// The capture ends in the middle of a packet (or is damaged there); what came before was
/// decoded and written.
pub(crate) const EXIT_TRUNCATED: u8 = 5;
/// A socket could not be bound (address in use, not available) or used.
pub(crate) const EXIT_SOCKET: u8 = 6;
/// `send --reliable`: records were still unacknowledged when the linger time ran out.
pub(crate) const EXIT_UNACKNOWLEDGED: u8 = 7;

/// The exit codes as `--help` shows them (a literal, for `concat!`).
macro_rules! exit_codes_help {
    () => {
        "\
Exit codes:
  0  success
  1  finished, but bad data was seen (bad frames, rejected datagrams, bad input records;
     not `listen`, which exits 0 on SIGINT/SIGTERM and counts what was bad)
  2  usage error (bad arguments, bad --target)
  3  file error (cannot open, read or write; `listen`: an output still stalled at the stop)
  4  not a pcap/pcapng capture, or a link type other than Ethernet, Linux cooked or raw IP
  5  truncated or damaged capture (what came before was decoded)
  6  socket error (address in use, address not available)
  7  send --reliable: records never acknowledged by the receiver"
    };
}
pub(crate) use exit_codes_help;

/// The exit codes as `--help` shows them.
#[cfg(test)]
const EXIT_CODES_HELP: &str = exit_codes_help!();

/// How a command that ran to its end went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Bad data was seen and skipped.
    pub(crate) bad_data: bool,
    /// The capture was truncated.
    pub(crate) truncated: bool,
    /// A daemon stopped with lines it could not write (its output stalled).
    pub(crate) unwritten: bool,
}

impl Outcome {
    /// The process exit code: lines not written first, then truncation, then bad data.
    pub(crate) fn exit_code(self) -> u8 {
        if self.unwritten {
            EXIT_IO
        } else if self.truncated {
            EXIT_TRUNCATED
        } else if self.bad_data {
            EXIT_BAD_DATA
        } else {
            EXIT_OK
        }
    }
}

/// Why a command stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// Arguments that clap could not check alone.
    #[error("{0}")]
    Usage(String),
    /// A file error.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What was being done ("cannot open", "cannot write").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Standard input or output failed.
    #[error("{what}: {source}")]
    Stream {
        /// Which stream and what was done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// A capture could not be read (a read error on a file, pipe or device).
    #[error("cannot read {name}: {source}")]
    Read {
        /// The capture (`standard input` for `-`).
        name: String,
        /// The cause.
        source: io::Error,
    },
    /// Not a capture at all.
    #[error("{name}: not a pcap or pcapng capture ({reason})")]
    NotACapture {
        /// The capture (`standard input` for `-`).
        name: String,
        /// What was found instead.
        reason: String,
    },
    /// A capture of another link type.
    #[error(
        "{name}: unsupported link type {link}; captures of Ethernet (1), Linux cooked \
         LINUX_SLL (113) and LINUX_SLL2 (276), and raw IP (101, 12, 14, 228, 229) can be decoded"
    )]
    UnsupportedLinkType {
        /// The capture.
        name: String,
        /// The link type: its LINKTYPE_ number, after its name when it has a known one.
        link: String,
    },
    /// `send --reliable` ended with records the receiver never acknowledged.
    #[error(
        "{records} records never acknowledged within --linger-ms {linger_ms} after the input \
         ended (is a receiver with acks listening? `ncrx listen --ack`, netconsd)"
    )]
    Unacknowledged {
        /// Records unacknowledged, summed over the targets.
        records: usize,
        /// The linger time waited.
        linger_ms: u64,
    },
    /// A socket could not be bound or used.
    #[error("{what} {addr}: {source}{}", hint(what, source))]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

fn hint(what: &str, error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::AddrInUse => " (another program is bound to this address and port)",
        io::ErrorKind::AddrNotAvailable => " (no local interface has this address)",
        io::ErrorKind::PermissionDenied if what == "cannot bind" => {
            " (ports below 1024 need privileges)"
        }
        io::ErrorKind::PermissionDenied => {
            " (refused by the kernel: a broadcast address without SO_BROADCAST, or a firewall rule)"
        }
        _ => "",
    }
}

impl Failure {
    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::File { .. } | Failure::Stream { .. } | Failure::Read { .. } => EXIT_IO,
            Failure::NotACapture { .. } | Failure::UnsupportedLinkType { .. } => EXIT_NOT_A_CAPTURE,
            Failure::Socket { .. } => EXIT_SOCKET,
            Failure::Unacknowledged { .. } => EXIT_UNACKNOWLEDGED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let codes = [
            EXIT_OK,
            EXIT_BAD_DATA,
            EXIT_USAGE,
            EXIT_IO,
            EXIT_NOT_A_CAPTURE,
            EXIT_TRUNCATED,
            EXIT_SOCKET,
            EXIT_UNACKNOWLEDGED,
        ];
        for (i, code) in codes.iter().enumerate() {
            assert!(!codes[..i].contains(code), "exit code {code} used twice");
            assert!(
                EXIT_CODES_HELP.contains(&format!("\n  {code}  ")),
                "exit code {code} missing from the help"
            );
        }
    }

    #[test]
    fn unwritten_lines_win_then_truncation_then_bad_data() {
        let all = Outcome {
            bad_data: true,
            truncated: true,
            unwritten: true,
        };
        assert_eq!(all.exit_code(), EXIT_IO);
        let both = Outcome {
            unwritten: false,
            ..all
        };
        assert_eq!(both.exit_code(), EXIT_TRUNCATED);
        let bad = Outcome {
            truncated: false,
            ..both
        };
        assert_eq!(bad.exit_code(), EXIT_BAD_DATA);
        assert_eq!(Outcome::default().exit_code(), EXIT_OK);
    }
}

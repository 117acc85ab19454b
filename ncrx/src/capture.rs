//! Reading pcap and pcapng captures as a stream: UDP datagrams out of the captured packets,
//! with the capture's timestamps.
//!
//! The input is opened once and read front to back (`pcap-parser`'s streaming reader), so a
//! pipe (`tcpdump -w - | ncrx decode -`), `/dev/stdin`, a process substitution `<(...)` or a
//! FIFO works like a file, and a live capture is decoded packet by packet as it arrives:
//! before every read that may wait for more input the caller's `idle` hook runs (`decode`
//! writes out what it holds there).
//!
//! Link types: Ethernet (1); Linux cooked captures LINUX_SLL (113, `tcpdump -i any` before
//! libpcap 1.10) and LINUX_SLL2 (276, `tcpdump -i any` since), whose link-layer header is
//! skipped here to the IP packet when its protocol is IPv4 or IPv6; raw IP (101, and the
//! BSDs' 12 and 14, and LINKTYPE_IPV4/IPV6 228/229). Each packet is parsed and its
//! checksums verified by `netpoll_frame::Frame` (`parse` from Ethernet, `parse_ip` from the
//! IP header). Packets that are not UDP over IP (ARP, IPv6 neighbour discovery, ...) are
//! skipped and counted as other traffic; packets that fail verification (bad checksum,
//! truncated by the snap length, inconsistent lengths) are counted as bad and reported,
//! never fatal. A capture that ends inside a packet ends the reading with what came before
//! delivered.
//!
//! Checksums: a capture made on the sending host (`tcpdump -i lo`, or any interface with
//! checksum offload) shows UDP checksums the kernel left for the NIC to fill in (the
//! pseudo-header's sum only). By default such datagrams are decoded and counted apart as
//! "not verified", as Wireshark does (`ChecksumPolicy::AllowUnfilled`, which decides what is
//! consistent with offload); `--strict-checksums` counts them as bad frames.
//!
//! Time: a capture timestamp becomes a [`netpoll_frame::Instant`] counting nanoseconds since
//! the Unix epoch (pcap microseconds or nanoseconds; pcapng in each interface's `if_tsresol`
//! units, plus its `if_tsoffset` seconds, both read by `pcap-parser`).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use netpoll_frame::{ChecksumPolicy, Frame, Instant, ParseError};
use pcap_parser::pcapng::Block;
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{LegacyPcapReader, Linktype, PcapBlockOwned, PcapError, PcapNGReader};

use crate::error::Failure;

/// Bad frames described one by one on stderr before only counting them.
const BAD_FRAMES_SHOWN: u64 = 10;
/// The reader's first buffer; it grows for larger packets up to [`MAX_BUFFER`].
const BUFFER: usize = 256 * 1024;
/// The largest block read (pcap's snap length is at most 256 KiB; pcapng blocks may carry
/// options besides).
const MAX_BUFFER: usize = 16 << 20;
/// The longest pcapng section header block accepted (its options are a few strings).
const MAX_SECTION_HEADER: usize = 1 << 20;

/// One verified UDP datagram of the capture.
pub(crate) struct Datagram<'a> {
    /// When it was captured.
    pub(crate) time: Instant,
    /// The frame, parsed and verified.
    pub(crate) frame: Frame<'a>,
}

/// What a capture held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CaptureSummary {
    /// Packets read.
    pub(crate) frames: u64,
    /// UDP datagrams handed on (to the ports asked for).
    pub(crate) datagrams: u64,
    /// Of these, datagrams whose UDP checksum was not verified: left unfilled by checksum
    /// offload (a capture on the sending host) or absent (0).
    pub(crate) unverified: u64,
    /// UDP datagrams to other ports.
    pub(crate) other_ports: u64,
    /// Frames that are not UDP over IP.
    pub(crate) other_traffic: u64,
    /// Frames that failed verification.
    pub(crate) bad_frames: u64,
    /// Why the capture ended early, if it did.
    pub(crate) truncated: Option<String>,
}

impl CaptureSummary {
    /// One line for stderr.
    pub(crate) fn describe(&self, ports: &[u16]) -> String {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut line = format!(
            "{} frames: {} UDP datagrams to port {}, {} to other ports, {} other traffic, {} bad frames",
            self.frames,
            self.datagrams,
            ports.join(","),
            self.other_ports,
            self.other_traffic,
            self.bad_frames
        );
        if self.unverified > 0 {
            let _ = write!(
                line,
                "; {} UDP checksums not verified (left to checksum offload, or absent)",
                self.unverified
            );
        }
        if let Some(reason) = &self.truncated {
            line.push_str("; capture truncated: ");
            line.push_str(reason);
        }
        line
    }
}

/// The name of a capture argument in messages: `-` is standard input.
pub(crate) fn display_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Whether a frame that did not parse is simply not netpoll-style UDP (skipped) rather than
/// damaged (bad).
fn is_other_traffic(error: &ParseError) -> bool {
    matches!(
        error,
        ParseError::UnsupportedEthertype(_)
            | ParseError::NotUdp(_)
            | ParseError::Fragment { .. }
            | ParseError::UnsupportedIpv6Extension(_)
    )
}

/// How the packets of one link type reach the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// An Ethernet II header (`Frame::parse`).
    Ethernet,
    /// The IP header first (`Frame::parse_ip`).
    RawIp,
    /// A Linux cooked header of this many bytes, with the protocol (an ethertype) at this
    /// offset.
    Cooked { header: usize, protocol_at: usize },
}

impl Link {
    fn of(linktype: Linktype) -> Option<Self> {
        Some(match linktype.0 {
            1 => Link::Ethernet,
            12 | 14 | 101 | 228 | 229 => Link::RawIp,
            113 => Link::Cooked {
                header: 16,
                protocol_at: 14,
            },
            276 => Link::Cooked {
                header: 20,
                protocol_at: 0,
            },
            _ => return None,
        })
    }

    fn parse(self, data: &[u8], policy: ChecksumPolicy) -> Result<Frame<'_>, ParseError> {
        match self {
            Link::Ethernet => Frame::parse_with(data, policy),
            Link::RawIp => Frame::parse_ip_with(data, policy),
            Link::Cooked {
                header,
                protocol_at,
            } => {
                let (Some(&[hi, lo]), Some(ip)) =
                    (data.get(protocol_at..protocol_at + 2), data.get(header..))
                else {
                    return Err(ParseError::Truncated {
                        layer: netpoll_frame::Layer::Ethernet,
                        needed: header,
                        available: data.len(),
                    });
                };
                match u16::from_be_bytes([hi, lo]) {
                    0x0800 | 0x86dd => Frame::parse_ip_with(ip, policy),
                    other => Err(ParseError::UnsupportedEthertype(other)),
                }
            }
        }
    }
}

fn unsupported_link(name: &str, linktype: Linktype) -> Failure {
    // `pcap-parser` names a few link types; the others show as a number.
    let known = format!("{linktype}");
    let link = if known.starts_with(|c: char| c.is_ascii_uppercase()) && !known.contains('(') {
        format!("{known} ({})", linktype.0)
    } else {
        linktype.0.to_string()
    };
    Failure::UnsupportedLinkType {
        name: name.to_owned(),
        link,
    }
}

/// The units per second of a pcapng `if_tsresol` (`pcap-parser` reads the option; its own
/// `ts_resolution` 0.17 refuses every binary resolution, the top bit set, as too large): a
/// power of ten, or of two when the top bit is set; `None` when it does not fit in 64 bits.
fn units_per_second(if_tsresol: u8) -> Option<u64> {
    let exponent = u32::from(if_tsresol & 0x7f);
    if if_tsresol & 0x80 == 0 {
        10u64.checked_pow(exponent)
    } else {
        1u64.checked_shl(exponent).filter(|_| exponent < 64)
    }
}

/// Nanoseconds since the epoch of a pcapng timestamp: `ts` units of `1 / units_per_second`
/// seconds, plus `offset_secs` (`if_tsoffset`, signed).
fn pcapng_instant(ts: u64, units_per_second: u64, offset_secs: i64) -> Instant {
    let units = u128::from(units_per_second.max(1));
    let nanos = i128::try_from(u128::from(ts) * 1_000_000_000 / units).unwrap_or(i128::MAX)
        + i128::from(offset_secs) * 1_000_000_000;
    Instant::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
}

/// A reader that keeps the last error it met (`pcap-parser` only says "read error"),
/// retrying reads interrupted by a signal.
struct KeepError<R> {
    inner: R,
    error: Arc<Mutex<Option<io::Error>>>,
}

impl<R: Read> Read for KeepError<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let kept = io::Error::new(error.kind(), error.to_string());
                    *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
                    return Err(error);
                }
                Ok(n) => return Ok(n),
            }
        }
    }
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(got)
}

/// The capture formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pcap,
    PcapNg,
}

/// The file header, read whole (so that the streaming reader never starts on a part of it,
/// whatever a pipe delivers first): its format and bytes.
fn read_header(name: &str, reader: &mut impl Read) -> Result<(Format, Vec<u8>), Failure> {
    let not_capture = |reason: String| Failure::NotACapture {
        name: name.to_owned(),
        reason,
    };
    let read_failure = |source| Failure::Read {
        name: name.to_owned(),
        source,
    };
    let mut header = vec![0u8; 12];
    let got = read_full(reader, &mut header[..4]).map_err(read_failure)?;
    match got {
        0 => return Err(not_capture("it is empty".to_owned())),
        1..=3 => {
            return Err(not_capture(format!(
                "only {got} bytes; a capture starts with a 24-byte pcap or a pcapng header"
            )));
        }
        _ => {}
    }
    let format = match header[..4] {
        [0xa1, 0xb2, 0xc3, 0xd4]
        | [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d]
        | [0x4d, 0x3c, 0xb2, 0xa1] => Format::Pcap,
        [0x0a, 0x0d, 0x0d, 0x0a] => Format::PcapNg,
        [a, b, c, d] => {
            return Err(not_capture(format!(
                "it starts with {a:02x} {b:02x} {c:02x} {d:02x}, which is neither the pcap nor the pcapng magic number"
            )));
        }
        _ => unreachable!("four bytes"),
    };
    let (len, what) = match format {
        Format::Pcap => (24, "the 24-byte pcap file header"),
        Format::PcapNg => {
            let got = 4 + read_full(reader, &mut header[4..12]).map_err(read_failure)?;
            if got < 12 {
                return Err(not_capture(format!(
                    "it ends inside the pcapng section header, after {got} bytes"
                )));
            }
            let length = match header[8..12] {
                [0x1a, 0x2b, 0x3c, 0x4d] => {
                    u32::from_be_bytes([header[4], header[5], header[6], header[7]])
                }
                [0x4d, 0x3c, 0x2b, 0x1a] => {
                    u32::from_le_bytes([header[4], header[5], header[6], header[7]])
                }
                [a, b, c, d] => {
                    return Err(not_capture(format!(
                        "its pcapng section header has the byte-order magic {a:02x} {b:02x} {c:02x} {d:02x}, not 1a 2b 3c 4d"
                    )));
                }
                _ => unreachable!("four bytes"),
            };
            let length = length as usize;
            if !(28..=MAX_SECTION_HEADER).contains(&length) || length % 4 != 0 {
                return Err(not_capture(format!(
                    "its pcapng section header claims {length} bytes (28 to {MAX_SECTION_HEADER}, a multiple of 4)"
                )));
            }
            (length, "the pcapng section header")
        }
    };
    let start = if format == Format::Pcap { 4 } else { 12 };
    header.resize(len, 0);
    let got = start + read_full(reader, &mut header[start..]).map_err(read_failure)?;
    if got < len {
        return Err(not_capture(format!(
            "it ends inside {what}, after {got} of {len} bytes"
        )));
    }
    Ok((format, header))
}

/// Turns packets into datagrams for the caller, counting what is skipped.
struct Packets<'p, F> {
    name: &'p str,
    ports: &'p [u16],
    policy: ChecksumPolicy,
    handle: F,
    summary: CaptureSummary,
}

impl<F: FnMut(&Datagram<'_>) -> Result<(), Failure>> Packets<'_, F> {
    fn packet(&mut self, link: Link, time: Instant, data: &[u8]) -> Result<(), Failure> {
        let summary = &mut self.summary;
        summary.frames += 1;
        match link.parse(data, self.policy) {
            Ok(frame) => {
                if self.ports.is_empty() || self.ports.contains(&frame.destination().port()) {
                    summary.datagrams += 1;
                    if !frame.udp_checksum_status().is_verified() {
                        summary.unverified += 1;
                    }
                    (self.handle)(&Datagram { time, frame })
                } else {
                    summary.other_ports += 1;
                    Ok(())
                }
            }
            Err(error) if is_other_traffic(&error) => {
                summary.other_traffic += 1;
                Ok(())
            }
            Err(error) => {
                summary.bad_frames += 1;
                if summary.bad_frames <= BAD_FRAMES_SHOWN {
                    // Strict: say when only the checksum offload left stands in the way.
                    let hint = if self.policy == ChecksumPolicy::Strict
                        && link.parse(data, ChecksumPolicy::AllowUnfilled).is_ok()
                    {
                        " (left unfilled by checksum offload: decoded without --strict-checksums)"
                    } else {
                        ""
                    };
                    eprintln!(
                        "ncrx: {}: frame {}: bad frame skipped: {error}{hint}",
                        self.name, summary.frames
                    );
                }
                Ok(())
            }
        }
    }

    /// Handles one block; `false` when the capture is damaged there (reading stops).
    fn block(&mut self, state: &mut State, block: PcapBlockOwned<'_>) -> Result<bool, Failure> {
        match block {
            PcapBlockOwned::LegacyHeader(header) => {
                state.nanosecond_pcap = header.is_nanosecond_precision();
                state.link = Some(
                    Link::of(header.network)
                        .ok_or_else(|| unsupported_link(self.name, header.network))?,
                );
            }
            PcapBlockOwned::Legacy(packet) => {
                let Some(link) = state.link else {
                    self.damaged("damaged: a packet before the file header");
                    return Ok(false);
                };
                let fraction = if state.nanosecond_pcap {
                    u64::from(packet.ts_usec)
                } else {
                    u64::from(packet.ts_usec) * 1000
                };
                let time = Instant::from_nanos(u64::from(packet.ts_sec) * 1_000_000_000 + fraction);
                self.packet(link, time, packet.data)?;
            }
            PcapBlockOwned::NG(block) => {
                let (interface, ts, data) = match &block {
                    Block::SectionHeader(_) => {
                        *state = State::default();
                        return Ok(true);
                    }
                    Block::InterfaceDescription(interface) => {
                        state.interfaces.push((
                            interface.linktype,
                            units_per_second(interface.if_tsresol),
                            interface.ts_offset(),
                        ));
                        return Ok(true);
                    }
                    Block::EnhancedPacket(packet) => (
                        packet.if_id,
                        Some((u64::from(packet.ts_high) << 32) | u64::from(packet.ts_low)),
                        packet.packet_data(),
                    ),
                    Block::SimplePacket(packet) => (0, None, packet.packet_data()),
                    _ => return Ok(true),
                };
                let Some(&(linktype, units, offset_secs)) =
                    state.interfaces.get(interface as usize)
                else {
                    self.damaged(&format!(
                        "damaged: a packet on undeclared interface {interface}"
                    ));
                    return Ok(false);
                };
                let link =
                    Link::of(linktype).ok_or_else(|| unsupported_link(self.name, linktype))?;
                let time = match (ts, units) {
                    (Some(ts), Some(units)) => pcapng_instant(ts, units, offset_secs),
                    (Some(_), None) => {
                        self.damaged(&format!(
                            "damaged: interface {interface} has an invalid timestamp resolution"
                        ));
                        return Ok(false);
                    }
                    (None, _) => state.last.unwrap_or(Instant::ZERO),
                };
                state.last = Some(time);
                self.packet(link, time, data)?;
            }
        }
        Ok(true)
    }

    fn damaged(&mut self, reason: &str) {
        self.summary.truncated = Some(format!("{reason} after frame {}", self.summary.frames));
    }
}

/// What the blocks read so far say about the next ones.
#[derive(Default)]
struct State {
    /// pcap: the file's link, once its header is read.
    link: Option<Link>,
    /// pcap: timestamps in nanoseconds rather than microseconds.
    nanosecond_pcap: bool,
    /// pcapng: (link type, units per second, offset in seconds) per interface of the
    /// current section.
    interfaces: Vec<(Linktype, Option<u64>, i64)>,
    /// pcapng: the time of the last packet (a simple packet block has none).
    last: Option<Instant>,
}

/// Reads the capture `path` (`-`: standard input), opened once and read as a stream, calling
/// `handle` with every verified UDP datagram whose destination port is in `ports` (all ports
/// when empty), and `idle` before each read that may wait for more input. Bad frames are
/// reported on stderr and counted. With `ChecksumPolicy::AllowUnfilled`, datagrams whose UDP
/// checksum was left to offload are handed on too, and counted as not verified.
pub(crate) fn read_capture(
    path: &Path,
    ports: &[u16],
    policy: ChecksumPolicy,
    handle: impl FnMut(&Datagram<'_>) -> Result<(), Failure>,
    mut idle: impl FnMut() -> Result<(), Failure>,
) -> Result<CaptureSummary, Failure> {
    let name = display_name(path);
    let input: Box<dyn Read + Send> = if path.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).map_err(|source| Failure::File {
            what: "cannot open",
            path: path.to_owned(),
            source,
        })?)
    };
    let error = Arc::new(Mutex::new(None));
    let mut input = KeepError {
        inner: input,
        error: Arc::clone(&error),
    };
    let (format, header) = read_header(&name, &mut input)?;
    let header_len = header.len();
    let stream = Cursor::new(header).chain(input);
    let damaged_header = |e: PcapError<&[u8]>| Failure::NotACapture {
        name: name.clone(),
        reason: format!("its header is damaged ({e})"),
    };
    let capacity = BUFFER.max(header_len * 2);
    let mut reader: Box<dyn PcapReaderIterator> = match format {
        Format::Pcap => Box::new(LegacyPcapReader::new(capacity, stream).map_err(damaged_header)?),
        Format::PcapNg => Box::new(PcapNGReader::new(capacity, stream).map_err(damaged_header)?),
    };
    let mut packets = Packets {
        name: &name,
        ports,
        policy,
        handle,
        summary: CaptureSummary::default(),
    };
    let mut state = State::default();
    let mut capacity = capacity;
    loop {
        let offset = match reader.next() {
            Ok((offset, block)) => {
                if !packets.block(&mut state, block)? {
                    return Ok(packets.summary);
                }
                offset
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                idle()?;
                if reader.refill().is_err() {
                    return Err(read_failure(&name, &error));
                }
                continue;
            }
            Err(PcapError::BufferTooSmall) => {
                if capacity < MAX_BUFFER && reader.grow(capacity * 2) {
                    capacity *= 2;
                    continue;
                }
                packets.damaged(&format!(
                    "damaged: a block larger than {} MiB",
                    MAX_BUFFER >> 20
                ));
                return Ok(packets.summary);
            }
            Err(PcapError::UnexpectedEof) => {
                packets.damaged("the file ends inside the packet");
                return Ok(packets.summary);
            }
            Err(PcapError::ReadError) => return Err(read_failure(&name, &error)),
            Err(other) => {
                packets.damaged(&format!("damaged ({other})"));
                return Ok(packets.summary);
            }
        };
        reader.consume(offset);
    }
    Ok(packets.summary)
}

/// The read error `KeepError` kept.
fn read_failure(name: &str, error: &Mutex<Option<io::Error>>) -> Failure {
    let source = error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .unwrap_or_else(|| io::Error::other("read error"));
    Failure::Read {
        name: name.to_owned(),
        source,
    }
}

/// A failure to write the pcap file at `path` (`ncrx send --pcap`, `ncrx oops send --pcap`),
/// with the I/O error when there is one.
pub(crate) fn pcap_write_failure(path: &Path, error: pcap_file::PcapError) -> Failure {
    let source = match error {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    };
    Failure::File {
        what: "cannot write",
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_timestamp_units() {
        assert_eq!(units_per_second(6), Some(1_000_000));
        assert_eq!(units_per_second(9), Some(1_000_000_000));
        assert_eq!(units_per_second(19), Some(10_000_000_000_000_000_000));
        assert_eq!(units_per_second(20), None);
        assert_eq!(units_per_second(0x80 + 10), Some(1024));
        assert_eq!(units_per_second(0x80 + 63), Some(1 << 63));
        assert_eq!(units_per_second(0x80 + 64), None);
        // if_tsresol 6 (the default), 9, 12, and 2^-10.
        assert_eq!(
            pcapng_instant(1_500_000, 1_000_000, 0),
            Instant::from_millis(1_500)
        );
        assert_eq!(
            pcapng_instant(7, 1_000_000_000, 10),
            Instant::from_nanos(10_000_000_007)
        );
        assert_eq!(
            pcapng_instant(5_000, 1_000_000_000_000, 0),
            Instant::from_nanos(5)
        );
        assert_eq!(pcapng_instant(1024, 1024, 0), Instant::from_millis(1_000));
        // A negative if_tsoffset before the epoch stops at 0.
        assert_eq!(pcapng_instant(1_000_000, 1_000_000, -2), Instant::ZERO);
        assert_eq!(
            pcapng_instant(3_000_000, 1_000_000, -2),
            Instant::from_millis(1_000)
        );
    }

    #[test]
    fn skipped_versus_bad() {
        assert!(is_other_traffic(&ParseError::NotUdp(58)));
        assert!(is_other_traffic(&ParseError::UnsupportedEthertype(0x0806)));
        assert!(!is_other_traffic(&ParseError::UdpChecksum {
            found: 1,
            expected: 2
        }));
    }

    #[test]
    fn headers_in_words() {
        let reason = |bytes: &[u8]| match read_header("x", &mut &bytes[..]) {
            Err(Failure::NotACapture { reason, .. }) => reason,
            Err(other) => panic!("{other}"),
            Ok((format, _)) => panic!("{format:?}"),
        };
        assert_eq!(reason(b""), "it is empty");
        assert!(reason(b"\xd4\xc3").starts_with("only 2 bytes"));
        assert_eq!(
            reason(&[
                0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]),
            "it ends inside the 24-byte pcap file header, after 20 of 24 bytes"
        );
        assert!(reason(b"hello, world").contains("starts with 68 65 6c 6c, which is neither"));
        let mut ng = vec![0x0a, 0x0d, 0x0d, 0x0a, 8, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a];
        assert!(reason(&ng).contains("claims 8 bytes"), "{}", reason(&ng));
        ng[4] = 28;
        assert_eq!(
            reason(&ng),
            "it ends inside the pcapng section header, after 12 of 28 bytes"
        );
    }
}

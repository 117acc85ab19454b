//! Reading pcap and pcapng captures: UDP datagrams out of Ethernet frames, with the
//! capture's timestamps.
//!
//! The file format is `pcap-file`'s business; each frame is parsed and its checksums verified
//! by `netpoll_frame::Frame::parse`. Frames that are not UDP over IP (IPv6 neighbour
//! discovery, ARP, ...) are skipped and counted as other traffic; frames that fail
//! verification (bad checksum, truncated by the snap length, inconsistent lengths) are counted
//! as bad and reported, never fatal. A capture that ends inside a packet ends the reading
//! with what came before delivered.
//!
//! Time: a capture timestamp becomes a [`netpoll_frame::Instant`] counting nanoseconds since
//! the Unix epoch.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use netpoll_frame::{Frame, Instant, ParseError};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, PcapError};

use crate::error::Failure;

/// Bad frames described one by one on stderr before only counting them.
const BAD_FRAMES_SHOWN: u64 = 10;

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
        if let Some(reason) = &self.truncated {
            line.push_str("; capture truncated: ");
            line.push_str(reason);
        }
        line
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

/// Tells pcap from pcapng by the magic number.
fn sniff(path: &Path) -> Result<bool, Failure> {
    let mut file = File::open(path).map_err(|source| Failure::File {
        what: "cannot open",
        path: path.to_owned(),
        source,
    })?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Failure::File {
                    what: "cannot read",
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    if got < magic.len() {
        return Err(Failure::NotACapture {
            path: path.to_owned(),
            reason: format!("only {got} bytes"),
        });
    }
    match magic {
        [0xa1, 0xb2, 0xc3, 0xd4]
        | [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d]
        | [0x4d, 0x3c, 0xb2, 0xa1] => Ok(false),
        [0x0a, 0x0d, 0x0d, 0x0a] => Ok(true),
        other => Err(Failure::NotACapture {
            path: path.to_owned(),
            reason: format!(
                "it starts with {:02x} {:02x} {:02x} {:02x}",
                other[0], other[1], other[2], other[3]
            ),
        }),
    }
}

fn unsupported_link(path: &Path, link: DataLink) -> Failure {
    Failure::UnsupportedLinkType {
        path: path.to_owned(),
        name: format!("{link:?}"),
        number: u32::from(link),
    }
}

/// A pcapng interface's timestamp unit, from `if_tsresol` (default microseconds), and its
/// `if_tsoffset` in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TsUnit {
    resolution: u8,
    offset_secs: u64,
}

impl TsUnit {
    fn of(options: &[InterfaceDescriptionOption<'_>]) -> Self {
        let mut unit = TsUnit {
            resolution: 6,
            offset_secs: 0,
        };
        for option in options {
            match option {
                InterfaceDescriptionOption::IfTsResol(r) => unit.resolution = *r,
                InterfaceDescriptionOption::IfTsOffset(o) => unit.offset_secs = *o,
                _ => {}
            }
        }
        unit
    }

    /// `pcap-file` hands the raw 64-bit count as nanoseconds; scale it by the interface's
    /// resolution (a power of ten, or of two when the top bit is set).
    fn to_instant(self, raw: u64) -> Instant {
        let raw = u128::from(raw);
        let nanos = if self.resolution & 0x80 == 0 {
            let exponent = u32::from(self.resolution);
            if exponent <= 9 {
                raw * 10u128.pow(9 - exponent)
            } else {
                raw / 10u128.saturating_pow(exponent - 9)
            }
        } else {
            let exponent = u32::from(self.resolution & 0x7f);
            (raw * 1_000_000_000) >> exponent.min(127)
        };
        let nanos = nanos + u128::from(self.offset_secs) * 1_000_000_000;
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

fn instant_of(timestamp: Duration) -> Instant {
    Instant::from_nanos(u64::try_from(timestamp.as_nanos()).unwrap_or(u64::MAX))
}

/// Turns frames into datagrams for the caller, counting what is skipped.
struct Frames<'p, F> {
    path: &'p Path,
    ports: &'p [u16],
    handle: F,
    summary: CaptureSummary,
}

impl<F: FnMut(&Datagram<'_>) -> Result<(), Failure>> Frames<'_, F> {
    fn frame(&mut self, time: Instant, data: &[u8]) -> Result<(), Failure> {
        let summary = &mut self.summary;
        summary.frames += 1;
        match Frame::parse(data) {
            Ok(frame) => {
                if self.ports.is_empty() || self.ports.contains(&frame.destination().port()) {
                    summary.datagrams += 1;
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
                    eprintln!(
                        "ncrx: {}: frame {}: bad frame skipped: {error}",
                        self.path.display(),
                        summary.frames
                    );
                }
                Ok(())
            }
        }
    }

    /// Records why the file ended early; fails only on a real read error.
    fn damaged(&mut self, error: PcapError) -> Result<(), Failure> {
        let after = self.summary.frames;
        let reason = match &error {
            PcapError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                format!("the file ends inside the packet after frame {after}")
            }
            PcapError::IncompleteBuffer => {
                format!("the file ends inside the packet after frame {after}")
            }
            other => format!("damaged after frame {after}: {other}"),
        };
        self.summary.truncated = Some(reason);
        match error {
            PcapError::IoError(e) if e.kind() != io::ErrorKind::UnexpectedEof => {
                Err(Failure::File {
                    what: "cannot read",
                    path: self.path.to_owned(),
                    source: e,
                })
            }
            _ => Ok(()),
        }
    }

    fn pcap(&mut self, mut reader: PcapReader<BufReader<File>>) -> Result<(), Failure> {
        while let Some(packet) = reader.next_packet() {
            match packet {
                Ok(packet) => self.frame(instant_of(packet.timestamp), &packet.data)?,
                Err(error) => return self.damaged(error),
            }
        }
        Ok(())
    }

    fn pcapng(&mut self, mut reader: PcapNgReader<BufReader<File>>) -> Result<(), Failure> {
        // (link type, timestamp unit) of each interface of the current section.
        let mut interfaces: Vec<(DataLink, TsUnit)> = Vec::new();
        let mut last = Instant::ZERO;
        while let Some(block) = reader.next_block() {
            let block = match block {
                Ok(block) => block,
                Err(error) => return self.damaged(error),
            };
            let (interface_id, raw, data) = match block {
                Block::SectionHeader(_) => {
                    interfaces.clear();
                    continue;
                }
                Block::InterfaceDescription(interface) => {
                    interfaces.push((interface.linktype, TsUnit::of(&interface.options)));
                    continue;
                }
                Block::EnhancedPacket(packet) => (
                    packet.interface_id,
                    Some(u64::try_from(packet.timestamp.as_nanos()).unwrap_or(u64::MAX)),
                    packet.data,
                ),
                // No timestamp: the previous packet's time.
                Block::SimplePacket(packet) => (0, None, packet.data),
                _ => continue,
            };
            let Some(&(link, unit)) = interfaces.get(interface_id as usize) else {
                self.summary.truncated = Some(format!(
                    "damaged after frame {}: packet on undeclared interface {interface_id}",
                    self.summary.frames
                ));
                return Ok(());
            };
            if link != DataLink::ETHERNET {
                return Err(unsupported_link(self.path, link));
            }
            let time = raw.map_or(last, |raw| unit.to_instant(raw));
            last = time;
            self.frame(time, &data)?;
        }
        Ok(())
    }
}

/// Reads `path`, calling `handle` with every verified UDP datagram whose destination port is
/// in `ports` (all ports when empty). Bad frames are reported on stderr and counted.
pub(crate) fn read_capture(
    path: &Path,
    ports: &[u16],
    handle: impl FnMut(&Datagram<'_>) -> Result<(), Failure>,
) -> Result<CaptureSummary, Failure> {
    let ng = sniff(path)?;
    let file = File::open(path).map_err(|source| Failure::File {
        what: "cannot open",
        path: path.to_owned(),
        source,
    })?;
    let file = BufReader::new(file);
    let not_capture = |error: PcapError| Failure::NotACapture {
        path: path.to_owned(),
        reason: format!("bad header: {error}"),
    };
    let mut frames = Frames {
        path,
        ports,
        handle,
        summary: CaptureSummary::default(),
    };
    if ng {
        frames.pcapng(PcapNgReader::new(file).map_err(not_capture)?)?;
    } else {
        let reader = PcapReader::new(file).map_err(not_capture)?;
        let link = reader.header().datalink;
        if link != DataLink::ETHERNET {
            return Err(unsupported_link(path, link));
        }
        frames.pcap(reader)?;
    }
    Ok(frames.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_timestamp_units() {
        let micro = TsUnit {
            resolution: 6,
            offset_secs: 0,
        };
        assert_eq!(micro.to_instant(1_500_000), Instant::from_millis(1_500));
        let nano = TsUnit {
            resolution: 9,
            offset_secs: 10,
        };
        assert_eq!(nano.to_instant(7), Instant::from_nanos(10_000_000_007));
        let pico = TsUnit {
            resolution: 12,
            offset_secs: 0,
        };
        assert_eq!(pico.to_instant(5_000), Instant::from_nanos(5));
        let binary = TsUnit {
            resolution: 0x80 | 0x0a,
            offset_secs: 0,
        };
        assert_eq!(binary.to_instant(1024), Instant::from_millis(1_000));
        assert_eq!(TsUnit::of(&[]), micro);
        assert_eq!(
            TsUnit::of(&[InterfaceDescriptionOption::IfTsResol(9)]).resolution,
            9
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
}

//! The dump encoder: [`DumpEncoder`] writes every packet of a dump, byte for byte and in the
//! order the kernel sends them.

use crate::meta::DumpMeta;
use crate::wire::{
    ARCH_DATA_X86_64_LEN, HEADER_V2_LEN, HEADER_V3_LEN, HeaderV2, HeaderV3, X86CpuIdentity,
};
use crate::{DATA_BYTES, RETRANSMIT_COUNT};
use core::mem::offset_of;
use core::net::IpAddr;
use netpoll_frame::{BuildError, FrameBuilder, FrameConfig, UdpChecksumPolicy};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

/// The longest header (and arch data) this encoder writes: version 3 on x86_64.
pub(crate) const MAX_HEADER_LEN: usize = HEADER_V3_LEN + ARCH_DATA_X86_64_LEN;

/// The largest `packet_count` the kernel can send (it counts packets in a C `int`).
pub(crate) const MAX_PACKET_COUNT: u32 = i32::MAX as u32;

/// Why a dump or one of its packets cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The log needs more packets than the kernel's `int` packet count holds.
    #[error("a log of {bytes} bytes needs more than {MAX_PACKET_COUNT} packets")]
    TooLarge {
        /// The two segments' total length.
        bytes: u64,
    },
    /// The caller's buffer is shorter than one packet.
    #[error("a buffer of {len} bytes cannot hold a packet of {needed} bytes")]
    BufferTooSmall {
        /// The packet's length.
        needed: usize,
        /// The buffer's length.
        len: usize,
    },
    /// The frame builder refused the packet (buffer too small for the frame, ...).
    #[error("cannot build the frame: {0}")]
    Frame(#[from] BuildError),
    /// The packet number asked for is not below `packet_count`.
    #[error("packet_no {packet_no} is not below packet_count {packet_count}")]
    PacketNo {
        /// The number asked for.
        packet_no: u32,
        /// The dump's `packet_count`.
        packet_count: u32,
    },
}

/// Writes every packet of one dump into caller buffers, byte for byte and in the order the
/// kernel sends them.
///
/// # What the kernel does (`netoops()` and `netoops_send_segment()` in the seed patch)
///
/// `kmsg_dump` hands the dumper the log buffer as two segments, `s1` (the older bytes) and
/// `s2` (the newer ones); the log in order is `s1` followed by `s2`. With `N = 1024`
/// (`NETOOPS_DATA_BYTES`):
///
/// 1. Each segment of `l` bytes is cut into `ceil(l / N)` chunks; an empty segment has none.
///    `packet_count` is the sum over both segments (`c1 + c2`), the same in every packet.
/// 2. The header is zeroed once, filled once (`packet_no` apart) and reused for every packet,
///    so all header bytes except `packet_no` are the same across the dump.
/// 3. Three passes (`NETOOPS_RETRANSMIT_COUNT`) send the same packets again, identical byte
///    for byte.
/// 4. Within a pass the second segment goes first, then the first segment (numbered from
///    `c2` on). Within a segment the chunks go from last to first: chunk `i` of a segment of
///    `c` chunks gets `packet_no = (c - 1 - i) + offset`. So in every pass `packet_no` runs
///    0, 1, ..., `packet_count - 1` in send order, packet 0 carries the newest bytes (the
///    tail of `s2`), and reading packets from `packet_count - 1` down to 0 gives the log in
///    order.
/// 5. The tail chunk of a segment (the first one sent) copies `l % N` bytes and zero-fills
///    the rest of the data. When `l` is an exact multiple of 1024 that is **zero bytes**: the
///    kernel sends an all-zero chunk in place of the segment's last 1024 bytes, which never
///    leave the machine. Every other chunk carries 1024 log bytes.
///
/// Example: `s1` = 1024 bytes, `s2` = 2500 bytes, `packet_count` = 1 + 3 = 4; each pass sends
/// packet 0 = `s2[2048..2500]` + 572 zero bytes, packet 1 = `s2[1024..2048]`,
/// packet 2 = `s2[0..1024]`, packet 3 = 1024 zero bytes (the whole of `s1` is lost).
///
/// The encoder reproduces all of this. It writes each packet into a caller's buffer and
/// allocates nothing. With [`DumpEncoder::write_next_frame`] each packet goes out wrapped in a
/// whole netpoll frame (Ethernet, IPv4 or IPv6, UDP) by a [`FrameBuilder`];
/// [`netoops_frame_config`] sets up a target the way netoops does (port 2004 both ways, UDP
/// checksum 0 on IPv4).
///
/// ```
/// use netoops_proto::{DumpEncoder, DumpMeta, DumpType, Packet};
///
/// let meta = DumpMeta::v2(0x2a, DumpType::PrintkBuffer, b"2.6.37");
/// let older = vec![b'a'; 1500];
/// let newer = b"Kernel panic - not syncing: Fatal exception\n";
/// let mut encoder = DumpEncoder::new(&meta, &older, newer)?;
/// assert_eq!(encoder.packet_count(), 3);
/// assert_eq!(encoder.len(), 9); // three passes
///
/// let mut buf = [0u8; 1500];
/// let mut sent = Vec::new();
/// while let Some(len) = encoder.write_next(&mut buf)? {
///     let packet = Packet::parse(&buf[..len]).expect("our own packet parses");
///     sent.push(packet.packet_no());
/// }
/// assert_eq!(sent, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
/// # Ok::<(), netoops_proto::EncodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DumpEncoder<'a> {
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    packet_no_offset: usize,
    first: &'a [u8],
    second: &'a [u8],
    first_packets: u32,
    second_packets: u32,
    next: usize,
}

impl<'a> DumpEncoder<'a> {
    /// An encoder for the dump described by `meta` whose log is `first` (the kernel's `s1`,
    /// older bytes) followed by `second` (`s2`, newer bytes).
    pub fn new(meta: &DumpMeta, first: &'a [u8], second: &'a [u8]) -> Result<Self, EncodeError> {
        let too_large = EncodeError::TooLarge {
            bytes: first.len() as u64 + second.len() as u64,
        };
        let first_packets = chunks_in(first).ok_or(too_large)?;
        let second_packets = chunks_in(second).ok_or(too_large)?;
        let packet_count = first_packets
            .checked_add(second_packets)
            .filter(|&count| count <= MAX_PACKET_COUNT)
            .ok_or(too_large)?;

        let mut header = [0; MAX_HEADER_LEN];
        let (header_len, packet_no_offset) = match &meta.v3 {
            None => {
                let fields = HeaderV2 {
                    version: U16::new(2),
                    header_size: U16::new(HEADER_V2_LEN as u16),
                    arch: U16::new(meta.arch),
                    dump_id: U16::new(meta.dump_id),
                    dump_type: U16::new(meta.dump_type.number()),
                    packet_count: U32::new(packet_count),
                    packet_no: U32::ZERO,
                    reserved1: U32::ZERO,
                    reserved2: [0; 3],
                    kernel_version: meta.kernel_version,
                    reserved5: [0; 64],
                    reserved6: [0; 64],
                };
                header[..HEADER_V2_LEN].copy_from_slice(fields.as_bytes());
                (HEADER_V2_LEN, offset_of!(HeaderV2, packet_no))
            }
            Some(v3) => {
                let arch = &v3.arch_data;
                let regs = arch.regs.as_bytes();
                let data_offset = HEADER_V3_LEN + arch.wire_len();
                let fields = HeaderV3 {
                    version: U16::new(3),
                    dump_id: U16::new(meta.dump_id),
                    data_offset: U16::new(data_offset as u16),
                    arch: U16::new(meta.arch),
                    arch_offset: U16::new(HEADER_V3_LEN as u16),
                    dump_type: U16::new(meta.dump_type.number()),
                    packet_count: U32::new(packet_count),
                    packet_no: U32::ZERO,
                    boot_id: U32::new(v3.boot_id),
                    kernel_version: meta.kernel_version,
                    user_blob: v3.user_blob,
                };
                let cpu = X86CpuIdentity {
                    vendor: arch.vendor,
                    family: arch.family,
                    model: arch.model,
                    stepping: arch.stepping,
                };
                header[..HEADER_V3_LEN].copy_from_slice(fields.as_bytes());
                header[HEADER_V3_LEN..HEADER_V3_LEN + 4].copy_from_slice(cpu.as_bytes());
                header[HEADER_V3_LEN + 4..data_offset].copy_from_slice(regs);
                (data_offset, offset_of!(HeaderV3, packet_no))
            }
        };
        Ok(Self {
            header,
            header_len,
            packet_no_offset,
            first,
            second,
            first_packets,
            second_packets,
            next: 0,
        })
    }

    /// `packet_count`: packets in one pass.
    pub fn packet_count(&self) -> u32 {
        self.first_packets + self.second_packets
    }

    /// The length of every packet of this dump (1241 for version 2, 1412 for version 3 on
    /// x86_64).
    pub fn packet_len(&self) -> usize {
        self.header_len + DATA_BYTES
    }

    /// The number of packets sent in all: three passes of `packet_count`.
    pub fn len(&self) -> usize {
        self.packet_count() as usize * RETRANSMIT_COUNT
    }

    /// Whether the dump sends nothing at all (both segments empty).
    pub fn is_empty(&self) -> bool {
        self.packet_count() == 0
    }

    /// The `packet_no` of the `index`-th packet sent (from 0), or `None` past the end.
    pub fn packet_no_at(&self, index: usize) -> Option<u32> {
        let count = self.packet_count() as usize;
        (index < self.len()).then(|| (index % count) as u32)
    }

    /// Writes the packet numbered `packet_no` into the front of `out`; returns its length.
    pub fn write_packet(&self, packet_no: u32, out: &mut [u8]) -> Result<usize, EncodeError> {
        let packet_count = self.packet_count();
        if packet_no >= packet_count {
            return Err(EncodeError::PacketNo {
                packet_no,
                packet_count,
            });
        }
        let needed = self.packet_len();
        let len = out.len();
        let packet = out
            .get_mut(..needed)
            .ok_or(EncodeError::BufferTooSmall { needed, len })?;
        let (header, data) = packet.split_at_mut(self.header_len);
        header.copy_from_slice(&self.header[..self.header_len]);
        header[self.packet_no_offset..self.packet_no_offset + 4]
            .copy_from_slice(&packet_no.to_le_bytes());

        // Which segment, and which chunk of it (see the module doc, rule 4).
        let (segment, chunks, chunk) = if packet_no < self.second_packets {
            (
                self.second,
                self.second_packets,
                self.second_packets - 1 - packet_no,
            )
        } else {
            let n = packet_no - self.second_packets;
            (self.first, self.first_packets, self.first_packets - 1 - n)
        };
        let start = chunk as usize * DATA_BYTES;
        // Rule 5: the tail chunk copies `l % 1024` bytes (none for an exact multiple).
        let copied = if chunk == chunks - 1 {
            segment.len() % DATA_BYTES
        } else {
            DATA_BYTES
        };
        let source = segment.get(start..start + copied).unwrap_or_default();
        data[..source.len()].copy_from_slice(source);
        data[source.len()..].fill(0);
        Ok(needed)
    }

    /// Writes the next packet in send order into `out` and returns its length, or `None`
    /// once all three passes are written. On an error nothing advances.
    pub fn write_next(&mut self, out: &mut [u8]) -> Result<Option<usize>, EncodeError> {
        let Some(packet_no) = self.packet_no_at(self.next) else {
            return Ok(None);
        };
        let len = self.write_packet(packet_no, out)?;
        self.next += 1;
        Ok(Some(len))
    }

    /// Writes the packet numbered `packet_no` wrapped in a whole frame built by `builder`
    /// into the front of `out`; returns the frame's length.
    pub fn write_frame(
        &self,
        packet_no: u32,
        builder: &mut FrameBuilder,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let mut packet = [0u8; MAX_HEADER_LEN + DATA_BYTES];
        let len = self.write_packet(packet_no, &mut packet)?;
        Ok(builder.build(&packet[..len], out)?)
    }

    /// Writes the next packet in send order as a whole frame built by `builder` into `out`
    /// and returns the frame's length, or `None` once all three passes are written. On an
    /// error nothing advances.
    pub fn write_next_frame(
        &mut self,
        builder: &mut FrameBuilder,
        out: &mut [u8],
    ) -> Result<Option<usize>, EncodeError> {
        let Some(packet_no) = self.packet_no_at(self.next) else {
            return Ok(None);
        };
        let len = self.write_frame(packet_no, builder, out)?;
        self.next += 1;
        Ok(Some(len))
    }

    /// Starts again from the first packet of the first pass.
    pub fn rewind(&mut self) {
        self.next = 0;
    }
}

/// A frame configuration for a netoops target: [`NETOOPS_PORT`](crate::NETOOPS_PORT) as
/// source and destination port, and on IPv4 the UDP checksum sent as 0, as netoops sends
/// ("via udp w/o checksum"). IPv6 forbids a zero checksum, so there it is computed. Other
/// fields keep [`FrameConfig::new`]'s values (set the MAC addresses and the IPv4 id policy
/// afterwards).
pub fn netoops_frame_config(source: IpAddr, destination: IpAddr) -> FrameConfig {
    let mut config = FrameConfig::new(source, destination);
    config.source_port = crate::NETOOPS_PORT;
    config.destination_port = crate::NETOOPS_PORT;
    if source.is_ipv4() {
        config.udp_checksum = UdpChecksumPolicy::Zero;
    }
    config
}

/// `packet_count_from_length`: `ceil(l / 1024)`, if it fits the kernel's `int`.
fn chunks_in(segment: &[u8]) -> Option<u32> {
    u32::try_from(segment.len().div_ceil(DATA_BYTES))
        .ok()
        .filter(|&count| count <= MAX_PACKET_COUNT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DumpType;
    use crate::packet::Packet;

    fn meta() -> DumpMeta {
        DumpMeta::v2(0x0102, DumpType::PrintkBuffer, b"2.6.37")
    }

    /// All packets of a dump in send order, parsed: (packet_no, data).
    fn sent(encoder: &mut DumpEncoder<'_>) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        while let Some(len) = encoder.write_next(&mut buf).expect("buffer large enough") {
            let packet = Packet::parse(&buf[..len]).expect("own packet parses");
            out.push((packet.packet_no(), packet.data().to_vec()));
        }
        out
    }

    #[test]
    fn the_documented_example_byte_for_byte() {
        let s1: Vec<u8> = (0..1024u32).map(|i| b'A' + (i % 7) as u8).collect();
        let s2: Vec<u8> = (0..2500u32).map(|i| b'a' + (i % 23) as u8).collect();
        let mut encoder = DumpEncoder::new(&meta(), &s1, &s2).expect("small");
        assert_eq!(encoder.packet_count(), 4);
        assert_eq!(encoder.len(), 12);
        let packets = sent(&mut encoder);
        let numbers: Vec<u32> = packets.iter().map(|p| p.0).collect();
        assert_eq!(numbers, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);

        let mut tail = s2[2048..].to_vec();
        tail.resize(1024, 0);
        assert_eq!(packets[0].1, tail);
        assert_eq!(packets[1].1, &s2[1024..2048]);
        assert_eq!(packets[2].1, &s2[..1024]);
        // s1 is exactly 1024 bytes: the kernel copies 1024 % 1024 = 0 bytes.
        assert_eq!(packets[3].1, [0u8; 1024]);
        // The three passes are identical.
        assert_eq!(packets[..4], packets[4..8]);
        assert_eq!(packets[..4], packets[8..]);
    }

    #[test]
    fn passes_are_identical_byte_for_byte() {
        let log = [b'z'; 3000];
        let mut encoder = DumpEncoder::new(&meta(), &log, b"").expect("small");
        let mut all = Vec::new();
        let mut buf = [0u8; 1241];
        while let Some(len) = encoder.write_next(&mut buf).expect("fits") {
            all.push(buf[..len].to_vec());
        }
        assert_eq!(all.len(), 9);
        assert_eq!(all[..3], all[3..6]);
        assert_eq!(all[..3], all[6..]);
        // Only packet_no (offset 14) differs between packets of one pass.
        for (n, packet) in all[..3].iter().enumerate() {
            assert_eq!(packet[14..18], (n as u32).to_le_bytes());
            assert_eq!(packet[..14], all[0][..14]);
            assert_eq!(packet[18..217], all[0][18..217]);
        }
        // The first segment alone is numbered from 0: tail first.
        assert_eq!(all[0][217..217 + 952], [b'z'; 952]);
        assert_eq!(all[0][217 + 952..], [0u8; 72]);
    }

    #[test]
    fn an_empty_dump_sends_nothing() {
        let mut encoder = DumpEncoder::new(&meta(), b"", b"").expect("empty");
        assert!(encoder.is_empty());
        assert_eq!(encoder.len(), 0);
        assert_eq!(encoder.packet_no_at(0), None);
        let mut buf = [0u8; 1241];
        assert_eq!(encoder.write_next(&mut buf), Ok(None));
        assert_eq!(
            encoder.write_packet(0, &mut buf),
            Err(EncodeError::PacketNo {
                packet_no: 0,
                packet_count: 0
            })
        );
    }

    #[test]
    fn a_short_buffer_is_refused_and_nothing_advances() {
        let mut encoder = DumpEncoder::new(&meta(), b"", b"panic\n").expect("small");
        let mut small = [0u8; 1240];
        assert_eq!(
            encoder.write_next(&mut small),
            Err(EncodeError::BufferTooSmall {
                needed: 1241,
                len: 1240
            })
        );
        let mut buf = [0u8; 1241];
        assert_eq!(encoder.write_next(&mut buf), Ok(Some(1241)));
        assert_eq!(&buf[217..223], b"panic\n");
        encoder.rewind();
        assert_eq!(encoder.packet_no_at(2), Some(0));
        assert_eq!(encoder.packet_no_at(3), None);
    }

    #[test]
    fn frames_as_netoops_sends_them() {
        let config =
            netoops_frame_config(IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2]));
        let mut builder = FrameBuilder::new(&config).expect("IPv4 pair");
        let log = [b'q'; 1500];
        let mut encoder = DumpEncoder::new(&meta(), b"", &log).expect("small");
        let mut frame = [0u8; 1514];
        let mut packet = [0u8; 1241];
        for index in 0..encoder.len() {
            let len = encoder
                .write_next_frame(&mut builder, &mut frame)
                .expect("fits")
                .expect("more packets");
            assert_eq!(len, 14 + 20 + 8 + 1241);
            // UDP checksum field (after Ethernet 14, IPv4 20, ports and length 6) is zero.
            assert_eq!(frame[40..42], [0, 0]);
            let parsed = netpoll_frame::Frame::parse(&frame[..len]).expect("valid frame");
            assert_eq!(parsed.source().port(), 2004);
            assert_eq!(parsed.destination().port(), 2004);
            let packet_no = encoder.packet_no_at(index).expect("in range");
            encoder.write_packet(packet_no, &mut packet).expect("fits");
            assert_eq!(parsed.payload(), &packet[..]);
        }
        assert_eq!(encoder.write_next_frame(&mut builder, &mut frame), Ok(None));

        // IPv6 keeps the checksum (a zero one is forbidden there).
        let v6 = netoops_frame_config(
            IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
            IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2]),
        );
        assert_eq!(v6.udp_checksum, UdpChecksumPolicy::Compute);
        let mut builder = FrameBuilder::new(&v6).expect("IPv6 pair");
        let len = encoder
            .write_frame(0, &mut builder, &mut frame)
            .expect("fits");
        let parsed = netpoll_frame::Frame::parse(&frame[..len]).expect("valid frame");
        assert_ne!(parsed.udp_checksum(), 0);
        let mut tiny = [0u8; 100];
        assert!(matches!(
            encoder.write_frame(0, &mut builder, &mut tiny),
            Err(EncodeError::Frame(_))
        ));
    }
}

//! The dump encoder: every packet of a dump, byte for byte and in the order the kernel sends
//! them.
//!
//! # What the kernel does (`netoops()` and `netoops_send_segment()` in the seed patch)
//!
//! `kmsg_dump` hands the dumper the log buffer as two segments, `s1` (the older bytes) and
//! `s2` (the newer ones); the log in order is `s1` followed by `s2`. With `N = 1024`
//! (`NETOOPS_DATA_BYTES`):
//!
//! 1. Each segment of `l` bytes is cut into `ceil(l / N)` chunks; an empty segment has none.
//!    `packet_count` is the sum over both segments (`c1 + c2`), the same in every packet.
//! 2. The header is zeroed once, filled once (`packet_no` apart) and reused for every packet,
//!    so all header bytes except `packet_no` are the same across the dump.
//! 3. Three passes (`NETOOPS_RETRANSMIT_COUNT`) send the same packets again, identical byte
//!    for byte.
//! 4. Within a pass the second segment goes first, then the first segment (numbered from
//!    `c2` on). Within a segment the chunks go from last to first: chunk `i` of a segment of
//!    `c` chunks gets `packet_no = (c - 1 - i) + offset`. So in every pass `packet_no` runs
//!    0, 1, ..., `packet_count - 1` in send order, packet 0 carries the newest bytes (the
//!    tail of `s2`), and reading packets from `packet_count - 1` down to 0 gives the log in
//!    order.
//! 5. The tail chunk of a segment (the first one sent) copies `l % N` bytes and zero-fills
//!    the rest of the data. When `l` is an exact multiple of 1024 that is **zero bytes**: the
//!    kernel sends an all-zero chunk in place of the segment's last 1024 bytes, which never
//!    leave the machine. Every other chunk carries 1024 log bytes.
//!
//! Example: `s1` = 1024 bytes, `s2` = 2500 bytes, `packet_count` = 1 + 3 = 4; each pass sends
//! packet 0 = `s2[2048..2500]` + 572 zero bytes, packet 1 = `s2[1024..2048]`,
//! packet 2 = `s2[0..1024]`, packet 3 = 1024 zero bytes (the whole of `s1` is lost).
//!
//! [`DumpEncoder`] reproduces all of this. It writes each packet into a caller's buffer and
//! allocates nothing.
//!
//! ```
//! use netoops_proto::{DumpEncoder, DumpMeta, DumpType, Packet};
//!
//! let meta = DumpMeta::v2(0x2a, DumpType::PrintkBuffer, b"2.6.37");
//! let older = vec![b'a'; 1500];
//! let newer = b"Kernel panic - not syncing: Fatal exception\n";
//! let mut encoder = DumpEncoder::new(&meta, &older, newer)?;
//! assert_eq!(encoder.packet_count(), 3);
//! assert_eq!(encoder.len(), 9); // three passes
//!
//! let mut buf = [0u8; 1500];
//! let mut sent = Vec::new();
//! while let Some(len) = encoder.write_next(&mut buf)? {
//!     let packet = Packet::parse(&buf[..len]).expect("our own packet parses");
//!     sent.push(packet.packet_no());
//! }
//! assert_eq!(sent, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
//! # Ok::<(), netoops_proto::EncodeError>(())
//! ```

use crate::meta::DumpMeta;
use crate::wire::{
    ARCH_DATA_X86_64_LEN, HEADER_V2_LEN, HEADER_V3_LEN, HeaderV2, HeaderV3, X86CpuIdentity,
};
use crate::{DATA_BYTES, RETRANSMIT_COUNT};
use core::mem::offset_of;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

/// The longest header (and arch data) this encoder writes: version 3 on x86_64.
pub const MAX_HEADER_LEN: usize = HEADER_V3_LEN + ARCH_DATA_X86_64_LEN;

/// The largest `packet_count` the kernel can send (it counts packets in a C `int`).
pub const MAX_PACKET_COUNT: u32 = i32::MAX as u32;

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
    /// The packet number asked for is not below `packet_count`.
    #[error("packet_no {packet_no} is not below packet_count {packet_count}")]
    PacketNo {
        /// The number asked for.
        packet_no: u32,
        /// The dump's `packet_count`.
        packet_count: u32,
    },
}

/// Writes the packets of one dump, in the kernel's order, into caller buffers.
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

    /// Starts again from the first packet of the first pass.
    pub fn rewind(&mut self) {
        self.next = 0;
    }
}

/// `packet_count_from_length`: `ceil(l / 1024)`, if it fits the kernel's `int`.
fn chunks_in(segment: &[u8]) -> Option<u32> {
    u32::try_from(segment.len().div_ceil(DATA_BYTES))
        .ok()
        .filter(|&count| count <= MAX_PACKET_COUNT)
}

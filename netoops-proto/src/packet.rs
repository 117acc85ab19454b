//! A checked, borrowed view of one netoops packet (either version): [`Packet`].

use crate::DATA_BYTES;
use crate::meta::{ARCH_X86, DumpMeta, DumpType, PtRegs, V3Fields, Version, X86ArchData};
use crate::wire::{HEADER_V2_LEN, HEADER_V3_LEN, HeaderV2, HeaderV3, X86CpuIdentity};
use zerocopy::FromBytes;

/// Why a datagram is not a netoops packet this crate can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The datagram ends before the fixed header of its version (or before `version` itself).
    #[error("datagram of {len} bytes is too short for a netoops header")]
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// `version` is neither 2 nor 3.
    #[error("unknown netoops version {0}")]
    UnknownVersion(u16),
    /// `type` is neither 1 (oops / panic) nor 3 (soft dump).
    #[error("unknown netoops dump type {0}")]
    UnknownType(u16),
    /// Version 2: `header_size` is smaller than the 217-byte header.
    #[error("header_size {0} is smaller than the 217-byte version 2 header")]
    HeaderSize(u16),
    /// Version 3: `arch` is not x86, so the arch data cannot be read.
    #[error("arch {0} has no known arch data layout")]
    UnsupportedArch(u16),
    /// Version 3: `arch_offset` points into the fixed header or past `data_offset`, or the
    /// arch data between them is not x86 identity (4 bytes) plus at most 168 bytes of
    /// registers.
    #[error(
        "arch data from arch_offset {arch_offset} to data_offset {data_offset} is not x86 arch data"
    )]
    ArchData {
        /// `arch_offset` as sent.
        arch_offset: u16,
        /// `data_offset` as sent.
        data_offset: u16,
    },
    /// The 1024 data bytes starting at `header_size` / `data_offset` do not end exactly at
    /// the end of the datagram.
    #[error("1024 data bytes at offset {data_offset} do not fill a datagram of {len} bytes")]
    DataOffset {
        /// `header_size` or `data_offset` as sent.
        data_offset: u16,
        /// The datagram's length.
        len: usize,
    },
    /// `packet_no` is not below `packet_count`.
    #[error("packet_no {packet_no} is not below packet_count {packet_count}")]
    PacketNo {
        /// `packet_no` as sent.
        packet_no: u32,
        /// `packet_count` as sent.
        packet_count: u32,
    },
}

/// One netoops packet (either version), checked, borrowing the datagram.
///
/// [`Packet::parse`] dispatches on `version`, trusts the offsets the packet carries
/// (`header_size`, or `arch_offset` and `data_offset`) over its own idea of the layout, and
/// rejects with a [`ParseError`] anything it cannot read safely: a datagram too short for its
/// header, offsets outside the datagram, an unknown version or type, `packet_no` not below
/// `packet_count`. After a successful parse no accessor can fail or panic.
///
/// The layouts are drawn in [`crate::wire`].
///
/// ```
/// use netoops_proto::{Packet, ParseError, Version};
///
/// let mut datagram = [0u8; 1241];
/// datagram[0] = 2; // version 2
/// datagram[2] = 217; // header_size
/// datagram[4] = 2; // arch x86
/// datagram[6] = 0x34; // dump_id 0x1234
/// datagram[7] = 0x12;
/// datagram[8] = 1; // type: oops / panic
/// datagram[10] = 3; // packet_count 3
/// datagram[14] = 1; // packet_no 1
/// datagram[217] = b'<';
/// let packet = Packet::parse(&datagram)?;
/// assert_eq!(packet.version(), Version::V2);
/// assert_eq!(packet.dump_id(), 0x1234);
/// assert_eq!((packet.packet_no(), packet.packet_count()), (1, 3));
/// assert_eq!(packet.data()[0], b'<');
///
/// datagram[14] = 3; // packet_no 3 of 3
/// assert_eq!(
///     Packet::parse(&datagram),
///     Err(ParseError::PacketNo { packet_no: 3, packet_count: 3 })
/// );
/// # Ok::<(), ParseError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    bytes: &'a [u8],
    header: Header<'a>,
    data: &'a [u8; DATA_BYTES],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header<'a> {
    V2(&'a HeaderV2),
    V3 {
        header: &'a HeaderV3,
        cpu: &'a X86CpuIdentity,
        regs: &'a [u8],
    },
}

impl<'a> Packet<'a> {
    /// Checks `datagram` (a whole UDP payload) and borrows its fields.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, ParseError> {
        let too_short = ParseError::TooShort {
            len: datagram.len(),
        };
        let [lo, hi, ..] = *datagram else {
            return Err(too_short);
        };
        let number = u16::from_le_bytes([lo, hi]);
        let version = Version::from_number(number).ok_or(ParseError::UnknownVersion(number))?;
        let (header, data_offset) = match version {
            Version::V2 => {
                let (header, _) = HeaderV2::ref_from_prefix(datagram).map_err(|_| too_short)?;
                check_type(header.dump_type.get())?;
                let header_size = header.header_size.get();
                if usize::from(header_size) < HEADER_V2_LEN {
                    return Err(ParseError::HeaderSize(header_size));
                }
                (Header::V2(header), header_size)
            }
            Version::V3 => {
                let (header, _) = HeaderV3::ref_from_prefix(datagram).map_err(|_| too_short)?;
                check_type(header.dump_type.get())?;
                let arch = header.arch.get();
                if arch != ARCH_X86 {
                    return Err(ParseError::UnsupportedArch(arch));
                }
                let arch_offset = header.arch_offset.get();
                let data_offset = header.data_offset.get();
                let bad_arch = ParseError::ArchData {
                    arch_offset,
                    data_offset,
                };
                let (start, end) = (usize::from(arch_offset), usize::from(data_offset));
                if start < HEADER_V3_LEN || end < start {
                    return Err(bad_arch);
                }
                // The arch data must lie inside the datagram: checked by the data check
                // below, made here first so the slicing cannot fail.
                let arch_bytes = datagram.get(start..end).ok_or(ParseError::DataOffset {
                    data_offset,
                    len: datagram.len(),
                })?;
                let (cpu, regs) =
                    X86CpuIdentity::ref_from_prefix(arch_bytes).map_err(|_| bad_arch)?;
                if PtRegs::from_bytes(regs).is_none() {
                    return Err(bad_arch);
                }
                (Header::V3 { header, cpu, regs }, data_offset)
            }
        };
        let data = datagram
            .get(usize::from(data_offset)..)
            .and_then(|rest| <&[u8; DATA_BYTES]>::try_from(rest).ok())
            .ok_or(ParseError::DataOffset {
                data_offset,
                len: datagram.len(),
            })?;
        let packet = Self {
            bytes: datagram,
            header,
            data,
        };
        let (packet_no, packet_count) = (packet.packet_no(), packet.packet_count());
        if packet_no >= packet_count {
            return Err(ParseError::PacketNo {
                packet_no,
                packet_count,
            });
        }
        Ok(packet)
    }

    /// The whole datagram.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The layout version.
    pub fn version(&self) -> Version {
        match self.header {
            Header::V2(_) => Version::V2,
            Header::V3 { .. } => Version::V3,
        }
    }

    /// The version 2 header, for a version 2 packet.
    pub fn header_v2(&self) -> Option<&'a HeaderV2> {
        match self.header {
            Header::V2(header) => Some(header),
            Header::V3 { .. } => None,
        }
    }

    /// The version 3 header, for a version 3 packet.
    pub fn header_v3(&self) -> Option<&'a HeaderV3> {
        match self.header {
            Header::V2(_) => None,
            Header::V3 { header, .. } => Some(header),
        }
    }

    /// `dump_id`.
    pub fn dump_id(&self) -> u16 {
        match self.header {
            Header::V2(h) => h.dump_id.get(),
            Header::V3 { header, .. } => header.dump_id.get(),
        }
    }

    /// `arch`.
    pub fn arch(&self) -> u16 {
        match self.header {
            Header::V2(h) => h.arch.get(),
            Header::V3 { header, .. } => header.arch.get(),
        }
    }

    /// `type`.
    pub fn dump_type(&self) -> DumpType {
        let number = match self.header {
            Header::V2(h) => h.dump_type.get(),
            Header::V3 { header, .. } => header.dump_type.get(),
        };
        // Checked in `parse`; the fallback is never taken.
        DumpType::from_number(number).unwrap_or(DumpType::PrintkBuffer)
    }

    /// `packet_count`: packets in one pass of the dump.
    pub fn packet_count(&self) -> u32 {
        match self.header {
            Header::V2(h) => h.packet_count.get(),
            Header::V3 { header, .. } => header.packet_count.get(),
        }
    }

    /// `packet_no`, always below `packet_count`; 0 holds the newest bytes of the log.
    pub fn packet_no(&self) -> u32 {
        match self.header {
            Header::V2(h) => h.packet_no.get(),
            Header::V3 { header, .. } => header.packet_no.get(),
        }
    }

    /// `kernel_version`, raw (NUL-padded).
    pub fn kernel_version(&self) -> &'a [u8; 64] {
        match self.header {
            Header::V2(h) => &h.kernel_version,
            Header::V3 { header, .. } => &header.kernel_version,
        }
    }

    /// `boot_id` (version 3).
    pub fn boot_id(&self) -> Option<u32> {
        self.header_v3().map(|h| h.boot_id.get())
    }

    /// `user_blob` (version 3).
    pub fn user_blob(&self) -> Option<&'a [u8; 128]> {
        self.header_v3().map(|h| &h.user_blob)
    }

    /// The x86 arch data (version 3).
    pub fn x86_arch_data(&self) -> Option<X86ArchData> {
        match self.header {
            Header::V2(_) => None,
            Header::V3 { cpu, regs, .. } => Some(X86ArchData {
                vendor: cpu.vendor,
                family: cpu.family,
                model: cpu.model,
                stepping: cpu.stepping,
                // Checked in `parse`; the fallback is never taken.
                regs: PtRegs::from_bytes(regs).unwrap_or(PtRegs::ZERO_X86_64),
            }),
        }
    }

    /// Where the data starts: `header_size` (version 2) or `data_offset` (version 3).
    pub fn data_offset(&self) -> usize {
        self.bytes.len() - DATA_BYTES
    }

    /// The 1024 data bytes: one chunk of the log, zero-padded if it is a segment's tail.
    pub fn data(&self) -> &'a [u8; DATA_BYTES] {
        self.data
    }

    /// The dump's metadata as this packet states it.
    pub fn meta(&self) -> DumpMeta {
        let mut meta = DumpMeta::v2(self.dump_id(), self.dump_type(), &[]);
        meta.arch = self.arch();
        meta.kernel_version = *self.kernel_version();
        if let (Some(header), Some(arch_data)) = (self.header_v3(), self.x86_arch_data()) {
            meta.v3 = Some(V3Fields {
                boot_id: header.boot_id.get(),
                user_blob: header.user_blob,
                arch_data,
            });
        }
        meta
    }
}

fn check_type(number: u16) -> Result<(), ParseError> {
    DumpType::from_number(number)
        .map(|_| ())
        .ok_or(ParseError::UnknownType(number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::DumpEncoder;
    use crate::meta::{PtRegs, V3Fields, X86ArchData};

    fn v2_packet() -> [u8; 1241] {
        let meta = DumpMeta::v2(9, DumpType::PrintkBuffer, b"2.6.37");
        let encoder = DumpEncoder::new(&meta, b"", &[b'x'; 2048 + 5]).expect("small");
        let mut out = [0u8; 1241];
        encoder.write_packet(1, &mut out).expect("fits");
        out
    }

    fn v3_meta(regs: &[u8]) -> DumpMeta {
        DumpMeta::v3(
            9,
            DumpType::PrintkBufferSoft,
            b"6.1.0",
            V3Fields {
                boot_id: 77,
                user_blob: [b'u'; 128],
                arch_data: X86ArchData {
                    vendor: 2,
                    family: 0x17,
                    model: 1,
                    stepping: 2,
                    regs: PtRegs::from_bytes(regs).expect("fits"),
                },
            },
        )
    }

    fn v3_packet() -> [u8; 1412] {
        let encoder = DumpEncoder::new(&v3_meta(&[1; 168]), b"", b"log").expect("small");
        let mut out = [0u8; 1412];
        encoder.write_packet(0, &mut out).expect("fits");
        out
    }

    fn set16(packet: &mut [u8], at: usize, value: u16) {
        packet[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn short_and_unknown() {
        assert_eq!(Packet::parse(&[]), Err(ParseError::TooShort { len: 0 }));
        assert_eq!(Packet::parse(&[2]), Err(ParseError::TooShort { len: 1 }));
        assert_eq!(
            Packet::parse(&[2, 0, 0]),
            Err(ParseError::TooShort { len: 3 })
        );
        assert_eq!(
            Packet::parse(&[3; 215]),
            Err(ParseError::UnknownVersion(0x0303))
        );
        let mut packet = v2_packet();
        set16(&mut packet, 0, 1);
        assert_eq!(Packet::parse(&packet), Err(ParseError::UnknownVersion(1)));
        let mut packet = v2_packet();
        set16(&mut packet, 8, 2);
        assert_eq!(Packet::parse(&packet), Err(ParseError::UnknownType(2)));
        let mut packet = v3_packet();
        set16(&mut packet, 10, 0);
        assert_eq!(Packet::parse(&packet), Err(ParseError::UnknownType(0)));
        assert_eq!(
            Packet::parse(&v3_packet()[..216]),
            Err(ParseError::DataOffset {
                data_offset: 388,
                len: 216,
            })
        );
        assert_eq!(
            Packet::parse(&v3_packet()[..215]),
            Err(ParseError::TooShort { len: 215 })
        );
    }

    #[test]
    fn v2_trusts_header_size_within_the_datagram() {
        let mut packet = v2_packet();
        set16(&mut packet, 2, 216);
        assert_eq!(Packet::parse(&packet), Err(ParseError::HeaderSize(216)));
        set16(&mut packet, 2, 218);
        assert_eq!(
            Packet::parse(&packet),
            Err(ParseError::DataOffset {
                data_offset: 218,
                len: 1241
            })
        );
        // A longer header (a later kernel) is read where it says the data starts.
        let mut longer = v2_packet().to_vec();
        longer.insert(217, 0xaa);
        longer[2] = 218;
        let parsed = Packet::parse(&longer).expect("header_size 218");
        assert_eq!(parsed.data_offset(), 218);
        assert_eq!(&parsed.data()[..5], b"xxxxx");
        assert_eq!(
            Packet::parse(&v2_packet()[..1240]),
            Err(ParseError::DataOffset {
                data_offset: 217,
                len: 1240
            })
        );
    }

    #[test]
    fn v3_offsets_are_checked() {
        let good = v3_packet();
        let parsed = Packet::parse(&good).expect("good");
        assert_eq!(parsed.meta(), v3_meta(&[1; 168]));
        assert_eq!(&parsed.data()[..4], b"log\0");

        let mut packet = good;
        set16(&mut packet, 6, 1);
        assert_eq!(Packet::parse(&packet), Err(ParseError::UnsupportedArch(1)));
        for (arch_offset, data_offset) in [(215, 388), (389, 388), (386, 388), (216, 389)] {
            let mut packet = good;
            set16(&mut packet, 8, arch_offset);
            set16(&mut packet, 4, data_offset);
            assert_eq!(
                Packet::parse(&packet),
                Err(ParseError::ArchData {
                    arch_offset,
                    data_offset
                }),
                "{arch_offset} {data_offset}"
            );
        }
        let mut packet = good;
        set16(&mut packet, 4, 387);
        assert_eq!(
            Packet::parse(&packet),
            Err(ParseError::DataOffset {
                data_offset: 387,
                len: 1412
            })
        );
        let mut packet = good;
        set16(&mut packet, 4, 2000);
        assert_eq!(
            Packet::parse(&packet),
            Err(ParseError::DataOffset {
                data_offset: 2000,
                len: 1412
            })
        );
    }

    #[test]
    fn v3_with_32_bit_registers() {
        let meta = v3_meta(&[5; 60]);
        let encoder = DumpEncoder::new(&meta, b"", b"i386").expect("small");
        assert_eq!(encoder.packet_len(), 216 + 64 + 1024);
        let mut out = [0u8; 1304];
        encoder.write_packet(0, &mut out).expect("fits");
        assert_eq!(out[4..6], 280u16.to_le_bytes());
        let parsed = Packet::parse(&out).expect("parses");
        assert_eq!(parsed.data_offset(), 280);
        assert_eq!(parsed.meta(), meta);
        assert_eq!(
            parsed.x86_arch_data().map(|a| a.regs.as_bytes().len()),
            Some(60)
        );
    }

    #[test]
    fn packet_no_below_packet_count() {
        let mut packet = v2_packet();
        packet[14] = 3;
        assert_eq!(
            Packet::parse(&packet),
            Err(ParseError::PacketNo {
                packet_no: 3,
                packet_count: 3
            })
        );
        let mut packet = v3_packet();
        packet[12] = 0;
        assert_eq!(
            Packet::parse(&packet),
            Err(ParseError::PacketNo {
                packet_no: 0,
                packet_count: 0
            })
        );
    }
}

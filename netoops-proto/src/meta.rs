//! What a dump says about itself: the header fields that are the same in every packet of it.

use crate::wire::{PT_REGS_X86_64_LEN, PtRegsX86_64};
use zerocopy::FromBytes;

/// The `arch` value of x86 and x86_64 (`NETOOPS_ARCH`), the only architecture netoops was
/// ever built for (any other stops the kernel build with `#error`).
pub const ARCH_X86: u16 = 2;

/// Length of `kernel_version` (a copy of `utsname()->release`).
pub const KERNEL_VERSION_LEN: usize = 64;

/// Length of `user_blob` (version 3).
pub const USER_BLOB_LEN: usize = 128;

/// The packet layout version (`version`, the field at offset 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// Version 2, the seed patch's layout (217-byte header).
    V2,
    /// Version 3, the series' final layout (boot id, user blob, arch data, `data_offset`).
    V3,
}

impl Version {
    /// The value of the `version` field.
    pub const fn number(self) -> u16 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }

    /// The version numbered `number`, if it is one this crate knows.
    pub const fn from_number(number: u16) -> Option<Self> {
        match number {
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            _ => None,
        }
    }
}

/// The `type` field: why the dump was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DumpType {
    /// 1, `NETOOPS_TYPE_PRINTK_BUFFER`: an oops or a panic (`KMSG_DUMP_OOPS`, `KMSG_DUMP_PANIC`).
    PrintkBuffer,
    /// 3, `NETOOPS_TYPE_PRINTK_BUFFER_SOFT`: a "soft" dump requested without a crash
    /// (`KMSG_DUMP_SOFT`).
    PrintkBufferSoft,
}

impl DumpType {
    /// The value of the `type` field.
    pub const fn number(self) -> u16 {
        match self {
            Self::PrintkBuffer => 1,
            Self::PrintkBufferSoft => 3,
        }
    }

    /// The type numbered `number`, if it is one the kernel sends.
    pub const fn from_number(number: u16) -> Option<Self> {
        match number {
            1 => Some(Self::PrintkBuffer),
            3 => Some(Self::PrintkBufferSoft),
            _ => None,
        }
    }
}

/// The saved registers in the x86 arch data: the raw bytes of `struct pt_regs`.
///
/// Their size is the kernel's `sizeof(struct pt_regs)`: 168 bytes on x86_64, less on 32-bit
/// x86 (the patch's comment says 60). A packet carries them whole; the kernel zeroes them
/// when the dump has no registers (a soft dump, or a dump not taken from an exception).
/// At most 168 bytes are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PtRegs {
    bytes: [u8; PT_REGS_X86_64_LEN],
    len: u8,
}

impl PtRegs {
    /// x86_64 registers, all zero (what the kernel sends when it has none).
    pub const ZERO_X86_64: Self = Self {
        bytes: [0; PT_REGS_X86_64_LEN],
        len: PT_REGS_X86_64_LEN as u8,
    };

    /// Registers from the raw bytes of `struct pt_regs`; `None` if longer than 168 bytes.
    pub fn from_bytes(raw: &[u8]) -> Option<Self> {
        let mut bytes = [0; PT_REGS_X86_64_LEN];
        bytes.get_mut(..raw.len())?.copy_from_slice(raw);
        Some(Self {
            bytes,
            len: u8::try_from(raw.len()).ok()?,
        })
    }

    /// x86_64 registers from their typed form.
    pub fn from_x86_64(regs: &PtRegsX86_64) -> Self {
        let mut bytes = [0; PT_REGS_X86_64_LEN];
        bytes.copy_from_slice(zerocopy::IntoBytes::as_bytes(regs));
        Self {
            bytes,
            len: PT_REGS_X86_64_LEN as u8,
        }
    }

    /// The raw bytes, as sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The registers in x86_64 form, when these are 168 bytes long.
    pub fn x86_64(&self) -> Option<PtRegsX86_64> {
        PtRegsX86_64::read_from_bytes(self.as_bytes()).ok()
    }
}

/// The x86 arch data of a version 3 packet: the crashing CPU's identity and saved registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct X86ArchData {
    /// `x86_vendor`: the kernel's `X86_VENDOR_*` number (0 Intel, 2 AMD, ...).
    pub vendor: u8,
    /// `x86_family`.
    pub family: u8,
    /// `x86_model`.
    pub model: u8,
    /// `x86_stepping`.
    pub stepping: u8,
    /// The saved registers (`struct pt_regs`).
    pub regs: PtRegs,
}

impl X86ArchData {
    /// The length of the arch data on the wire: 4 identity bytes and the registers.
    pub fn wire_len(&self) -> usize {
        4 + self.regs.as_bytes().len()
    }
}

/// The fields only version 3 has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct V3Fields {
    /// `boot_id`, a number user space sets through sysfs (`netoops_boot_id`).
    pub boot_id: u32,
    /// `user_blob`, bytes user space sets through sysfs.
    pub user_blob: [u8; USER_BLOB_LEN],
    /// The x86 arch data.
    pub arch_data: X86ArchData,
}

/// The metadata of one dump: every header field except `packet_no` (and the derived
/// `packet_count`, `header_size`, `data_offset`, `arch_offset`).
///
/// Every packet of a dump carries the same metadata; the collector reports a packet whose
/// metadata differs from the rest of its dump instead of merging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DumpMeta {
    /// `dump_id`: `(jiffies / HZ) & 0xffff` when the dump began.
    pub dump_id: u16,
    /// `arch`: [`ARCH_X86`] on every kernel that built netoops.
    pub arch: u16,
    /// `type`.
    pub dump_type: DumpType,
    /// `kernel_version`: the release string, NUL-padded (see [`DumpMeta::kernel_release`]).
    pub kernel_version: [u8; KERNEL_VERSION_LEN],
    /// The version 3 fields, `None` for a version 2 dump.
    pub v3: Option<V3Fields>,
}

impl DumpMeta {
    /// A version 2 dump from an x86 kernel whose `utsname()->release` is `release`.
    ///
    /// `release` is copied the way the kernel's `strncpy` does: up to its first NUL or 64
    /// bytes, the rest zero.
    pub fn v2(dump_id: u16, dump_type: DumpType, release: &[u8]) -> Self {
        Self {
            dump_id,
            arch: ARCH_X86,
            dump_type,
            kernel_version: kernel_version_field(release),
            v3: None,
        }
    }

    /// A version 3 dump from an x86 kernel.
    pub fn v3(dump_id: u16, dump_type: DumpType, release: &[u8], fields: V3Fields) -> Self {
        Self {
            dump_id,
            arch: ARCH_X86,
            dump_type,
            kernel_version: kernel_version_field(release),
            v3: Some(fields),
        }
    }

    /// The layout version of the dump's packets.
    pub fn version(&self) -> Version {
        if self.v3.is_some() {
            Version::V3
        } else {
            Version::V2
        }
    }

    /// The kernel release: `kernel_version` up to its first NUL (all 64 bytes when full).
    pub fn kernel_release(&self) -> &[u8] {
        let end = self
            .kernel_version
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(KERNEL_VERSION_LEN);
        &self.kernel_version[..end]
    }
}

/// `strncpy(kernel_version, release, 64)`: bytes up to the first NUL, at most 64, zero-padded.
fn kernel_version_field(release: &[u8]) -> [u8; KERNEL_VERSION_LEN] {
    let mut field = [0; KERNEL_VERSION_LEN];
    for (dst, &src) in field
        .iter_mut()
        .zip(release.iter().take_while(|&&b| b != 0))
    {
        *dst = src;
    }
    field
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_version_is_copied_like_strncpy() {
        let meta = DumpMeta::v2(1, DumpType::PrintkBuffer, b"2.6.37-rc1\0junk");
        assert_eq!(meta.kernel_release(), b"2.6.37-rc1");
        assert_eq!(&meta.kernel_version[..11], b"2.6.37-rc1\0");
        assert!(meta.kernel_version[10..].iter().all(|&b| b == 0));

        let long = [b'x'; 70];
        let meta = DumpMeta::v2(1, DumpType::PrintkBuffer, &long);
        assert_eq!(meta.kernel_release(), &long[..64]);
    }

    #[test]
    fn numbers() {
        assert_eq!(Version::from_number(2), Some(Version::V2));
        assert_eq!(Version::from_number(3).map(Version::number), Some(3));
        assert_eq!(Version::from_number(1), None);
        assert_eq!(DumpType::from_number(1), Some(DumpType::PrintkBuffer));
        assert_eq!(DumpType::from_number(3), Some(DumpType::PrintkBufferSoft));
        assert_eq!(DumpType::from_number(2), None);
        assert_eq!(DumpType::PrintkBufferSoft.number(), 3);
    }

    #[test]
    fn pt_regs_bounds() {
        assert!(PtRegs::from_bytes(&[0; 169]).is_none());
        let regs = PtRegs::from_bytes(&[7; 60]).expect("60 bytes fit");
        assert_eq!(regs.as_bytes(), &[7; 60][..]);
        assert!(regs.x86_64().is_none());
        let mut raw = [0u8; 168];
        raw[128] = 0x34; // ip, low byte
        raw[129] = 0x12;
        let regs = PtRegs::from_bytes(&raw).expect("168 bytes fit");
        assert_eq!(regs.x86_64().map(|r| r.ip.get()), Some(0x1234));
        assert_eq!(PtRegs::from_x86_64(&regs.x86_64().expect("x86_64")), regs);
    }
}

//! The netoops packet layouts, as the kernel lays them out: packed, little-endian.
//!
//! Every netoops packet is one UDP datagram (default port 2004, sent without UDP checksum):
//! a fixed header, for version 3 an architecture block, then exactly
//! [`DATA_BYTES`](crate::DATA_BYTES) (1024) bytes of the kernel log. The field at offset 0 is
//! always `version`; a reader dispatches on it and then trusts the offsets the packet itself
//! carries (`header_size` in version 2, `arch_offset` and `data_offset` in version 3).
//!
//! # Version 2 (Mike Waychison's patch: header 217 bytes, datagram 1241 bytes)
//!
//! ```text
//!   0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15   (byte offset in the row; rows are 16 bytes)
//! +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
//! |version|hdr_sz | arch  |dump_id| type  | packet_count  |packet_   0
//! +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
//!  no     | reserved1     |r2  r3  r4 | kernel_version[64] ...       16
//! +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
//!   ... kernel_version (offset 25, 64 bytes, NUL-padded, not NUL-terminated when full)
//!   reserved5 (offset 89, 64 bytes, zero)
//!   reserved6 (offset 153, 64 bytes, zero)
//!   data (offset header_size = 217, 1024 bytes)
//! ```
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | u16 | `version` = 2 |
//! | 2 | u16 | `header_size` (bytes before data) |
//! | 4 | u16 | `arch` |
//! | 6 | u16 | `dump_id` |
//! | 8 | u16 | `type` |
//! | 10 | u32 | `packet_count` |
//! | 14 | u32 | `packet_no` |
//! | 18 | u32 | reserved |
//! | 22 | 3 × u8 | reserved |
//! | 25 | char\[64\] | `kernel_version` |
//! | 89 | char\[64\] | reserved |
//! | 153 | char\[64\] | reserved |
//! | 217 | u8\[1024\] | data |
//!
//! # Version 3 (the series' final form: header 216 bytes, x86_64 datagram 1412 bytes)
//!
//! ```text
//!   0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15   (byte offset in the row; rows are 16 bytes)
//! +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
//! |version|dump_id|data_of| arch  |arch_of| type  | packet_count  |  0
//! +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
//! |  packet_no    |   boot_id     | kernel_version[64] ...           16
//! +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
//!   ... kernel_version (offset 24, 64 bytes)
//!   user_blob (offset 88, 128 bytes)
//! +---+---+---+---+------------------------------------------------+
//! |vnd|fam|mdl|stp| struct pt_regs (168 bytes on x86_64)           | arch data at arch_offset = 216
//! +---+---+---+---+------------------------------------------------+
//!   data (offset data_offset = 388 on x86_64, 1024 bytes)
//! ```
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | u16 | `version` = 3 |
//! | 2 | u16 | `dump_id` |
//! | 4 | u16 | `data_offset` |
//! | 6 | u16 | `arch` |
//! | 8 | u16 | `arch_offset` |
//! | 10 | u16 | `type` |
//! | 12 | u32 | `packet_count` |
//! | 16 | u32 | `packet_no` |
//! | 20 | u32 | `boot_id` (user-set through sysfs) |
//! | 24 | char\[64\] | `kernel_version` |
//! | 88 | char\[128\] | `user_blob` (user-set through sysfs) |
//! | 216 | arch data | x86: `x86_vendor`, `x86_family`, `x86_model`, `x86_stepping` (u8 each), then `struct pt_regs` (168 bytes on x86_64, zeroed when the dump has none) |
//! | `data_offset` | u8\[1024\] | data |
//!
//! All multi-byte fields are little-endian (`__le16` / `__le32` in the final patch; the
//! version 2 patch used host order on x86, which is the same thing).

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The version 2 header (217 bytes), as `struct netoops_msg.header` in the seed patch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct HeaderV2 {
    /// `version`, 2 (`NETOOPS_VERSION`).
    pub version: U16,
    /// `header_size`: bytes before the data (`sizeof(msg.header)` = 217).
    pub header_size: U16,
    /// `arch`: 2 for x86 / x86_64 (`NETOOPS_ARCH`).
    pub arch: U16,
    /// `dump_id`: `(jiffies / HZ) & 0xffff` when the dump began.
    pub dump_id: U16,
    /// `type`: 1 oops / panic, 3 soft dump.
    pub dump_type: U16,
    /// `packet_count`: packets in one pass of the dump.
    pub packet_count: U32,
    /// `packet_no`: this packet's number, 0 holding the newest bytes.
    pub packet_no: U32,
    /// `__reserved1`, zero.
    pub reserved1: U32,
    /// `__reserved2` .. `__reserved4`, zero.
    pub reserved2: [u8; 3],
    /// `kernel_version`: `utsname()->release`, NUL-padded, not terminated when 64 bytes long.
    pub kernel_version: [u8; 64],
    /// `__reserved5`, zero.
    pub reserved5: [u8; 64],
    /// `__reserved6`, zero.
    pub reserved6: [u8; 64],
}

/// The version 3 header (216 bytes), before the arch data.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct HeaderV3 {
    /// `version`, 3.
    pub version: U16,
    /// `dump_id`: `(jiffies / HZ) & 0xffff` when the dump began.
    pub dump_id: U16,
    /// `data_offset`: where the 1024 data bytes start in the datagram.
    pub data_offset: U16,
    /// `arch`: 2 for x86 / x86_64.
    pub arch: U16,
    /// `arch_offset`: where the arch data starts in the datagram.
    pub arch_offset: U16,
    /// `type`: 1 oops / panic, 3 soft dump.
    pub dump_type: U16,
    /// `packet_count`: packets in one pass of the dump.
    pub packet_count: U32,
    /// `packet_no`: this packet's number, 0 holding the newest bytes.
    pub packet_no: U32,
    /// `boot_id`: a number user space writes to `/sys/kernel/netoops/netoops_boot_id`.
    pub boot_id: U32,
    /// `kernel_version`: `utsname()->release`, NUL-padded, not terminated when 64 bytes long.
    pub kernel_version: [u8; 64],
    /// `user_blob`: bytes user space sets through sysfs.
    pub user_blob: [u8; 128],
}

/// The start of the x86 arch data: the CPU identity of the crashing CPU (`current_cpu_data`).
///
/// `struct pt_regs` follows directly.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct X86CpuIdentity {
    /// `x86_vendor`: the kernel's `X86_VENDOR_*` number (0 Intel, 2 AMD, ...).
    pub vendor: u8,
    /// `x86_family` (`current_cpu_data.x86`).
    pub family: u8,
    /// `x86_model`.
    pub model: u8,
    /// `x86_stepping` (`current_cpu_data.x86_mask`).
    pub stepping: u8,
}

/// `struct pt_regs` of x86_64 (168 bytes), in the kernel's field order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
#[allow(missing_docs, reason = "the register names are the documentation")]
pub struct PtRegsX86_64 {
    pub r15: U64,
    pub r14: U64,
    pub r13: U64,
    pub r12: U64,
    pub bp: U64,
    pub bx: U64,
    pub r11: U64,
    pub r10: U64,
    pub r9: U64,
    pub r8: U64,
    pub ax: U64,
    pub cx: U64,
    pub dx: U64,
    pub si: U64,
    pub di: U64,
    /// The syscall number or error code (`orig_ax`).
    pub orig_ax: U64,
    pub ip: U64,
    pub cs: U64,
    pub flags: U64,
    pub sp: U64,
    pub ss: U64,
}

/// Size of the version 2 header (`header_size` as the kernel sends it).
pub const HEADER_V2_LEN: usize = 217;
/// Size of the version 3 header before the arch data (`arch_offset` as the kernel sends it).
pub const HEADER_V3_LEN: usize = 216;
/// Size of `struct pt_regs` on x86_64.
pub const PT_REGS_X86_64_LEN: usize = 168;
/// Size of the x86 arch data on x86_64: CPU identity (4) + `struct pt_regs` (168).
pub const ARCH_DATA_X86_64_LEN: usize = 4 + PT_REGS_X86_64_LEN;

// The version 2 table above (the seed patch's packed `struct netoops_msg` header), checked.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(HeaderV2, version) == 0);
    assert!(offset_of!(HeaderV2, header_size) == 2);
    assert!(offset_of!(HeaderV2, arch) == 4);
    assert!(offset_of!(HeaderV2, dump_id) == 6);
    assert!(offset_of!(HeaderV2, dump_type) == 8);
    assert!(offset_of!(HeaderV2, packet_count) == 10);
    assert!(offset_of!(HeaderV2, packet_no) == 14);
    assert!(offset_of!(HeaderV2, reserved1) == 18);
    assert!(offset_of!(HeaderV2, reserved2) == 22);
    assert!(offset_of!(HeaderV2, kernel_version) == 25);
    assert!(offset_of!(HeaderV2, reserved5) == 89);
    assert!(offset_of!(HeaderV2, reserved6) == 153);
    assert!(size_of::<HeaderV2>() == HEADER_V2_LEN);
    assert!(HEADER_V2_LEN + crate::DATA_BYTES == 1241);
};

// The version 3 table above (the series' final form, x86_64 arch data), checked.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(HeaderV3, version) == 0);
    assert!(offset_of!(HeaderV3, dump_id) == 2);
    assert!(offset_of!(HeaderV3, data_offset) == 4);
    assert!(offset_of!(HeaderV3, arch) == 6);
    assert!(offset_of!(HeaderV3, arch_offset) == 8);
    assert!(offset_of!(HeaderV3, dump_type) == 10);
    assert!(offset_of!(HeaderV3, packet_count) == 12);
    assert!(offset_of!(HeaderV3, packet_no) == 16);
    assert!(offset_of!(HeaderV3, boot_id) == 20);
    assert!(offset_of!(HeaderV3, kernel_version) == 24);
    assert!(offset_of!(HeaderV3, user_blob) == 88);
    assert!(size_of::<HeaderV3>() == HEADER_V3_LEN);
    assert!(size_of::<X86CpuIdentity>() == 4);
    assert!(size_of::<PtRegsX86_64>() == PT_REGS_X86_64_LEN);
    assert!(offset_of!(PtRegsX86_64, orig_ax) == 120);
    assert!(offset_of!(PtRegsX86_64, ip) == 128);
    assert!(offset_of!(PtRegsX86_64, ss) == 160);
    // data_offset 388 and a 1412-byte datagram on x86_64.
    assert!(HEADER_V3_LEN + ARCH_DATA_X86_64_LEN == 388);
    assert!(HEADER_V3_LEN + ARCH_DATA_X86_64_LEN + crate::DATA_BYTES == 1412);
};

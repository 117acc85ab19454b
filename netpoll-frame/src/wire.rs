//! The header layouts of a netpoll frame, as zerocopy types with network-endian fields.
//!
//! netpoll (`netpoll_send_udp` in `net/core/netpoll.c`) puts one UDP datagram in one Ethernet II
//! frame and never fragments at the IP level. A VLAN device's 802.1Q tag is inserted on the way
//! out, so a capture on a trunk port shows one between the MAC addresses and the ethertype.
//!
//! ```text
//! Ethernet II (14 bytes)                         802.1Q tag (4 bytes, optional)
//!  0                   6                  12       12      14      16
//! +-------------------+-------------------+------+ +-------+-------+
//! | destination MAC   | source MAC        | type | | 0x8100 TCI    | then the real type
//! +-------------------+-------------------+------+ +-------+-------+ TCI = PCP:3 DEI:1 VID:12
//!   type 0x0800 = IPv4, 0x86DD = IPv6
//!
//! IPv4 (RFC 791), 20 bytes + options, as netpoll writes it
//!  0       1       2       3       4       5       6       7
//! +-------+-------+---------------+---------------+---------------+
//! |0x45   | tos 0 | total length  | identification| flags|frag 0  |   DF clear, offset 0
//! +-------+-------+---------------+---------------+---------------+
//! | ttl 64| 17    | hdr checksum  | source address                |
//! +-------+-------+---------------+-------------------------------+
//! | destination address           | options (IHL > 5 only) ...
//! +-------------------------------+
//!
//! IPv6 (RFC 8200), 40 bytes, as netpoll writes it
//! +-------------------------------+---------------+-------+-------+
//! | 6 | class 0 | flow label 0    | payload length| nh 17 | hop 32|
//! +-------------------------------+---------------+-------+-------+
//! | source address (16 bytes) | destination address (16 bytes)    |
//! +---------------------------------------------------------------+
//!
//! UDP (RFC 768), 8 bytes, then the payload (at most 1000 bytes from netconsole)
//! +---------------+---------------+---------------+---------------+
//! | source port   | dest. port    | length = 8+n  | checksum      |
//! +---------------+---------------+---------------+---------------+
//!   default ports: 6665 -> 6666 (netconsole), 2004 (netoops)
//! ```
//!
//! All multi-byte fields are big-endian on the wire; the types below say so in their field types,
//! so reading or writing a header is a plain field access with no byte shuffling.

use zerocopy::network_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Ethertype of IPv4 (RFC 894).
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of IPv6 (RFC 2464).
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// Ethertype (TPID) of an IEEE 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Ethertype (TPID) of an IEEE 802.1ad service tag (the outer tag of QinQ).
pub const ETHERTYPE_QINQ: u16 = 0x88A8;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// The TTL netpoll writes in every IPv4 header.
pub const NETPOLL_IPV4_TTL: u8 = 64;
/// The hop limit netpoll writes in every IPv6 header.
pub const NETPOLL_IPV6_HOP_LIMIT: u8 = 32;

/// IPv4 flag "don't fragment" in [`Ipv4Header::flags_fragment_offset`].
pub const IPV4_DONT_FRAGMENT: u16 = 0x4000;
/// IPv4 flag "more fragments" in [`Ipv4Header::flags_fragment_offset`].
pub const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
/// The fragment offset bits of [`Ipv4Header::flags_fragment_offset`].
pub const IPV4_FRAGMENT_OFFSET_MASK: u16 = 0x1FFF;

/// An Ethernet II header.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, PartialEq, Eq,
)]
#[repr(C)]
pub struct EthernetHeader {
    /// Destination MAC address.
    pub destination: [u8; 6],
    /// Source MAC address.
    pub source: [u8; 6],
    /// What follows: [`ETHERTYPE_IPV4`], [`ETHERTYPE_IPV6`] or a VLAN TPID.
    pub ethertype: U16,
}

/// The 4 bytes of an 802.1Q tag that follow the source MAC: TCI, then the encapsulated type.
///
/// The TPID (`0x8100`) that announces it sits in the preceding [`EthernetHeader::ethertype`]
/// (or in the preceding tag's `ethertype`, for stacked tags).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, PartialEq, Eq,
)]
#[repr(C)]
pub struct VlanHeader {
    /// Tag control information: priority (3 bits), drop eligible (1 bit), VLAN id (12 bits).
    pub tci: U16,
    /// The type of what follows the tag.
    pub ethertype: U16,
}

/// An IPv4 header without options (options, when the IHL says so, follow it).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, PartialEq, Eq,
)]
#[repr(C)]
pub struct Ipv4Header {
    /// Version (high nibble, 4) and header length in 32-bit words (low nibble, 5 without options).
    pub version_ihl: u8,
    /// Type of service / DSCP and ECN; 0 from netpoll.
    pub tos: u8,
    /// Header, options and payload in bytes.
    pub total_length: U16,
    /// Identification: 0 in 2.6-era kernels, a global counter since 3.x.
    pub identification: U16,
    /// Flags (3 bits) and fragment offset (13 bits); 0 from netpoll (DF clear).
    pub flags_fragment_offset: U16,
    /// Time to live; 64 from netpoll.
    pub ttl: u8,
    /// Protocol of the payload; 17 (UDP) from netpoll.
    pub protocol: u8,
    /// RFC 1071 checksum of the header (options included).
    pub checksum: U16,
    /// Source address.
    pub source: [u8; 4],
    /// Destination address.
    pub destination: [u8; 4],
}

/// An IPv6 fixed header.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, PartialEq, Eq,
)]
#[repr(C)]
pub struct Ipv6Header {
    /// Version (4 bits, 6), traffic class (8 bits), flow label (20 bits).
    pub version_class_flow: U32,
    /// Length of what follows this header (extension headers and upper layer).
    pub payload_length: U16,
    /// Type of the next header: 17 (UDP) from netpoll.
    pub next_header: u8,
    /// Hop limit; 32 from netpoll.
    pub hop_limit: u8,
    /// Source address.
    pub source: [u8; 16],
    /// Destination address.
    pub destination: [u8; 16],
}

/// A UDP header.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, PartialEq, Eq,
)]
#[repr(C)]
pub struct UdpHeader {
    /// Source port (netconsole's local port, default 6665).
    pub source_port: U16,
    /// Destination port (default 6666 for netconsole, 2004 for netoops).
    pub destination_port: U16,
    /// Header and payload in bytes.
    pub length: U16,
    /// RFC 768 checksum over pseudo-header, header and payload; 0 = none (IPv4 only).
    pub checksum: U16,
}

/// Bytes in an Ethernet II header.
pub const ETHERNET_HEADER_LEN: usize = size_of::<EthernetHeader>();
/// Bytes in an 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = size_of::<VlanHeader>();
/// Bytes in an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = size_of::<Ipv4Header>();
/// Bytes in an IPv6 fixed header.
pub const IPV6_HEADER_LEN: usize = size_of::<Ipv6Header>();
/// Bytes in a UDP header.
pub const UDP_HEADER_LEN: usize = size_of::<UdpHeader>();

const _: () = assert!(ETHERNET_HEADER_LEN == 14);
const _: () = assert!(VLAN_HEADER_LEN == 4);
const _: () = assert!(IPV4_HEADER_LEN == 20);
const _: () = assert!(IPV6_HEADER_LEN == 40);
const _: () = assert!(UDP_HEADER_LEN == 8);
const _: () = assert!(core::mem::offset_of!(Ipv4Header, checksum) == 10);
const _: () = assert!(core::mem::offset_of!(Ipv6Header, destination) == 24);

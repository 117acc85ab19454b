//! Reading a frame back: [`Frame`], a borrowed, verified view of one UDP datagram in an
//! Ethernet frame.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use zerocopy::FromBytes;

use crate::addr::{MacAddr, VlanTag};
use crate::checksum::{self, Checksum};
use crate::wire::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, EthernetHeader, IPPROTO_UDP,
    IPV4_DONT_FRAGMENT, IPV4_FRAGMENT_OFFSET_MASK, IPV4_HEADER_LEN, IPV4_MORE_FRAGMENTS,
    Ipv4Header, Ipv6Header, UDP_HEADER_LEN, UdpHeader, VlanHeader,
};

/// The protocol layer a [`ParseError::Truncated`] happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layer {
    /// The Ethernet II header.
    Ethernet,
    /// An 802.1Q / 802.1ad tag.
    Vlan,
    /// The IPv4 header or its options.
    Ipv4,
    /// The IPv6 header or an extension header.
    Ipv6,
    /// The UDP header.
    Udp,
    /// The bytes the IP or UDP length promises.
    Payload,
}

/// Why bytes are not a netpoll-style UDP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The frame ends before the layer does.
    #[error("frame truncated in {layer:?}: {needed} bytes needed, {available} present")]
    Truncated {
        /// Where the bytes ran out.
        layer: Layer,
        /// Bytes the layer needs from its start.
        needed: usize,
        /// Bytes present from the layer's start.
        available: usize,
    },
    /// The ethertype is neither IPv4, IPv6 nor a VLAN tag, or tags are stacked more than twice.
    #[error("ethertype {0:#06x} is not IPv4 or IPv6")]
    UnsupportedEthertype(u16),
    /// The IP version nibble does not match the ethertype.
    #[error("IP version {0} does not match the ethertype")]
    IpVersionMismatch(u8),
    /// The IPv4 header length is below 20 bytes.
    #[error("IPv4 header length {0} bytes is below the minimum of 20")]
    BadIpv4HeaderLength(usize),
    /// The IPv4 header checksum does not verify.
    #[error("IPv4 header checksum {found:#06x} is wrong (expected {expected:#06x})")]
    Ipv4HeaderChecksum {
        /// The checksum in the header.
        found: u16,
        /// The checksum the header's bytes give.
        expected: u16,
    },
    /// The IP total or payload length disagrees with the header or the frame.
    #[error(
        "IP length {ip_len} is inconsistent (header {header_len} bytes, frame holds {available})"
    )]
    IpLength {
        /// The length the IP header announces (IPv4 total length, IPv6 payload length + 40).
        ip_len: usize,
        /// The IP header's own length (with options and extension headers).
        header_len: usize,
        /// Bytes present from the IP header's start.
        available: usize,
    },
    /// The datagram is an IP fragment (netpoll never fragments; a fragment cannot be verified alone).
    #[error("IP fragment (offset {offset}, more fragments: {more})")]
    Fragment {
        /// Fragment offset in bytes.
        offset: u32,
        /// Whether more fragments follow.
        more: bool,
    },
    /// The IP payload is not UDP.
    #[error("IP protocol {0} is not UDP")]
    NotUdp(u8),
    /// An IPv6 extension header that cannot be skipped (ESP, AH, a routing header with
    /// segments left) precedes the upper layer.
    #[error("IPv6 extension header {0} cannot be skipped")]
    UnsupportedIpv6Extension(u8),
    /// The UDP length disagrees with the IP length.
    #[error(
        "UDP length {udp_len} is inconsistent with the {ip_payload_len} bytes the IP header carries"
    )]
    UdpLength {
        /// The UDP header's length field.
        udp_len: usize,
        /// The bytes the IP layer gives to UDP.
        ip_payload_len: usize,
    },
    /// The UDP checksum does not verify.
    #[error("UDP checksum {found:#06x} is wrong (expected {expected:#06x})")]
    UdpChecksum {
        /// The checksum in the header.
        found: u16,
        /// The checksum the datagram gives.
        expected: u16,
    },
    /// A UDP checksum of 0 over IPv6, where it is mandatory (RFC 8200 section 8.1).
    #[error("UDP checksum missing over IPv6")]
    MissingUdpChecksum,
}

/// How strictly a frame's UDP checksum is checked ([`Frame::parse_with`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumPolicy {
    /// Every UDP checksum must verify; 0 ("none computed") is accepted on IPv4 only (RFC 768,
    /// RFC 8200 section 8.1).
    #[default]
    Strict,
    /// Also accept the checksums a capture on the sending host shows when the sender left
    /// them to checksum offload (Linux `CHECKSUM_PARTIAL`, always on the loopback): the field
    /// holds only the pseudo-header's sum, folded and not complemented, which the NIC would
    /// have completed over the datagram; and 0 on IPv6. Such frames parse, with
    /// [`UdpChecksumStatus::Unfilled`] or [`UdpChecksumStatus::Absent`]: their payload is not
    /// verified. Any other wrong checksum is still an error.
    AllowUnfilled,
}

/// What a parsed frame's UDP checksum says about its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UdpChecksumStatus {
    /// The checksum verifies the datagram.
    Verified,
    /// 0: none was computed (IPv4; on IPv6 only with [`ChecksumPolicy::AllowUnfilled`]).
    Absent,
    /// Left to checksum offload: the pseudo-header's sum only (with
    /// [`ChecksumPolicy::AllowUnfilled`]).
    Unfilled,
}

impl UdpChecksumStatus {
    /// Whether the checksum vouches for the datagram's bytes.
    pub const fn is_verified(self) -> bool {
        matches!(self, UdpChecksumStatus::Verified)
    }
}

/// IP-layer fields of a parsed frame beyond the addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpInfo {
    /// An IPv4 header.
    V4 {
        /// Identification.
        id: u16,
        /// Time to live.
        ttl: u8,
        /// Type of service byte.
        tos: u8,
        /// The DF flag.
        dont_fragment: bool,
        /// Bytes of IPv4 options (0 from netpoll).
        options_len: usize,
    },
    /// An IPv6 header.
    V6 {
        /// Hop limit.
        hop_limit: u8,
        /// Traffic class.
        traffic_class: u8,
        /// Flow label (20 bits).
        flow_label: u32,
        /// Bytes of extension headers skipped before UDP.
        extension_len: usize,
    },
}

/// A verified UDP frame, borrowing its payload from the parsed bytes.
///
/// [`Frame::parse`] walks Ethernet II, up to two VLAN tags (802.1Q, or 802.1ad outside
/// 802.1Q), IPv4 (options included) or IPv6 (hop-by-hop, routing with no segments left, and
/// destination options headers skipped), and UDP. It verifies the IPv4 header checksum and the
/// UDP checksum (0 = "not computed" is accepted on IPv4 and rejected on IPv6; with
/// [`ChecksumPolicy::AllowUnfilled`], also a checksum a sender's checksum offload left
/// unfilled, see [`UdpChecksumStatus`]), bounds the payload by the IP and UDP lengths (so
/// Ethernet padding of short frames is ignored), and rejects IP fragments, truncation and
/// inconsistent lengths with a [`ParseError`] naming what is wrong. The layouts are drawn in
/// [`crate::wire`].
///
/// ```
/// use netpoll_frame::{Frame, IpInfo};
///
/// // A frame from a Linux 7.3 capture: "6,0,0,-;..." would be longer; this one is short.
/// let mut builder = netpoll_frame::FrameBuilder::new(&netpoll_frame::FrameConfig::new(
///     "2001:db8::1".parse()?,
///     "2001:db8::2".parse()?,
/// ))?;
/// let mut buf = [0u8; 128];
/// let len = builder.build(b"hi\n", &mut buf)?;
/// let frame = Frame::parse(&buf[..len])?;
/// assert_eq!(frame.payload(), b"hi\n");
/// assert_eq!(frame.destination().to_string(), "[2001:db8::2]:6666");
/// assert!(matches!(frame.ip(), IpInfo::V6 { hop_limit: 32, .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    destination_mac: MacAddr,
    source_mac: MacAddr,
    vlan: Option<VlanTag>,
    inner_vlan: Option<VlanTag>,
    ip: IpInfo,
    source: SocketAddr,
    destination: SocketAddr,
    udp_checksum: u16,
    udp_checksum_status: UdpChecksumStatus,
    payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Parses and verifies one Ethernet frame carrying a UDP datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_ethernet(bytes, ChecksumPolicy::Strict)
    }

    /// [`Frame::parse`] with a checksum policy: [`ChecksumPolicy::AllowUnfilled`] accepts
    /// the unfilled UDP checksums of a capture made on the sending host.
    ///
    /// ```
    /// use netpoll_frame::{ChecksumPolicy, Frame, FrameBuilder, FrameConfig, UdpChecksumStatus};
    ///
    /// let mut builder = FrameBuilder::new(&FrameConfig::new("127.0.0.1".parse()?, "127.0.0.1".parse()?))?;
    /// let mut buf = [0u8; 128];
    /// let len = builder.build(b"hi\n", &mut buf)?;
    /// // What `tcpdump -i lo` shows: the pseudo-header's sum (0x7f00 + 0x0001 twice, UDP 0x11,
    /// // UDP length 0x0b) where the checksum goes.
    /// buf[40..42].copy_from_slice(&0xfe1eu16.to_be_bytes());
    /// assert!(Frame::parse(&buf[..len]).is_err());
    /// let frame = Frame::parse_with(&buf[..len], ChecksumPolicy::AllowUnfilled)?;
    /// assert_eq!(frame.udp_checksum_status(), UdpChecksumStatus::Unfilled);
    /// assert_eq!(frame.payload(), b"hi\n");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse_with(bytes: &'a [u8], policy: ChecksumPolicy) -> Result<Self, ParseError> {
        Self::parse_ethernet(bytes, policy)
    }

    /// [`Frame::parse_ip`] with a checksum policy.
    pub fn parse_ip_with(bytes: &'a [u8], policy: ChecksumPolicy) -> Result<Self, ParseError> {
        Self::parse_ip_bytes(bytes, policy)
    }

    /// Parses and verifies one UDP datagram whose bytes start at the IP header (IPv4 or
    /// IPv6, told by the version nibble), as captures without a link-layer header hold them
    /// (pcap LINKTYPE_RAW, LINKTYPE_IPV4/IPV6, or the payload of a Linux cooked capture).
    /// The frame's MAC addresses are then [`MacAddr::ZERO`] and it has no VLAN tag.
    ///
    /// ```
    /// use netpoll_frame::{Frame, FrameBuilder, FrameConfig};
    ///
    /// let mut builder = FrameBuilder::new(&FrameConfig::new("192.0.2.1".parse()?, "192.0.2.2".parse()?))?;
    /// let mut buf = [0u8; 128];
    /// let len = builder.build(b"hi\n", &mut buf)?;
    /// // Without the 14-byte Ethernet header.
    /// let frame = Frame::parse_ip(&buf[14..len])?;
    /// assert_eq!(frame.payload(), b"hi\n");
    /// assert_eq!(frame.source().to_string(), "192.0.2.1:6665");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse_ip(bytes: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_ip_bytes(bytes, ChecksumPolicy::Strict)
    }

    fn parse_ip_bytes(bytes: &'a [u8], policy: ChecksumPolicy) -> Result<Self, ParseError> {
        let network = match bytes.first().map(|b| b >> 4) {
            Some(4) => parse_ipv4(bytes)?,
            Some(6) => parse_ipv6(bytes)?,
            Some(version) => return Err(ParseError::IpVersionMismatch(version)),
            None => {
                return Err(ParseError::Truncated {
                    layer: Layer::Ipv4,
                    needed: IPV4_HEADER_LEN,
                    available: 0,
                });
            }
        };
        Self::from_network(&network, policy, MacAddr::ZERO, MacAddr::ZERO, [None; 2])
    }

    fn from_network(
        network: &Network<'a>,
        policy: ChecksumPolicy,
        destination_mac: MacAddr,
        source_mac: MacAddr,
        tags: [Option<VlanTag>; 2],
    ) -> Result<Self, ParseError> {
        let (udp_checksum, udp_checksum_status, payload) = parse_udp(network, policy)?;
        Ok(Self {
            destination_mac,
            source_mac,
            vlan: tags[0],
            inner_vlan: tags[1],
            ip: network.info,
            source: SocketAddr::new(network.source, payload.source_port),
            destination: SocketAddr::new(network.destination, payload.destination_port),
            udp_checksum,
            udp_checksum_status,
            payload: payload.bytes,
        })
    }

    fn parse_ethernet(bytes: &'a [u8], policy: ChecksumPolicy) -> Result<Self, ParseError> {
        let (ethernet, mut rest) =
            EthernetHeader::ref_from_prefix(bytes).map_err(|_| ParseError::Truncated {
                layer: Layer::Ethernet,
                needed: 14,
                available: bytes.len(),
            })?;
        let mut ethertype = ethernet.ethertype.get();
        let mut tags = [None; 2];
        for tag in &mut tags {
            if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
                break;
            }
            let (vlan, after) =
                VlanHeader::ref_from_prefix(rest).map_err(|_| ParseError::Truncated {
                    layer: Layer::Vlan,
                    needed: 4,
                    available: rest.len(),
                })?;
            *tag = Some(VlanTag::from_tci(vlan.tci.get()));
            ethertype = vlan.ethertype.get();
            rest = after;
        }
        let network = match ethertype {
            ETHERTYPE_IPV4 => parse_ipv4(rest)?,
            ETHERTYPE_IPV6 => parse_ipv6(rest)?,
            other => return Err(ParseError::UnsupportedEthertype(other)),
        };
        Self::from_network(
            &network,
            policy,
            MacAddr(ethernet.destination),
            MacAddr(ethernet.source),
            tags,
        )
    }

    /// The destination MAC address.
    pub const fn destination_mac(&self) -> MacAddr {
        self.destination_mac
    }

    /// The source MAC address.
    pub const fn source_mac(&self) -> MacAddr {
        self.source_mac
    }

    /// The (outer) VLAN tag, if the frame has one.
    pub const fn vlan(&self) -> Option<VlanTag> {
        self.vlan
    }

    /// The inner tag of a double-tagged (QinQ) frame.
    pub const fn inner_vlan(&self) -> Option<VlanTag> {
        self.inner_vlan
    }

    /// The IP-layer fields beyond the addresses.
    pub const fn ip(&self) -> IpInfo {
        self.ip
    }

    /// The IPv4 identification, `None` for IPv6.
    pub const fn ipv4_id(&self) -> Option<u16> {
        match self.ip {
            IpInfo::V4 { id, .. } => Some(id),
            IpInfo::V6 { .. } => None,
        }
    }

    /// The sender's address and UDP port.
    pub const fn source(&self) -> SocketAddr {
        self.source
    }

    /// The receiver's address and UDP port.
    pub const fn destination(&self) -> SocketAddr {
        self.destination
    }

    /// The UDP checksum as sent; 0 means the sender computed none (IPv4 only).
    pub const fn udp_checksum(&self) -> u16 {
        self.udp_checksum
    }

    /// Whether the UDP checksum verified the datagram, or was absent or left unfilled
    /// (accepted by [`Frame::parse_with`]'s policy).
    pub const fn udp_checksum_status(&self) -> UdpChecksumStatus {
        self.udp_checksum_status
    }

    /// The UDP payload: exactly the bytes the UDP length covers.
    pub const fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// The IP layer, parsed: what UDP verification needs.
struct Network<'a> {
    info: IpInfo,
    source: IpAddr,
    destination: IpAddr,
    /// Sum of the pseudo-header without its length field.
    pseudo_sum: Checksum,
    /// The upper-layer bytes, bounded by the IP length.
    upper: &'a [u8],
    /// Whether a UDP checksum of 0 is allowed.
    zero_checksum_allowed: bool,
}

fn parse_ipv4(bytes: &[u8]) -> Result<Network<'_>, ParseError> {
    let (header, _) = Ipv4Header::ref_from_prefix(bytes).map_err(|_| ParseError::Truncated {
        layer: Layer::Ipv4,
        needed: IPV4_HEADER_LEN,
        available: bytes.len(),
    })?;
    let version = header.version_ihl >> 4;
    if version != 4 {
        return Err(ParseError::IpVersionMismatch(version));
    }
    let header_len = usize::from(header.version_ihl & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN {
        return Err(ParseError::BadIpv4HeaderLength(header_len));
    }
    let Some(header_bytes) = bytes.get(..header_len) else {
        return Err(ParseError::Truncated {
            layer: Layer::Ipv4,
            needed: header_len,
            available: bytes.len(),
        });
    };
    let found = header.checksum.get();
    let mut sum = Checksum::new();
    sum.add_bytes(header_bytes);
    if sum.sum() != 0xffff {
        let mut without = Checksum::new();
        without.add_bytes(&header_bytes[..10]);
        without.add_bytes(&header_bytes[12..]);
        return Err(ParseError::Ipv4HeaderChecksum {
            found,
            expected: without.finish(),
        });
    }
    let total_len = usize::from(header.total_length.get());
    if total_len < header_len || total_len > bytes.len() {
        return Err(ParseError::IpLength {
            ip_len: total_len,
            header_len,
            available: bytes.len(),
        });
    }
    let flags = header.flags_fragment_offset.get();
    let offset = flags & IPV4_FRAGMENT_OFFSET_MASK;
    let more = flags & IPV4_MORE_FRAGMENTS != 0;
    if offset != 0 || more {
        return Err(ParseError::Fragment {
            offset: u32::from(offset) * 8,
            more,
        });
    }
    if header.protocol != IPPROTO_UDP {
        return Err(ParseError::NotUdp(header.protocol));
    }
    let source = Ipv4Addr::from(header.source);
    let destination = Ipv4Addr::from(header.destination);
    Ok(Network {
        info: IpInfo::V4 {
            id: header.identification.get(),
            ttl: header.ttl,
            tos: header.tos,
            dont_fragment: flags & IPV4_DONT_FRAGMENT != 0,
            options_len: header_len - IPV4_HEADER_LEN,
        },
        source: source.into(),
        destination: destination.into(),
        pseudo_sum: checksum::ipv4_pseudo_header(source, destination, IPPROTO_UDP, 0),
        upper: &bytes[header_len..total_len],
        zero_checksum_allowed: true,
    })
}

/// IPv6 extension headers this parser knows.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_ESP: u8 = 50;
const IPV6_AUTH: u8 = 51;
const IPV6_DESTINATION_OPTIONS: u8 = 60;

fn parse_ipv6(bytes: &[u8]) -> Result<Network<'_>, ParseError> {
    let (header, after) =
        Ipv6Header::ref_from_prefix(bytes).map_err(|_| ParseError::Truncated {
            layer: Layer::Ipv6,
            needed: size_of::<Ipv6Header>(),
            available: bytes.len(),
        })?;
    let word = header.version_class_flow.get();
    let version = (word >> 28) as u8;
    if version != 6 {
        return Err(ParseError::IpVersionMismatch(version));
    }
    let payload_len = usize::from(header.payload_length.get());
    let Some(mut rest) = after.get(..payload_len) else {
        return Err(ParseError::IpLength {
            ip_len: payload_len + size_of::<Ipv6Header>(),
            header_len: size_of::<Ipv6Header>(),
            available: bytes.len(),
        });
    };
    let mut next_header = header.next_header;
    let mut extension_len = 0;
    loop {
        match next_header {
            IPPROTO_UDP => break,
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DESTINATION_OPTIONS => {
                let Some(&[next, units]) = rest.first_chunk::<2>() else {
                    return Err(ParseError::Truncated {
                        layer: Layer::Ipv6,
                        needed: size_of::<Ipv6Header>() + extension_len + 2,
                        available: size_of::<Ipv6Header>() + extension_len + rest.len(),
                    });
                };
                let len = (usize::from(units) + 1) * 8;
                if rest.len() < len {
                    return Err(ParseError::Truncated {
                        layer: Layer::Ipv6,
                        needed: size_of::<Ipv6Header>() + extension_len + len,
                        available: size_of::<Ipv6Header>() + extension_len + rest.len(),
                    });
                }
                // A routing header with segments left means the destination field is not the
                // final one the UDP checksum covers.
                if next_header == IPV6_ROUTING && rest[3] != 0 {
                    return Err(ParseError::UnsupportedIpv6Extension(IPV6_ROUTING));
                }
                rest = &rest[len..];
                extension_len += len;
                next_header = next;
            }
            IPV6_FRAGMENT => {
                let (offset, more) = match rest.get(2..4) {
                    Some(&[hi, lo]) => (u32::from(u16::from_be_bytes([hi, lo]) & !7), lo & 1 != 0),
                    _ => (0, false),
                };
                return Err(ParseError::Fragment { offset, more });
            }
            IPV6_ESP | IPV6_AUTH => return Err(ParseError::UnsupportedIpv6Extension(next_header)),
            other => return Err(ParseError::NotUdp(other)),
        }
    }
    let source = Ipv6Addr::from(header.source);
    let destination = Ipv6Addr::from(header.destination);
    Ok(Network {
        info: IpInfo::V6 {
            hop_limit: header.hop_limit,
            traffic_class: (word >> 20) as u8,
            flow_label: word & 0x000f_ffff,
            extension_len,
        },
        source: source.into(),
        destination: destination.into(),
        pseudo_sum: checksum::ipv6_pseudo_header(source, destination, IPPROTO_UDP, 0),
        upper: rest,
        zero_checksum_allowed: false,
    })
}

struct Udp<'a> {
    source_port: u16,
    destination_port: u16,
    bytes: &'a [u8],
}

fn parse_udp<'a>(
    network: &Network<'a>,
    policy: ChecksumPolicy,
) -> Result<(u16, UdpChecksumStatus, Udp<'a>), ParseError> {
    let lenient = policy == ChecksumPolicy::AllowUnfilled;
    let upper = network.upper;
    let (header, _) = UdpHeader::ref_from_prefix(upper).map_err(|_| ParseError::Truncated {
        layer: Layer::Udp,
        needed: UDP_HEADER_LEN,
        available: upper.len(),
    })?;
    let udp_len = usize::from(header.length.get());
    if udp_len < UDP_HEADER_LEN || udp_len != upper.len() {
        return Err(ParseError::UdpLength {
            udp_len,
            ip_payload_len: upper.len(),
        });
    }
    let datagram = &upper[..udp_len];
    let found = header.checksum.get();
    let status = if found == 0 {
        if !network.zero_checksum_allowed && !lenient {
            return Err(ParseError::MissingUdpChecksum);
        }
        UdpChecksumStatus::Absent
    } else {
        let mut pseudo = network.pseudo_sum;
        pseudo.add_u16(udp_len as u16);
        let mut sum = pseudo;
        sum.add_bytes(datagram);
        if sum.sum() == 0xffff {
            UdpChecksumStatus::Verified
        } else if lenient && found == pseudo.sum() {
            // What CHECKSUM_PARTIAL leaves: ~csum_tcpudp_magic(saddr, daddr, len, UDP, 0).
            UdpChecksumStatus::Unfilled
        } else {
            let mut without = network.pseudo_sum;
            without.add_u16(udp_len as u16);
            without.add_bytes(&datagram[..6]);
            without.add_bytes(&datagram[8..]);
            let expected = match without.finish() {
                0 => 0xffff,
                value => value,
            };
            return Err(ParseError::UdpChecksum { found, expected });
        }
    };
    Ok((
        found,
        status,
        Udp {
            source_port: header.source_port.get(),
            destination_port: header.destination_port.get(),
            bytes: &datagram[UDP_HEADER_LEN..],
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Linux 7.3, extended target, IPv4 id 3: `6,2,0,-;BIOS-provided physical RAM map:\n`.
    const KERNEL_IPV4: &str = "525400123457525400123456080045000044000300004011f6a2c0000201c00002021a091a0a00303f19362c322c302c2d3b42494f532d70726f766964656420706879736963616c2052414d206d61703a0a";
    /// Linux 7.3, plain target over IPv6 (ports 6667 -> 6668).
    const KERNEL_IPV6: &str = "52540012345752540012345686dd600000000037112020010db800000000000000000000000120010db80000000000000000000000021a0b1a0c003757535b20202020302e3030303030305d2042494f532d70726f766964656420706879736963616c2052414d206d61703a0a";
    /// Linux 7.3, an MLDv2 report: IPv6, hop-by-hop options (router alert), then ICMPv6.
    const KERNEL_MLD: &str = "33330000001652540012345686dd600000000024000100000000000000000000000000000000ff0200000000000000000000000000163a000502000001008f003b220000000104000000ff0200000000000000000001ff123456";

    #[test]
    fn kernel_ipv4_frame() {
        let bytes = hex(KERNEL_IPV4);
        let frame = Frame::parse(&bytes).unwrap();
        assert_eq!(
            frame.payload(),
            b"6,2,0,-;BIOS-provided physical RAM map:\n"
        );
        assert_eq!(frame.source(), "192.0.2.1:6665".parse().unwrap());
        assert_eq!(frame.destination(), "192.0.2.2:6666".parse().unwrap());
        assert_eq!(frame.source_mac().to_string(), "52:54:00:12:34:56");
        assert_eq!(frame.destination_mac().to_string(), "52:54:00:12:34:57");
        assert_eq!(
            frame.ip(),
            IpInfo::V4 {
                id: 3,
                ttl: 64,
                tos: 0,
                dont_fragment: false,
                options_len: 0
            }
        );
        assert_eq!(frame.udp_checksum(), 0x3f19);
        assert_eq!(frame.vlan(), None);
    }

    #[test]
    fn kernel_ipv6_frame() {
        let bytes = hex(KERNEL_IPV6);
        let frame = Frame::parse(&bytes).unwrap();
        assert_eq!(
            frame.payload(),
            b"[    0.000000] BIOS-provided physical RAM map:\n"
        );
        assert_eq!(frame.source(), "[2001:db8::1]:6667".parse().unwrap());
        assert_eq!(frame.destination(), "[2001:db8::2]:6668".parse().unwrap());
        assert_eq!(
            frame.ip(),
            IpInfo::V6 {
                hop_limit: 32,
                traffic_class: 0,
                flow_label: 0,
                extension_len: 0
            }
        );
        assert_eq!(frame.ipv4_id(), None);
    }

    /// `tcpdump -i lo` of `ncrx send` to 127.0.0.1 and ::1 (Linux 6.1): the UDP checksums
    /// were left to offload, the field holds the pseudo-header's sum (0xfe2d, 0x002d).
    const LOOPBACK_IPV4: &str = "00000000000000000000000008004500002ec69f40004011761d7f0000017f0000011a091a0a001afe2d31342c302c352c2d3b68656c6c6f206c6f0a";
    const LOOPBACK_IPV6: &str = "00000000000000000000000086dd600ce876001a114000000000000000000000000000000001000000000000000000000000000000011a0b1a0a001a002d31342c302c332c2d3b76362068656c6c6f0a";

    #[test]
    fn unfilled_checksums_of_a_loopback_capture() {
        for (frame, found, payload) in [
            (LOOPBACK_IPV4, 0xfe2d, &b"14,0,5,-;hello lo\n"[..]),
            (LOOPBACK_IPV6, 0x002d, &b"14,0,3,-;v6 hello\n"[..]),
        ] {
            let bytes = hex(frame);
            assert!(
                matches!(
                    Frame::parse(&bytes),
                    Err(ParseError::UdpChecksum { found: f, .. }) if f == found
                ),
                "strict: {frame}"
            );
            let parsed = Frame::parse_with(&bytes, ChecksumPolicy::AllowUnfilled).unwrap();
            assert_eq!(parsed.payload(), payload);
            assert_eq!(parsed.udp_checksum(), found);
            assert_eq!(parsed.udp_checksum_status(), UdpChecksumStatus::Unfilled);
            assert!(!parsed.udp_checksum_status().is_verified());
            // From the IP header too.
            let ip = Frame::parse_ip_with(&bytes[14..], ChecksumPolicy::AllowUnfilled).unwrap();
            assert_eq!(ip.udp_checksum_status(), UdpChecksumStatus::Unfilled);
            // A checksum wrong in another way stays an error, even when lenient.
            let mut other = bytes.clone();
            let at = if frame == LOOPBACK_IPV4 { 40 } else { 60 };
            other[at + 1] ^= 0x10;
            assert!(matches!(
                Frame::parse_with(&other, ChecksumPolicy::AllowUnfilled),
                Err(ParseError::UdpChecksum { .. })
            ));
            // 0 over IPv6: missing when strict, absent when lenient; over IPv4 absent both ways.
            let mut zero = bytes.clone();
            zero[at..at + 2].copy_from_slice(&[0, 0]);
            let lenient = Frame::parse_with(&zero, ChecksumPolicy::AllowUnfilled).unwrap();
            assert_eq!(lenient.udp_checksum_status(), UdpChecksumStatus::Absent);
            if frame == LOOPBACK_IPV6 {
                assert_eq!(Frame::parse(&zero), Err(ParseError::MissingUdpChecksum));
            } else {
                let strict = Frame::parse(&zero).unwrap();
                assert_eq!(strict.udp_checksum_status(), UdpChecksumStatus::Absent);
            }
        }
        // A kernel frame verifies either way.
        let kernel = hex(KERNEL_IPV4);
        for policy in [ChecksumPolicy::Strict, ChecksumPolicy::AllowUnfilled] {
            let frame = Frame::parse_with(&kernel, policy).unwrap();
            assert_eq!(frame.udp_checksum_status(), UdpChecksumStatus::Verified);
        }
    }

    #[test]
    fn kernel_frames_from_the_ip_header() {
        for (frame, bytes) in [(KERNEL_IPV4, 14), (KERNEL_IPV6, 14)] {
            let frame = hex(frame);
            let whole = Frame::parse(&frame).unwrap();
            let ip = Frame::parse_ip(&frame[bytes..]).unwrap();
            assert_eq!(ip.payload(), whole.payload());
            assert_eq!(ip.source(), whole.source());
            assert_eq!(ip.destination(), whole.destination());
            assert_eq!(ip.ip(), whole.ip());
            assert_eq!(ip.udp_checksum(), whole.udp_checksum());
            assert_eq!(ip.source_mac(), MacAddr::ZERO);
            assert_eq!(ip.destination_mac(), MacAddr::ZERO);
            // Verified as strictly as from Ethernet: a flipped payload bit fails.
            let mut bad = frame[bytes..].to_vec();
            *bad.last_mut().unwrap() ^= 1;
            assert!(matches!(
                Frame::parse_ip(&bad),
                Err(ParseError::UdpChecksum { .. })
            ));
            for len in 0..frame.len() - bytes {
                assert!(
                    Frame::parse_ip(&frame[bytes..bytes + len]).is_err(),
                    "{len}"
                );
            }
        }
        // Neither IPv4 nor IPv6 (an ARP body starts 0x00 0x01).
        assert_eq!(
            Frame::parse_ip(&[0x00, 0x01, 0x08, 0x00]),
            Err(ParseError::IpVersionMismatch(0))
        );
        assert!(matches!(
            Frame::parse_ip(&[]),
            Err(ParseError::Truncated { available: 0, .. })
        ));
        assert_eq!(
            Frame::parse_ip(&hex(KERNEL_MLD)[14..]),
            Err(ParseError::NotUdp(58))
        );
    }

    #[test]
    fn hop_by_hop_is_skipped_to_the_upper_layer() {
        assert_eq!(Frame::parse(&hex(KERNEL_MLD)), Err(ParseError::NotUdp(58)));
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        for bytes in [hex(KERNEL_IPV4), hex(KERNEL_IPV6)] {
            for len in 0..bytes.len() {
                let error = Frame::parse(&bytes[..len]).unwrap_err();
                assert!(
                    matches!(
                        error,
                        ParseError::Truncated { .. } | ParseError::IpLength { .. }
                    ),
                    "{len}: {error:?}"
                );
            }
        }
        assert_eq!(
            Frame::parse(&hex(KERNEL_IPV4)[..30]),
            Err(ParseError::Truncated {
                layer: Layer::Ipv4,
                needed: 20,
                available: 16
            })
        );
    }

    #[test]
    fn corrupted_checksums_are_caught_and_the_right_value_named() {
        let mut bytes = hex(KERNEL_IPV4);
        bytes[14 + 8] = 63; // ttl
        assert_eq!(
            Frame::parse(&bytes),
            Err(ParseError::Ipv4HeaderChecksum {
                found: 0xf6a2,
                expected: 0xf7a2
            })
        );
        let mut bytes = hex(KERNEL_IPV4);
        *bytes.last_mut().unwrap() = b'!';
        assert_eq!(
            Frame::parse(&bytes),
            Err(ParseError::UdpChecksum {
                found: 0x3f19,
                expected: 0x3f19 + 0x0a - 0x21
            })
        );
        let mut bytes = hex(KERNEL_IPV6);
        bytes[62 + 8] ^= 0x01;
        assert!(matches!(
            Frame::parse(&bytes),
            Err(ParseError::UdpChecksum { found: 0x5753, .. })
        ));
    }

    #[test]
    fn zero_udp_checksum_is_absent_on_ipv4_and_refused_on_ipv6() {
        let mut bytes = hex(KERNEL_IPV4);
        bytes[40..42].fill(0);
        assert_eq!(Frame::parse(&bytes).unwrap().udp_checksum(), 0);
        let mut bytes = hex(KERNEL_IPV6);
        bytes[60..62].fill(0);
        assert_eq!(Frame::parse(&bytes), Err(ParseError::MissingUdpChecksum));
    }

    /// Re-sums an IPv4 header in place after a test changed it.
    fn fix_ipv4_checksum(header: &mut [u8]) {
        header[10..12].fill(0);
        let mut sum = Checksum::new();
        sum.add_bytes(header);
        header[10..12].copy_from_slice(&sum.finish().to_be_bytes());
    }

    #[test]
    fn ipv4_options_are_skipped_and_covered_by_the_checksum() {
        let original = hex(KERNEL_IPV4);
        // Insert 4 bytes of options (NOP, NOP, NOP, EOL) after the 20-byte header.
        let mut bytes = original[..34].to_vec();
        bytes.extend_from_slice(&[1, 1, 1, 0]);
        bytes.extend_from_slice(&original[34..]);
        bytes[14] = 0x46;
        let total = u16::from_be_bytes([bytes[16], bytes[17]]) + 4;
        bytes[16..18].copy_from_slice(&total.to_be_bytes());
        fix_ipv4_checksum(&mut bytes[14..38]);
        let frame = Frame::parse(&bytes).unwrap();
        assert_eq!(
            frame.payload(),
            b"6,2,0,-;BIOS-provided physical RAM map:\n"
        );
        assert!(matches!(frame.ip(), IpInfo::V4 { options_len: 4, .. }));
    }

    #[test]
    fn fragments_and_bad_lengths_are_rejected() {
        let mut bytes = hex(KERNEL_IPV4);
        bytes[20] = 0x20; // more fragments
        fix_ipv4_checksum(&mut bytes[14..34]);
        assert_eq!(
            Frame::parse(&bytes),
            Err(ParseError::Fragment {
                offset: 0,
                more: true
            })
        );

        let mut bytes = hex(KERNEL_IPV4);
        bytes[21] = 0x10; // offset 16 * 8
        fix_ipv4_checksum(&mut bytes[14..34]);
        assert_eq!(
            Frame::parse(&bytes),
            Err(ParseError::Fragment {
                offset: 128,
                more: false
            })
        );

        let mut bytes = hex(KERNEL_IPV4);
        bytes[17] += 1; // total length one past the frame
        fix_ipv4_checksum(&mut bytes[14..34]);
        assert_eq!(
            Frame::parse(&bytes),
            Err(ParseError::IpLength {
                ip_len: 69,
                header_len: 20,
                available: 68
            })
        );

        let mut bytes = hex(KERNEL_IPV4);
        bytes[39] -= 1; // UDP length one short of the IP payload
        assert_eq!(
            Frame::parse(&bytes),
            Err(ParseError::UdpLength {
                udp_len: 47,
                ip_payload_len: 48
            })
        );

        let mut bytes = hex(KERNEL_IPV4);
        bytes[14] = 0x44;
        assert_eq!(
            Frame::parse(&bytes),
            Err(ParseError::BadIpv4HeaderLength(16))
        );
        bytes[14] = 0x65;
        assert_eq!(Frame::parse(&bytes), Err(ParseError::IpVersionMismatch(6)));

        let mut bytes = hex(KERNEL_IPV4);
        bytes[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(
            Frame::parse(&bytes),
            Err(ParseError::UnsupportedEthertype(0x0806))
        );
    }

    #[test]
    fn ipv6_fragment_and_esp_are_rejected() {
        let original = hex(KERNEL_IPV6);
        for (next, error) in [
            // The UDP header read as a fragment header: offset field 0x1a0c.
            (
                IPV6_FRAGMENT,
                ParseError::Fragment {
                    offset: 0x1a08,
                    more: false,
                },
            ),
            (IPV6_ESP, ParseError::UnsupportedIpv6Extension(IPV6_ESP)),
            (59, ParseError::NotUdp(59)),
        ] {
            let mut bytes = original.clone();
            bytes[20] = next;
            assert_eq!(Frame::parse(&bytes), Err(error));
        }
    }

    #[test]
    fn vlan_tags_are_read() {
        let original = hex(KERNEL_IPV4);
        let mut bytes = original[..12].to_vec();
        bytes.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x20, 0x64]);
        bytes.extend_from_slice(&original[12..]);
        let frame = Frame::parse(&bytes).unwrap();
        assert_eq!(frame.vlan(), Some(VlanTag::new(10)));
        assert_eq!(frame.inner_vlan(), Some(VlanTag::new(100).with_priority(1)));
        assert_eq!(
            frame.payload(),
            b"6,2,0,-;BIOS-provided physical RAM map:\n"
        );
    }
}

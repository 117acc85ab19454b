//! Property tests: our builder and parser agree with each other, and both agree with an
//! independent implementation (etherparse) in both directions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use netpoll_frame::{
    BuildError, Frame, FrameBuilder, FrameConfig, IpIdPolicy, IpInfo, MAX_IPV4_UDP_PAYLOAD,
    MAX_IPV6_UDP_PAYLOAD, MacAddr, UdpChecksumPolicy, VlanTag,
};
use proptest::prelude::*;

fn addresses() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>())
            .prop_map(|(s, d)| (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))),
        (any::<[u8; 16]>(), any::<[u8; 16]>())
            .prop_map(|(s, d)| (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))),
    ]
}

/// Payloads from empty to the UDP maximum, weighted to netconsole's sizes.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..=1000),
        1 => proptest::collection::vec(any::<u8>(), 1001..=9000),
        1 => proptest::collection::vec(any::<u8>(), 65_400..=MAX_IPV4_UDP_PAYLOAD),
    ]
}

fn config() -> impl Strategy<Value = FrameConfig> {
    (
        addresses(),
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        any::<u16>(),
        any::<u16>(),
        proptest::option::of((0u16..4096, 0u8..8)),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(
            |((source, destination), smac, dmac, sport, dport, vlan, id)| {
                let mut config = FrameConfig::new(source, destination);
                config.source_mac = MacAddr(smac);
                config.destination_mac = MacAddr(dmac);
                config.source_port = sport;
                config.destination_port = dport;
                config.vlan = vlan.map(|(vid, pcp)| VlanTag::new(vid).with_priority(pcp));
                config.ip_id = id.map_or(IpIdPolicy::Zero, |next| IpIdPolicy::Counter { next });
                config
            },
        )
}

fn expected_id(config: &FrameConfig) -> Option<u16> {
    match (config.source, config.ip_id) {
        (IpAddr::V6(_), _) => None,
        (_, IpIdPolicy::Counter { next }) => Some(next),
        _ => Some(0),
    }
}

proptest! {
    #[test]
    fn parse_of_build_is_identity(config in config(), payload in payload()) {
        let mut builder = FrameBuilder::new(&config).unwrap();
        let mut buf = vec![0u8; 65_600];
        let len = builder.build(&payload, &mut buf).unwrap();
        prop_assert_eq!(len, builder.frame_len(payload.len()).unwrap());
        let frame = Frame::parse(&buf[..len]).unwrap();
        prop_assert_eq!(frame.payload(), &payload[..]);
        prop_assert_eq!(frame.source_mac(), config.source_mac);
        prop_assert_eq!(frame.destination_mac(), config.destination_mac);
        prop_assert_eq!(frame.vlan(), config.vlan);
        prop_assert_eq!(frame.source().ip(), config.source);
        prop_assert_eq!(frame.destination().ip(), config.destination);
        prop_assert_eq!(frame.source().port(), config.source_port);
        prop_assert_eq!(frame.destination().port(), config.destination_port);
        prop_assert_eq!(frame.ipv4_id(), expected_id(&config));
        prop_assert_ne!(frame.udp_checksum(), 0);
        match frame.ip() {
            IpInfo::V4 { ttl, tos, dont_fragment, .. } => prop_assert_eq!((ttl, tos, dont_fragment), (64, 0, false)),
            IpInfo::V6 { hop_limit, traffic_class, flow_label, .. } => prop_assert_eq!((hop_limit, traffic_class, flow_label), (32, 0, 0)),
            _ => prop_assert!(false),
        }
        // Ethernet padding after the datagram is ignored.
        buf[len..len + 20].fill(0);
        prop_assert_eq!(Frame::parse(&buf[..len + 20]).unwrap().payload(), &payload[..]);
    }

    #[test]
    fn etherparse_reads_our_frames(config in config(), payload in payload()) {
        let mut builder = FrameBuilder::new(&config).unwrap();
        let mut buf = vec![0u8; 65_600];
        let len = builder.build(&payload, &mut buf).unwrap();
        let packet = SlicedPacket::from_ethernet(&buf[..len]).unwrap();
        let Some(TransportSlice::Udp(udp)) = packet.transport else { panic!("not UDP to etherparse") };
        prop_assert_eq!(udp.payload(), &payload[..]);
        prop_assert_eq!(udp.source_port(), config.source_port);
        prop_assert_eq!(udp.destination_port(), config.destination_port);
        let header = udp.to_header();
        let mut zeroed = header.clone();
        zeroed.checksum = 0;
        match packet.net {
            Some(NetSlice::Ipv4(ip)) => {
                let ip_header = ip.header().to_header();
                prop_assert_eq!(ip_header.calc_header_checksum(), ip_header.header_checksum);
                prop_assert_eq!(zeroed.calc_checksum_ipv4(&ip_header, &payload).unwrap(), header.checksum);
                prop_assert_eq!(IpAddr::V4(ip_header.source.into()), config.source);
            }
            Some(NetSlice::Ipv6(ip)) => {
                let ip_header = ip.header().to_header();
                prop_assert_eq!(zeroed.calc_checksum_ipv6(&ip_header, &payload).unwrap(), header.checksum);
                prop_assert_eq!(IpAddr::V6(ip_header.destination.into()), config.destination);
            }
            _ => prop_assert!(false, "not IP to etherparse"),
        }
    }

    #[test]
    fn we_read_etherparse_frames(
        (source, destination) in addresses(),
        ports in any::<(u16, u16)>(),
        vlan in proptest::option::of(0u16..4095),
        payload in proptest::collection::vec(any::<u8>(), 0..=1500),
    ) {
        let link = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut buf = vec![0u8; 2000];
        let len = match (source, destination, vlan) {
            (IpAddr::V4(s), IpAddr::V4(d), None) => {
                let b = link.ipv4(s.octets(), d.octets(), 64).udp(ports.0, ports.1);
                b.write_to_slice(&mut buf, &payload).unwrap()
            }
            (IpAddr::V4(s), IpAddr::V4(d), Some(vid)) => {
                let b = link.single_vlan(vid.try_into().unwrap()).ipv4(s.octets(), d.octets(), 64).udp(ports.0, ports.1);
                b.write_to_slice(&mut buf, &payload).unwrap()
            }
            (IpAddr::V6(s), IpAddr::V6(d), None) => {
                let b = link.ipv6(s.octets(), d.octets(), 32).udp(ports.0, ports.1);
                b.write_to_slice(&mut buf, &payload).unwrap()
            }
            (IpAddr::V6(s), IpAddr::V6(d), Some(vid)) => {
                let b = link.single_vlan(vid.try_into().unwrap()).ipv6(s.octets(), d.octets(), 32).udp(ports.0, ports.1);
                b.write_to_slice(&mut buf, &payload).unwrap()
            }
            _ => unreachable!(),
        };
        let frame = Frame::parse(&buf[..len]).unwrap();
        prop_assert_eq!(frame.payload(), &payload[..]);
        prop_assert_eq!(frame.source().ip(), source);
        prop_assert_eq!(frame.destination().ip(), destination);
        prop_assert_eq!((frame.source().port(), frame.destination().port()), ports);
        prop_assert_eq!(frame.vlan().map(|t| t.vid), vlan);
        prop_assert_eq!(frame.source_mac(), MacAddr([2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Frame::parse(&bytes);
    }
}

#[test]
fn size_limits_are_typed_errors() {
    let v4 = FrameConfig::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let mut builder = FrameBuilder::new(&v4).unwrap();
    let payload = vec![0xAB; MAX_IPV4_UDP_PAYLOAD + 1];
    assert_eq!(
        builder.frame_len(payload.len()),
        Err(BuildError::PayloadTooLarge {
            len: 65_508,
            max: 65_507
        })
    );
    let mut buf = vec![0u8; 70_000];
    assert_eq!(
        builder.build(&payload[..MAX_IPV4_UDP_PAYLOAD], &mut buf),
        Ok(42 + 65_507)
    );
    assert!(matches!(
        builder.build(&payload, &mut buf),
        Err(BuildError::PayloadTooLarge { .. })
    ));
    assert_eq!(
        builder.build(b"hello", &mut buf[..46]),
        Err(BuildError::BufferTooSmall {
            needed: 47,
            available: 46
        })
    );
    // A failed build does not consume an IPv4 id.
    assert_eq!(builder.next_ip_id(), Some(2));

    let v6 = FrameConfig::new("::1".parse().unwrap(), "::2".parse().unwrap());
    let builder = FrameBuilder::new(&v6).unwrap();
    assert_eq!(builder.max_payload_len(), MAX_IPV6_UDP_PAYLOAD);
    assert_eq!(builder.frame_len(MAX_IPV6_UDP_PAYLOAD), Ok(62 + 65_527));
    assert_eq!(builder.next_ip_id(), None);

    let mut mixed = FrameConfig::new("10.0.0.1".parse().unwrap(), "::2".parse().unwrap());
    assert_eq!(
        FrameBuilder::new(&mixed).unwrap_err(),
        BuildError::AddressFamilyMismatch
    );
    mixed.destination = "::3".parse().unwrap();
    mixed.source = "::1".parse().unwrap();
    mixed.udp_checksum = UdpChecksumPolicy::Zero;
    assert_eq!(
        FrameBuilder::new(&mixed).unwrap_err(),
        BuildError::ZeroChecksumOverIpv6
    );
}

//! Hostile frames against [`Frame::parse`], with a counting global allocator.
//!
//! Two frames captured from a Linux 7.3 guest (`shared/captures/linux-7.3/ext` frame 4, IPv4,
//! and `linux-7.3/ipv6`, the shortest UDP frame) get every byte value at every position of
//! their Ethernet, IP and UDP headers, twice: as is, and with the IP header and UDP checksums
//! recomputed after the change (so that the parser gets past them and judges the field
//! itself). Each result is a typed error or a frame whose every field is what the bytes say
//! (read here by an independent reader of the untagged layouts); the fields the parser
//! judges give the exact error named for them. Not one parse allocates. Frames of 0 bytes and
//! 64 KiB likewise.
//!
//! The allocator's counters are global to the process, so this binary runs without libtest
//! (`harness = false` in Cargo.toml): its `main` hands the tests to `testkit::run_tests`,
//! which runs them one after another on the main thread, the only thread in the process, so
//! no other code allocates between a test's readings.

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netpoll_frame::{Frame, FrameBuilder, FrameConfig, IpInfo, Layer, MacAddr, ParseError};
use testkit::heap::{self, INSTRUMENTED_SYSTEM, StatsAlloc};
use testkit::hex;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// `linux-7.3/ext/frames.pcap`, frame 4: `6,2,0,-;BIOS-provided physical RAM map:\n`.
const IPV4_FRAME: &str = "525400123457525400123456080045000044000300004011f6a2c0000201c00002021a091a0a00303f19362c322c302c2d3b42494f532d70726f766964656420706879736963616c2052414d206d61703a0a";
/// `linux-7.3/ipv6/frames.pcap`, the shortest UDP frame: plain text `D\n`.
const IPV6_FRAME: &str = "52540012345752540012345686dd60000000000a112020010db800000000000000000000000120010db80000000000000000000000021a0b1a0c000a2c44440a";

/// RFC 1071 one's-complement sum of 16-bit big-endian words (odd byte padded), folded.
fn ones_sum(data: &[u8], mut sum: u32) -> u32 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// The fields of an untagged IPv4 (no options) or IPv6 (no extension headers) UDP frame, as
/// the bytes say, with the payload the UDP length covers.
#[derive(Debug, PartialEq, Eq)]
struct Fields<'a> {
    destination_mac: [u8; 6],
    source_mac: [u8; 6],
    ip: IpInfo,
    source: SocketAddr,
    destination: SocketAddr,
    udp_checksum: u16,
    payload: &'a [u8],
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Reads `bytes` as the capture's layouts; `None` when the frame is not of that shape.
fn read_fields(bytes: &[u8]) -> Option<Fields<'_>> {
    let (ip, src, dst, udp) = match be16(bytes, 12) {
        0x0800 if bytes[14] == 0x45 => {
            let flags = be16(bytes, 20);
            let ip = IpInfo::V4 {
                id: be16(bytes, 18),
                ttl: bytes[22],
                tos: bytes[15],
                dont_fragment: flags & 0x4000 != 0,
                options_len: 0,
            };
            let src: [u8; 4] = bytes[26..30].try_into().unwrap();
            let dst: [u8; 4] = bytes[30..34].try_into().unwrap();
            (
                ip,
                IpAddr::from(Ipv4Addr::from(src)),
                IpAddr::from(Ipv4Addr::from(dst)),
                34,
            )
        }
        0x86dd if bytes[20] == 17 => {
            let word = u32::from_be_bytes(bytes[14..18].try_into().unwrap());
            let ip = IpInfo::V6 {
                hop_limit: bytes[21],
                traffic_class: (word >> 20) as u8,
                flow_label: word & 0xf_ffff,
                extension_len: 0,
            };
            let src: [u8; 16] = bytes[22..38].try_into().unwrap();
            let dst: [u8; 16] = bytes[38..54].try_into().unwrap();
            (
                ip,
                IpAddr::from(Ipv6Addr::from(src)),
                IpAddr::from(Ipv6Addr::from(dst)),
                54,
            )
        }
        _ => return None,
    };
    let udp_len = usize::from(be16(bytes, udp + 4));
    Some(Fields {
        destination_mac: bytes[0..6].try_into().unwrap(),
        source_mac: bytes[6..12].try_into().unwrap(),
        ip,
        source: SocketAddr::new(src, be16(bytes, udp)),
        destination: SocketAddr::new(dst, be16(bytes, udp + 2)),
        udp_checksum: be16(bytes, udp + 6),
        payload: bytes.get(udp + 8..udp + udp_len.max(8))?,
    })
}

fn fields_of<'a>(frame: &Frame<'a>) -> Fields<'a> {
    Fields {
        destination_mac: frame.destination_mac().0,
        source_mac: frame.source_mac().0,
        ip: frame.ip(),
        source: frame.source(),
        destination: frame.destination(),
        udp_checksum: frame.udp_checksum(),
        payload: frame.payload(),
    }
}

/// Recomputes the IPv4 header checksum (unless `keep` covers it) and the UDP checksum
/// (unless `keep` covers it) of a frame of the capture's shape.
fn fix_checksums(bytes: &mut [u8], keep: usize) {
    let v4 = be16(bytes, 12) == 0x0800;
    let (udp, ip_checksum) = if v4 { (34, Some(24)) } else { (54, None) };
    if let Some(at) = ip_checksum {
        if keep != at && keep != at + 1 {
            bytes[at..at + 2].fill(0);
            let sum = ones_sum(&bytes[14..34], 0) as u16;
            bytes[at..at + 2].copy_from_slice(&(!sum).to_be_bytes());
        }
    }
    let at = udp + 6;
    if keep == at || keep == at + 1 {
        return;
    }
    let udp_len = usize::from(be16(bytes, udp + 4));
    let Some(segment) = bytes.get(udp..udp + udp_len) else {
        return;
    };
    if udp_len < 8 {
        return;
    }
    let mut sum = if v4 {
        ones_sum(&bytes[26..34], 0)
    } else {
        ones_sum(&bytes[22..54], 0)
    };
    sum = ones_sum(&[0, 17], sum);
    sum = ones_sum(&(udp_len as u16).to_be_bytes(), sum);
    let mut copy = segment.to_vec();
    copy[6..8].fill(0);
    sum = ones_sum(&copy, sum);
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    bytes[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
}

/// What the parser must say about a frame whose checksums were fixed after `position` got
/// `value`, where the field judges it; `None` where any typed error or a matching parse is
/// right.
fn judged(v4: bool, position: usize, value: u8, original: u8) -> Option<Result<(), ParseError>> {
    if value == original {
        return Some(Ok(()));
    }
    let ok = Some(Ok(()));
    if position < 12 {
        return ok; // the MAC addresses
    }
    if v4 {
        match position {
            15 | 18 | 19 | 22 | 26..=33 | 34..=37 => ok, // tos, id, ttl, addresses, ports
            20 if value.trailing_zeros() >= 6 => ok,     // DF or reserved, no MF/offset
            20 | 21 => Some(Err(ParseError::Fragment {
                offset: u32::from(
                    u16::from_be_bytes(if position == 20 {
                        [value, 0]
                    } else {
                        [0, value]
                    }) & 0x1fff,
                ) * 8,
                more: position == 20 && value & 0x20 != 0,
            })),
            23 => Some(Err(ParseError::NotUdp(value))),
            14 if value >> 4 != 4 => Some(Err(ParseError::IpVersionMismatch(value >> 4))),
            14 if value & 0x0f < 5 => Some(Err(ParseError::BadIpv4HeaderLength(
                usize::from(value & 0x0f) * 4,
            ))),
            _ => None,
        }
    } else {
        match position {
            14 if value >> 4 != 6 => Some(Err(ParseError::IpVersionMismatch(value >> 4))),
            // Version 6 with another traffic class, class/flow, hop limit, addresses, ports.
            14..=17 | 21..=53 | 54..=57 => ok,
            _ => None,
        }
    }
}

/// Every byte value at every header position of `frame`, raw and with checksums fixed.
fn every_byte_in_every_header(frame: &[u8]) -> (u32, u32) {
    let original = Frame::parse(frame).expect("the captured frame parses");
    assert_eq!(Some(fields_of(&original)), read_fields(frame));
    let v4 = be16(frame, 12) == 0x0800;
    let header_len = if v4 { 42 } else { 62 };
    let mut mutated = frame.to_vec();
    let (mut ok, mut errors) = (0, 0);
    let mut allocated = 0;
    for position in 0..header_len {
        for value in 0..=255u8 {
            for fixed in [false, true] {
                mutated.copy_from_slice(frame);
                mutated[position] = value;
                if fixed {
                    fix_checksums(&mut mutated, position);
                }
                let before = heap::allocations(GLOBAL);
                let parsed = Frame::parse(&mutated);
                allocated += heap::allocations(GLOBAL) - before;
                match &parsed {
                    Ok(parsed) => {
                        ok += 1;
                        // Whatever parses reads as the bytes say, where the layout is the
                        // capture's; otherwise (a tag, options) the payload lies inside.
                        match read_fields(&mutated) {
                            Some(fields) => {
                                assert_eq!(fields_of(parsed), fields, "{position} {value}");
                            }
                            None => assert!(parsed.payload().len() < mutated.len()),
                        }
                    }
                    Err(_) => errors += 1,
                }
                if fixed {
                    if let Some(expected) = judged(v4, position, value, frame[position]) {
                        assert_eq!(
                            parsed.map(|_| ()),
                            expected,
                            "byte {position} = {value:#04x}, checksums fixed"
                        );
                    }
                } else if v4 && (14..34).contains(&position) && value != frame[position] {
                    // The IPv4 header checksum covers every byte of it: one changed byte is
                    // refused (by the checksum, or earlier by the version or length).
                    assert!(parsed.is_err(), "byte {position} = {value:#04x} accepted");
                } else if position >= header_len - 8 && value != frame[position] {
                    // The UDP checksum covers the UDP header: refused unless the byte is in
                    // the checksum field itself and makes it 0 ("none", IPv4 only).
                    let zero =
                        v4 && position >= header_len - 2 && be16(&mutated, header_len - 2) == 0;
                    assert_eq!(parsed.is_ok(), zero, "byte {position} = {value:#04x}");
                }
            }
        }
    }
    assert_eq!(allocated, 0, "Frame::parse allocated");
    (ok, errors)
}

fn main() {
    testkit::run_tests(&[("hostile_frames", hostile_frames)]);
}

fn hostile_frames() {
    for (name, text) in [("IPv4", IPV4_FRAME), ("IPv6", IPV6_FRAME)] {
        let frame = hex(text);
        let (ok, errors) = every_byte_in_every_header(&frame);
        println!("{name}: {ok} frames parsed (fields as the bytes say), {errors} typed errors");
    }

    // 0 bytes, and 64 KiB: a maximal IPv4 UDP datagram built as netpoll would, and 64 KiB
    // of 0xff.
    let mut builder = FrameBuilder::new(&FrameConfig::new(
        "192.0.2.1".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
    ))
    .unwrap();
    let payload = vec![b'x'; 65_507];
    let mut big = vec![0u8; 65_507 + 42];
    let len = builder.build(&payload, &mut big).unwrap();
    let garbage = vec![0xffu8; 65_536];
    let before = heap::allocations(GLOBAL);
    assert_eq!(
        Frame::parse(&[]),
        Err(ParseError::Truncated {
            layer: Layer::Ethernet,
            needed: 14,
            available: 0
        })
    );
    let frame = Frame::parse(&big[..len]).unwrap();
    assert_eq!(frame.payload(), &payload[..]);
    assert_eq!(frame.destination_mac(), MacAddr([0xff; 6]));
    assert_eq!(
        Frame::parse(&garbage),
        Err(ParseError::UnsupportedEthertype(0xffff))
    );
    assert_eq!(heap::allocations(GLOBAL), before, "Frame::parse allocated");
}

//! Build and parse the frames Linux netpoll sends: one UDP datagram in one Ethernet II frame,
//! byte for byte as `netpoll_send_udp` writes it, and the Internet checksum that goes with it.
//!
//! - [`FrameBuilder`] writes whole frames (Ethernet II, optional 802.1Q tag, IPv4 or IPv6, UDP)
//!   into a caller's buffer with the kernel's header values and checksums; nothing is allocated.
//! - [`Frame::parse`] reads one back as a borrowed view and verifies both checksums.
//! - [`checksum`] is the RFC 1071 / RFC 1624 Internet checksum, incremental and fast, in safe Rust.
//! - [`wire`] has the header layouts as zerocopy types, and the byte diagram of the frame.
//! - [`Instant`] is the caller-supplied time that the sans-IO state machines of the sibling
//!   crates (`netconsole-proto`, `ncrx-core`, `netoops-proto`) all take.
//!
//! `no_std` without the default `std` feature; never allocates; no `unsafe`.
//!
//! ```
//! use netpoll_frame::{Frame, FrameBuilder, FrameConfig};
//!
//! let config = FrameConfig::new("192.0.2.1".parse()?, "192.0.2.2".parse()?);
//! let mut builder = FrameBuilder::new(&config)?;
//! let mut buf = [0u8; 1514];
//! let len = builder.build(b"4,17,123456,-;eth0: link up\n", &mut buf)?;
//!
//! let frame = Frame::parse(&buf[..len])?;
//! assert_eq!(frame.payload(), b"4,17,123456,-;eth0: link up\n");
//! assert_eq!(frame.destination().to_string(), "192.0.2.2:6666");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

mod addr;
mod build;
pub mod checksum;
mod parse;
mod time;
pub mod wire;

pub use addr::{MacAddr, MacAddrParseError, VlanTag};
pub use build::{
    BuildError, FrameBuilder, FrameConfig, IpIdPolicy, MAX_IPV4_UDP_PAYLOAD, MAX_IPV6_UDP_PAYLOAD,
    NETCONSOLE_DESTINATION_PORT, NETCONSOLE_SOURCE_PORT, UdpChecksumPolicy,
};
pub use parse::{ChecksumPolicy, Frame, IpInfo, Layer, ParseError, UdpChecksumStatus};
pub use time::Instant;

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

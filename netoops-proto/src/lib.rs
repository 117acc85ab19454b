//! netoops: the Linux kernel's crash dump over UDP, as fixed-size packets sent three times.
//!
//! On an oops or a panic, netoops (Mike Waychison's patch series) sends the kernel log buffer
//! to one or more UDP targets (default port [`NETOOPS_PORT`], without UDP checksum) as packets
//! of a packed little-endian header followed by [`DATA_BYTES`] bytes of log. Every dump goes
//! out [`RETRANSMIT_COUNT`] times; within a pass the tail of the log leaves first, so that
//! the crash itself gets out even if the machine dies mid-dump.
//!
//! This crate holds:
//! - [`wire`]: both packet layouts (version 2 and version 3) as zerocopy types, drawn as byte
//!   diagrams, their offsets checked at compile time;
//! - [`Packet`]: a checked, borrowed view of one datagram of either version;
//! - [`DumpEncoder`]: every packet of a dump in the kernel's exact order and bytes;
//! - [`Collector`] (feature `alloc`): a sans-IO state machine that rebuilds dumps from
//!   lossy, duplicated, reordered traffic, with bounded memory and caller-supplied time.
//!
//! `no_std`; the collector needs `alloc`. No clocks, sockets or threads: bytes and time come
//! from the caller.
//!
//! ```
//! # #[cfg(feature = "alloc")] {
//! use core::time::Duration;
//! use netoops_proto::{Collector, CollectorConfig, DumpEncoder, DumpMeta, DumpType, Event};
//! use netpoll_frame::Instant;
//!
//! let meta = DumpMeta::v2(7, DumpType::PrintkBuffer, b"2.6.37");
//! let log = b"<4>Oops: 0002 [#1] SMP\n<0>Kernel panic - not syncing: Fatal exception\n";
//! let mut encoder = DumpEncoder::new(&meta, b"", log).unwrap();
//!
//! let mut collector = Collector::new(CollectorConfig::default());
//! let mut buf = [0u8; 1500];
//! while let Some(len) = encoder.write_next(&mut buf).unwrap() {
//!     collector
//!         .handle_datagram(Instant::ZERO, "10.0.0.1", &buf[..len])
//!         .unwrap();
//! }
//! let Some(Event::Dump(dump)) = collector.poll_event() else { panic!("no dump") };
//! assert!(dump.is_complete());
//! assert_eq!(dump.log(), log);
//! assert_eq!(dump.meta(), &meta);
//! # }
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
// The overview links to the `alloc`-only collector; without `alloc` it is not there.
#![cfg_attr(not(feature = "alloc"), allow(rustdoc::broken_intra_doc_links))]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "alloc")]
mod collector;
mod encoder;
mod meta;
mod packet;
pub mod wire;

#[cfg(feature = "alloc")]
pub use collector::{
    CollectError, Collector, CollectorConfig, CollectorStats, Contradiction, Dump, DumpStatus,
    Event, Received,
};
pub use encoder::{DumpEncoder, EncodeError, netoops_frame_config};
pub use meta::{
    ARCH_X86, DumpMeta, DumpType, KERNEL_VERSION_LEN, PtRegs, USER_BLOB_LEN, V3Fields, Version,
    X86ArchData,
};
pub use packet::{Packet, ParseError};

/// Log bytes in every packet (`NETOOPS_DATA_BYTES`).
pub const DATA_BYTES: usize = 1024;

/// Times every dump is sent (`NETOOPS_RETRANSMIT_COUNT`).
pub const RETRANSMIT_COUNT: usize = 3;

/// The default UDP port, both source and destination (`NETOOPS_PORT`).
pub const NETOOPS_PORT: u16 = 2004;

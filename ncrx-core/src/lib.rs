//! The receiver of reliable netconsole as a sans-IO state machine.
//!
//! Linux netconsole sends the kernel log as UDP datagrams, one extended record (or
//! `ncfrag` fragment) each; the reliable extension lets the receiver ask for what is missing
//! (`ncrx<ack> <seq>...`, see [`netconsole_proto::Response`]). This crate is that receiver,
//! without sockets or clocks, in the style of quinn-proto:
//!
//! - inputs: [`Receiver::handle_datagram`]`(now, source, bytes)`, [`Receiver::handle_timeout`]`(now)`,
//!   [`Receiver::handle_unreachable`]`(now, source)` (the source's port is closed);
//! - outputs, polled until empty: [`Receiver::poll_event`] (records in sequence order, losses,
//!   restarts, plain text), [`Receiver::poll_transmit`] (response packets and their
//!   destination), [`Receiver::poll_timeout`] (the exact next deadline).
//!
//! [`Receiver`] keeps one [`Stream`] (one source's state machine, usable alone) per source,
//! bounded in sources and in bytes held. Their parameters, [`ReceiverConfig`] and
//! [`StreamConfig`], default to libncrx's with senders that never answer requests (stock
//! kernels) handled.
//!
//! Features: `std` (default; `std::error::Error` in the dependencies), `sim` (the
//! deterministic network simulator, module `sim`, for the tests and benches).
//!
//! ```
//! use std::net::SocketAddr;
//! use ncrx_core::{Event, Receiver, ReceiverConfig};
//! use netpoll_frame::Instant;
//!
//! let mut rx: Receiver = Receiver::new(ReceiverConfig::default());
//! let source: SocketAddr = "192.0.2.1:6665".parse()?;
//! rx.handle_datagram(Instant::from_millis(1), &source, b"6,52007,1000,-;eth0: link up\n");
//! let Some((from, Event::Record(record))) = rx.poll_event() else { panic!() };
//! assert_eq!((from, record.fields.seq, record.body), (source, 52007, &b"eth0: link up\n"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod config;
mod event;
mod receiver;
#[cfg(feature = "sim")]
pub mod sim;
mod stream;

pub use config::{BOOT_HEAD, ReceiverConfig, StreamConfig};
pub use event::{Event, IncompleteRecord, Record, Restart, RestartReason};
pub use receiver::{Receiver, ReceiverStats};
pub use stream::{Answering, Stream, StreamStats};

//! Linux netconsole on the wire, byte for byte: what a program needs to read or write the
//! UDP payloads netconsole sends, for every kernel generation still in use (3.x to 7.x).
//!
//! | wire format | module (byte diagram) | read | write |
//! |---|---|---|---|
//! | extended header | [`header`] | [`Header::parse`] | [`format_kmsg`] |
//! | text, dictionary, userdata, sysdata | [`body`] | [`Body`], [`unescape_into`] | [`format_kmsg`], [`format_userdata`], [`Sysdata`] |
//! | a datagram: extended, response or plain | [`record`] | [`Datagram::parse`] | |
//! | `ncfrag` fragments, release prepend | [`format`](mod@format) | [`FragmentedRecord`] (`alloc`) | [`ExtFragments`] |
//! | plain console text | [`format`](mod@format) | [`Datagram::Plain`] | [`plain_chunks`] |
//! | a received record: printk's part, appended lines | [`received`] | [`received::split_body`] | [`received::ReceivedRecord`], [`received::format_received`] |
//! | `netconsole=` | [`param`] | [`param::Target::parse`] | `Display` |
//! | `ncrx` response | [`response`] | [`Response::parse`] | [`encode_response`] |
//!
//! [`sender::Sender`] (`alloc`) is the sender half of reliable netconsole as a sans-IO state
//! machine (time comes in as a [`netpoll_frame::Instant`]).
//!
//! Parsing borrows from the datagram and copies nothing; parsing, unescaping into a buffer,
//! formatting and fragmenting allocate nothing (they build without `alloc`). Every parser
//! returns a typed error on bad input and never panics.
//!
//! Features: `std` (default; `std::error::Error` for the errors) implies `alloc` (owned
//! records, `Vec`/`Cow` helpers, reassembly, the sender). Without them the crate is `no_std`.
//!
//! Checked against captures of Linux 6.1 and 7.3 (`tests/captures.rs`): every datagram
//! parses, reassembled records equal the kernel's `/dev/kmsg` records, and re-encoding them
//! gives back the captured datagrams byte for byte.
//!
//! ```
//! use netconsole_proto::{Datagram, Flag};
//!
//! let payload = b"6,1234,5678901,-;eth0: link up\n SUBSYSTEM=net\n";
//! let Ok(Datagram::Extended(record)) = Datagram::parse(payload) else { panic!() };
//! assert_eq!((record.header.level, record.header.seq), (6, 1234));
//! assert_eq!(record.header.flag, Flag::Normal);
//! let body = record.split_body();
//! assert_eq!(body.text(), b"eth0: link up");
//! assert_eq!(body.lines().next().unwrap().value(), b"net");
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
// The table above links to the `alloc`-only items; without `alloc` they are not there.
#![cfg_attr(not(feature = "alloc"), allow(rustdoc::broken_intra_doc_links))]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod body;
pub mod console;
pub mod format;
pub mod header;
pub mod param;
#[cfg(feature = "alloc")]
pub mod reassembly;
pub mod received;
pub mod record;
pub mod response;
mod scan;
#[cfg(feature = "alloc")]
pub mod sender;

pub use body::{
    Body, BufferTooSmall, CONSOLE_EXT_LOG_MAX, Line, PRINTK_MESSAGE_MAX, Unescaped, escape_into,
    escaped_len, unescape_into, unescaped_len,
};
#[cfg(feature = "alloc")]
pub use body::{escape, unescape};
pub use console::{ConsoleOptions, ConsoleRecord, format_console};
pub use format::{
    DictEntry, EXTRADATA_LINE_OVERHEAD, ExtFragments, KmsgRecord, SendError, SendOptions, Sysdata,
    extradata_line_len, format_kmsg, format_userdata, plain_chunk_continues, plain_chunks,
    userdata_len,
};
pub use header::{Caller, CallerError, Flag, FlagConvention, Header, HeaderError, Ncfrag};
#[cfg(feature = "alloc")]
pub use reassembly::{DEFAULT_MAX_TOTAL, FragmentedRecord, Reassembly, ReassemblyError};
#[cfg(feature = "alloc")]
pub use record::OwnedRecord;
pub use record::{Datagram, DatagramError, ExtRecord};
pub use response::{MAX_RESPONSE, Response, ResponseError, encode_response};

/// The most payload bytes netconsole puts in one datagram (`MAX_PRINT_CHUNK`).
pub const MAX_PRINT_CHUNK: usize = 1000;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

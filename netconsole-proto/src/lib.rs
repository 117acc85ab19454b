//! Linux netconsole on the wire, byte for byte: what a program needs to read or write the
//! UDP payloads netconsole sends, for every kernel generation still in use (3.x to 7.x).
//!
//! Each wire format is drawn once, on the type that reads or writes it (or in the module
//! that holds it):
//!
//! | wire format | drawn on | read | write |
//! |---|---|---|---|
//! | extended header | [`Header`] | [`Header::parse`] | [`format_kmsg`] |
//! | text, dictionary, userdata, sysdata | [`Body`] | [`Body`], [`unescape_into`] | [`format_kmsg`], [`format_userdata`], [`Sysdata`] |
//! | a datagram: extended, response or plain | [`Datagram`] | [`Datagram::parse`] | |
//! | `ncfrag` fragments, release prepend | [`ExtFragments`] | [`FragmentedRecord`] (`alloc`) | [`ExtFragments`] |
//! | plain console text | [`format_console`] | [`Datagram::Plain`], [`plain_chunk_continues`] | [`format_console`], [`plain_chunks`] |
//! | a received record: printk's part, appended lines | [`received`] | [`received::split_body`] | [`received::ReceivedRecord`], [`received::format_received`] |
//! | `netconsole=` | [`param`] | [`param::Target::parse`] | `Display` |
//! | `ncrx` response | [`Response`] | [`Response::parse`] | [`encode_response`] |
//!
//! [`Sender`] (`alloc`) is the sender half of reliable netconsole as a sans-IO state
//! machine (time comes in as a [`netpoll_frame::Instant`]). [`RecordFields`] are the fields
//! printk keeps for every record (seq, ts_usec, level, facility, flag, caller), one struct
//! in the records read ([`Header`], [`OwnedRecord`]) and written ([`KmsgRecord`],
//! [`ConsoleRecord`]).
//!
//! The API is at the crate root, one path per item. Two modules stay public, as namespaces
//! whose names only read right under them: [`param`], the `netconsole=` parameter
//! (configuration, not a datagram: `param::Target`, `param::Device`, `param::parse_targets`
//! and the parameter's defaults), and [`received`], a received record taken apart and
//! written back byte for byte (`received::split_body` beside [`Body::parse`],
//! `received::RecordError`). The kernel's limits keep their kernel names at the root
//! ([`MAX_PRINT_CHUNK`], [`PRINTK_MESSAGE_MAX`], [`CONSOLE_EXT_LOG_MAX`], [`CONSOLE_LOG_MAX`],
//! [`MAX_EXTRADATA_VALUE_LEN`], [`MAX_EXTRADATA_NAME_LEN`]): the names already say what they
//! bound, so a `limits::` prefix would add nothing.
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
//! assert_eq!((record.header.fields.level, record.header.fields.seq), (6, 1234));
//! assert_eq!(record.header.fields.flag, Flag::Normal);
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

mod body;
mod console;
mod format;
mod header;
pub mod param;
#[cfg(feature = "alloc")]
mod reassembly;
pub mod received;
mod record;
mod response;
mod scan;
#[cfg(feature = "alloc")]
mod sender;

pub use body::{
    Body, BufferTooSmall, CONSOLE_EXT_LOG_MAX, Line, PRINTK_MESSAGE_MAX, Unescaped, escape_into,
    escaped_len, unescape_into, unescaped_len,
};
#[cfg(feature = "alloc")]
pub use body::{escape, escape_stray, unescape};
pub use console::{
    CONSOLE_LOG_MAX, ConsoleOptions, ConsoleRecord, format_console, printed_on_console,
};
pub use format::{
    DictEntry, ExtFragments, KmsgRecord, MAX_EXTRADATA_NAME_LEN, MAX_EXTRADATA_VALUE_LEN,
    SendError, SendOptions, Sysdata, format_kmsg, format_userdata, plain_chunk_continues,
    plain_chunks, userdata_len,
};
pub use header::{
    Caller, CallerError, Flag, FlagConvention, Header, HeaderError, HeaderField, Ncfrag,
    RecordFields,
};
#[cfg(feature = "alloc")]
pub use reassembly::{
    DEFAULT_MAX_TOTAL, FragmentedRecord, MAX_PIECES, Reassembly, ReassemblyError,
};
#[cfg(feature = "alloc")]
pub use record::OwnedRecord;
pub use record::{Datagram, DatagramError, ExtRecord};
pub use response::{MAX_RESPONSE, Response, ResponseError, encode_response};
#[cfg(feature = "alloc")]
pub use sender::{Sender, SenderConfig, SenderError, SenderStats};

/// The most payload bytes netconsole puts in one datagram (`MAX_PRINT_CHUNK`).
pub const MAX_PRINT_CHUNK: usize = 1000;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

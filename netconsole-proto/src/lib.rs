//! Linux netconsole on the wire, byte for byte: what a program needs to read or write the
//! UDP payloads netconsole sends, for every kernel generation still in use.
//!
//! - [`Datagram::parse`] classifies a payload (extended record or fragment, `ncrx` response,
//!   plain text) and borrows its fields without copying: [`Header`], [`Body`], [`Response`].
//! - [`unescape_into`] / [`escape_into`] (and `Vec` forms with `alloc`) handle printk's `\xNN`.
//!
//! - [`format_kmsg`] writes a record as printk does, [`ExtFragments`] makes the datagrams
//!   `send_ext_msg_udp` sends for it (release, userdata, sysdata, `ncfrag`), [`plain_chunks`]
//!   cuts plain console text.
//! - [`param::Target`] parses and formats the `netconsole=` parameter.
//! - [`encode_response`] / [`Response`]: the `ncrx` response packet of reliable netconsole;
//!   `sender::Sender` (`alloc`) is its sender half as a sans-IO state machine.
//! - [`FragmentedRecord`] / [`Reassembly`] (`alloc`) put `ncfrag` fragments back together.
//!
//! `no_std`; the `alloc` feature adds owned records, reassembly and the reliable sender.
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
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod body;
pub mod format;
pub mod header;
pub mod param;
#[cfg(feature = "alloc")]
pub mod reassembly;
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
pub use format::{
    DictEntry, ExtFragments, KmsgRecord, SendError, SendOptions, Sysdata, format_kmsg,
    format_userdata, plain_chunks,
};
pub use header::{Caller, Flag, FlagConvention, Header, HeaderError, Ncfrag};
#[cfg(feature = "alloc")]
pub use reassembly::{DEFAULT_MAX_TOTAL, FragmentedRecord, Reassembly, ReassemblyError};
#[cfg(feature = "alloc")]
pub use record::OwnedRecord;
pub use record::{Datagram, DatagramError, ExtRecord};
pub use response::{MAX_RESPONSE, Response, ResponseError, encode_response};

/// The most payload bytes netconsole puts in one datagram (`MAX_PRINT_CHUNK`).
pub const MAX_PRINT_CHUNK: usize = 1000;

//! Build and parse the frames Linux netpoll sends: one UDP datagram in one Ethernet II frame.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

pub mod checksum;
pub mod time;

pub use time::Instant;

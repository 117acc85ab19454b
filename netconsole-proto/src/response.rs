//! The response packet of reliable netconsole (its byte diagram is on [`Response`]).

use crate::format::{Decimal, put_decimal};
use crate::header::{HeaderError, HeaderField, digits_at, parse_decimal};
use crate::scan::find;

/// Largest response packet (netconsole's `MAX_PRINT_CHUNK`).
pub const MAX_RESPONSE: usize = 1000;

/// Why a response packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// It does not start with `ncrx`.
    #[error("response does not start with ncrx")]
    NoMagic,
    /// It is longer than 1000 bytes.
    #[error("response longer than 1000 bytes")]
    TooLong,
    /// A sequence number is missing, not decimal, has a leading zero, or a separator is not
    /// one space.
    #[error("malformed sequence number in response")]
    Malformed,
    /// A sequence number does not fit in 64 bits.
    #[error("sequence number overflows u64")]
    Overflow,
    /// The missing sequences are not strictly ascending above the ack.
    #[error("missing sequences not strictly ascending above the ack")]
    NotAscending,
}

/// A parsed response packet of reliable netconsole (receiver → sender's source port),
/// borrowing the datagram.
///
/// ```text
///  n c r x <ack_seq> [ ' ' <missing_seq> ]*        ASCII, no terminator, at most 1000 bytes
///  \_____/ \_______/   \___________________/
///  magic   last seq     sequences to re-send, strictly ascending, each above ack_seq
///          retired
///
///  example: ncrx1234 1240 1241 1300
///  nothing retired yet (the receiver's next number is 0): ncrx18446744073709551615 0 1 2
/// ```
///
/// The ack is the receiver's next expected number minus one, modulo 2^64, as libncrx
/// writes it (`acked_seq = tail_seq - 1` in `ncrx_response`): `u64::MAX` says that nothing
/// is retired yet ([`Response::acked`] is `None`), and only then may the list start at 0.
/// No record is numbered `u64::MAX` for this reason (a receiver refuses one).
///
/// The encoder ([`encode_response`]) fills at most [`MAX_RESPONSE`] bytes and never cuts a number: the entries
/// that do not fit are returned so they can go in the next response. The parser is strict:
/// decimal digits without leading zeros, single spaces, ascending, nothing else, so a packet
/// that parses has exactly one encoding.
///
/// ```
/// use netconsole_proto::{Response, encode_response};
///
/// let mut packet = [0u8; 1000];
/// let (len, sent) = encode_response(1234, &[1240, 1241, 1300], &mut packet).unwrap();
/// assert_eq!((&packet[..len], sent), (&b"ncrx1234 1240 1241 1300"[..], 3));
/// let response = Response::parse(&packet[..len])?;
/// assert_eq!(response.ack(), 1234);
/// assert_eq!(response.missing().collect::<Vec<_>>(), [1240, 1241, 1300]);
/// # Ok::<(), netconsole_proto::ResponseError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    ack: u64,
    /// The bytes after the ack (empty or starting with a space), already validated.
    missing: &'a [u8],
}

/// A number as the encoder writes it: decimal digits, no leading zero.
fn parse_canonical(bytes: &[u8]) -> Result<u64, ResponseError> {
    if bytes.len() > 1 && bytes[0] == b'0' {
        return Err(ResponseError::Malformed);
    }
    parse_decimal(bytes, HeaderField::Seq).map_err(map_err)
}

fn map_err(e: HeaderError) -> ResponseError {
    match e {
        HeaderError::Overflow(_) => ResponseError::Overflow,
        _ => ResponseError::Malformed,
    }
}

/// The number at `pos` of `packet`, ended by a space or the end of the packet, and the
/// position after it. The common case (1 to 19 digits, no leading zero) is read eight digits
/// a step; anything else goes to [`parse_canonical`], which decides, error included.
#[allow(
    clippy::inline_always,
    reason = "measured with callgrind: out of line, parsing and iterating a response of about 60 numbers takes 1.5 times the instructions"
)]
#[inline(always)]
fn number_at(packet: &[u8], pos: usize) -> Result<(u64, usize), ResponseError> {
    if let Some((value, end)) = digits_at(packet, pos) {
        let ended = matches!(packet.get(end), None | Some(b' '));
        let leading_zero = end - pos > 1 && packet.get(pos) == Some(&b'0');
        if ended && !leading_zero {
            return Ok((value, end));
        }
    }
    let rest = packet.get(pos..).unwrap_or_default();
    let len = find(b' ', rest).unwrap_or(rest.len());
    Ok((parse_canonical(&rest[..len])?, pos + len))
}

impl<'a> Response<'a> {
    /// Parses a response strictly.
    pub fn parse(packet: &'a [u8]) -> Result<Self, ResponseError> {
        if !packet.starts_with(b"ncrx") {
            return Err(ResponseError::NoMagic);
        }
        if packet.len() > MAX_RESPONSE {
            return Err(ResponseError::TooLong);
        }
        let (ack, mut pos) = number_at(packet, 4)?;
        let missing = &packet[pos..];
        // The lowest number the next entry may have; `None` past `u64::MAX`.
        let mut floor = Some(ack.wrapping_add(1));
        // `pos` is at a space or the end.
        while pos < packet.len() {
            let (seq, end) = number_at(packet, pos + 1)?;
            if floor.is_none_or(|floor| seq < floor) {
                return Err(ResponseError::NotAscending);
            }
            floor = seq.checked_add(1);
            pos = end;
        }
        Ok(Response { ack, missing })
    }

    /// The ack as written: the last sequence the receiver has retired, or `u64::MAX` when
    /// it has retired none.
    pub const fn ack(&self) -> u64 {
        self.ack
    }

    /// The last sequence the receiver has retired; `None` when it has retired none yet
    /// (the ack is `u64::MAX`): then nothing is acknowledged.
    pub const fn acked(&self) -> Option<u64> {
        if self.ack == u64::MAX {
            None
        } else {
            Some(self.ack)
        }
    }

    /// The sequences the receiver asks to be re-sent, ascending.
    pub fn missing(&self) -> impl Iterator<Item = u64> + Clone + use<'a> {
        Missing { rest: self.missing }
    }
}

/// Iterator over the missing sequences of a [`Response`] ([`Response::missing`]).
#[derive(Debug, Clone)]
struct Missing<'a> {
    rest: &'a [u8],
}

impl Iterator for Missing<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let after = self.rest.strip_prefix(b" ")?;
        // Validated by `Response::parse`.
        let (seq, end) = number_at(after, 0).ok()?;
        self.rest = &after[end..];
        Some(seq)
    }
}

/// Encodes `ncrx<ack>[ <seq>]*` into `out`, using at most `min(out.len(), 1000)` bytes.
///
/// Returns the bytes written and how many of `missing` went in; the rest
/// (`&missing[count..]`) did not fit and should go in the next response. `missing` should be
/// strictly ascending and above `ack` (from 0 when `ack` is `u64::MAX`, nothing retired)
/// for the sender to accept it. `None` when not even
/// `ncrx<ack>` fits. Bytes of `out` past the returned length (within its first 1000) may be
/// overwritten.
pub fn encode_response(ack: u64, missing: &[u64], out: &mut [u8]) -> Option<(usize, usize)> {
    let limit = out.len().min(MAX_RESPONSE);
    let ack_text = Decimal::new(ack);
    let ack_text = ack_text.as_bytes();
    let mut len = 4 + ack_text.len();
    if len > limit {
        return None;
    }
    out[..4].copy_from_slice(b"ncrx");
    out[4..len].copy_from_slice(ack_text);
    let mut count = 0;
    for &seq in missing {
        // Straight into `out` (which may get digits past the end written so far, never past
        // `limit`); a number that does not fit leaves `len` where it was.
        let Some(room) = out.get_mut(len + 1..limit) else {
            break;
        };
        let Some(digits) = put_decimal(seq, room) else {
            break;
        };
        out[len] = b' ';
        len += 1 + digits;
        count += 1;
    }
    Some((len, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strictly() {
        let r = Response::parse(b"ncrx1234 1240 1241 1300").unwrap();
        assert_eq!(r.ack(), 1234);
        assert_eq!(r.missing().collect::<Vec<_>>(), [1240, 1241, 1300]);
        assert_eq!(Response::parse(b"ncrx7").unwrap().missing().count(), 0);
        assert_eq!(Response::parse(b"ncrx"), Err(ResponseError::Malformed));
        assert_eq!(Response::parse(b"ncrx1  2"), Err(ResponseError::Malformed));
        assert_eq!(Response::parse(b"ncrx1 2 "), Err(ResponseError::Malformed));
        assert_eq!(Response::parse(b"ncrx1 x"), Err(ResponseError::Malformed));
        assert_eq!(Response::parse(b"ncrx01"), Err(ResponseError::Malformed));
        assert_eq!(Response::parse(b"ncrx1 02"), Err(ResponseError::Malformed));
        assert_eq!(Response::parse(b"ncrx0 10").unwrap().ack(), 0);
        assert_eq!(Response::parse(b"ncrx0 10").unwrap().acked(), Some(0));
        // Nothing retired (libncrx's tail 0): the list may start at 0.
        let head = Response::parse(b"ncrx18446744073709551615 0 1 5").unwrap();
        assert_eq!(head.acked(), None);
        assert_eq!(head.missing().collect::<Vec<_>>(), [0, 1, 5]);
        assert_eq!(
            Response::parse(b"ncrx18446744073709551614 0"),
            Err(ResponseError::NotAscending)
        );
        assert_eq!(
            Response::parse(b"ncrx3 18446744073709551615 18446744073709551615"),
            Err(ResponseError::NotAscending)
        );
        assert_eq!(
            Response::parse(b"ncrx18446744073709551615 1 0"),
            Err(ResponseError::NotAscending)
        );
        assert_eq!(
            Response::parse(b"ncrx5 3"),
            Err(ResponseError::NotAscending)
        );
        assert_eq!(
            Response::parse(b"ncrx5 6 6"),
            Err(ResponseError::NotAscending)
        );
        assert_eq!(Response::parse(b"nctx1"), Err(ResponseError::NoMagic));
        assert_eq!(
            Response::parse(b"ncrx99999999999999999999"),
            Err(ResponseError::Overflow)
        );
        let mut long = b"ncrx1".to_vec();
        long.resize(1001, b'0');
        assert_eq!(Response::parse(&long), Err(ResponseError::TooLong));
    }

    #[test]
    fn encoder_never_cuts_a_number() {
        let missing: Vec<u64> = (1_000_000..1_000_200).collect();
        let mut out = [0u8; 1500];
        let (len, count) = encode_response(999_999, &missing, &mut out).unwrap();
        // "ncrx999999" is 10 bytes, each entry 8: (1000 - 10) / 8 = 123 entries.
        assert_eq!(count, 123);
        assert_eq!(len, 10 + 123 * 8);
        let r = Response::parse(&out[..len]).unwrap();
        assert_eq!(r.missing().collect::<Vec<_>>(), missing[..count]);
        assert_eq!(encode_response(12345, &[], &mut [0u8; 8]), None);
    }
}

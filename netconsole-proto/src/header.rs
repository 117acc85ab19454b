//! The extended record header: everything before the first `;` of an extended datagram
//! (its byte diagram is on [`Header`]).

use core::fmt;

use crate::scan::find;

/// The largest prefix printk can produce: facility is a `u8`, level 3 bits.
pub(crate) const MAX_PREFIX: u16 = (255 << 3) | 7;

/// The continuation flag after `ts_usec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Flag {
    /// `-`: an ordinary record.
    #[default]
    Normal,
    /// `c`: the record is (the start of) a continuation line.
    Cont,
    /// `+`: kernels 3.x–4.x only: the record continues the previous one.
    ContMore,
}

impl Flag {
    /// The byte written on the wire.
    pub const fn as_byte(self) -> u8 {
        match self {
            Flag::Normal => b'-',
            Flag::Cont => b'c',
            Flag::ContMore => b'+',
        }
    }

    /// The flag for a wire byte, if it is one of `-`, `c`, `+`.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'-' => Some(Flag::Normal),
            b'c' => Some(Flag::Cont),
            b'+' => Some(Flag::ContMore),
            _ => None,
        }
    }

    /// The flag for a whole header field: exactly one of `-`, `c`, `+`.
    pub(crate) const fn from_field(field: &[u8]) -> Option<Self> {
        match field {
            [byte] => Flag::from_byte(*byte),
            _ => None,
        }
    }

    /// The flag a given kernel generation writes for a record.
    ///
    /// `cont` is printk's `LOG_CONT` on this record, `prev_cont` on the previous one, and
    /// `prefix` its `LOG_PREFIX` (3.x–4.x only). Kernels 3.x–4.x wrote `c` for the first record
    /// of a continuation, `+` for a record continuing one, `-` otherwise; 5.x and later write
    /// `c` for every `LOG_CONT` record and `-` otherwise.
    pub const fn for_record(
        convention: FlagConvention,
        cont: bool,
        prev_cont: bool,
        prefix: bool,
    ) -> Self {
        match convention {
            FlagConvention::Modern => {
                if cont {
                    Flag::Cont
                } else {
                    Flag::Normal
                }
            }
            FlagConvention::Legacy => {
                if cont && !prev_cont {
                    Flag::Cont
                } else if cont || (prev_cont && !prefix) {
                    Flag::ContMore
                } else {
                    Flag::Normal
                }
            }
        }
    }
}

/// Which kernel generation's flag rules to follow when writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FlagConvention {
    /// Linux 3.x–4.x: `c`, `+` and `-`.
    Legacy,
    /// Linux 5.x and later: `c` and `-`.
    #[default]
    Modern,
}

/// The `caller=` field (CONFIG_PRINTK_CALLER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// `T<pid>`: logged from task context.
    Task(u32),
    /// `C<cpu>`: logged from interrupt context on this CPU.
    Cpu(u32),
}

impl Caller {
    /// The caller for its kind byte (`T` or `C`) and number; `None` for another kind.
    #[inline]
    pub(crate) const fn from_parts(kind: u8, number: u32) -> Option<Self> {
        match kind {
            b'T' => Some(Caller::Task(number)),
            b'C' => Some(Caller::Cpu(number)),
            _ => None,
        }
    }

    /// The kind byte (`T` or `C`) and the number, as written after `caller=`.
    #[inline]
    pub(crate) const fn parts(self) -> (u8, u32) {
        match self {
            Caller::Task(pid) => (b'T', pid),
            Caller::Cpu(cpu) => (b'C', cpu),
        }
    }

    /// Parses a `caller=` value as printk writes it: the kind, then the number in decimal.
    /// The one parser of the value: [`Header::parse`]'s general path and [`str::parse`] use it.
    pub(crate) fn parse_value(value: &[u8]) -> Result<Self, CallerError> {
        let (&kind, number) = value.split_first().ok_or(CallerError::Kind)?;
        // The number first, then the kind: the order of the header's typed errors.
        let number = match parse_decimal(number, HeaderField::Caller) {
            Ok(n) => u32::try_from(n).map_err(|_| CallerError::Overflow)?,
            Err(HeaderError::Missing(_)) => return Err(CallerError::MissingNumber),
            Err(HeaderError::Overflow(_)) => return Err(CallerError::Overflow),
            Err(_) => return Err(CallerError::MalformedNumber),
        };
        Caller::from_parts(kind, number).ok_or(CallerError::Kind)
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, number) = self.parts();
        write!(f, "{}{number}", char::from(kind))
    }
}

/// Parses the value of a `caller=` field (`T<pid>` or `C<cpu>`, CONFIG_PRINTK_CALLER), as
/// the header parser does: the same bytes are accepted, with the same errors.
///
/// ```
/// use netconsole_proto::{Caller, CallerError};
///
/// assert_eq!("T123".parse(), Ok(Caller::Task(123)));
/// assert_eq!("C4".parse(), Ok(Caller::Cpu(4)));
/// assert_eq!("X1".parse::<Caller>(), Err(CallerError::Kind));
/// assert_eq!("T".parse::<Caller>(), Err(CallerError::MissingNumber));
/// assert_eq!("T+1".parse::<Caller>(), Err(CallerError::MalformedNumber));
/// assert_eq!("C4294967296".parse::<Caller>(), Err(CallerError::Overflow));
/// ```
impl core::str::FromStr for Caller {
    type Err = CallerError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Caller::parse_value(value.as_bytes())
    }
}

/// Why a `caller=` value was refused ([`Caller`]'s `FromStr`; in a header it is a
/// [`HeaderError`] about [`HeaderField::Caller`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallerError {
    /// Empty, or not starting with `T` (task) or `C` (CPU).
    #[error("caller is not T<pid> or C<cpu>")]
    Kind,
    /// No digits after the kind.
    #[error("caller has no number after T or C")]
    MissingNumber,
    /// Something other than decimal digits after the kind.
    #[error("caller number is not decimal digits")]
    MalformedNumber,
    /// The number does not fit 32 bits.
    #[error("caller number does not fit 32 bits")]
    Overflow,
}

impl From<CallerError> for HeaderError {
    fn from(error: CallerError) -> Self {
        match error {
            CallerError::MissingNumber => HeaderError::Missing(HeaderField::Caller),
            CallerError::Overflow => HeaderError::Overflow(HeaderField::Caller),
            CallerError::Kind | CallerError::MalformedNumber => {
                HeaderError::Malformed(HeaderField::Caller)
            }
        }
    }
}

/// The `ncfrag=<offset>/<total>` field: where this datagram's body bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ncfrag {
    /// Offset of this chunk in the whole body (bytes after the `;`).
    pub offset: usize,
    /// Length of the whole body.
    pub total: usize,
}

/// Which header field an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderField {
    /// `<prefix>` (facility and level).
    Prefix,
    /// `<seq>`.
    Seq,
    /// `<ts_usec>`.
    TsUsec,
    /// `<flag>`.
    Flag,
    /// `caller=`.
    Caller,
    /// `ncfrag=`.
    Ncfrag,
    /// `ncemg=`.
    Ncemg,
}

impl fmt::Display for HeaderField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderField::Prefix => "prefix",
            HeaderField::Seq => "seq",
            HeaderField::TsUsec => "ts_usec",
            HeaderField::Flag => "flag",
            HeaderField::Caller => "caller",
            HeaderField::Ncfrag => "ncfrag",
            HeaderField::Ncemg => "ncemg",
        })
    }
}

/// Why an extended header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The datagram has no `;`, so it has no header/body boundary.
    #[error("extended header without ';'")]
    NoSemicolon,
    /// A mandatory field is absent.
    #[error("missing {0} field")]
    Missing(HeaderField),
    /// A field is not what the kernel writes there (e.g. not decimal digits).
    #[error("malformed {0} field")]
    Malformed(HeaderField),
    /// A decimal number does not fit its type.
    #[error("{0} does not fit its type")]
    Overflow(HeaderField),
    /// The prefix encodes a facility above 255.
    #[error("prefix {0} out of range (at most 2047)")]
    PrefixOutOfRange(u64),
    /// An extra field is not `key=value` with a non-empty key.
    #[error("extra header field is not key=value")]
    MalformedExtra,
    /// The fragment's bytes do not fit in its announced total, or it has none (Linux never
    /// sends an empty fragment: see [`Header::parse`]).
    #[error("ncfrag {offset}/{total} with {len} bytes does not fit its total")]
    FragmentOutOfRange {
        /// Announced offset.
        offset: usize,
        /// Bytes in this datagram's body.
        len: usize,
        /// Announced total.
        total: usize,
    },
}

/// The fields printk keeps for every record and writes at the start of its extended header
/// (`<prefix>,<seq>,<ts_usec>,<flag>[,caller=...]`, see [`Header`]), with the names of the
/// kernel's `struct printk_info` (kernel/printk/printk_ringbuffer.h).
///
/// The records this crate reads ([`Header`], [`OwnedRecord`](crate::OwnedRecord)) and writes
/// ([`KmsgRecord`](crate::KmsgRecord), [`ConsoleRecord`](crate::ConsoleRecord)) hold them as
/// their `fields`, so a record read is written again with the same fields:
///
/// ```
/// use netconsole_proto::{CONSOLE_EXT_LOG_MAX, Caller, Flag, Header, KmsgRecord, format_kmsg};
///
/// let (header, _) = Header::parse(b"30,714,7464018,c,caller=C3;x\n")?;
/// assert_eq!((header.fields.level, header.fields.facility), (6, 3));
/// assert_eq!((header.fields.seq, header.fields.ts_usec), (714, 7_464_018));
/// assert_eq!(header.fields.flag, Flag::Cont);
/// assert_eq!(header.fields.caller, Some(Caller::Cpu(3)));
/// assert_eq!(header.fields.prefix(), 30);
///
/// let record = KmsgRecord::from_fields(header.fields, b"x");
/// let mut out = [0u8; CONSOLE_EXT_LOG_MAX];
/// let len = format_kmsg(&record, &mut out);
/// assert_eq!(&out[..len], b"30,714,7464018,c,caller=C3;x\n");
/// # Ok::<(), netconsole_proto::HeaderError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RecordFields {
    /// `seq`: the record's sequence number, counted by printk from 0 at boot.
    pub seq: u64,
    /// `ts_nsec / 1000`: when the record was stored, in microseconds since boot.
    pub ts_usec: u64,
    /// `level`: the log level, 0 (`KERN_EMERG`) to 7 (`KERN_DEBUG`). printk keeps it in 3
    /// bits: what parses is at most 7, and the writers use only the low 3 bits.
    pub level: u8,
    /// `facility`: the syslog facility (0 kernel, 1 user, ...; `/dev/kmsg` writers may set
    /// any up to 255). With the level it makes the header's prefix ([`RecordFields::prefix`]).
    pub facility: u8,
    /// From `flags`: `LOG_CONT` is written `c` (and `+` by Linux 3.x–4.x for a record
    /// continuing another, see [`Flag::for_record`]), anything else `-`.
    pub flag: Flag,
    /// `caller_id` (CONFIG_PRINTK_CALLER): `caller=T<pid>` for a task, `C<cpu>` for
    /// interrupt context; `None` when the header has no `caller=`.
    pub caller: Option<Caller>,
}

impl RecordFields {
    /// The prefix as printk writes it: `(facility << 3) | level`, the level's low 3 bits.
    pub const fn prefix(&self) -> u16 {
        ((self.facility as u16) << 3) | (self.level & 7) as u16
    }
}

/// A parsed extended header, borrowing from the datagram: everything before the first `;` of
/// an extended datagram.
///
/// ```text
///  [<release>,]<prefix>,<seq>,<ts_usec>,<flag>[,caller=<T|C><n>][,ncemg=1][,ncfrag=<off>/<total>][,<key>=<value>]*;
///  \_________/ \______/ \___/ \_______/ \____/ \_______________/ \____________________________/
///   netconsole  printk   u64    u64     - c +   printk (CONFIG_      inserted by netconsole
///   `r` / release=1  (facility<<3)|level        PRINTK_CALLER)       (ncfrag) or the reliable
///                                                                    sender (ncemg)
///
///  example: 7.3.4+deb13-amd64,14,709,7301468,-,ncfrag=969/2031;
/// ```
///
/// - `prefix` is `(facility << 3) | level`. printk keeps the facility in a `u8`, so the prefix
///   is at most 2047 (Linux 7.3 reports `<99999>` written to `/dev/kmsg` as prefix 1695).
/// - The release prepend is recognised because its field contains a `.` and is followed by
///   the numeric prefix; the first field of a kernel header is always all digits.
/// - Unknown `key=value` fields are kept, in order, for the caller ([`Header::unknown_fields`]).
/// - The header as printk formatted it (without release prepend, `ncfrag` and `ncemg`) has
///   length [`Header::kernel_len`]; the kernel's 2048-byte format limit counts those bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header<'a> {
    /// The kernel release prepended by netconsole (`r`, configfs `release`), without its comma.
    pub release: Option<&'a [u8]>,
    /// The record's fields: prefix (level and facility), seq, ts_usec, flag and `caller=`.
    pub fields: RecordFields,
    /// `ncfrag=`, when the datagram holds one fragment of a longer record.
    pub ncfrag: Option<Ncfrag>,
    /// `ncemg=1`: sent by the reliable sender's emergency transmission.
    pub ncemg: bool,
    /// Extra fields after the flag, raw (`,k=v,k=v`), including the known ones.
    pub(crate) extra: &'a [u8],
    /// Length of the whole header including the `;`.
    pub(crate) len: usize,
    /// Length of the header as printk formatted it, including the `;`.
    pub(crate) kernel_len: usize,
}

/// Whether `bytes` begins like an extended header: optional release, then
/// `<digits>,<digits>,<digits>,<flag byte>`. Anything else is plain console text.
pub(crate) fn looks_extended(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    let first_end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
    if first_end == 0 {
        return false;
    }
    if !rest[..first_end].iter().all(u8::is_ascii_digit) {
        // Maybe a release prepend.
        if !rest[..first_end].contains(&b'.') || first_end == rest.len() {
            return false;
        }
        rest = &rest[first_end + 1..];
    }
    for _ in 0..3 {
        let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        if end == 0 || end == rest.len() || !rest[..end].iter().all(u8::is_ascii_digit) {
            return false;
        }
        rest = &rest[end + 1..];
    }
    matches!(rest.first(), Some(&b) if Flag::from_byte(b).is_some())
}

/// Parses a decimal number written by the kernel: one or more ASCII digits.
pub(crate) fn parse_decimal(bytes: &[u8], field: HeaderField) -> Result<u64, HeaderError> {
    if bytes.is_empty() {
        return Err(HeaderError::Missing(field));
    }
    // Up to 19 digits cannot overflow a u64: no per-digit overflow check there.
    let (head, tail) = bytes.split_at(bytes.len().min(19));
    let mut value: u64 = 0;
    for &b in head {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(HeaderError::Malformed(field));
        }
        value = value * 10 + u64::from(digit);
    }
    for &b in tail {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(HeaderError::Malformed(field));
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(HeaderError::Overflow(field))?;
    }
    Ok(value)
}

const ASCII_ZEROS: u64 = u64::from_le_bytes([b'0'; 8]);
const ABOVE_NINE: u64 = u64::from_le_bytes([0x7f - b'9'; 8]);
const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);
const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// How many of the eight bytes of `word` (in memory order) are ASCII digits before the
/// first that is not, 0 to 8.
#[allow(
    clippy::inline_always,
    reason = "measured with callgrind: without it the parse of a 100-byte record takes 12% more instructions"
)]
#[inline(always)]
fn leading_digits(word: u64) -> usize {
    // A byte below `0` sets its high bit in `below`, a byte above `9` in `above`. Borrows
    // and carries only reach the bytes after the first non-digit, which are not looked at.
    let below = word.wrapping_sub(ASCII_ZEROS);
    let above = word.wrapping_add(ABOVE_NINE);
    ((below | above) & HIGH_BITS).trailing_zeros() as usize / 8
}

/// The value of the first `n` (1 to 8) digits of `word`, eight at a time (SWAR).
#[allow(
    clippy::inline_always,
    reason = "measured with callgrind: without it the parse of a 100-byte record takes 12% more instructions"
)]
#[inline(always)]
fn digits_value(word: u64, n: usize) -> u64 {
    // Digit values, the `n` digits moved to the top bytes: the bytes below read as leading
    // zeros.
    let digits = (word & 0x0f0f_0f0f_0f0f_0f0f) << (8 * (8 - n));
    // Pairs of digits, then pairs of pairs, then the two halves.
    let pairs = (digits.wrapping_mul(10 << 8 | 1) >> 8) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs.wrapping_mul(100 << 16 | 1) >> 16) & 0x0000_ffff_0000_ffff;
    quads.wrapping_mul(10_000 << 32 | 1) >> 32
}

/// The decimal number of 1 to 19 digits at `pos` (at most 19 digits cannot overflow a
/// `u64`) and the position after it; `None` for no digit or more than 19.
#[allow(
    clippy::inline_always,
    reason = "measured with callgrind: without it the parse of a 100-byte record takes 12% more instructions"
)]
#[inline(always)]
pub(crate) fn digits_at(bytes: &[u8], pos: usize) -> Option<(u64, usize)> {
    let Some(&chunk) = bytes.get(pos..).and_then(<[u8]>::first_chunk::<8>) else {
        return digits_slow(bytes, pos, 0, pos);
    };
    let word = u64::from_le_bytes(chunk);
    let n = leading_digits(word);
    if n == 0 {
        return None;
    }
    let value = digits_value(word, n);
    if n < 8 {
        return Some((value, pos + n));
    }
    digits_slow(bytes, pos + 8, value, pos)
}

/// [`digits_at`] from `pos`, with `value` read from the digits in `start..pos`.
#[inline]
fn digits_slow(bytes: &[u8], mut pos: usize, mut value: u64, start: usize) -> Option<(u64, usize)> {
    while let Some(&chunk) = bytes.get(pos..).and_then(<[u8]>::first_chunk::<8>) {
        let word = u64::from_le_bytes(chunk);
        let n = leading_digits(word);
        if n > 0 {
            value = value
                .wrapping_mul(POW10[n])
                .wrapping_add(digits_value(word, n));
            pos += n;
        }
        if n < 8 || pos - start > 19 {
            return (1..=19).contains(&(pos - start)).then_some((value, pos));
        }
    }
    // Fewer than eight bytes left.
    while let Some(&b) = bytes.get(pos) {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
        pos += 1;
    }
    (1..=19).contains(&(pos - start)).then_some((value, pos))
}

/// Parses the decimal field at the start of `rest` up to its comma (or the end) in one
/// pass, and moves `rest` past the comma.
fn number_field(rest: &mut &[u8], field: HeaderField) -> Result<u64, HeaderError> {
    let bytes = *rest;
    let mut value: u64 = 0;
    let mut len = 0;
    for &b in bytes {
        if b == b',' {
            break;
        }
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(HeaderError::Malformed(field));
        }
        value = if len < 19 {
            value * 10 + u64::from(digit)
        } else {
            value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit)))
                .ok_or(HeaderError::Overflow(field))?
        };
        len += 1;
    }
    if len == 0 {
        return Err(HeaderError::Missing(field));
    }
    *rest = bytes.get(len + 1..).unwrap_or(&[]);
    Ok(value)
}

fn parse_usize(bytes: &[u8], field: HeaderField) -> Result<usize, HeaderError> {
    usize::try_from(parse_decimal(bytes, field)?).map_err(|_| HeaderError::Overflow(field))
}

/// Splits off the next comma-separated field.
fn next_field(rest: &mut &[u8]) -> Option<usize> {
    if rest.is_empty() {
        return None;
    }
    let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
    Some(end)
}

/// A `caller=`, `ncfrag=` or `ncemg=` field as the fast path reads it.
#[derive(Debug, Clone, Copy)]
enum KnownField {
    Caller(Caller),
    Ncfrag(Ncfrag),
    Ncemg(bool),
}

impl KnownField {
    /// The known field starting at `pos` (after its comma), well formed and ended by `,` or
    /// `;`, and the position of that end; `None` for anything else.
    #[inline]
    fn at(bytes: &[u8], pos: usize) -> Option<(Self, usize)> {
        let rest = bytes.get(pos..)?;
        let (field, len) = if let Some(value) = rest.strip_prefix(b"caller=") {
            let (number, end) = digits_at(value, 1)?;
            let number = u32::try_from(number).ok()?;
            let caller = Caller::from_parts(*value.first()?, number)?;
            (KnownField::Caller(caller), 7 + end)
        } else if let Some(value) = rest.strip_prefix(b"ncfrag=") {
            let (offset, slash) = digits_at(value, 0)?;
            if value.get(slash) != Some(&b'/') {
                return None;
            }
            let (total, end) = digits_at(value, slash + 1)?;
            let offset = usize::try_from(offset).ok()?;
            let total = usize::try_from(total).ok()?;
            (KnownField::Ncfrag(Ncfrag { offset, total }), 7 + end)
        } else if let Some(value) = rest.strip_prefix(b"ncemg=") {
            let ncemg = match value.first()? {
                b'1' => true,
                b'0' => false,
                _ => return None,
            };
            (KnownField::Ncemg(ncemg), 7)
        } else {
            return None;
        };
        let next = pos + len;
        matches!(bytes.get(next), Some(b',' | b';')).then_some((field, next))
    }
}

impl<'a> Header<'a> {
    /// Parses the header at the start of `datagram`; returns it and the body (after the `;`).
    ///
    /// The fragment bounds are checked against the body length: `offset + body.len()` must not
    /// exceed `total`, and a fragment must carry at least one body byte
    /// ([`HeaderError::FragmentOutOfRange`] otherwise). Linux never sends an empty fragment:
    /// every generation of `send_ext_msg_udp` / `send_fragmented_body` loops while bytes
    /// remain and gives each datagram `min(remaining, 1000 - header length)` bytes, which is
    /// positive because a header (at most a 64-byte release, the printk header and `ncfrag`)
    /// is far below 1000 bytes; a zero-length chunk would not even advance its loop.
    ///
    /// The common shape (`[<release>,]<prefix>,<seq>,<ts_usec>,<flag>` then `;` or extra
    /// fields) is read in one forward pass, decimal numbers eight digits per step; anything
    /// else goes through a general parser that gives the same result and the typed error.
    #[allow(
        clippy::inline_always,
        reason = "measured with callgrind: inlined, a receiver reads the fields it needs from registers instead of a header written to memory"
    )]
    #[inline(always)]
    pub fn parse(datagram: &'a [u8]) -> Result<(Self, &'a [u8]), HeaderError> {
        match Self::parse_common(datagram) {
            Some(header) => Ok((header, datagram.get(header.len..).unwrap_or_default())),
            None => Self::parse_general(datagram),
        }
    }

    /// The fast path: one pass over `[<release>,]<prefix>,<seq>,<ts_usec>,<flag>` with
    /// numbers of 1 to 19 digits, then the `caller=`, `ncfrag=` and `ncemg=` fields
    /// ([`KnownField`]), up to the `;`. `None` when the datagram is not of that shape (any
    /// other field included: the general parser then decides, error included); otherwise
    /// what the general parser finds.
    #[allow(
        clippy::inline_always,
        reason = "measured with callgrind: see Header::parse"
    )]
    #[inline(always)]
    fn parse_common(datagram: &'a [u8]) -> Option<Self> {
        let (mut prefix, mut pos) = match datagram {
            // Most prefixes are one digit (facility 0).
            [digit @ b'0'..=b'9', b',', ..] => (u64::from(digit - b'0'), 1),
            _ => digits_at(datagram, 0)?,
        };
        let mut release = None;
        let mut release_len = 0;
        if datagram.get(pos) != Some(&b',') {
            // A release prepend: a first field holding a `.`, then the numeric prefix.
            let comma = find(b',', datagram)?;
            let field = &datagram[..comma];
            if find(b'.', field).is_none() || find(b';', field).is_some() {
                return None;
            }
            release = Some(field);
            release_len = comma + 1;
            (prefix, pos) = digits_at(datagram, release_len)?;
            if datagram.get(pos) != Some(&b',') {
                return None;
            }
        }
        if prefix > u64::from(MAX_PREFIX) {
            return None;
        }
        let (seq, pos) = digits_at(datagram, pos + 1)?;
        if datagram.get(pos) != Some(&b',') {
            return None;
        }
        let (ts_usec, pos) = digits_at(datagram, pos + 1)?;
        let Some(&[b',', flag]) = datagram.get(pos..pos + 2) else {
            return None;
        };
        let flag = Flag::from_byte(flag)?;
        let extra_start = pos + 2;
        // The fields netconsole and printk add, read in the same pass; anything else (an
        // unknown or malformed field) is left to the general parser.
        let (mut caller, mut ncfrag, mut ncemg, mut not_printk) = (None, None, false, 0);
        let mut pos = extra_start;
        while datagram.get(pos) == Some(&b',') {
            let (field, next) = KnownField::at(datagram, pos + 1)?;
            match field {
                KnownField::Caller(c) => caller = Some(c),
                KnownField::Ncfrag(f) => {
                    ncfrag = Some(f);
                    not_printk += next - pos;
                }
                KnownField::Ncemg(e) => {
                    ncemg = e;
                    not_printk += next - pos;
                }
            }
            pos = next;
        }
        let semi = pos;
        if datagram.get(semi) != Some(&b';') {
            return None;
        }
        if let Some(f) = ncfrag {
            let body_len = datagram.len() - semi - 1;
            if body_len == 0 || f.offset.checked_add(body_len)? > f.total {
                return None;
            }
        }
        let extra = datagram.get(extra_start..semi)?;
        let mandatory = (release, prefix, seq, ts_usec, flag);
        let mut header = Self::from_mandatory(mandatory, extra, semi, release_len);
        header.fields.caller = caller;
        header.ncfrag = ncfrag;
        header.ncemg = ncemg;
        header.kernel_len = header.kernel_len.checked_sub(not_printk)?;
        Some(header)
    }

    /// A header from its mandatory fields (release, prefix, seq, ts_usec, flag), before the
    /// extra fields are interpreted; `semi` is the position of the `;`, `release_len` the
    /// length of the release and its comma.
    #[inline]
    fn from_mandatory(
        (release, prefix, seq, ts_usec, flag): (Option<&'a [u8]>, u64, u64, u64, Flag),
        extra: &'a [u8],
        semi: usize,
        release_len: usize,
    ) -> Self {
        Header {
            release,
            fields: RecordFields {
                seq,
                ts_usec,
                level: (prefix & 7) as u8,
                facility: (prefix >> 3) as u8,
                flag,
                caller: None,
            },
            ncfrag: None,
            ncemg: false,
            extra,
            len: semi + 1,
            kernel_len: semi + 1 - release_len,
        }
    }

    /// The general parser: any header shape, every typed error.
    #[cold]
    fn parse_general(datagram: &'a [u8]) -> Result<(Self, &'a [u8]), HeaderError> {
        let semi = find(b';', datagram).ok_or(HeaderError::NoSemicolon)?;
        let head = &datagram[..semi];
        let body = &datagram[semi + 1..];
        let mut rest = head;

        // Release prepend or prefix.
        let mut release = None;
        let mut release_len = 0;
        let whole = rest;
        let prefix = match number_field(&mut rest, HeaderField::Prefix) {
            Err(HeaderError::Malformed(_)) => {
                let end = find(b',', whole).unwrap_or(whole.len());
                if !whole[..end].contains(&b'.') {
                    return Err(HeaderError::Malformed(HeaderField::Prefix));
                }
                release = Some(&whole[..end]);
                release_len = end + 1;
                rest = whole.get(end + 1..).unwrap_or(&[]);
                number_field(&mut rest, HeaderField::Prefix)?
            }
            other => other?,
        };
        if prefix > u64::from(MAX_PREFIX) {
            return Err(HeaderError::PrefixOutOfRange(prefix));
        }
        let seq = number_field(&mut rest, HeaderField::Seq)?;
        let ts_usec = number_field(&mut rest, HeaderField::TsUsec)?;

        let end = next_field(&mut rest).ok_or(HeaderError::Missing(HeaderField::Flag))?;
        let flag =
            Flag::from_field(&rest[..end]).ok_or(HeaderError::Malformed(HeaderField::Flag))?;
        let extra = &rest[end..];

        let mandatory = (release, prefix, seq, ts_usec, flag);
        let mut header = Self::from_mandatory(mandatory, extra, semi, release_len);
        if !header.extra.is_empty() {
            header.apply_fields(body.len())?;
        }
        Ok((header, body))
    }

    /// Interprets the `key=value` fields after the flag.
    fn apply_fields(&mut self, body_len: usize) -> Result<(), HeaderError> {
        for (key, value) in self.extra_fields() {
            match key {
                b"" => return Err(HeaderError::MalformedExtra),
                b"caller" => self.fields.caller = Some(Caller::parse_value(value)?),
                b"ncfrag" => {
                    let slash =
                        find(b'/', value).ok_or(HeaderError::Malformed(HeaderField::Ncfrag))?;
                    let offset = parse_usize(&value[..slash], HeaderField::Ncfrag)?;
                    let total = parse_usize(&value[slash + 1..], HeaderField::Ncfrag)?;
                    let fits = offset.checked_add(body_len).is_some_and(|end| end <= total);
                    if !fits || body_len == 0 {
                        return Err(HeaderError::FragmentOutOfRange {
                            offset,
                            len: body_len,
                            total,
                        });
                    }
                    self.ncfrag = Some(Ncfrag { offset, total });
                    self.kernel_len = self
                        .kernel_len
                        .saturating_sub(b",ncfrag=".len() + value.len());
                }
                b"ncemg" => {
                    self.ncemg = match value {
                        b"1" => true,
                        b"0" => false,
                        _ => return Err(HeaderError::Malformed(HeaderField::Ncemg)),
                    };
                    self.kernel_len = self
                        .kernel_len
                        .saturating_sub(b",ncemg=".len() + value.len());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Length of the header in the datagram, `;` included.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Always false: a header holds at least `0,0,0,-;`. Present for API symmetry.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length of the header as printk formatted it (no release prepend, no `ncfrag`/`ncemg`),
    /// `;` included: what counts against the kernel's format limit.
    pub const fn kernel_len(&self) -> usize {
        self.kernel_len
    }

    /// Every `key=value` field after the flag, in order, known ones included. A field without
    /// `=` yields an empty key (which [`Header::parse`] refuses, so this only happens on
    /// headers built elsewhere).
    pub fn extra_fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone + use<'a> {
        Fields { rest: self.extra }
    }

    /// The `key=value` fields this crate does not interpret, in order.
    pub fn unknown_fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        self.extra_fields()
            .filter(|(k, _)| !matches!(*k, b"caller" | b"ncfrag" | b"ncemg"))
    }
}

/// Iterator over the `key=value` fields after the flag ([`Header::extra_fields`]).
#[derive(Debug, Clone)]
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // `rest` is empty or starts with a comma.
        let rest = self.rest.get(1..)?;
        let end = find(b',', rest).unwrap_or(rest.len());
        let field = &rest[..end];
        self.rest = &rest[end..];
        Some(match find(b'=', field) {
            Some(eq) => (&field[..eq], &field[eq + 1..]),
            None => (&[][..], field),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_header() {
        let (h, body) = Header::parse(b"6,1234,5678901,-;hello\n").unwrap();
        assert_eq!(
            h.fields,
            RecordFields {
                seq: 1234,
                ts_usec: 5_678_901,
                level: 6,
                facility: 0,
                flag: Flag::Normal,
                caller: None,
            }
        );
        assert_eq!(h.release, None);
        assert_eq!(body, b"hello\n");
        assert_eq!(h.len(), 17);
        assert_eq!(h.kernel_len(), 17);
    }

    #[test]
    fn parses_release_and_fragment() {
        let d = b"7.3.4+deb13-amd64,14,709,7301468,-,ncfrag=969/2031;abc";
        let (h, body) = Header::parse(d).unwrap();
        assert_eq!(h.release, Some(&b"7.3.4+deb13-amd64"[..]));
        assert_eq!((h.fields.level, h.fields.facility), (6, 1));
        assert_eq!(
            h.ncfrag,
            Some(Ncfrag {
                offset: 969,
                total: 2031
            })
        );
        assert_eq!(body, b"abc");
        assert_eq!(h.kernel_len(), b"14,709,7301468,-;".len());
    }

    #[test]
    fn keeps_unknown_fields_and_caller() {
        let (h, _) = Header::parse(b"4,9,10,c,caller=T42,ncemg=1,foo=bar=baz,x=;t\n").unwrap();
        assert_eq!(h.fields.caller, Some(Caller::Task(42)));
        assert!(h.ncemg);
        assert_eq!(h.fields.flag, Flag::Cont);
        let unknown: Vec<_> = h.unknown_fields().collect();
        assert_eq!(
            unknown,
            [(&b"foo"[..], &b"bar=baz"[..]), (&b"x"[..], &b""[..])]
        );
        assert_eq!(h.kernel_len(), b"4,9,10,c,caller=T42,foo=bar=baz,x=;".len());
    }

    #[test]
    fn typed_errors() {
        assert_eq!(Header::parse(b"6,1,2,-"), Err(HeaderError::NoSemicolon));
        assert_eq!(
            Header::parse(b"6,1,2;x"),
            Err(HeaderError::Missing(HeaderField::Flag))
        );
        assert_eq!(
            Header::parse(b"6,1,2,x;x"),
            Err(HeaderError::Malformed(HeaderField::Flag))
        );
        assert_eq!(
            Header::parse(b"6,18446744073709551616,2,-;x"),
            Err(HeaderError::Overflow(HeaderField::Seq))
        );
        assert_eq!(
            Header::parse(b"2048,1,2,-;x"),
            Err(HeaderError::PrefixOutOfRange(2048))
        );
        assert_eq!(
            Header::parse(b"6,1,2,-,ncfrag=10/12;abc"),
            Err(HeaderError::FragmentOutOfRange {
                offset: 10,
                len: 3,
                total: 12
            })
        );
        // An empty fragment: Linux never sends one.
        assert_eq!(
            Header::parse(b"6,1,2,-,ncfrag=0/3;"),
            Err(HeaderError::FragmentOutOfRange {
                offset: 0,
                len: 0,
                total: 3
            })
        );
        assert_eq!(
            Header::parse(b"6,1,2,-,ncfrag=10;abc"),
            Err(HeaderError::Malformed(HeaderField::Ncfrag))
        );
        assert_eq!(
            Header::parse(b"6,1,2,-,novalue;abc"),
            Err(HeaderError::MalformedExtra)
        );
        assert_eq!(
            Header::parse(b"6,1,2,-,caller=X1;abc"),
            Err(HeaderError::Malformed(HeaderField::Caller))
        );
    }

    #[test]
    fn caller_from_str() {
        assert_eq!("T123".parse(), Ok(Caller::Task(123)));
        assert_eq!("C4".parse(), Ok(Caller::Cpu(4)));
        assert_eq!("C4294967295".parse(), Ok(Caller::Cpu(u32::MAX)));
        assert_eq!("T007".parse(), Ok(Caller::Task(7)));
        assert_eq!("".parse::<Caller>(), Err(CallerError::Kind));
        assert_eq!("t1".parse::<Caller>(), Err(CallerError::Kind));
        assert_eq!("é1".parse::<Caller>(), Err(CallerError::MalformedNumber));
        assert_eq!("C".parse::<Caller>(), Err(CallerError::MissingNumber));
        assert_eq!("T-1".parse::<Caller>(), Err(CallerError::MalformedNumber));
        assert_eq!("T1 ".parse::<Caller>(), Err(CallerError::MalformedNumber));
        assert_eq!("T4294967296".parse::<Caller>(), Err(CallerError::Overflow));
        assert_eq!(
            "T99999999999999999999".parse::<Caller>(),
            Err(CallerError::Overflow)
        );
        assert_eq!(Caller::Task(42).to_string(), "T42");
        assert_eq!(Caller::Cpu(0).to_string(), "C0");
    }

    #[test]
    fn caller_from_str_agrees_with_the_header() {
        // The same values accepted, with the header's error for each refused one.
        for value in [
            "T42",
            "C0",
            "C4294967295",
            "T",
            "X",
            "X1",
            "",
            "T1a",
            "C4294967296",
            "T0x1",
        ] {
            let datagram = format!("6,1,2,-,caller={value};x\n");
            let header = Header::parse(datagram.as_bytes()).map(|(h, _)| h.fields.caller);
            let parsed = value.parse::<Caller>().map(Some).map_err(HeaderError::from);
            assert_eq!(parsed, header, "{value}");
        }
    }

    #[test]
    fn legacy_continuation_flag() {
        // Linux 3.x-4.x: a record continuing the previous one.
        let (h, body) = Header::parse(b"4,97,1234567,+;more text\n").unwrap();
        assert_eq!(h.fields.flag, Flag::ContMore);
        assert_eq!(body, b"more text\n");
        assert_eq!(Flag::ContMore.as_byte(), b'+');
    }

    #[test]
    fn prefix_1695_from_linux_7_3() {
        let (h, _) = Header::parse(b"1695,697,7151883,-;rig-spec-15\n").unwrap();
        let fields = h.fields;
        assert_eq!(
            (fields.facility, fields.level, fields.prefix()),
            (211, 7, 1695)
        );
    }

    #[test]
    fn legacy_and_modern_flags() {
        use FlagConvention::{Legacy, Modern};
        assert_eq!(Flag::for_record(Modern, true, true, false), Flag::Cont);
        assert_eq!(Flag::for_record(Modern, false, true, false), Flag::Normal);
        assert_eq!(Flag::for_record(Legacy, true, false, true), Flag::Cont);
        assert_eq!(Flag::for_record(Legacy, true, true, false), Flag::ContMore);
        assert_eq!(Flag::for_record(Legacy, false, true, false), Flag::ContMore);
        assert_eq!(Flag::for_record(Legacy, false, true, true), Flag::Normal);
    }

    /// The fast path either declines or agrees with the general parser, field for field.
    fn agrees(datagram: &[u8]) {
        if let Some(fast) = Header::parse_common(datagram) {
            let body = &datagram[fast.len..];
            assert_eq!(
                Ok((fast, body)),
                Header::parse_general(datagram),
                "{datagram:?}"
            );
        }
        assert_eq!(
            Header::parse(datagram),
            Header::parse_general(datagram),
            "{datagram:?}"
        );
    }

    #[test]
    fn fast_path_agrees_with_general_parser() {
        let cases: [&[u8]; 37] = [
            b"6,123456,98765432,-;text\n",
            b"6,1,2,-",
            b"6,1,2,-,",
            b"6,1,2,-,;x",
            b"6,1,2,-,caller=T1,ncfrag=0/3;abc",
            b"6,1,2,-,ncfrag=0/3;",
            b"7.3.4+deb13-amd64,14,709,7301468,-,ncfrag=969/2031;abc",
            b"6.1;0,6,1,2,-;x",
            b"6.1.0,6,1,2,c;x",
            b"6.1.0,,1,2,c;x",
            b"2047,1,2,+;x",
            b"2048,1,2,+;x",
            b"6,1234567890123456789,2,-;x",
            b"6,12345678901234567890,2,-;x",
            b"6,18446744073709551616,2,-;x",
            b"6,1,12345678,-;",
            b"6,1,1234567812345678,-;",
            b"6,1,2,-x;",
            b"6,1,2,--;",
            b"06,001,0002,-;",
            b"6,1;2,-;x",
            b"1,2,3,c",
            b"6,1,2,-,ncfrag=0/3;abc",
            b"6,1,2,-,ncemg=1,ncfrag=1/4;abc",
            b"6,1,2,-,ncfrag=1/4,ncemg=0;abc",
            b"6,1,2,-,ncfrag=2/4;abc",
            b"6,1,2,-,ncfrag=0/3,ncfrag=1/4;abc",
            b"6,1,2,-,ncfrag=18446744073709551615/3;abc",
            b"6,1,2,-,caller=C4294967295;x",
            b"6,1,2,-,caller=C4294967296;x",
            b"6,1,2,-,caller=T12,caller=C3;x",
            b"6,1,2,-,caller=T;x",
            b"6,1,2,-,ncemg=1;x",
            b"6,1,2,-,ncemg=2;x",
            b"6,1,2,-,ncemg=10;x",
            b"6,1,2,-,ncfrag=0/3,x=1;abc",
            b"6.1.0,6,1,2,-,caller=T1,ncfrag=0/3;abc",
        ];
        for case in cases {
            agrees(case);
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_path_agrees_on_header_like_bytes(
            release in "([0-9a-z.;+-]{0,8},)?",
            numbers in proptest::collection::vec("[0-9]{0,21}", 3),
            flag in "[-c+x;]{0,2}",
            extra in proptest::collection::vec(
                "(caller|ncfrag|ncemg|x|)=?[0-9TC/;]{0,8}",
                0..3,
            ),
            end in "[;,]?[a-z\n;]{0,30}",
        ) {
            let mut datagram = format!("{release}{},{flag}", numbers.join(","));
            for field in extra {
                datagram.push(',');
                datagram.push_str(&field);
            }
            datagram.push_str(&end);
            agrees(datagram.as_bytes());
        }
    }

    #[test]
    fn shape_check() {
        assert!(looks_extended(b"6,1,2,-;x"));
        assert!(looks_extended(b"6.1.0,6,1,2,c;x"));
        assert!(!looks_extended(b"[    0.000000] Linux"));
        assert!(!looks_extended(b"<6>[ 1.0] x"));
        assert!(!looks_extended(b"12,34 apples"));
        assert!(!looks_extended(b""));
        assert!(!looks_extended(b"1.2,x"));
    }
}

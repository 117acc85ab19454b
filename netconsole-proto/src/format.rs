//! Writing what the kernel writes, byte-exact with Linux, in three steps: the printk record
//! ([`format_kmsg`]), its netconsole datagrams ([`ExtFragments`], with [`format_userdata`] and
//! [`Sysdata`]), and plain consoles' chunks ([`plain_chunks`]).

use crate::MAX_PRINT_CHUNK;
use crate::body::BufferTooSmall;
use crate::header::{Flag, RecordFields};

/// One dictionary entry (printk escapes both key and value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictEntry<'a> {
    /// `SUBSYSTEM`, `DEVICE`, ... (raw bytes).
    pub key: &'a [u8],
    /// Its value (raw bytes).
    pub value: &'a [u8],
}

/// A printk record as the kernel holds it (raw, unescaped text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KmsgRecord<'a> {
    /// The header's fields (the level's low 3 bits are written; see [`Flag::for_record`] for
    /// the flag each kernel generation writes).
    pub fields: RecordFields,
    /// The text, raw.
    pub text: &'a [u8],
    /// Dictionary entries, in order.
    pub dict: &'a [DictEntry<'a>],
    /// Print entries with an empty value (` KEY=\n`), as kernels before 5.10 did with their
    /// raw dictionary; 5.10 and later skip them (`msg_add_dict_text`). Default false.
    pub keep_empty_values: bool,
}

impl<'a> KmsgRecord<'a> {
    /// A record with the given level, sequence, timestamp and text; facility 0, flag `-`,
    /// no caller, no dictionary.
    pub const fn new(level: u8, seq: u64, ts_usec: u64, text: &'a [u8]) -> Self {
        let fields = RecordFields {
            seq,
            ts_usec,
            level,
            facility: 0,
            flag: Flag::Normal,
            caller: None,
        };
        Self::from_fields(fields, text)
    }

    /// A record with the given fields (those of a parsed [`Header`](crate::Header), for one)
    /// and text; no dictionary.
    pub const fn from_fields(fields: RecordFields, text: &'a [u8]) -> Self {
        KmsgRecord {
            fields,
            text,
            dict: &[],
            keep_empty_values: false,
        }
    }
}

/// A write position with the kernel's `scnprintf` / `append_char` truncation rules.
struct KernelCursor<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl KernelCursor<'_> {
    /// `append_char`: one byte if there is room.
    fn append_char(&mut self, c: u8) {
        if let Some(slot) = self.buf.get_mut(self.pos) {
            *slot = c;
            self.pos += 1;
        }
    }

    /// `scnprintf` of already formatted bytes: at most `room - 1` bytes, then a NUL that is
    /// not counted. Nothing at all when there is no room.
    fn scnprintf(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.pos;
        if room == 0 {
            return;
        }
        let n = bytes.len().min(room - 1);
        self.buf[self.pos..self.pos + n].copy_from_slice(&bytes[..n]);
        self.buf[self.pos + n] = 0;
        self.pos += n;
    }

    /// `msg_add_ext_text`, a run of printable bytes at a time. A printable byte is written
    /// while there is room (`append_char`); an escape gets `min(4, room - 1)` bytes
    /// (`scnprintf`), so once the buffer is full nothing more is written.
    fn ext_text(&mut self, text: &[u8], endc: u8) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut rest = text;
        while !rest.is_empty() {
            let run = crate::scan::find_escape(rest).unwrap_or(rest.len());
            let fits = run.min(self.buf.len() - self.pos);
            self.buf[self.pos..self.pos + fits].copy_from_slice(&rest[..fits]);
            self.pos += fits;
            let Some(&c) = rest.get(run) else {
                break;
            };
            self.scnprintf(&[
                b'\\',
                b'x',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
            rest = &rest[run + 1..];
        }
        self.append_char(endc);
    }
}

/// `00` to `99`, two bytes each.
const PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// How many decimal digits `n` has.
#[inline]
pub(crate) fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Writes the decimal digits of `n` into `out`, right-aligned, two digits a step from the
/// end: with `out.len() == decimal_len(n)`, exactly the digits.
#[inline]
fn write_decimal(mut n: u64, out: &mut [u8]) {
    let mut end = out.len();
    while n >= 100 && end >= 2 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        out[end - 2..end].copy_from_slice(&PAIRS[pair..pair + 2]);
        end -= 2;
    }
    if n >= 10 && end >= 2 {
        let pair = n as usize * 2;
        out[end - 2..end].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else if let Some(last) = end.checked_sub(1) {
        out[last] = b'0' + (n % 10) as u8;
    }
}

/// The eight decimal digits of `n < 100_000_000` (leading zeros included), one per byte,
/// the most significant in the lowest byte, as values 0 to 9: all lanes at once
/// (halves of four digits, then pairs, then digits, each split by a multiply and a shift).
#[inline]
fn eight_digits(n: u64) -> u64 {
    // Four-digit halves in 32-bit lanes, the high half first (lowest).
    let x = (n / 10_000) | ((n % 10_000) << 32);
    // x / 100 per lane: 10486 / 2^20 is 1/100 closely enough below 43,699.
    let hundreds = ((x * 10_486) >> 20) & 0x0000_007f_0000_007f;
    let x = hundreds | ((x - hundreds * 100) << 16);
    // x / 10 per 16-bit lane: 103 / 2^10 is 1/10 closely enough below 179.
    let tens = ((x * 103) >> 10) & 0x000f_000f_000f_000f;
    tens | ((x - tens * 10) << 8)
}

/// Writes the decimal digits of `n` at the start of `out` and returns how many, or `None`
/// when they do not fit (nothing is written then). Bytes of `out` past the digits may be
/// overwritten (up to eight from its start). The one decimal writer of the crate: headers,
/// the console prefix and responses.
#[inline]
pub(crate) fn put_decimal(n: u64, out: &mut [u8]) -> Option<usize> {
    if n < 100_000_000 {
        if let Some(lanes) = out.first_chunk_mut::<8>() {
            let digits = eight_digits(n);
            // Leading zero digits are the low zero bytes (all but the last for 0).
            let zeros = ((digits | 1 << 56).trailing_zeros() / 8) as usize;
            let ascii = (digits + 0x3030_3030_3030_3030) >> (8 * zeros);
            *lanes = ascii.to_le_bytes();
            return Some(8 - zeros);
        }
    }
    let len = decimal_len(n);
    write_decimal(n, out.get_mut(..len)?);
    Some(len)
}

/// Decimal digits of `n` in a small stack buffer.
pub(crate) struct Decimal {
    digits: [u8; 20],
    len: usize,
}

impl Decimal {
    pub(crate) fn new(n: u64) -> Self {
        let mut digits = [0u8; 20];
        // `u64::MAX` has 20 digits: they always fit.
        let len = put_decimal(n, &mut digits).unwrap_or(0);
        Decimal { digits, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.digits[..self.len]
    }
}

/// A small stack buffer for one header.
struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Line<N> {
    const fn new() -> Self {
        Line {
            buf: [0; N],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Formats `record` as printk's extended console format (`info_print_ext_header` +
/// `msg_print_ext_body`) into `out`, whose length is printk's buffer size
/// ([`CONSOLE_EXT_LOG_MAX`](crate::CONSOLE_EXT_LOG_MAX) up to 6.1,
/// [`PRINTK_MESSAGE_MAX`](crate::PRINTK_MESSAGE_MAX) later); returns the bytes written.
///
/// A record that does not fit is cut the way the kernel's `scnprintf`/`append_char` cut it:
/// an escape that does not fit is written partially (leaving e.g. a dangling `\`), a later
/// printable byte may still take the very last position, and the trailing `\n` is lost.
/// [`ExtFragments`] then makes the datagrams of the result.
pub fn format_kmsg(record: &KmsgRecord<'_>, out: &mut [u8]) -> usize {
    let mut header = Line::<96>::new();
    let fields = &record.fields;
    header.push(Decimal::new(u64::from(fields.prefix())).as_bytes());
    header.push(b",");
    header.push(Decimal::new(fields.seq).as_bytes());
    header.push(b",");
    header.push(Decimal::new(fields.ts_usec).as_bytes());
    header.push(&[b',', fields.flag.as_byte()]);
    if let Some(caller) = fields.caller {
        let (kind, n) = caller.parts();
        header.push(b",caller=");
        header.push(&[kind]);
        header.push(Decimal::new(u64::from(n)).as_bytes());
    }
    header.push(b";");
    let mut cursor = KernelCursor { buf: out, pos: 0 };
    cursor.scnprintf(header.as_bytes());
    cursor.ext_text(record.text, b'\n');
    for entry in record.dict {
        if entry.value.is_empty() && !record.keep_empty_values {
            continue;
        }
        cursor.append_char(b' ');
        cursor.ext_text(entry.key, b'=');
        cursor.ext_text(entry.value, b'\n');
    }
    cursor.pos
}

/// The bytes netconsole writes around the key and the value of one userdata or sysdata line:
/// ` `, `=` and `\n`. They are the format `" %s=%s\n"` of `update_userdata()` and
/// `calc_userdata_len()` in drivers/net/netconsole.c, and the 3 that `MAX_EXTRADATA_NAME_LEN`
/// (`MAX_USERDATA_NAME_LENGTH` before Linux 6.15) subtracts from the entry length for them
/// ("The number 3 comes from userdata entry format characters (' ', '=', '\n')").
pub(crate) const EXTRADATA_LINE_OVERHEAD: usize = 3;

/// The longest userdata or sysdata line, the NUL of `scnprintf` included:
/// `MAX_EXTRADATA_ENTRY_LEN` in drivers/net/netconsole.c (`MAX_USERDATA_ENTRY_LENGTH` before
/// Linux 6.15), the bound of every `scnprintf` of a line.
pub(crate) const MAX_EXTRADATA_ENTRY_LEN: usize = 256;

/// The buffer of a userdata value, its NUL included: `MAX_EXTRADATA_VALUE_LEN` in
/// drivers/net/netconsole.c (`MAX_USERDATA_VALUE_LENGTH` before Linux 6.15), the size of
/// `struct userdatum`'s `value`. `userdatum_value_store()` refuses a write of more bytes
/// (`-EMSGSIZE`); the value kept is at most one byte less, without its newline.
pub const MAX_EXTRADATA_VALUE_LEN: usize = 200;

/// The longest userdata key (its configfs item name): `MAX_EXTRADATA_NAME_LEN` in
/// drivers/net/netconsole.c (`MAX_USERDATA_NAME_LENGTH` before Linux 6.15), which
/// `userdatum_make_item()` checks. The kernel computes it as an entry
/// (`MAX_EXTRADATA_ENTRY_LEN`, 256 bytes, the NUL included) less the value
/// ([`MAX_EXTRADATA_VALUE_LEN`]) and the 3 bytes of ` `, `=` and `\n` around them.
///
/// ```
/// assert_eq!(netconsole_proto::MAX_EXTRADATA_NAME_LEN, 53);
/// ```
pub const MAX_EXTRADATA_NAME_LEN: usize =
    MAX_EXTRADATA_ENTRY_LEN - MAX_EXTRADATA_VALUE_LEN - EXTRADATA_LINE_OVERHEAD;

/// The length of one ` <key>=<value>\n` line as netconsole appends it (userdata, sysdata, and
/// the appended lines of a received record): the key, the value and
/// [`EXTRADATA_LINE_OVERHEAD`].
pub(crate) const fn extradata_line_len(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + EXTRADATA_LINE_OVERHEAD
}

/// Writes ` <key>=<value>\n` at the start of `out`, which holds at least
/// [`extradata_line_len`] bytes; returns that length.
pub(crate) fn put_extradata_line(key: &[u8], value: &[u8], out: &mut [u8]) -> usize {
    let mut pos = 0;
    for part in [&b" "[..], key, b"=", value, b"\n"] {
        out[pos..pos + part.len()].copy_from_slice(part);
        pos += part.len();
    }
    pos
}

/// The bytes [`format_userdata`] writes for `entries`: one line per entry with a value, as
/// `calc_userdata_len()` in drivers/net/netconsole.c counts them (it skips empty values too).
///
/// ```
/// use netconsole_proto::{format_userdata, userdata_len};
///
/// let entries: [(&[u8], &[u8]); 2] = [(b"host", b"web1"), (b"unset", b"")];
/// assert_eq!(userdata_len(&entries), b" host=web1\n".len());
/// let mut out = [0u8; 11];
/// assert_eq!(format_userdata(&entries, &mut out), Ok(11));
/// ```
pub fn userdata_len(entries: &[(&[u8], &[u8])]) -> usize {
    entries
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| extradata_line_len(k, v))
        .sum()
}

/// Formats configfs userdata as netconsole sends it: ` <key>=<value>\n` per entry, entries
/// with an empty value skipped, nothing escaped (`update_userdata()` in
/// drivers/net/netconsole.c). Returns the bytes written; `out` needs [`userdata_len`] bytes.
pub fn format_userdata(
    entries: &[(&[u8], &[u8])],
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let needed = userdata_len(entries);
    if out.len() < needed {
        return Err(BufferTooSmall { needed });
    }
    let mut pos = 0;
    for (key, value) in entries.iter().filter(|(_, v)| !v.is_empty()) {
        pos += put_extradata_line(key, value, &mut out[pos..]);
    }
    Ok(pos)
}

/// The sysdata lines of Linux 6.15+ (configfs `userdata/*_enabled`), each only when set,
/// always in this order: ` cpu=`, ` taskname=`, ` release=`, ` msgid=` (`prepare_sysdata()`
/// in drivers/net/netconsole.c; `prepare_extradata()` when sysdata came).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Sysdata<'a> {
    /// CPU that printed the record.
    pub cpu: Option<u32>,
    /// Task name (`comm`).
    pub taskname: Option<&'a [u8]>,
    /// Kernel release.
    pub release: Option<&'a [u8]>,
    /// Per-target message counter (from 1, wrapping).
    pub msgid: Option<u32>,
}

impl Sysdata<'_> {
    /// The key of `" cpu=%u\n"` in `sysdata_append_cpu_nr()` (drivers/net/netconsole.c).
    const CPU: &'static [u8] = b"cpu";
    /// The key of `" taskname=%s\n"` in `sysdata_append_taskname()`.
    const TASKNAME: &'static [u8] = b"taskname";
    /// The key of `" release=%s\n"` in `sysdata_append_release()`.
    const RELEASE: &'static [u8] = b"release";
    /// The key of `" msgid=%u\n"` in `sysdata_append_msgid()`.
    const MSGID: &'static [u8] = b"msgid";

    /// Calls `line` with the key and value of every line set, in the kernel's order.
    fn for_each_line(&self, mut line: impl FnMut(&[u8], &[u8])) {
        if let Some(cpu) = self.cpu {
            line(Self::CPU, Decimal::new(u64::from(cpu)).as_bytes());
        }
        if let Some(task) = self.taskname {
            line(Self::TASKNAME, task);
        }
        if let Some(release) = self.release {
            line(Self::RELEASE, release);
        }
        if let Some(msgid) = self.msgid {
            line(Self::MSGID, Decimal::new(u64::from(msgid)).as_bytes());
        }
    }

    /// The bytes [`format_into`](Self::format_into) writes: ` <key>=<value>\n` for each
    /// line set (numbers in decimal, as `%u` writes them).
    ///
    /// ```
    /// use netconsole_proto::Sysdata;
    ///
    /// let mut sysdata = Sysdata::default();
    /// sysdata.cpu = Some(12);
    /// sysdata.taskname = Some(b"kworker/0:1");
    /// assert_eq!(sysdata.formatted_len(), b" cpu=12\n taskname=kworker/0:1\n".len());
    /// ```
    pub fn formatted_len(&self) -> usize {
        let mut len = 0;
        self.for_each_line(|key, value| len += extradata_line_len(key, value));
        len
    }

    /// Writes the lines; returns the bytes written. `out` needs
    /// [`formatted_len`](Self::formatted_len) bytes.
    pub fn format_into(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let needed = self.formatted_len();
        let out = out.get_mut(..needed).ok_or(BufferTooSmall { needed })?;
        let mut pos = 0;
        self.for_each_line(|key, value| pos += put_extradata_line(key, value, &mut out[pos..]));
        Ok(pos)
    }
}

/// Per-target sending options (what the target's configuration adds to each message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SendOptions<'a> {
    /// Kernel release to prepend (`netconsole=+r`, configfs `release=1`).
    pub release: Option<&'a [u8]>,
    /// Userdata lines, already formatted (see [`format_userdata`]).
    pub userdata: &'a [u8],
    /// Sysdata lines, already formatted (see [`Sysdata::format_into`]).
    pub sysdata: &'a [u8],
    /// Mark as emergency transmission (`,ncemg=1`; reliable sender only).
    pub ncemg: bool,
    /// Reproduce Linux 6.9 to 6.13: when the last body bytes fill a fragment exactly and
    /// userdata remains, the kernel warns and sends neither that fragment nor the rest
    /// (`WARN_ON_ONCE(this_chunk <= 0)`; later kernels carry the userdata on in the next
    /// fragment). Default false.
    pub userdata_quirk_6_9: bool,
}

/// Why a message cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message needs fragmenting but has no `;` (the kernel warns and drops it).
    #[error("message to fragment has no ';'")]
    NoSemicolon,
    /// The header leaves no room for body bytes in a 1000-byte datagram.
    #[error("header too long to fragment")]
    HeaderTooLong,
}

/// The datagrams `send_ext_msg_udp` makes of one formatted message ([`format_kmsg`]) for one
/// target: release prepend, userdata and sysdata appended (6.9+; see [`format_userdata`],
/// [`Sysdata`]), and `ncfrag` fragmentation when the result exceeds 1000 bytes:
///
/// ```text
/// whole:    [release,]<header>;<body>[userdata][sysdata]          when it all fits in 1000 bytes
/// fragment: [release,]<header>[,ncemg=1],ncfrag=<off>/<total>;<chunk>
///           chunk = (body ++ userdata ++ sysdata)[off .. off + min(total - off, 1000 - header length)]
/// ```
///
/// The kernel's quirks at exactly 1000 bytes are reproduced: with a release prepend the
/// 1000th byte of an unfragmented datagram is the `scnprintf` terminator (NUL), and userdata
/// or sysdata that would reach exactly 1000 bytes lose their last byte; on request
/// ([`SendOptions::userdata_quirk_6_9`]) so is the 6.9–6.13 loss of the fragments after one
/// that the body fills exactly. `,ncemg=1` (the reliable sender's emergency mark, never sent
/// by Linux) goes before `ncfrag`.
///
/// ```
/// use netconsole_proto::{ExtFragments, SendOptions};
///
/// let mut body = b"6,7,8,-;".to_vec();
/// body.resize(1500, b'a');
/// let mut frags = ExtFragments::new(&body, SendOptions::default()).unwrap();
/// let mut out = [0u8; 1000];
/// let first = frags.write_next(&mut out).unwrap();
/// assert!(out[..first].starts_with(b"6,7,8,-,ncfrag=0/1492;"));
/// let second = frags.write_next(&mut out).unwrap();
/// assert!(out[..second].starts_with(b"6,7,8,-,ncfrag=978/1492;"));
/// assert_eq!(frags.write_next(&mut out), None);
/// ```
#[derive(Debug, Clone)]
pub struct ExtFragments<'a> {
    msg: &'a [u8],
    options: SendOptions<'a>,
    /// `;` position in `msg` when fragmenting.
    semi: usize,
    total: usize,
    offset: usize,
    fragmented: bool,
    done: bool,
}

impl<'a> ExtFragments<'a> {
    /// Prepares the datagrams for `msg` (as [`format_kmsg`] wrote it).
    pub fn new(msg: &'a [u8], options: SendOptions<'a>) -> Result<Self, SendError> {
        let release_len = options.release.map_or(0, |r| r.len() + 1);
        let emg_len = if options.ncemg { b",ncemg=1".len() } else { 0 };
        let extra = options.userdata.len() + options.sysdata.len();
        let whole = release_len + msg.len() + extra + emg_len;
        let fragmented = whole > MAX_PRINT_CHUNK;
        let semi = crate::scan::find(b';', msg);
        let semi = match (semi, fragmented || options.ncemg) {
            (Some(s), _) => s,
            (None, false) => 0,
            (None, true) => return Err(SendError::NoSemicolon),
        };
        let total = if fragmented {
            msg.len() - semi - 1 + extra
        } else {
            0
        };
        // The longest header must leave room for at least one byte.
        let longest = release_len + semi + emg_len + ncfrag_len(total, total);
        if fragmented && longest >= MAX_PRINT_CHUNK {
            return Err(SendError::HeaderTooLong);
        }
        Ok(ExtFragments {
            msg,
            options,
            semi,
            total,
            offset: 0,
            fragmented,
            done: false,
        })
    }

    /// Whether the message goes out in `ncfrag` fragments.
    pub const fn is_fragmented(&self) -> bool {
        self.fragmented
    }

    /// The fragmented body length (`total` of `ncfrag`), 0 when not fragmented.
    pub const fn total(&self) -> usize {
        self.total
    }

    #[cfg(feature = "alloc")]
    /// Body offset of the next fragment (0 before the first).
    pub(crate) const fn position(&self) -> usize {
        self.offset
    }

    #[cfg(feature = "alloc")]
    /// Whether every datagram has been written.
    pub(crate) const fn is_done(&self) -> bool {
        self.done
    }

    #[cfg(feature = "alloc")]
    /// Resumes at a body offset returned by [`ExtFragments::position`].
    pub(crate) fn resume_at(&mut self, offset: usize) {
        self.offset = offset;
    }

    /// Writes the next datagram into `out`; `None` when all have been written.
    pub fn write_next(&mut self, out: &mut [u8; MAX_PRINT_CHUNK]) -> Option<usize> {
        if self.done {
            return None;
        }
        if !self.fragmented {
            self.done = true;
            return Some(self.write_whole(out));
        }
        if self.offset >= self.total {
            self.done = true;
            return None;
        }
        let mut header = Line::<MAX_PRINT_CHUNK>::new();
        if let Some(release) = self.options.release {
            header.push(release);
            header.push(b",");
        }
        header.push(&self.msg[..self.semi]);
        if self.options.ncemg {
            header.push(b",ncemg=1");
        }
        header.push(b",ncfrag=");
        header.push(Decimal::new(self.offset as u64).as_bytes());
        header.push(b"/");
        header.push(Decimal::new(self.total as u64).as_bytes());
        header.push(b";");
        let head = header.as_bytes();
        out[..head.len()].copy_from_slice(head);
        let chunk = (self.total - self.offset).min(MAX_PRINT_CHUNK - head.len());
        let body_len = self.msg.len() - self.semi - 1;
        if self.options.userdata_quirk_6_9
            && self.total > body_len
            && self.offset < body_len
            && body_len - self.offset == MAX_PRINT_CHUNK - head.len()
        {
            self.done = true;
            return None;
        }
        let mut pos = head.len();
        let mut from = self.offset;
        let body = &self.msg[self.semi + 1..];
        for part in [body, self.options.userdata, self.options.sysdata] {
            if from >= part.len() {
                from -= part.len();
                continue;
            }
            let take = (part.len() - from).min(head.len() + chunk - pos);
            out[pos..pos + take].copy_from_slice(&part[from..from + take]);
            pos += take;
            from = 0;
            if pos == head.len() + chunk {
                break;
            }
        }
        self.offset += chunk;
        if self.offset >= self.total {
            self.done = true;
        }
        Some(pos)
    }

    fn write_whole(&self, out: &mut [u8; MAX_PRINT_CHUNK]) -> usize {
        let mut cursor = KernelCursor { buf: out, pos: 0 };
        let mut msg_len = self.msg.len();
        if self.options.ncemg {
            let (head, body) = self.msg.split_at(self.semi);
            cursor.scnprintf_parts(&[
                self.options.release.unwrap_or(&[]),
                if self.options.release.is_some() {
                    b","
                } else {
                    b""
                },
                head,
                b",ncemg=1",
                body,
            ]);
            msg_len += b",ncemg=1".len() + self.options.release.map_or(0, |r| r.len() + 1);
            cursor.pos = msg_len;
        } else if let Some(release) = self.options.release {
            // scnprintf(buf, 1000, "%s,%.*s", release, msg)
            cursor.scnprintf_parts(&[release, b",", self.msg]);
            msg_len += release.len() + 1;
            cursor.pos = msg_len;
        } else {
            cursor.buf[..msg_len].copy_from_slice(self.msg);
            cursor.pos = msg_len;
        }
        if !self.options.userdata.is_empty() {
            cursor.scnprintf(self.options.userdata);
        }
        if !self.options.sysdata.is_empty() {
            cursor.scnprintf(self.options.sysdata);
        }
        cursor.pos
    }
}

impl KernelCursor<'_> {
    /// `scnprintf` of several pieces at once (one format call).
    fn scnprintf_parts(&mut self, parts: &[&[u8]]) {
        let room = self.buf.len() - self.pos;
        if room == 0 {
            return;
        }
        let mut left = room - 1;
        let start = self.pos;
        let mut pos = start;
        for part in parts {
            let n = part.len().min(left);
            self.buf[pos..pos + n].copy_from_slice(&part[..n]);
            pos += n;
            left -= n;
        }
        self.buf[pos] = 0;
        self.pos = pos;
    }
}

/// Length of `,ncfrag=<offset>/<total>;`.
fn ncfrag_len(offset: usize, total: usize) -> usize {
    b",ncfrag=/;".len() + decimal_len(offset as u64) + decimal_len(total as u64)
}

/// Plain (non-extended) consoles: the console text cut into datagrams of at most 1000
/// bytes, at any byte, as `write_msg` / `send_msg_udp` do.
pub fn plain_chunks(console_text: &[u8]) -> core::slice::Chunks<'_, u8> {
    console_text.chunks(MAX_PRINT_CHUNK)
}

/// Whether a plain datagram is a chunk of [`plain_chunks`] that the next datagram from the
/// same sender continues, in the middle of a line: it is a whole [`MAX_PRINT_CHUNK`] and does
/// not end with `\n`. A record's console text always ends with `\n` (see
/// [`format_console`](crate::format_console)) and only its last chunk is shorter, so a chunk
/// that is not full, or ends with `\n`, ends the record or at least its line (a chunk cut
/// right after a `\n` inside a record leaves the next one starting with a line of its own,
/// prefix and all).
///
/// ```
/// use netconsole_proto::{format_console, plain_chunk_continues, plain_chunks, ConsoleOptions, ConsoleRecord};
///
/// let text = vec![b'x'; 1500];
/// let record = ConsoleRecord::new(6, 1, 2_000_000, &text);
/// let mut console = [0u8; 2048];
/// let len = format_console(&record, &ConsoleOptions::default(), &mut console);
/// let chunks: Vec<&[u8]> = plain_chunks(&console[..len]).collect();
/// assert_eq!(chunks.len(), 2);
/// assert!(plain_chunk_continues(chunks[0]));
/// assert!(!plain_chunk_continues(chunks[1]));
/// ```
pub fn plain_chunk_continues(datagram: &[u8]) -> bool {
    datagram.len() == MAX_PRINT_CHUNK && datagram.last() != Some(&b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CONSOLE_EXT_LOG_MAX, Caller};

    proptest::proptest! {
        #[test]
        fn put_decimal_writes_what_display_writes(
            value in proptest::prelude::any::<u64>(),
            shift in 0u32..64,
            room in 0usize..24,
        ) {
            // Every length of number, into buffers from too short to roomy.
            let value = value >> shift;
            let text = value.to_string();
            let mut out = [b'#'; 24];
            if let Some(len) = put_decimal(value, &mut out[..room]) {
                proptest::prop_assert_eq!(&out[..len], text.as_bytes());
                proptest::prop_assert!(len <= room);
                proptest::prop_assert!(out[room..].iter().all(|&b| b == b'#'));
            } else {
                proptest::prop_assert!(text.len() > room);
                proptest::prop_assert_eq!(out, [b'#'; 24]);
            }
        }
    }

    #[test]
    fn decimal_writes_what_display_writes() {
        // Around every power of ten, and the largest values.
        let powers = (0..20)
            .map(|p| 10u64.pow(p))
            .flat_map(|v| [v - 1, v, v + 1]);
        for value in powers.chain([u64::MAX - 1, u64::MAX]) {
            let text = value.to_string();
            assert_eq!(Decimal::new(value).as_bytes(), text.as_bytes());
            assert_eq!(decimal_len(value), text.len(), "{value}");
            // Into a buffer of exactly the digits' length, and one byte too short.
            let mut exact = [b'#'; 21];
            let len = text.len();
            assert_eq!(put_decimal(value, &mut exact[..len]), Some(len), "{value}");
            assert_eq!(&exact[..len], text.as_bytes());
            assert_eq!(exact[len], b'#', "{value}");
            let mut short = [b'#'; 21];
            assert_eq!(put_decimal(value, &mut short[..len - 1]), None, "{value}");
            assert_eq!(short, [b'#'; 21], "{value}");
        }
    }

    fn all(frags: &mut ExtFragments<'_>) -> Vec<Vec<u8>> {
        let mut out = [0u8; MAX_PRINT_CHUNK];
        let mut v = Vec::new();
        while let Some(n) = frags.write_next(&mut out) {
            v.push(out[..n].to_vec());
        }
        v
    }

    #[test]
    fn formats_like_kmsg() {
        let dict = [
            DictEntry {
                key: b"SUBSYSTEM",
                value: b"pci",
            },
            DictEntry {
                key: b"DEVICE",
                value: b"+pci:0000:00:03.0",
            },
        ];
        let mut record = KmsgRecord::new(6, 714, 7_464_018, b"pci 0000:00:03.0: x");
        record.dict = &dict;
        let mut out = [0u8; CONSOLE_EXT_LOG_MAX];
        let n = format_kmsg(&record, &mut out);
        assert_eq!(
            &out[..n],
            b"6,714,7464018,-;pci 0000:00:03.0: x\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:03.0\n"
        );
        record.fields.caller = Some(Caller::Cpu(3));
        record.fields.facility = 3;
        record.fields.flag = Flag::Cont;
        record.dict = &[];
        let n = format_kmsg(&record, &mut out);
        assert_eq!(
            &out[..n],
            b"30,714,7464018,c,caller=C3;pci 0000:00:03.0: x\n"
        );
    }

    #[test]
    fn cut_like_the_kernel() {
        // Header "1,2,3,-;" (8 bytes); buffer of 15: 7 body bytes.
        let record = KmsgRecord::new(1, 2, 3, b"ab\x01\x02 END");
        let mut out = [0u8; 15];
        let n = format_kmsg(&record, &mut out);
        // "ab" then "\x01" (4) = 6 bytes, the second escape gets "" (room 1 -> scnprintf
        // writes nothing), then ' ' takes the last slot.
        assert_eq!(&out[..n], b"1,2,3,-;ab\\x01 ");
        let mut out = [0u8; 13];
        let n = format_kmsg(&record, &mut out);
        assert_eq!(&out[..n], b"1,2,3,-;ab\\x ");
    }

    #[test]
    fn whole_datagram_with_release_and_extradata() {
        let msg = b"6,1,2,-;hi\n";
        let opts = SendOptions {
            release: Some(b"6.9.0"),
            userdata: b" k=v\n",
            sysdata: b" msgid=1\n",
            ..SendOptions::default()
        };
        let mut f = ExtFragments::new(msg, opts).unwrap();
        assert!(!f.is_fragmented());
        assert_eq!(
            all(&mut f),
            [b"6.9.0,6,1,2,-;hi\n k=v\n msgid=1\n".to_vec()]
        );
    }

    #[test]
    fn kernel_quirk_at_exactly_1000() {
        // release_len + msg_len == 1000: the last byte is scnprintf's NUL.
        let mut msg = b"6,1,2,-;".to_vec();
        msg.resize(995, b'a');
        msg.push(b'\n');
        let opts = SendOptions {
            release: Some(b"6.9"),
            ..SendOptions::default()
        };
        let v = all(&mut ExtFragments::new(&msg, opts).unwrap());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].len(), 1000);
        assert_eq!(v[0][999], 0);
        // Userdata reaching exactly 1000 loses its last byte.
        let opts = SendOptions {
            userdata: b" k=v\n",
            ..SendOptions::default()
        };
        let v = all(&mut ExtFragments::new(&msg[..995], opts).unwrap());
        assert_eq!(v[0].len(), 999);
        assert!(v[0].ends_with(b" k=v"));
    }

    #[test]
    fn fragments_body_then_extradata() {
        let mut msg = b"14,1,2,-;".to_vec();
        msg.extend(core::iter::repeat_n(b'x', 1000));
        msg.push(b'\n');
        let opts = SendOptions {
            userdata: b" a=b\n",
            sysdata: b" msgid=7\n",
            ..SendOptions::default()
        };
        let v = all(&mut ExtFragments::new(&msg, opts).unwrap());
        assert_eq!(v.len(), 2);
        assert!(v[0].starts_with(b"14,1,2,-,ncfrag=0/1015;"));
        assert_eq!(v[0].len(), 1000);
        let off = 1000 - b"14,1,2,-,ncfrag=0/1015;".len();
        let head = format!("14,1,2,-,ncfrag={off}/1015;");
        assert!(v[1].starts_with(head.as_bytes()));
        assert!(v[1].ends_with(b"x\n a=b\n msgid=7\n"));
    }

    #[test]
    fn linux_6_9_drops_a_fragment_filled_by_the_body() {
        // Body 1954 bytes + userdata 6: the first fragment ("...,ncfrag=0/1960;", 22 bytes)
        // takes 978 body bytes, the second ("...,ncfrag=978/1960;", 24 bytes) exactly the
        // remaining 976.
        let mut msg = b"6,1,2,-;".to_vec();
        msg.extend(core::iter::repeat_n(b'z', 1953));
        msg.push(b'\n');
        let mut opts = SendOptions {
            userdata: b" ab=c\n",
            ..SendOptions::default()
        };
        let fixed = all(&mut ExtFragments::new(&msg, opts).unwrap());
        assert_eq!(fixed.len(), 3);
        assert_eq!(fixed[1].len(), MAX_PRINT_CHUNK);
        assert!(fixed[1].starts_with(b"6,1,2,-,ncfrag=978/1960;zz"));
        assert_eq!(fixed[2], b"6,1,2,-,ncfrag=1954/1960; ab=c\n");
        opts.userdata_quirk_6_9 = true;
        assert_eq!(all(&mut ExtFragments::new(&msg, opts).unwrap()), fixed[..1]);
        // One body byte less: the userdata starts inside the second fragment, no quirk.
        let shorter = [&msg[..msg.len() - 2], b"\n"].concat();
        let plain = SendOptions {
            userdata_quirk_6_9: false,
            ..opts
        };
        assert_eq!(
            all(&mut ExtFragments::new(&shorter, opts).unwrap()),
            all(&mut ExtFragments::new(&shorter, plain).unwrap())
        );
    }

    #[test]
    fn emergency_mark() {
        let v = all(&mut ExtFragments::new(
            b"6,1,2,-;hi\n",
            SendOptions {
                ncemg: true,
                ..SendOptions::default()
            },
        )
        .unwrap());
        assert_eq!(v, [b"6,1,2,-,ncemg=1;hi\n".to_vec()]);
    }

    #[test]
    fn userdata_and_sysdata_lines() {
        let mut out = [0u8; 128];
        let n = format_userdata(
            &[(b"host", b"h1"), (b"empty", b""), (b"odd", b"a\\b")],
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..n], b" host=h1\n odd=a\\b\n");
        let s = Sysdata {
            cpu: Some(1),
            taskname: Some(b"dd"),
            release: Some(b"7.3.4"),
            msgid: Some(330),
        };
        let n = s.format_into(&mut out).unwrap();
        assert_eq!(
            &out[..n],
            b" cpu=1\n taskname=dd\n release=7.3.4\n msgid=330\n"
        );
    }

    #[test]
    fn userdata_and_sysdata_sizes_of_a_linux_7_3_target() {
        // The configfs target of the Linux 7.3 capture (configfs_userdata), its first message:
        // " rig_cfg=configfs_userdata\n host=qemu-tcg-guest\n odd=spaces and;semi,comma=eq\back\n"
        // " cpu=0\n taskname=init\n release=7.3.4+deb13-amd64\n msgid=1\n"
        let userdata: [(&[u8], &[u8]); 4] = [
            (b"rig_cfg", b"configfs_userdata"),
            (b"host", b"qemu-tcg-guest"),
            (b"unset", b""),
            (b"odd", b"spaces and;semi,comma=eq\\back"),
        ];
        assert_eq!(userdata_len(&userdata), 27 + 21 + 35);
        let mut out = [0u8; 83];
        assert_eq!(
            format_userdata(&userdata, &mut out[..82]),
            Err(BufferTooSmall { needed: 83 })
        );
        assert_eq!(format_userdata(&userdata, &mut out), Ok(83));
        assert_eq!(
            &out[..],
            b" rig_cfg=configfs_userdata\n host=qemu-tcg-guest\n odd=spaces and;semi,comma=eq\\back\n"
        );
        let sysdata = Sysdata {
            cpu: Some(0),
            taskname: Some(b"init"),
            release: Some(b"7.3.4+deb13-amd64"),
            msgid: Some(1),
        };
        assert_eq!(sysdata.formatted_len(), 7 + 15 + 27 + 9);
        let mut out = [0u8; 58];
        assert_eq!(
            sysdata.format_into(&mut out[..57]),
            Err(BufferTooSmall { needed: 58 })
        );
        assert_eq!(sysdata.format_into(&mut out), Ok(58));
        assert_eq!(
            &out[..],
            b" cpu=0\n taskname=init\n release=7.3.4+deb13-amd64\n msgid=1\n"
        );
        // The longest numbers `%u` writes: ten digits each.
        let numbers = Sysdata {
            cpu: Some(u32::MAX),
            msgid: Some(u32::MAX),
            ..Sysdata::default()
        };
        assert_eq!(
            numbers.formatted_len(),
            b" cpu=4294967295\n msgid=4294967295\n".len()
        );
        assert_eq!(Sysdata::default().formatted_len(), 0);
        assert_eq!(extradata_line_len(b"", b""), 3);
        assert_eq!(
            extradata_line_len(b"taskname", b"dd"),
            b" taskname=dd\n".len()
        );
    }

    #[test]
    fn a_long_sysdata_release_is_written_whole() {
        let release = [b'r'; 600];
        let sysdata = Sysdata {
            release: Some(&release),
            ..Sysdata::default()
        };
        assert_eq!(sysdata.formatted_len(), 610);
        let mut out = [0u8; 610];
        assert_eq!(sysdata.format_into(&mut out), Ok(610));
        assert!(out.starts_with(b" release=rrr") && out.ends_with(b"rrr\n"));
    }

    #[test]
    fn plain_chunking() {
        let text = [b'a'; 2500];
        let lens: Vec<usize> = plain_chunks(&text).map(<[u8]>::len).collect();
        assert_eq!(lens, [1000, 1000, 500]);
    }

    proptest::proptest! {
        /// Every chunk of a record's console text but the last is continued exactly when it
        /// ends inside a line; the last never is, so records never merge.
        #[test]
        fn plain_chunk_continues_inside_a_line_only(
            lines in proptest::collection::vec(0usize..1900, 1..4),
            buffer in proptest::sample::select(vec![1024usize, 2048]),
        ) {
            use crate::console::{ConsoleOptions, ConsoleRecord, format_console};
            let text: std::vec::Vec<u8> = lines
                .iter()
                .enumerate()
                .map(|(i, &len)| std::vec![b'a' + i as u8; len])
                .collect::<std::vec::Vec<_>>()
                .join(&b'\n');
            let record = ConsoleRecord::new(6, 1, 2_000_000, &text);
            let options = ConsoleOptions {
                buffer_size: buffer,
                ..ConsoleOptions::default()
            };
            let mut console = std::vec![0u8; buffer];
            let len = format_console(&record, &options, &mut console);
            let chunks: std::vec::Vec<&[u8]> = plain_chunks(&console[..len]).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let last = i + 1 == chunks.len();
                proptest::prop_assert_eq!(
                    plain_chunk_continues(chunk),
                    !last && !chunk.ends_with(b"\n")
                );
            }
        }
    }

    #[test]
    fn a_full_chunk_ending_a_line_is_not_continued() {
        let mut chunk = [b'x'; MAX_PRINT_CHUNK];
        assert!(plain_chunk_continues(&chunk));
        chunk[MAX_PRINT_CHUNK - 1] = b'\n';
        assert!(!plain_chunk_continues(&chunk));
        assert!(!plain_chunk_continues(&chunk[..999]));
        assert!(!plain_chunk_continues(b""));
    }
}

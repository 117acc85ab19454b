//! The extended record body: escaped text, then ` KEY=VALUE` lines (its byte diagram is on
//! [`Body`]); escaping and unescaping as printk does.

#[cfg(feature = "alloc")]
use alloc::{borrow::Cow, vec::Vec};

use crate::scan::find;

/// printk's format buffer up to Linux 6.1 (`CONSOLE_EXT_LOG_MAX`).
pub const CONSOLE_EXT_LOG_MAX: usize = 8192;
/// printk's format buffer in later kernels (`PRINTK_MESSAGE_MAX`, seen on Linux 7.3).
pub const PRINTK_MESSAGE_MAX: usize = 2048;

/// The output buffer is too small for the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("output buffer too small: {needed} bytes needed")]
pub struct BufferTooSmall {
    /// Bytes the whole result needs.
    pub needed: usize,
}

/// The body of one extended record, split into text and lines, borrowing the datagram:
/// escaped text, then ` KEY=VALUE` lines.
///
/// ```text
///  <escaped text>\n[ <KEY>=<VALUE>\n]*[ <key>=<value>\n]*[ cpu=<n>\n][ taskname=<comm>\n][ release=<r>\n][ msgid=<n>\n]
///  \_____________/ \__________________/ \___________________/ \_____________________________________________________/
///   printk text     dictionary (printk,  userdata (6.9+,        sysdata (6.15+, configfs), each only when enabled
///   every byte      escaped; 5.10+ only  configfs, values
///   < 0x20, >= 0x7f SUBSYSTEM, DEVICE)   sent unescaped)
///   or `\` as \xNN
/// ```
///
/// printk formats the header, text and dictionary into one buffer (8192 bytes,
/// [`CONSOLE_EXT_LOG_MAX`], up to Linux 6.1; 2048 bytes, [`PRINTK_MESSAGE_MAX`], in later kernels,
/// seen on 7.3). A record that does not fit is cut at the buffer's end: it then has no
/// trailing `\n`, may end inside an escape (a dangling `\`), and netconsole appends userdata
/// and sysdata directly after it, on the same line. [`Body::parse_limited`] splits such a body
/// exactly when given that limit; [`Body::parse`] assumes the record was not cut. A line
/// crossing the limit is taken as cut only when it is the text or a ` SUBSYSTEM=`/` DEVICE=`
/// line (the only dictionary lines kernels with the 2048-byte limit write); otherwise the
/// record fitted and the crossing line is userdata, kept whole. (Userdata named `SUBSYSTEM`
/// or `DEVICE` right after a record that fitted exactly would be misread; no kernel
/// output tells the two apart.)
///
/// Escapes: `\xNN` with two hex digits (the kernel writes lowercase; uppercase is accepted).
/// A `\` not followed by `x` and two hex digits is a *malformed escape*: unescaping
/// ([`unescape_into`]) keeps its bytes literally and counts it, never fails and never panics.
/// Userdata values are sent unescaped, so a literal `\` in them (e.g. `eq\back`) comes back
/// unchanged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body<'a> {
    text: &'a [u8],
    text_terminated: bool,
    lines: &'a [u8],
    /// Index in `lines` where the printk part was cut, if a line crosses it.
    cut: Option<usize>,
}

impl<'a> Body<'a> {
    /// Splits a body that was not cut by the kernel's format limit: the text runs to the
    /// first `\n` (or to the end, unterminated), the lines follow.
    #[inline]
    pub fn parse(body: &'a [u8]) -> Self {
        Self::split(body, usize::MAX)
    }

    /// Splits a body knowing printk's format limit (`format_limit`, e.g.
    /// [`PRINTK_MESSAGE_MAX`]) and the printk header length (`kernel_header_len`, see
    /// [`crate::Header::kernel_len`]). When the printk part was cut, the line crossing the
    /// cut ends there unterminated and what follows (userdata, sysdata) is split into lines.
    pub fn parse_limited(body: &'a [u8], kernel_header_len: usize, format_limit: usize) -> Self {
        Self::split(body, format_limit.saturating_sub(kernel_header_len))
    }

    #[inline]
    fn split(body: &'a [u8], printk_max: usize) -> Self {
        match find(b'\n', body) {
            Some(nl) if nl < printk_max => {
                let lines = &body[nl + 1..];
                let cut = (printk_max - nl - 1 < lines.len()).then_some(printk_max - nl - 1);
                Body {
                    text: &body[..nl],
                    text_terminated: true,
                    lines,
                    cut: cut.filter(|&c| {
                        c > 0 && !ends_line_at(lines, c) && dictionary_up_to(lines, c)
                    }),
                }
            }
            _ if body.len() > printk_max => Body {
                text: &body[..printk_max],
                text_terminated: false,
                lines: &body[printk_max..],
                cut: None,
            },
            _ => Body {
                text: body,
                text_terminated: false,
                lines: &[],
                cut: None,
            },
        }
    }

    /// The escaped text (without its `\n`).
    pub const fn text(&self) -> &'a [u8] {
        self.text
    }

    /// Whether the text ended with `\n`; false for most records cut by the format limit (or
    /// a body that is not a whole record). A cut can leave the limit's last byte for the
    /// `\n` (printk writes a partial escape with `scnprintf`, which keeps that byte back),
    /// so a terminated text may still have been cut: see [`Body::text_cut`].
    pub const fn text_terminated(&self) -> bool {
        self.text_terminated
    }

    /// Whether the text shows that printk's format limit cut it: no `\n` after it, or an
    /// escape left unfinished at its end (in printk's escaped text every `\` starts a
    /// four-byte `\xNN`). A cut that dropped whole escapes and still had room for the `\n`
    /// leaves bytes identical to an uncut record's, and is not seen.
    ///
    /// ```
    /// use netconsole_proto::Body;
    ///
    /// assert!(!Body::parse(b"ok \\x0a\n").text_cut());
    /// assert!(Body::parse(b"cut \\x0\n").text_cut()); // `\x0a` cut at its last digit
    /// assert!(Body::parse(b"no newline").text_cut());
    /// ```
    pub fn text_cut(&self) -> bool {
        // A `\` among the last three bytes (three compares, not a `memchr` call).
        let dangling = matches!(self.text, [.., b'\\'] | [.., b'\\', _] | [.., b'\\', _, _]);
        !self.text_terminated || dangling
    }

    /// The raw bytes after the text line: dictionary, userdata and sysdata lines.
    pub const fn raw_lines(&self) -> &'a [u8] {
        self.lines
    }

    /// The ` KEY=VALUE` lines in order (dictionary, then userdata, then sysdata).
    #[inline]
    pub fn lines(&self) -> impl Iterator<Item = Line<'a>> + Clone + use<'a> {
        Lines {
            rest: self.lines,
            cut: self.cut,
        }
    }
}

/// Whether the lines up to the one holding position `cut` can all be printk's dictionary
/// (at most ` SUBSYSTEM=` and ` DEVICE=`, the only lines 5.10+ kernels write, and the only
/// kernels with the 2048-byte limit). Otherwise the line crossing the limit is userdata
/// after a record that was not cut, and must not be split.
fn dictionary_up_to(lines: &[u8], cut: usize) -> bool {
    let mut start = 0;
    for _ in 0..2 {
        let line = &lines[start..];
        if !(line.starts_with(b" SUBSYSTEM=") || line.starts_with(b" DEVICE=")) {
            return false;
        }
        match find(b'\n', line) {
            Some(nl) if start + nl < cut => start += nl + 1,
            _ => return true,
        }
    }
    false
}

/// Whether `lines[..cut]` ends exactly at a line end, i.e. the cut falls on a boundary.
fn ends_line_at(lines: &[u8], cut: usize) -> bool {
    lines.get(cut - 1) == Some(&b'\n')
}

/// One line after the text: ` KEY=VALUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line without its leading space and trailing `\n`.
    pub raw: &'a [u8],
    /// Whether the line began with a space, as every line the kernel writes does.
    pub leading_space: bool,
    /// Whether the line ended with `\n` (false when cut by the format limit or at the end).
    pub terminated: bool,
}

impl<'a> Line<'a> {
    /// The key: the bytes before the first `=` (all of them when there is none).
    #[inline]
    pub fn key(&self) -> &'a [u8] {
        match find(b'=', self.raw) {
            Some(eq) => &self.raw[..eq],
            None => self.raw,
        }
    }

    /// The value: the bytes after the first `=` (empty when there is none).
    #[inline]
    pub fn value(&self) -> &'a [u8] {
        match find(b'=', self.raw) {
            Some(eq) => &self.raw[eq + 1..],
            None => &[],
        }
    }
}

/// Iterator over the lines of a [`Body`] ([`Body::lines`]).
#[derive(Debug, Clone)]
struct Lines<'a> {
    rest: &'a [u8],
    cut: Option<usize>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    #[inline]
    fn next(&mut self) -> Option<Line<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let nl = find(b'\n', self.rest);
        let (end, terminated) = match (nl, self.cut) {
            (Some(nl), Some(cut)) if cut <= nl => (cut, false),
            (None, Some(cut)) if cut < self.rest.len() => (cut, false),
            (Some(nl), _) => (nl, true),
            (None, _) => (self.rest.len(), false),
        };
        let (line, rest) = self.rest.split_at(end);
        let consumed = end + usize::from(terminated);
        self.rest = if terminated { &rest[1..] } else { rest };
        if let Some(cut) = self.cut {
            self.cut = cut.checked_sub(consumed).filter(|&c| c > 0);
        }
        let (raw, leading_space) = match line.split_first() {
            Some((b' ', raw)) => (raw, true),
            _ => (line, false),
        };
        Some(Line {
            raw,
            leading_space,
            terminated,
        })
    }
}

/// The result of unescaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unescaped {
    /// Bytes written.
    pub len: usize,
    /// Malformed escapes met (kept literally).
    pub malformed: usize,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one escape at the start of `src` (which begins with `\`).
fn decode_escape(src: &[u8]) -> Option<u8> {
    match src {
        [b'\\', b'x', hi, lo, ..] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
        _ => None,
    }
}

/// The length of `src` once unescaped.
pub fn unescaped_len(src: &[u8]) -> usize {
    let mut len = 0;
    let mut i = 0;
    while let Some(pos) = find(b'\\', &src[i..]) {
        len += pos;
        i += pos;
        if decode_escape(&src[i..]).is_some() {
            len += 1;
            i += 4;
        } else {
            len += 1;
            i += 1;
        }
    }
    len + src.len() - i
}

/// Unescapes `src` into `dst` without allocating.
pub fn unescape_into(src: &[u8], dst: &mut [u8]) -> Result<Unescaped, BufferTooSmall> {
    // Unescaping never lengthens, so a buffer as long as `src` always suffices.
    if dst.len() < src.len() {
        let needed = unescaped_len(src);
        if dst.len() < needed {
            return Err(BufferTooSmall { needed });
        }
    }
    let mut out = 0;
    let mut malformed = 0;
    let mut i = 0;
    while let Some(pos) = find(b'\\', &src[i..]) {
        dst[out..out + pos].copy_from_slice(&src[i..i + pos]);
        out += pos;
        i += pos;
        if let Some(byte) = decode_escape(&src[i..]) {
            dst[out] = byte;
            i += 4;
        } else {
            dst[out] = b'\\';
            malformed += 1;
            i += 1;
        }
        out += 1;
    }
    let tail = src.len() - i;
    dst[out..out + tail].copy_from_slice(&src[i..]);
    Ok(Unescaped {
        len: out + tail,
        malformed,
    })
}

/// Unescapes `src`, borrowing it when it holds no `\` at all.
/// Returns the bytes and the number of malformed escapes kept literally.
#[cfg(feature = "alloc")]
pub fn unescape(src: &[u8]) -> (Cow<'_, [u8]>, usize) {
    if find(b'\\', src).is_none() {
        return (Cow::Borrowed(src), 0);
    }
    let mut out = alloc::vec![0; unescaped_len(src)];
    let Ok(done) = unescape_into(src, &mut out) else {
        unreachable!("buffer sized by unescaped_len")
    };
    (Cow::Owned(out), done.malformed)
}

/// Whether printk escapes this byte: below 0x20, from 0x7f, and the backslash
/// (`msg_add_ext_text` in `kernel/printk/printk.c`).
pub(crate) const fn needs_escape(b: u8) -> bool {
    b < b' ' || b >= 0x7f || b == b'\\'
}

/// The length of `src` once escaped as printk does.
pub fn escaped_len(src: &[u8]) -> usize {
    src.len() + 3 * src.iter().filter(|&&b| needs_escape(b)).count()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Escapes `src` as printk does (`\xNN`, lowercase) into `dst`.
pub fn escape_into(src: &[u8], dst: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let needed = escaped_len(src);
    if dst.len() < needed {
        return Err(BufferTooSmall { needed });
    }
    let mut out = 0;
    let mut rest = src;
    while !rest.is_empty() {
        let run = crate::scan::find_escape(rest).unwrap_or(rest.len());
        dst[out..out + run].copy_from_slice(&rest[..run]);
        out += run;
        let Some(&b) = rest.get(run) else {
            break;
        };
        dst[out..out + 4].copy_from_slice(&[
            b'\\',
            b'x',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 15)],
        ]);
        out += 4;
        rest = &rest[run + 1..];
    }
    Ok(out)
}

/// Escapes `src` as printk does into a new vector.
#[cfg(feature = "alloc")]
pub fn escape(src: &[u8]) -> Vec<u8> {
    let mut out = alloc::vec![0; escaped_len(src)];
    let Ok(_) = escape_into(src, &mut out) else {
        unreachable!("buffer sized by escaped_len")
    };
    out
}

/// Escapes, as printk would, every byte a kernel never sends raw in an extended record's
/// text, and keeps the rest (printable ASCII, the `\` of the kernel's own `\xNN`
/// escapes included): a received wire text made safe for a terminal or a text log.
/// Borrows `text` when a kernel could have sent it as it is.
///
/// ```
/// use netconsole_proto::escape_stray;
/// assert_eq!(&*escape_stray(b"tab\\x09 ok"), b"tab\\x09 ok"); // already the kernel's form
/// assert_eq!(&*escape_stray(b"\x1b[2J\r"), b"\\x1b[2J\\x0d"); // a raw ESC and CR
/// ```
#[cfg(feature = "alloc")]
pub fn escape_stray(text: &[u8]) -> Cow<'_, [u8]> {
    let stray = |b: u8| needs_escape(b) && b != b'\\';
    if !text.iter().any(|&b| stray(b)) {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    for &b in text {
        if stray(b) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte printk escapes but the backslash comes out as `escape` writes it; the
    /// backslash and printable ASCII stay, and a clean text is borrowed.
    #[test]
    fn escape_stray_escapes_what_printk_would_but_the_backslash() {
        for b in 0..=255u8 {
            let text = [b'a', b, b'z'];
            let got = escape_stray(&text);
            let mut want = alloc::vec![b'a'];
            if b == b'\\' || !needs_escape(b) {
                want.push(b);
                assert!(matches!(got, Cow::Borrowed(_)), "byte {b:#04x}");
            } else {
                want.extend_from_slice(&escape(&[b]));
            }
            want.push(b'z');
            assert_eq!(&*got, &want[..], "byte {b:#04x}");
        }
    }

    /// `text_cut` is its definition: no `\n` after the text, or a `\` among its last three
    /// bytes; every text of up to six bytes of `a`, `\`, `x`, `0`, with and without `\n`.
    #[test]
    fn text_cut_is_a_backslash_in_the_last_three_bytes() {
        let alphabet = [b'a', b'\\', b'x', b'0'];
        for len in 0..=6u32 {
            for n in 0..4usize.pow(len) {
                let text: Vec<u8> = (0..len).map(|i| alphabet[n / 4usize.pow(i) % 4]).collect();
                let tail = &text[text.len().saturating_sub(3)..];
                for terminated in [false, true] {
                    let mut body = text.clone();
                    if terminated {
                        body.push(b'\n');
                    }
                    let expected = !terminated || tail.contains(&b'\\');
                    assert_eq!(Body::parse(&body).text_cut(), expected, "{body:?}");
                }
            }
        }
    }

    #[test]
    fn a_cut_shows_in_a_missing_newline_or_an_unfinished_escape() {
        for (body, cut) in [
            (&b"whole \\x5c\n SUBSYSTEM=net\n"[..], false),
            (b"\\x0a\n", false),
            (b"ab\n", false),
            (b"\n", false),
            (b"cut at the backslash \\\n", true),
            (b"cut after x \\x\n", true),
            (b"cut after a digit \\x0\n", true),
            (b"\\x\n", true),
            (b"no newline", true),
            (b"", true),
        ] {
            assert_eq!(Body::parse(body).text_cut(), cut, "{}", body.escape_ascii());
        }
    }

    #[test]
    fn splits_text_and_dictionary() {
        let b =
            Body::parse(b"pci 0000:00:03.0: BAR 0\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:03.0\n");
        assert_eq!(b.text(), b"pci 0000:00:03.0: BAR 0");
        assert!(b.text_terminated());
        let lines: Vec<_> = b.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].key(), lines[0].value()),
            (&b"SUBSYSTEM"[..], &b"pci"[..])
        );
        assert_eq!(lines[1].value(), b"+pci:0000:00:03.0");
        assert!(lines.iter().all(|l| l.terminated && l.leading_space));
    }

    #[test]
    fn cut_record_followed_by_userdata() {
        // Linux 7.3: header 17 bytes + 2031 bytes cut at 2048, then userdata on the same line.
        let mut body = Vec::new();
        body.extend_from_slice(b"rig-long-ctl ");
        while body.len() < 2029 {
            body.extend_from_slice(b"\\x01");
        }
        body.truncate(2029);
        body.extend_from_slice(b"\\ ");
        assert_eq!(body.len(), 2031);
        body.extend_from_slice(b" rig_cfg=changed\n msgid=330\n");
        let b = Body::parse_limited(&body, 17, PRINTK_MESSAGE_MAX);
        assert_eq!(b.text().len(), 2031);
        assert!(b.text().ends_with(b"\\ "));
        assert!(!b.text_terminated());
        let lines: Vec<_> = b.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].raw, b"rig_cfg=changed");
        assert_eq!(lines[1].raw, b"msgid=330");
        // Without the limit the userdata would be glued to the text.
        assert_eq!(Body::parse(&body).text().len(), 2031 + 16);
    }

    #[test]
    fn cut_inside_dictionary_line() {
        // Limit 40, header 10: the printk part is 30 body bytes, cut inside SUBSYSTEM=.
        let body = b"0123456789\n SUBSYSTEM=pcixxxxx rig=1\n";
        let b = Body::parse_limited(body, 10, 40);
        let lines: Vec<_> = b.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].raw, b"SUBSYSTEM=pcixxxxx");
        assert!(!lines[0].terminated);
        assert_eq!(lines[1].raw, b"rig=1");
        assert!(lines[1].leading_space && lines[1].terminated);
    }

    #[test]
    fn long_record_followed_by_userdata_is_not_cut() {
        // A record that fits (header 10 + 30 body bytes < 45) followed by userdata crossing
        // the limit: the userdata line stays whole.
        let body = b"0123456789abcdef\n SUBSYSTEM=x\n host=long-host-name\n msgid=1\n";
        let b = Body::parse_limited(body, 10, 45);
        let lines: Vec<_> = b.lines().map(|l| l.raw).collect();
        assert_eq!(
            lines,
            [&b"SUBSYSTEM=x"[..], b"host=long-host-name", b"msgid=1"]
        );
    }

    #[test]
    fn unescape_and_malformed() {
        let src = br"a\x0ab\x5c\x08\ \xZZ\x4";
        let mut out = [0u8; 32];
        let u = unescape_into(src, &mut out).unwrap();
        assert_eq!(&out[..u.len], b"a\nb\\\x08\\ \\xZZ\\x4");
        assert_eq!(u.malformed, 3);
        assert_eq!(unescaped_len(src), u.len);
        assert_eq!(
            unescape_into(src, &mut [0u8; 3]),
            Err(BufferTooSmall { needed: u.len })
        );
        let (cow, malformed) = unescape(b"plain");
        assert!(matches!(cow, Cow::Borrowed(b"plain")));
        assert_eq!(malformed, 0);
    }

    #[test]
    fn escape_matches_kmsg() {
        // From linux-7.3/ext kmsg.raw, rig-spec-01.
        let raw = b"ctl: tab[\t] cr[\r] esc[\x1b] del[\x7f] bell[\x07] backslash[\\] end";
        assert_eq!(
            escape(raw),
            &br"ctl: tab[\x09] cr[\x0d] esc[\x1b] del[\x7f] bell[\x07] backslash[\x5c] end"[..]
        );
    }
}

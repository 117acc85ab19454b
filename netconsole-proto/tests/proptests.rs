//! Property tests: every codec round-trips, every parser survives arbitrary input.

use core::time::Duration;

use netconsole_proto::{
    Body, CONSOLE_EXT_LOG_MAX, Caller, DEFAULT_MAX_TOTAL, Datagram, DictEntry, ExtFragments,
    ExtRecord, Flag, FragmentedRecord, KmsgRecord, MAX_PRINT_CHUNK, MAX_RESPONSE, Reassembly,
    RecordFields, Response, ResponseError, SendOptions, Sender, SenderConfig, encode_response,
    escape, format_kmsg, param, unescape,
};
use netpoll_frame::Instant;
use proptest::prelude::*;

fn flag() -> impl Strategy<Value = Flag> {
    prop_oneof![Just(Flag::Normal), Just(Flag::Cont), Just(Flag::ContMore)]
}

fn caller() -> impl Strategy<Value = Option<Caller>> {
    prop_oneof![
        Just(None),
        any::<u32>().prop_map(|n| Some(Caller::Task(n))),
        any::<u32>().prop_map(|n| Some(Caller::Cpu(n))),
    ]
}

/// Dictionary keys cannot hold `=` (it is not escaped, so it would end the key).
fn dict() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<u8>().prop_filter("no =", |b| *b != b'='), 1..12),
            prop::collection::vec(any::<u8>(), 1..60),
        ),
        0..4,
    )
}

fn datagrams(msg: &[u8], options: SendOptions<'_>) -> Vec<Vec<u8>> {
    let mut frags = ExtFragments::new(msg, options).unwrap();
    let mut out = [0u8; MAX_PRINT_CHUNK];
    let mut v = Vec::new();
    while let Some(n) = frags.write_next(&mut out) {
        v.push(out[..n].to_vec());
    }
    v
}

/// printk's formatting written the obvious way, one byte at a time, with `scnprintf` and
/// `append_char` semantics, into a buffer of `size` bytes.
fn reference_format(
    header: &[u8],
    text: &[u8],
    dict: &[(Vec<u8>, Vec<u8>)],
    size: usize,
) -> Vec<u8> {
    fn scnprintf(out: &mut Vec<u8>, size: usize, bytes: &[u8]) {
        let room = size - out.len();
        if room > 0 {
            out.extend_from_slice(&bytes[..bytes.len().min(room - 1)]);
        }
    }
    fn append_char(out: &mut Vec<u8>, size: usize, c: u8) {
        if out.len() < size {
            out.push(c);
        }
    }
    fn ext_text(out: &mut Vec<u8>, size: usize, text: &[u8], endc: u8) {
        for &c in text {
            if !(b' '..0x7f).contains(&c) || c == b'\\' {
                scnprintf(out, size, format!("\\x{c:02x}").as_bytes());
            } else {
                append_char(out, size, c);
            }
        }
        append_char(out, size, endc);
    }
    let mut out = Vec::new();
    scnprintf(&mut out, size, header);
    ext_text(&mut out, size, text, b'\n');
    for (key, value) in dict {
        append_char(&mut out, size, b' ');
        ext_text(&mut out, size, key, b'=');
        ext_text(&mut out, size, value, b'\n');
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The formatter cuts records exactly where a byte-at-a-time printk would, for any
    /// buffer size.
    #[test]
    fn format_cut_matches_byte_at_a_time_printk(
        text in prop::collection::vec(prop_oneof![any::<u8>(), 0x20u8..0x7f], 0..600),
        dict in dict(),
        size in 0usize..2600,
    ) {
        let entries: Vec<DictEntry<'_>> =
            dict.iter().map(|(k, v)| DictEntry { key: k, value: v }).collect();
        let mut record = KmsgRecord::new(6, 77, 123, &text);
        record.dict = &entries;
        let mut out = vec![0u8; size];
        let n = format_kmsg(&record, &mut out);
        let expected = reference_format(b"6,77,123,-;", &text, &dict, size);
        prop_assert_eq!(&out[..n], &expected[..]);
    }

    /// format → fragment → parse → reassemble → unescape gives back every field and byte.
    #[test]
    fn format_then_parse_is_identity(
        level in 0u8..8,
        facility in any::<u8>(),
        seq in any::<u64>(),
        ts_usec in any::<u64>(),
        flag in flag(),
        caller in caller(),
        text in prop::collection::vec(any::<u8>(), 0..1500),
        dict in dict(),
        release in prop::option::of("[0-9a-z+_-]{0,12}\\.[0-9a-z+_.-]{0,12}"),
    ) {
        let entries: Vec<DictEntry<'_>> =
            dict.iter().map(|(k, v)| DictEntry { key: k, value: v }).collect();
        let fields = RecordFields { seq, ts_usec, level, facility, flag, caller };
        let mut record = KmsgRecord::from_fields(fields, &text);
        record.dict = &entries;
        let mut buf = vec![0u8; CONSOLE_EXT_LOG_MAX];
        let n = format_kmsg(&record, &mut buf);
        prop_assert!(n < CONSOLE_EXT_LOG_MAX);
        let mut options = SendOptions::default();
        options.release = release.as_deref().map(str::as_bytes);
        let sent = datagrams(&buf[..n], options);
        prop_assert!(sent.iter().all(|d| d.len() <= MAX_PRINT_CHUNK));
        if let Some(r) = &release {
            if r.len() + 1 + n == MAX_PRINT_CHUNK {
                // The kernel's quirk: scnprintf's terminator replaces the last byte.
                prop_assert_eq!(sent.len(), 1);
                prop_assert_eq!(sent[0][MAX_PRINT_CHUNK - 1], 0);
                prop_assert_eq!(&sent[0][r.len() + 1..MAX_PRINT_CHUNK - 1], &buf[..n - 1]);
                return Ok(());
            }
        }
        let mut whole = None;
        let mut frag: Option<FragmentedRecord> = None;
        for d in &sent {
            let Ok(Datagram::Extended(r)) = Datagram::parse(d) else {
                return Err(TestCaseError::fail("not an extended datagram"));
            };
            prop_assert_eq!(r.header.release, options.release);
            if r.is_fragment() {
                match frag.as_mut() {
                    Some(f) => { f.push(&r).unwrap(); }
                    None => frag = Some(FragmentedRecord::new(&r, DEFAULT_MAX_TOTAL).unwrap()),
                }
            } else {
                whole = Some(netconsole_proto::OwnedRecord::from_parts(&r.header, r.body));
            }
        }
        let got = match (whole, frag) {
            (Some(w), None) => w,
            (None, Some(f)) => f.to_record().unwrap(),
            _ => return Err(TestCaseError::fail("mixed whole and fragments")),
        };
        prop_assert_eq!(got.fields, fields);
        let body = got.split_body();
        prop_assert!(body.text_terminated());
        let (decoded, malformed) = unescape(body.text());
        prop_assert_eq!(malformed, 0);
        prop_assert_eq!(&decoded[..], &text[..]);
        let lines: Vec<(Vec<u8>, Vec<u8>)> = body
            .lines()
            .map(|l| (unescape(l.key()).0.into_owned(), unescape(l.value()).0.into_owned()))
            .collect();
        prop_assert_eq!(lines, dict);
    }

    /// Any permutation of a record's fragments, with duplicates, reassembles to the same bytes.
    #[test]
    fn fragments_in_any_order_reassemble(
        body in prop::collection::vec(any::<u8>(), 1..6000),
        order in Just((0..16usize).collect::<Vec<_>>()).prop_shuffle(),
        duplicates in prop::collection::vec(0..16usize, 0..8),
    ) {
        let mut msg = b"14,1234,5678901,c;".to_vec();
        msg.extend_from_slice(&body);
        let sent = datagrams(&msg, SendOptions::default());
        let n = sent.len();
        let mut feed: Vec<&Vec<u8>> = order.iter().filter(|&&i| i < n).map(|&i| &sent[i]).collect();
        feed.extend(duplicates.iter().map(|&i| &sent[i % n]));
        let mut record: Option<FragmentedRecord> = None;
        let mut whole = None;
        for d in feed {
            let r = ExtRecord::parse(d).unwrap();
            if !r.is_fragment() {
                whole = Some(r.body.to_vec());
                continue;
            }
            match record.as_mut() {
                Some(f) => { f.push(&r).unwrap(); }
                None => record = Some(FragmentedRecord::new(&r, DEFAULT_MAX_TOTAL).unwrap()),
            }
        }
        let got = match record {
            Some(f) => f.to_record().unwrap().body,
            None => whole.unwrap(),
        };
        prop_assert_eq!(got, body);
    }

    /// The response encoder round-trips, never exceeds 1000 bytes and only stops when the
    /// next entry would not fit.
    #[test]
    fn response_round_trips(
        ack in prop_oneof![any::<u64>(), Just(u64::MAX)],
        steps in prop::collection::vec(1u64..1_000_000_000, 0..400),
    ) {
        let mut missing = Vec::new();
        let mut seq = ack;
        for step in steps {
            // After an ack of u64::MAX (nothing retired), the list starts anywhere from 0.
            let next = if seq == u64::MAX && missing.is_empty() {
                Some(step - 1)
            } else {
                seq.checked_add(step)
            };
            match next {
                Some(next) => { missing.push(next); seq = next; }
                None => break,
            }
        }
        let mut out = [0u8; 2000];
        let (len, count) = encode_response(ack, &missing, &mut out).unwrap();
        prop_assert!(len <= MAX_RESPONSE);
        let r = Response::parse(&out[..len]).unwrap();
        prop_assert_eq!(r.ack(), ack);
        prop_assert_eq!(r.missing().collect::<Vec<_>>(), &missing[..count]);
        if let Some(next) = missing.get(count) {
            prop_assert!(len + 1 + next.to_string().len() > MAX_RESPONSE);
        }
    }

    /// The response parser gives what a byte-at-a-time reading of the format gives, error
    /// included, on packets of digits and spaces (numbers of 0 to 25 digits, leading zeros,
    /// double and trailing spaces, values past `u64::MAX`).
    #[test]
    fn response_parser_matches_the_format(
        pieces in prop::collection::vec(
            prop_oneof![
                "[0-9]{1,25}",
                "[1-9][0-9]{0,19}",
                Just(String::new()),
                Just("18446744073709551615".to_string()),
                Just("18446744073709551616".to_string()),
            ],
            1..12,
        ),
        magic in prop_oneof![Just("ncrx"), Just("ncrx"), Just("ncrX")],
    ) {
        let packet = format!("{magic}{}", pieces.join(" "));
        let got = Response::parse(packet.as_bytes())
            .map(|r| (r.ack(), r.missing().collect::<Vec<_>>()));
        prop_assert_eq!(got, reference_response(packet.as_bytes()));
    }

    /// printk escaping round-trips for any bytes.
    #[test]
    fn escape_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let escaped = escape(&bytes);
        prop_assert!(escaped.iter().all(|&b| (0x20..0x7f).contains(&b)));
        let (back, malformed) = unescape(&escaped);
        prop_assert_eq!(malformed, 0);
        prop_assert_eq!(&back[..], &bytes[..]);
    }

    /// Parsers return, never panic, on arbitrary input.
    #[test]
    fn parsers_survive_anything(bytes in prop::collection::vec(any::<u8>(), 0..1200), limit in 0usize..3000) {
        if let Ok(Datagram::Extended(r)) = Datagram::parse(&bytes) {
            let body = r.split_body_limited(limit);
            let lines = body.lines().count();
            prop_assert!(lines <= r.body.len());
            prop_assert!(r.header.len() + r.body.len() == bytes.len());
        }
        let _ = Response::parse(&bytes);
        let _ = Body::parse(&bytes).lines().count();
        let (unescaped, _) = unescape(&bytes);
        prop_assert!(unescaped.len() <= bytes.len());
        if let Ok(text) = core::str::from_utf8(&bytes) {
            if let Ok(targets) = param::parse_targets(text) {
                for target in targets.flatten() {
                    let again = target.to_string();
                    prop_assert_eq!(param::Target::parse(&again), Ok(target));
                }
            }
        }
    }

    /// Arbitrary fragments never make the reassembly inconsistent.
    #[test]
    fn a_partial_record_shows_exactly_what_arrived(
        body in prop::collection::vec(any::<u8>(), 1000..6000),
        order in Just((0..16usize).collect::<Vec<_>>()).prop_shuffle(),
        kept in 1usize..16,
    ) {
        let mut msg = b"14,1234,5678901,c,caller=C2;".to_vec();
        msg.extend_from_slice(&body);
        let mut options = SendOptions::default();
        options.release = Some(b"7.3.4");
        let sent = datagrams(&msg, options);
        let feed: Vec<&Vec<u8>> = order.iter().filter(|&&i| i < sent.len()).take(kept).map(|&i| &sent[i]).collect();
        let first = ExtRecord::parse(feed[0]).unwrap();
        let mut record = FragmentedRecord::new(&first, DEFAULT_MAX_TOTAL).unwrap();
        for d in &feed[1..] {
            record.push(&ExtRecord::parse(d).unwrap()).unwrap();
        }
        prop_assert_eq!(record.header(), first.header);
        let partial = record.body();
        let bytes = partial.bytes();
        prop_assert_eq!(bytes.len(), body.len());
        for range in partial.received_ranges() {
            prop_assert_eq!(&bytes[range.clone()], &body[range]);
        }
        for range in partial.missing() {
            prop_assert!(bytes[range].iter().all(|&b| b == 0));
        }
        let mut tiles: Vec<_> = partial.received_ranges().chain(partial.missing()).collect();
        tiles.sort_by_key(|r| r.start);
        prop_assert!(tiles.windows(2).all(|w| w[0].end == w[1].start));
        prop_assert_eq!((tiles[0].start, tiles[tiles.len() - 1].end), (0, body.len()));
        prop_assert_eq!(partial.is_complete(), kept >= sent.len());
        let copy = bytes.to_vec();
        prop_assert_eq!(record.into_body().into_bytes(), copy);
    }

    #[test]
    fn reassembly_stays_consistent(
        total in 1usize..4000,
        inserts in prop::collection::vec((0usize..4200, prop::collection::vec(0u8..3, 0..300)), 0..60),
    ) {
        let mut r = Reassembly::new(total, DEFAULT_MAX_TOTAL).unwrap();
        for (offset, chunk) in inserts {
            let before = r.received();
            // A refused chunk changes nothing.
            let fresh = r.insert(offset, &chunk).unwrap_or(0);
            prop_assert_eq!(r.received(), before + fresh);
            let gap: usize = r.missing().map(|g| g.len()).sum();
            prop_assert_eq!(gap + r.received(), total);
            prop_assert_eq!(r.is_complete(), gap == 0);
        }
    }

    /// The sender stays bounded and consistent whatever events it gets.
    #[test]
    fn sender_survives_arbitrary_events(
        events in prop::collection::vec((0u8..4, any::<u16>(), prop::collection::vec(any::<u8>(), 0..40)), 0..200),
        base in prop_oneof![Just(0u64), Just(u64::MAX - 400), any::<u64>()],
    ) {
        let mut s = Sender::new(SenderConfig::default().with_window(8));
        let mut now = Instant::ZERO;
        let mut seq = base;
        let mut out = [0u8; MAX_PRINT_CHUNK];
        for (kind, value, bytes) in events {
            match kind {
                0 => {
                    seq = seq.saturating_add(u64::from(value % 3));
                    let msg = format!("6,{seq},{},-;{}\n", value, "x".repeat(usize::from(value % 2500)));
                    s.push(now, msg.as_bytes()).unwrap();
                }
                1 => {
                    let span = (seq - base).saturating_add(2);
                    let ack = base.saturating_add(u64::from(value) % span);
                    let mut missing = Vec::new();
                    let mut next = ack;
                    for b in &bytes {
                        let Some(n) = next.checked_add(u64::from(b % 4) + 1) else {
                            break;
                        };
                        next = n;
                        missing.push(next);
                    }
                    let mut packet = [0u8; MAX_RESPONSE];
                    let (len, _) = encode_response(ack, &missing, &mut packet).unwrap();
                    s.handle_response(now, &Response::parse(&packet[..len]).unwrap());
                }
                2 => {
                    now += Duration::from_millis(u64::from(value));
                    s.handle_timeout(now);
                }
                _ => {
                    if let Some(deadline) = s.poll_timeout() {
                        now = now.max(deadline);
                        s.handle_timeout(now);
                        if let Some(next) = s.poll_timeout() {
                            prop_assert!(next > now);
                        }
                    }
                }
            }
            prop_assert!(s.unacked() <= 8);
            let mut sent = 0;
            while let Some(n) = s.poll_transmit(&mut out) {
                prop_assert!(n <= MAX_PRINT_CHUNK);
                prop_assert!(ExtRecord::parse(&out[..n]).is_ok());
                sent += 1;
                prop_assert!(sent < 10_000);
            }
        }
    }
}

/// The response format read the plain way: `ncrx`, then numbers split at single spaces, each
/// canonical decimal within `u64`, the missing ones strictly ascending above the ack.
fn reference_response(packet: &[u8]) -> Result<(u64, Vec<u64>), ResponseError> {
    let rest = packet.strip_prefix(b"ncrx").ok_or(ResponseError::NoMagic)?;
    if packet.len() > MAX_RESPONSE {
        return Err(ResponseError::TooLong);
    }
    let mut numbers = Vec::new();
    for piece in rest.split(|&b| b == b' ') {
        let canonical = !piece.is_empty()
            && piece.iter().all(u8::is_ascii_digit)
            && (piece.len() == 1 || piece[0] != b'0');
        if !canonical {
            return Err(ResponseError::Malformed);
        }
        let mut value: u64 = 0;
        for &digit in piece {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit - b'0')))
                .ok_or(ResponseError::Overflow)?;
        }
        // Each above the one before, except that an ack of u64::MAX (nothing retired)
        // lets the list start at 0.
        let wraps = numbers.len() == 1 && numbers[0] == u64::MAX;
        if !wraps && numbers.last().is_some_and(|&last| value <= last) {
            return Err(ResponseError::NotAscending);
        }
        numbers.push(value);
    }
    let ack = numbers.remove(0);
    Ok((ack, numbers))
}

/// Bytes that are mostly escapes and the bytes around them, so that the decoder meets every
/// kind of escape (whole, cut, uppercase, needless) and raw byte.
fn escape_heavy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'\\'),
            Just(b'x'),
            Just(b'0'),
            Just(b'9'),
            Just(b'a'),
            Just(b'f'),
            Just(b'A'),
            Just(b'F'),
            Just(b'g'),
            any::<u8>(),
        ],
        0..40,
    )
}

proptest! {
    /// `decode_exact` (and `decode_exact_into` behind it) keeps its definition: the decoded
    /// bytes exactly when unescaping finds no malformed escape and escaping them again gives
    /// the wire bytes back.
    #[test]
    fn decode_exact_is_unescape_when_escape_gives_the_wire_back(wire in escape_heavy()) {
        let (bytes, malformed) = unescape(&wire);
        let expected = (malformed == 0 && escape(&bytes) == wire).then(|| bytes.into_owned());
        let got = netconsole_proto::received::decode_exact(&wire).map(std::borrow::Cow::into_owned);
        prop_assert_eq!(&got, &expected);
        let mut out = vec![0xee; 3];
        let ok = netconsole_proto::received::decode_exact_into(&wire, &mut out);
        prop_assert_eq!(ok, expected.is_some());
        if let Some(expected) = expected {
            prop_assert_eq!(out, expected);
        }
    }
}

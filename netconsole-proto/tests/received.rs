//! `received`: a record formatted as Linux 6.9+ formats it (printk's part cut at 2048
//! bytes, userdata and sysdata appended), taken apart by `split_body` and written again by
//! `format_received` + `format_appended`, gives back the same bytes; and the parts come out
//! as the kernel wrote them (the text cut where printk cut it, the appended lines whole).

use netconsole_proto::Body;
use netconsole_proto::received::{
    dictionary_len, fits_format_limit, format_appended, format_received, split_body,
};
use netconsole_proto::{
    DictEntry, Header, KmsgRecord, PRINTK_MESSAGE_MAX, escape, format_kmsg, format_userdata,
    unescape,
};
use proptest::prelude::*;

/// A userdata key: what a configfs item name can be, without `=` or a space (netconsole
/// prints the name as it is; a receiver cannot split one holding `=`).
fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            b'a'..=b'z',
            b'A'..=b'Z',
            b'0'..=b'9',
            Just(b'_'),
            Just(b'.')
        ],
        1..12,
    )
}

/// A userdata value: any bytes but a newline (values are sent unescaped).
fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
        1..40,
    )
}

/// Text: long runs of printable bytes and some that printk escapes.
fn text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![8 => b' '..=b'~', 1 => any::<u8>()], 0..2600)
}

/// What the kernel sends (before fragmenting): printk's part formatted into its 2048-byte
/// buffer, then the userdata lines.
fn kernel_message(record: &KmsgRecord<'_>, userdata: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut printk = vec![0u8; PRINTK_MESSAGE_MAX];
    let len = format_kmsg(record, &mut printk);
    printk.truncate(len);
    let entries: Vec<(&[u8], &[u8])> = userdata
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let mut extra = vec![0u8; 8192];
    let extra_len = format_userdata(&entries, &mut extra).unwrap();
    printk.extend_from_slice(&extra[..extra_len]);
    printk
}

/// What printk writes of `text` in the `room` bytes its buffer has left after the header, as
/// `msg_add_ext_text` (kernel/printk/printk.c) writes it: a byte below 0x20, from 0x7f, or `\`
/// as `\xNN` through `scnprintf`, which writes at most `room - used - 1` bytes of it (it keeps
/// one for its NUL, so an escape never fills the last byte), any other byte while there is
/// room; then the `\n` while there is room. Returns the text bytes written and whether the
/// `\n` was. Written from the kernel's rule, apart from the crate's `format_kmsg`.
fn printk_text(text: &[u8], room: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    for &c in text {
        if !(b' '..0x7f).contains(&c) || c == b'\\' {
            let escape = format!("\\x{c:02x}");
            let written = room.saturating_sub(out.len() + 1).min(escape.len());
            out.extend_from_slice(&escape.as_bytes()[..written]);
        } else if out.len() < room {
            out.push(c);
        }
    }
    let newline = out.len() < room;
    (out, newline)
}

/// Takes `message` apart and writes it again; also returns (cut, text as received, lines).
fn again(message: &[u8], decode: bool) -> (Vec<u8>, bool, Vec<u8>, usize) {
    let (header, body) = Header::parse(message).unwrap();
    let split = split_body(body, header.kernel_len());
    let lines: Vec<DictEntry<'_>> = split
        .lines()
        .map(|l| DictEntry {
            key: l.key(),
            value: l.value(),
        })
        .collect();
    let dictionary = dictionary_len(lines.iter().map(|e| e.key));
    let cut = !split.text_terminated();
    // Decoded form where decoding loses nothing, as ncrx decode does; else the wire form.
    let decoded: Option<Vec<u8>> = decode
        .then(|| unescape(split.text()))
        .and_then(|(t, bad)| (bad == 0 && escape(&t) == split.text()).then(|| t.into_owned()));
    let dict_decoded: Vec<(Vec<u8>, Vec<u8>)> = lines[..dictionary]
        .iter()
        .map(|e| {
            (
                unescape(e.key).0.into_owned(),
                unescape(e.value).0.into_owned(),
            )
        })
        .collect();
    let dict_entries: Vec<DictEntry<'_>> = if decoded.is_some() {
        dict_decoded
            .iter()
            .map(|(k, v)| DictEntry { key: k, value: v })
            .collect()
    } else {
        lines[..dictionary].to_vec()
    };
    let mut record =
        KmsgRecord::from_fields(header.fields, decoded.as_deref().unwrap_or(split.text()));
    record.dict = &dict_entries;
    let mut out = vec![0u8; 16 * 1024];
    let len = format_received(&record, decoded.is_none(), cut, &mut out).unwrap();
    let extra = format_appended(&lines[dictionary..], &mut out[len..]).unwrap();
    out.truncate(len + extra);
    (out, cut, split.text().to_vec(), lines.len() - dictionary)
}

/// 128 cases, or as many as `PROPTEST_CASES` asks for (`with_cases` alone would ignore it).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn kernel_messages_come_back_byte_for_byte(
        text in text(),
        subsystem in proptest::option::of(proptest::collection::vec(b' '..=b'~', 1..20)),
        device in proptest::option::of(proptest::collection::vec(b' '..=b'~', 1..20)),
        userdata in proptest::collection::vec((key(), value()), 0..5),
        cpu in proptest::option::of(0u32..64),
        level in 0u8..8,
        seq in any::<u64>(),
        ts_usec in any::<u64>(),
        decode in any::<bool>(),
    ) {
        let mut dict = Vec::new();
        if let Some(v) = &subsystem {
            dict.push(DictEntry { key: b"SUBSYSTEM", value: v });
        }
        if let Some(v) = &device {
            dict.push(DictEntry { key: b"DEVICE", value: v });
        }
        let mut record = KmsgRecord::new(level, seq, ts_usec, &text);
        record.dict = &dict;
        let mut userdata = userdata;
        if let Some(cpu) = cpu {
            userdata.push((b"cpu".to_vec(), cpu.to_string().into_bytes()));
        }
        let message = kernel_message(&record, &userdata);
        // Whether the text and its newline fit printk's buffer; if they do, the dictionary
        // must fit too: a cut inside a dictionary line is not told apart (module doc).
        let head = message.iter().position(|&b| b == b';').unwrap() + 1;
        let text_fits = head + escape(&text).len() < PRINTK_MESSAGE_MAX;
        let whole_printk = head + escape(&text).len() + 1
            + dict.iter().map(|e| escape(e.key).len() + escape(e.value).len() + 3).sum::<usize>();
        prop_assume!(!text_fits || whole_printk <= PRINTK_MESSAGE_MAX);

        // What printk writes of the text, and whether its `\n` follows: not only when the
        // text fits, also when printk cut it one byte short of the limit (an escape cut there
        // or escapes left out whole, nothing printable after them): the `\n` then takes the
        // last byte, as `scnprintf` never writes it (module doc).
        let (printk_text, newline) = printk_text(&text, PRINTK_MESSAGE_MAX - head);
        prop_assert!(!text_fits || newline);

        let (back, cut, received_text, appended) = again(&message, decode);
        prop_assert_eq!(back.escape_ascii().to_string(), message.escape_ascii().to_string());
        // The parts are the kernel's: unterminated exactly when printk wrote no `\n` after
        // the text, the text as printk wrote it (a partial escape and a later printable byte
        // included), every appended line found.
        prop_assert_eq!(cut, !newline);
        prop_assert_eq!(
            received_text.escape_ascii().to_string(),
            printk_text.escape_ascii().to_string()
        );
        prop_assert!(message[head..].starts_with(&received_text));
        let after = message.get(head + received_text.len()).copied();
        if cut {
            prop_assert!(after.is_none() || after == Some(b' '));
            prop_assert!(head + received_text.len() >= PRINTK_MESSAGE_MAX - 1);
        } else {
            prop_assert_eq!(after, Some(b'\n'));
        }
        if newline && !text_fits {
            // Cut with the `\n` in the last byte: seen as cut only through a dangling escape;
            // otherwise the bytes are exactly those of the uncut record of the kept text.
            prop_assert_eq!(head + received_text.len(), PRINTK_MESSAGE_MAX - 1);
            let (kept, malformed) = unescape(&received_text);
            if malformed == 0 {
                let mut shorter = record;
                shorter.text = &kept;
                prop_assert_eq!(kernel_message(&shorter, &userdata), message);
            }
        }
        prop_assert_eq!(appended, userdata.iter().filter(|(_, v)| !v.is_empty()).count());
    }

    /// A record that `fits_format_limit` says is whole splits the same with its header
    /// parsed (`split_body`, `Body::parse_limited`) as without (`Body::parse`), whatever
    /// netconsole added to the header: release, `caller=`, `ncfrag=`, `ncemg=1`.
    #[test]
    fn a_record_within_the_limit_splits_without_its_header(
        release in proptest::option::of("[0-9]\\.[0-9]{1,2}\\.[0-9]{1,3}(-[a-z0-9]{1,30})?"),
        caller in proptest::option::of(prop_oneof![
            (0u32..100_000).prop_map(|t| format!("T{t}")),
            (0u32..64).prop_map(|c| format!("C{c}")),
        ]),
        fragment in any::<bool>(),
        ncemg in any::<bool>(),
        seq in any::<u64>(),
        ts_usec in any::<u64>(),
        text in proptest::collection::vec(prop_oneof![8 => b' '..=b'~', 1 => Just(b'\\')], 0..2200),
        terminated in proptest::bool::weighted(0.8),
        lines in proptest::collection::vec((key(), value()), 0..4),
        limit in prop_oneof![Just(PRINTK_MESSAGE_MAX), 64usize..2100, Just(8192)],
    ) {
        let mut body = text;
        if terminated {
            body.push(b'\n');
        }
        for (key, value) in &lines {
            body.push(b' ');
            body.extend_from_slice(key);
            body.push(b'=');
            body.extend(value.iter().map(|&b| if b == b'\n' { b'.' } else { b }));
            body.push(b'\n');
        }
        prop_assume!(!body.is_empty());
        let mut header = Vec::new();
        if let Some(release) = &release {
            header.extend_from_slice(release.as_bytes());
            header.push(b',');
        }
        header.extend_from_slice(format!("6,{seq},{ts_usec},-").as_bytes());
        if let Some(caller) = &caller {
            header.extend_from_slice(format!(",caller={caller}").as_bytes());
        }
        if fragment {
            header.extend_from_slice(format!(",ncfrag=0/{}", body.len()).as_bytes());
        }
        if ncemg {
            header.extend_from_slice(b",ncemg=1");
        }
        header.push(b';');
        let datagram = [header.as_slice(), &body].concat();
        let (parsed, parsed_body) = Header::parse(&datagram).unwrap();
        prop_assert_eq!(parsed_body, body.as_slice());
        prop_assert_eq!(parsed.len(), header.len());
        prop_assert!(parsed.kernel_len() <= header.len());

        let fits = fits_format_limit(header.len(), body.len(), limit);
        prop_assert_eq!(fits, header.len() + body.len() <= limit);
        if fits {
            let whole = Body::parse(&body);
            prop_assert_eq!(Body::parse_limited(&body, parsed.kernel_len(), limit), whole);
            if limit == PRINTK_MESSAGE_MAX {
                prop_assert_eq!(split_body(&body, parsed.kernel_len()), whole);
            }
        }
    }

    #[test]
    fn any_body_splits_without_panic(
        body in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b' '), Just(b'='), any::<u8>()], 0..3000),
        header_len in 0usize..3000,
    ) {
        let split = split_body(&body, header_len);
        prop_assert!(split.text().len() <= body.len());
        for line in split.lines() {
            prop_assert!(line.raw.len() <= body.len());
        }
    }
}

#[test]
fn a_linux_7_3_cut_record_with_userdata() {
    // rig-long-ctl-like: 1000 control bytes escaped to 4000, cut at 2048 with a dangling
    // escape and one more printable byte in the last position, the userdata on the text's
    // line.
    let mut text = vec![1u8; 1000];
    text.extend_from_slice(b"end");
    let record = KmsgRecord::new(6, 700, 5_000_000, &text);
    let userdata = [
        (b"host".to_vec(), b"qemu-tcg-guest".to_vec()),
        (b"odd".to_vec(), b"eq\\back".to_vec()),
    ];
    let message = kernel_message(&record, &userdata);
    let (back, cut, received_text, appended) = again(&message, true);
    assert_eq!(back, message);
    assert!(cut);
    assert_eq!(appended, 2);
    // "6,700,5000000,-;" is 16 bytes: 2032 bytes of text, ending inside an escape.
    assert_eq!(received_text.len(), 2032);
    assert!(received_text.ends_with(b"\\x01\\x0e"));

    // Only control bytes: the partial escape leaves the last byte to the newline, so the
    // text ends in `\n` though printk cut it; the userdata lines follow as usual.
    let text = vec![1u8; 1000];
    let record = KmsgRecord::new(6, 700, 5_000_000, &text);
    let message = kernel_message(&record, &userdata);
    let (back, cut, received_text, appended) = again(&message, true);
    assert_eq!(back, message);
    assert!(!cut);
    assert_eq!(appended, 2);
    assert!(received_text.ends_with(b"\\x01\\x0"));
}

#[test]
fn a_cut_record_whose_newline_takes_the_last_byte() {
    // "6,9,1,-;" leaves 2040 bytes: 2036 'x' and a CR whose escape would end exactly at the
    // limit. scnprintf keeps the last byte for its NUL and writes only `\x0`; the `\n` goes
    // into the last byte, the dictionary has no room left; netconsole appends its userdata.
    let header = b"6,9,1,-;";
    let mut text = vec![b'x'; 2036];
    text.push(b'\r');
    let mut kernel = header.to_vec();
    kernel.extend_from_slice(&text[..2036]);
    kernel.extend_from_slice(b"\\x0\n cpu=56\n");
    assert_eq!(kernel.len(), 2048 + 8);
    // The crate's printk formatting gives the same bytes.
    let dict = [DictEntry {
        key: b"SUBSYSTEM",
        value: b"pci",
    }];
    let mut record = KmsgRecord::new(6, 9, 1, &text);
    record.dict = &dict;
    let userdata = [(b"cpu".to_vec(), b"56".to_vec())];
    assert_eq!(kernel_message(&record, &userdata), kernel);

    // Read as the kernel wrote it: the text (cut, with its dangling escape) ends at the `\n`,
    // the userdata line follows, and the same bytes come back.
    let (_, body) = Header::parse(&kernel).unwrap();
    let split = split_body(body, header.len());
    assert!(split.text_terminated());
    assert_eq!(split.text().len(), 2039);
    assert!(split.text().ends_with(b"xx\\x0"));
    let keys: Vec<&[u8]> = split.lines().map(|l| l.key()).collect();
    assert_eq!(keys, [&b"cpu"[..]]);
    assert_eq!(
        unescape(split.text()).1,
        1,
        "the dangling escape shows the cut"
    );
    for decode in [false, true] {
        let (back, cut, received_text, appended) = again(&kernel, decode);
        assert_eq!(back, kernel);
        assert!(!cut);
        assert_eq!(received_text, &kernel[8..2047]);
        assert_eq!(appended, 1);
    }

    // A control byte after 2039 'x': its escape finds one byte left, scnprintf writes none of
    // it, and the `\n` takes that byte. These are the bytes of the uncut record of 2039 'x'
    // (which fits with its `\n`, and leaves no room for the dictionary): no reader can tell.
    let mut cut_text = vec![b'x'; 2039];
    cut_text.push(1);
    let mut cut_record = KmsgRecord::new(6, 9, 1, &cut_text);
    cut_record.dict = &dict;
    let mut whole = KmsgRecord::new(6, 9, 1, &cut_text[..2039]);
    whole.dict = &dict;
    let message = kernel_message(&cut_record, &userdata);
    assert_eq!(message, kernel_message(&whole, &userdata));
    let mut expected = header.to_vec();
    expected.extend_from_slice(&[b'x'; 2039]);
    expected.extend_from_slice(b"\n cpu=56\n");
    assert_eq!(message, expected);
    let (back, cut, received_text, _) = again(&message, true);
    assert_eq!(back, message);
    assert!(!cut);
    assert_eq!(received_text, vec![b'x'; 2039]);
}

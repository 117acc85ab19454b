//! netconsole-proto: the datagram parser, escaping, the reassembler, the response packet and
//! the `netconsole=` parameter.

use arbitrary::{Arbitrary, Unstructured};
use netconsole_proto::param::Target;
use netconsole_proto::{
    Datagram, MAX_RESPONSE, Reassembly, ReassemblyError, Response, encode_response, escape_into,
    escaped_len, unescape_into, unescaped_len,
};

/// Classifies arbitrary bytes. Whatever parses is consistent: the text and dictionary lines
/// are subslices of the body, unescaping fits the length it announces, escaping the
/// unescaped text then unescaping again gives the same bytes, and the exact decoding agrees
/// with unescaping.
pub fn datagram(data: &[u8]) {
    let Ok(datagram) = Datagram::parse(data) else {
        return;
    };
    match datagram {
        Datagram::Extended(record) => {
            assert!(record.body.len() <= data.len());
            let body = record.split_body();
            let text = body.text();
            let mut decoded = vec![0u8; unescaped_len(text)];
            let unescaped = unescape_into(text, &mut decoded).expect("sized by unescaped_len");
            decoded.truncate(unescaped.len);
            let mut escaped = vec![0u8; escaped_len(&decoded)];
            let written = escape_into(&decoded, &mut escaped).expect("sized by escaped_len");
            assert_eq!(written, escaped.len());
            let mut again = vec![0u8; unescaped_len(&escaped)];
            let again_len = unescape_into(&escaped, &mut again).expect("sized").len;
            assert_eq!(
                &again[..again_len],
                &decoded[..],
                "escape then unescape is the identity"
            );
            // The receiver's exact decoding (eight bytes at a time) keeps its definition: the
            // unescaped bytes exactly when nothing was malformed and escaping gives the wire.
            let mut exact = vec![0xee; 3];
            let ok = netconsole_proto::received::decode_exact_into(text, &mut exact);
            assert_eq!(ok, unescaped.malformed == 0 && escaped == text);
            if ok {
                assert_eq!(exact, decoded, "decode_exact_into is unescaping");
            }
            for line in body.lines() {
                assert!(line.key().len() + line.value().len() < record.body.len());
            }
        }
        Datagram::Response(response) => response_roundtrip(data, &response),
        _ => {}
    }
}

/// Parses arbitrary bytes as a response; what parses re-encodes to the same bytes.
pub fn response(data: &[u8]) {
    if let Ok(response) = Response::parse(data) {
        response_roundtrip(data, &response);
    }
}

fn response_roundtrip(data: &[u8], response: &Response<'_>) {
    let missing: Vec<u64> = response.missing().collect();
    assert!(
        missing.windows(2).all(|w| w[0] < w[1]),
        "missing sequences ascend"
    );
    let mut out = [0u8; MAX_RESPONSE];
    let (len, count) = encode_response(response.ack(), &missing, &mut out).expect("ack fits");
    assert_eq!(count, missing.len(), "a parsed response fits again");
    assert_eq!(
        &out[..len],
        data,
        "parse is strict: one encoding per response"
    );
}

/// Parses arbitrary text as a `netconsole=` target; what parses formats back to a
/// specification that parses to the same target.
pub fn param(data: &[u8]) {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(target) = Target::parse(spec) else {
        return;
    };
    let formatted = target.to_string();
    let again = Target::parse(&formatted).expect("formatted target parses");
    assert_eq!(again, target, "{spec:?} -> {formatted:?}");
}

#[derive(Debug, Arbitrary)]
struct Fragment {
    offset: u16,
    len: u16,
    /// Cut from a second message, which differs from the first at every third byte.
    from_other: bool,
}

/// Feeds arbitrary fragments of one record to the reassembler and checks it against a model
/// (one optional byte per position): a fragment is accepted exactly when it agrees with every
/// byte already held, the missing ranges are exactly the positions not held, and a complete
/// record is exactly the bytes given.
pub fn reassembly(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok(total) = input.int_in_range(0usize..=4_000) else {
        return;
    };
    let Ok(cap) = input.int_in_range(0usize..=4_000) else {
        return;
    };
    let Ok(mut reassembly) = Reassembly::new(total, cap) else {
        assert!(total > cap, "a total within the cap is accepted");
        return;
    };
    let message: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
    let other: Vec<u8> = message
        .iter()
        .enumerate()
        .map(|(i, &b)| if i % 3 == 0 { !b } else { b })
        .collect();
    let mut held: Vec<Option<u8>> = vec![None; total];
    while !input.is_empty() {
        let Ok(fragment) = Fragment::arbitrary(&mut input) else {
            break;
        };
        let offset = usize::from(fragment.offset);
        let end = offset + usize::from(fragment.len);
        if end > total {
            let chunk = vec![0u8; usize::from(fragment.len)];
            let before = reassembly.received();
            assert!(
                reassembly.insert(offset, &chunk).is_err(),
                "fragment past the total accepted"
            );
            assert_eq!(reassembly.received(), before);
            continue;
        }
        let source = if fragment.from_other {
            &other
        } else {
            &message
        };
        let chunk = &source[offset..end];
        let agrees = held[offset..end]
            .iter()
            .zip(chunk)
            .all(|(h, &b)| h.is_none_or(|h| h == b));
        let accepted = match reassembly.insert(offset, chunk) {
            Ok(_) => true,
            // Memory bound: a record cut into too many disjoint pieces is refused.
            Err(ReassemblyError::TooManyPieces) => continue,
            Err(_) => false,
        };
        // An empty fragment carries nothing and is refused.
        assert_eq!(
            accepted,
            agrees && !chunk.is_empty(),
            "accepted exactly when consistent: {offset}+{} of {total}",
            chunk.len()
        );
        if accepted {
            for (slot, &b) in held[offset..end].iter_mut().zip(chunk) {
                *slot = Some(b);
            }
        }
        let received = held.iter().filter(|h| h.is_some()).count();
        assert_eq!(reassembly.received(), received);
        let mut missing = 0;
        for range in reassembly.missing() {
            assert!(range.start < range.end && range.end <= total);
            assert!(
                held[range.clone()].iter().all(Option::is_none),
                "a held byte reported missing"
            );
            missing += range.len();
        }
        assert_eq!(missing, total - received);
        assert_eq!(reassembly.is_complete(), received == total);
    }
    if let Some(bytes) = reassembly.complete() {
        let expected: Vec<u8> = held.iter().map(|h| h.expect("complete")).collect();
        assert_eq!(bytes, &expected[..]);
    }
}

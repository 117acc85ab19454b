//! netpoll-frame: the frame parser, the builder and the checksum.

use netpoll_frame::checksum::{Checksum, checksum};
use netpoll_frame::{Frame, FrameBuilder, FrameConfig, IpIdPolicy, IpInfo};

/// Parses arbitrary bytes as a frame. When they parse, the view must be consistent with the
/// bytes, and a frame rebuilt from the parsed fields must parse back to the same fields.
pub fn parse(data: &[u8]) {
    let Ok(frame) = Frame::parse(data) else {
        return;
    };
    let payload = frame.payload();
    assert!(
        payload.len() + 42 <= data.len(),
        "payload longer than the frame"
    );
    // The payload is a subslice of the frame.
    let start = payload.as_ptr() as usize - data.as_ptr() as usize;
    assert_eq!(&data[start..start + payload.len()], payload);

    let mut config = FrameConfig::new(frame.source().ip(), frame.destination().ip());
    config.source_mac = frame.source_mac();
    config.destination_mac = frame.destination_mac();
    config.source_port = frame.source().port();
    config.destination_port = frame.destination().port();
    config.vlan = frame.vlan();
    config.ip_id = IpIdPolicy::Counter {
        next: frame.ipv4_id().unwrap_or(0),
    };
    let mut builder = FrameBuilder::new(&config).expect("parsed addresses are of one family");
    let mut buf = vec![0u8; builder.frame_len(payload.len()).expect("payload fits")];
    let len = builder
        .build(payload, &mut buf)
        .expect("buffer sized by frame_len");
    let again = Frame::parse(&buf[..len]).expect("our own frame parses");
    assert_eq!(again.payload(), payload);
    assert_eq!(again.source(), frame.source());
    assert_eq!(again.destination(), frame.destination());
    assert_eq!(again.ipv4_id(), frame.ipv4_id());
    assert_eq!(again.vlan(), frame.vlan());
    // A netpoll-shaped original (no options, no extension headers, kernel constants, one tag at
    // most) is rebuilt byte for byte.
    let kernel_shaped = frame.inner_vlan().is_none()
        && frame.udp_checksum() != 0
        && match frame.ip() {
            IpInfo::V4 {
                ttl,
                tos,
                dont_fragment,
                options_len,
                ..
            } => {
                // The reserved flag bit (RFC 791), which the parser ignores and the kernel
                // never sets, sits in the byte after the id: 22 bytes before the payload
                // in a header without options.
                ttl == 64
                    && tos == 0
                    && !dont_fragment
                    && options_len == 0
                    && data[start - 22] & 0x80 == 0
            }
            IpInfo::V6 {
                hop_limit,
                traffic_class,
                flow_label,
                extension_len,
            } => hop_limit == 32 && traffic_class == 0 && flow_label == 0 && extension_len == 0,
            _ => false,
        };
    if kernel_shaped && frame.vlan().is_none_or(|_| data[12..14] == [0x81, 0x00]) {
        assert_eq!(
            &buf[..len],
            &data[..len],
            "kernel-shaped frame not rebuilt byte for byte"
        );
    }
}

/// Sums arbitrary bytes in arbitrary pieces: the incremental sum equals the one-shot sum and a
/// plain reference loop.
pub fn checksum_pieces(data: &[u8]) {
    let Some((&cuts, bytes)) = data.split_first() else {
        return;
    };
    let mut reference: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        reference += u32::from(word);
        reference = (reference & 0xffff) + (reference >> 16);
    }
    let expected = !(reference as u16);
    assert_eq!(checksum(bytes), expected);
    let mut sum = Checksum::new();
    let mut rest = bytes;
    let mut step = usize::from(cuts) + 1;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(step.min(rest.len()));
        sum.add_bytes(piece);
        rest = tail;
        step = step * 7 % 61 + 1;
    }
    assert_eq!(sum.finish(), expected);
}

//! Golden packets written out by hand, byte by byte at the offsets of the kernel's packed
//! little-endian header (version 2 of Mike Waychison's netoops patch: 217 bytes; version 3 of
//! the series' final form: 216 bytes, then the x86 arch data), not produced by our encoder nor
//! laid out by our zerocopy types, and compared both ways: parsed field by field, and byte for
//! byte against what the encoder writes for the same dump.

use netoops_proto::{
    DumpEncoder, DumpMeta, DumpType, Packet, PtRegs, V3Fields, Version, X86ArchData,
};

/// A log segment whose bytes say where they are: byte `i` is `b'a' + i % 26`.
fn alphabet(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Version 2, packet 0 of 2 of a soft dump: the tail chunk of a 1500-byte log, zero-padded.
fn golden_v2() -> Vec<u8> {
    let mut packet = vec![0u8; 1241];
    #[rustfmt::skip]
    let fixed: [u8; 25] = [
        0x02, 0x00,             //  0 version 2
        0xd9, 0x00,             //  2 header_size 217
        0x02, 0x00,             //  4 arch 2 (x86)
        0xef, 0xbe,             //  6 dump_id 0xbeef
        0x03, 0x00,             //  8 type 3 (soft)
        0x02, 0x00, 0x00, 0x00, // 10 packet_count 2
        0x00, 0x00, 0x00, 0x00, // 14 packet_no 0
        0x00, 0x00, 0x00, 0x00, // 18 reserved
        0x00, 0x00, 0x00,       // 22 reserved
    ];
    packet[..25].copy_from_slice(&fixed);
    packet[25..25 + 18].copy_from_slice(b"2.6.37-rc1-netoops"); // 25 kernel_version
    // 89 and 153: reserved, zero. 217: data = log[1024..1500], then zeros.
    packet[217..217 + 476].copy_from_slice(&alphabet(1500)[1024..]);
    packet
}

/// Version 3, packet 1 of 2 of an oops on x86_64: the first 1024 bytes of a 1500-byte log.
fn golden_v3() -> Vec<u8> {
    let mut packet = vec![0u8; 1412];
    #[rustfmt::skip]
    let fixed: [u8; 24] = [
        0x03, 0x00,             //  0 version 3
        0xef, 0xbe,             //  2 dump_id 0xbeef
        0x84, 0x01,             //  4 data_offset 388
        0x02, 0x00,             //  6 arch 2 (x86)
        0xd8, 0x00,             //  8 arch_offset 216
        0x01, 0x00,             // 10 type 1 (oops / panic)
        0x02, 0x00, 0x00, 0x00, // 12 packet_count 2
        0x01, 0x00, 0x00, 0x00, // 16 packet_no 1
        0x04, 0x03, 0x02, 0x01, // 20 boot_id 0x01020304
    ];
    packet[..24].copy_from_slice(&fixed);
    packet[24..24 + 14].copy_from_slice(b"6.1.0-56-amd64"); // 24 kernel_version
    packet[88..88 + 14].copy_from_slice(b"rack=12 slot=4"); // 88 user_blob
    packet[216..220].copy_from_slice(&[0x00, 0x06, 0x55, 0x04]); // Intel, family 6, model 0x55, stepping 4
    // 220: struct pt_regs; ip at +128, sp at +152, the rest zero.
    packet[220 + 128..220 + 136].copy_from_slice(&[0x10, 0x32, 0x54, 0x81, 0xff, 0xff, 0xff, 0xff]);
    packet[220 + 152..220 + 160].copy_from_slice(&[0x58, 0xfd, 0xff, 0x3f, 0x00, 0x88, 0xff, 0xff]);
    packet[388..388 + 1024].copy_from_slice(&alphabet(1500)[..1024]);
    packet
}

fn meta_v3() -> DumpMeta {
    let mut regs = [0u8; 168];
    regs[128..136].copy_from_slice(&0xffff_ffff_8154_3210_u64.to_le_bytes());
    regs[152..160].copy_from_slice(&0xffff_8800_3fff_fd58_u64.to_le_bytes());
    let mut user_blob = [0u8; 128];
    user_blob[..14].copy_from_slice(b"rack=12 slot=4");
    DumpMeta::v3(
        0xbeef,
        DumpType::PrintkBuffer,
        b"6.1.0-56-amd64",
        V3Fields {
            boot_id: 0x0102_0304,
            user_blob,
            arch_data: X86ArchData {
                vendor: 0,
                family: 6,
                model: 0x55,
                stepping: 4,
                regs: PtRegs::from_bytes(&regs).expect("168 bytes"),
            },
        },
    )
}

#[test]
fn v2_golden_parses_to_the_table_values() {
    let golden = golden_v2();
    let packet = Packet::parse(&golden).expect("golden v2 parses");
    assert_eq!(packet.version(), Version::V2);
    assert_eq!(packet.dump_id(), 0xbeef);
    assert_eq!(packet.arch(), 2);
    assert_eq!(packet.dump_type(), DumpType::PrintkBufferSoft);
    assert_eq!(packet.packet_count(), 2);
    assert_eq!(packet.packet_no(), 0);
    assert_eq!(packet.data_offset(), 217);
    assert_eq!(packet.boot_id(), None);
    assert_eq!(packet.x86_arch_data(), None);
    assert_eq!(&packet.kernel_version()[..19], b"2.6.37-rc1-netoops\0");
    assert_eq!(packet.meta().kernel_release(), b"2.6.37-rc1-netoops");
    assert_eq!(&packet.data()[..476], &alphabet(1500)[1024..]);
    assert!(packet.data()[476..].iter().all(|&b| b == 0));
    assert_eq!(
        packet.meta(),
        DumpMeta::v2(0xbeef, DumpType::PrintkBufferSoft, b"2.6.37-rc1-netoops")
    );
}

#[test]
fn v2_golden_is_what_the_encoder_writes() {
    let meta = DumpMeta::v2(0xbeef, DumpType::PrintkBufferSoft, b"2.6.37-rc1-netoops");
    let log = alphabet(1500);
    let encoder = DumpEncoder::new(&meta, &[], &log).expect("small dump");
    let mut out = [0u8; 2000];
    let len = encoder.write_packet(0, &mut out).expect("packet 0");
    assert_eq!(len, 1241);
    assert_eq!(&out[..len], &golden_v2()[..]);
}

#[test]
fn v3_golden_parses_to_the_table_values() {
    let golden = golden_v3();
    let packet = Packet::parse(&golden).expect("golden v3 parses");
    assert_eq!(packet.version(), Version::V3);
    assert_eq!(packet.dump_id(), 0xbeef);
    assert_eq!(packet.arch(), 2);
    assert_eq!(packet.dump_type(), DumpType::PrintkBuffer);
    assert_eq!(packet.packet_count(), 2);
    assert_eq!(packet.packet_no(), 1);
    assert_eq!(packet.data_offset(), 388);
    assert_eq!(packet.boot_id(), Some(0x0102_0304));
    assert_eq!(&packet.user_blob().expect("v3")[..15], b"rack=12 slot=4\0");
    let arch = packet.x86_arch_data().expect("x86 arch data");
    assert_eq!(
        (arch.vendor, arch.family, arch.model, arch.stepping),
        (0, 6, 0x55, 4)
    );
    let regs = arch.regs.x86_64().expect("x86_64 registers");
    assert_eq!(regs.ip.get(), 0xffff_ffff_8154_3210);
    assert_eq!(regs.sp.get(), 0xffff_8800_3fff_fd58);
    assert_eq!(regs.ax.get(), 0);
    assert_eq!(&packet.data()[..], &alphabet(1500)[..1024]);
    assert_eq!(packet.meta(), meta_v3());
}

#[test]
fn v3_golden_is_what_the_encoder_writes() {
    let log = alphabet(1500);
    let encoder = DumpEncoder::new(&meta_v3(), &[], &log).expect("small dump");
    assert_eq!(encoder.packet_len(), 1412);
    let mut out = [0u8; 1412];
    let len = encoder.write_packet(1, &mut out).expect("packet 1");
    assert_eq!(&out[..len], &golden_v3()[..]);
}

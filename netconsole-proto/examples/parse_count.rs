//! Parses one extended record many times, for counting instructions with callgrind (the
//! clock on a shared machine moves by a factor of three; instruction counts do not).
//!
//! The record is the one of the `netconsole_parse` bench (`benches/benches/netconsole.rs`):
//! `6,123456,98765432,-;` then text with `\x09` escapes, then ` SUBSYSTEM=net` and
//! ` DEVICE=n2`. Each iteration is what the bench times: `Datagram::parse`, `split_body`,
//! every line's value.
//!
//! ```text
//! cargo build --release -p netconsole-proto --example parse_count
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     target/release/examples/parse_count 100 100000
//! callgrind_annotate --inclusive=yes cg.out | grep parse_count::parse_whole
//! ```
//!
//! Instructions per parse = the inclusive count of `parse_count::parse_whole` / 100000.
//! Arguments: record length (at least 60 bytes, default 100), iterations (default 100000).

use std::hint::black_box;

use netconsole_proto::Datagram;

/// The bench's extended record of exactly `len` bytes.
fn record(len: usize) -> Vec<u8> {
    let head = b"6,123456,98765432,-;";
    let dict = b"\n SUBSYSTEM=net\n DEVICE=n2\n";
    let filler = b"e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex\\x09ok ";
    let mut out = head.to_vec();
    out.extend(
        filler
            .iter()
            .copied()
            .cycle()
            .take(len - head.len() - dict.len()),
    );
    out.extend_from_slice(dict);
    out
}

/// One parse, as the bench does it.
#[inline(never)]
fn parse_whole(payload: &[u8]) -> usize {
    let Ok(Datagram::Extended(record)) = Datagram::parse(payload) else {
        panic!("not an extended record")
    };
    let body = record.split_body();
    body.text().len() + body.lines().map(|l| l.value().len()).sum::<usize>()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let len: usize = args.next().map_or(100, |a| a.parse().expect("length"));
    let iterations: usize = args.next().map_or(100_000, |a| a.parse().expect("count"));
    let payload = record(len.max(60));
    let mut total = 0;
    for _ in 0..iterations {
        total += parse_whole(black_box(&payload));
    }
    println!("{iterations} parses of {} bytes: {total}", payload.len());
}

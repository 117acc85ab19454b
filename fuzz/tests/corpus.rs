//! Replays every committed corpus file through its target's body on stable, as an ordinary
//! test: a crash found by fuzzing and added to the corpus stays fixed.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        if path.is_file() {
            body(&std::fs::read(&path).expect("corpus file"));
            files += 1;
        }
    }
    assert!(files > 0, "{}: empty corpus", dir.display());
    println!("{target}: replayed {files} inputs");
}

#[test]
fn frame() {
    replay("frame", netconsole_rs_fuzz::frame::parse);
}

#[test]
fn checksum() {
    replay("checksum", netconsole_rs_fuzz::frame::checksum_pieces);
}

#[test]
fn netconsole_datagram() {
    replay(
        "netconsole_datagram",
        netconsole_rs_fuzz::netconsole::datagram,
    );
}

#[test]
fn netconsole_response() {
    replay(
        "netconsole_response",
        netconsole_rs_fuzz::netconsole::response,
    );
}

#[test]
fn netconsole_param() {
    replay("netconsole_param", netconsole_rs_fuzz::netconsole::param);
}

#[test]
fn netconsole_reassembly() {
    replay(
        "netconsole_reassembly",
        netconsole_rs_fuzz::netconsole::reassembly,
    );
}

#[test]
fn netoops_packet() {
    replay("netoops_packet", netconsole_rs_fuzz::netoops::packet);
}

#[test]
fn netoops_collector() {
    replay("netoops_collector", netconsole_rs_fuzz::netoops::collector);
}

#[test]
fn receiver() {
    replay("receiver", netconsole_rs_fuzz::receiver::receiver);
}

#[test]
fn sender() {
    replay("sender", netconsole_rs_fuzz::receiver::sender);
}

/// Runs one input through a body: `FUZZ_INPUT=path FUZZ_TARGET=name cargo test one_input -- --nocapture`.
#[test]
fn one_input() {
    let (Some(path), Some(target)) = (
        std::env::var_os("FUZZ_INPUT"),
        std::env::var("FUZZ_TARGET").ok(),
    ) else {
        return;
    };
    let data = std::fs::read(path).expect("FUZZ_INPUT");
    match target.as_str() {
        "receiver" => netconsole_rs_fuzz::receiver::receiver(&data),
        "frame" => netconsole_rs_fuzz::frame::parse(&data),
        "sender" => netconsole_rs_fuzz::receiver::sender(&data),
        other => panic!("unknown target {other}"),
    }
}

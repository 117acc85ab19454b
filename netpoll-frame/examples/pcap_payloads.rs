//! Prints the netconsole payloads of a pcap capture, one line per UDP datagram, with the
//! sender, the IPv4 id and the checksum verdict; frames that are not UDP or fail to verify are
//! counted and named.
//!
//! ```text
//! cargo run -p netpoll-frame --example pcap_payloads -- [FILE.pcap]
//! ```
//!
//! Without a file it reads the Linux 7.3 sample kept in `tests/data/`.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use netpoll_frame::{Frame, ParseError};
use pcap_file::pcap::PcapReader;

fn main() -> ExitCode {
    let path = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/linux-7.3-ext.pcap"),
        PathBuf::from,
    );
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("error: {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut reader = match PcapReader::new(file) {
        Ok(reader) => reader,
        Err(error) => {
            eprintln!("error: {}: not a pcap capture: {error}", path.display());
            return ExitCode::from(3);
        }
    };
    let mut out = std::io::stdout().lock();
    let (mut udp, mut other, mut bad) = (0usize, 0usize, 0usize);
    while let Some(packet) = reader.next_packet() {
        let packet = match packet {
            Ok(packet) => packet,
            Err(error) => {
                eprintln!("error: {}: truncated capture: {error}", path.display());
                return ExitCode::from(4);
            }
        };
        match Frame::parse(&packet.data) {
            Ok(frame) => {
                udp += 1;
                let id = frame
                    .ipv4_id()
                    .map_or_else(|| "-".to_owned(), |id| id.to_string());
                let text = String::from_utf8_lossy(frame.payload());
                let _ = writeln!(
                    out,
                    "{} id={id} {}",
                    frame.source(),
                    text.trim_end_matches('\n').escape_debug()
                );
            }
            Err(ParseError::NotUdp(_) | ParseError::UnsupportedEthertype(_)) => other += 1,
            Err(error) => {
                bad += 1;
                eprintln!("bad frame: {error}");
            }
        }
    }
    eprintln!("{udp} UDP datagrams, {other} other frames, {bad} bad frames");
    if bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

//! Helpers shared by the integration tests: running the built binary, scratch directories,
//! writing captures.

#![allow(
    dead_code,
    reason = "each test file uses the part of the helpers it needs"
)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pcap_file::pcap::{PcapPacket, PcapWriter};

/// The built `ncrx`.
pub(crate) fn ncrx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ncrx"))
}

/// Runs `ncrx args...` with `stdin` and returns what it did.
pub(crate) fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = ncrx()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ncrx runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("stdin written");
    child.wait_with_output().expect("ncrx ends")
}

/// The exit code, stdout and stderr of `output` as text.
pub(crate) fn parts(output: &Output) -> (i32, String, String) {
    (
        output.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A fresh, empty scratch directory for one test.
pub(crate) fn scratch(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ncrx-test-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Writes `frames` (timestamp, bytes) as a classic pcap with the Ethernet link type.
pub(crate) fn write_pcap(path: &Path, frames: &[(Duration, Vec<u8>)]) {
    let mut writer = PcapWriter::new(File::create(path).expect("pcap created")).expect("header");
    for (time, data) in frames {
        writer
            .write_packet(&PcapPacket::new(*time, data.len() as u32, data))
            .expect("packet written");
    }
}

/// The packets of a classic pcap file, in order.
pub(crate) fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut reader =
        pcap_file::pcap::PcapReader::new(File::open(path).expect("pcap opened")).expect("header");
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet() {
        out.push(packet.expect("packet").data.into_owned());
    }
    out
}

/// The workspace's sibling `shared/captures`, if present.
pub(crate) fn shared_captures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures");
    dir.is_dir().then_some(dir)
}

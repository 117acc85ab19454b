//! Helpers shared by the integration tests: running the built binary, scratch directories,
//! writing captures.

#![allow(
    dead_code,
    reason = "each test file uses the part of the helpers it needs"
)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pcap_file::pcap::{PcapPacket, PcapWriter};

/// The built `ncrx`.
pub(crate) fn ncrx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ncrx"))
}

/// Starts `ncrx args...` with standard output and standard error piped, and reads the first
/// line it writes on standard error (the start-up line): the process, that line and the
/// rest of standard error.
pub(crate) fn spawn_piped(args: &[String]) -> (Child, String, BufReader<ChildStderr>) {
    let mut child = ncrx()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ncrx runs");
    let (banner, stderr) = first_line(&mut child);
    (child, banner, stderr)
}

/// The first line `child` writes on its piped standard error, and the rest of it.
fn first_line(child: &mut Child) -> (String, BufReader<ChildStderr>) {
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut banner = String::new();
    stderr.read_line(&mut banner).expect("stderr read");
    (banner, stderr)
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
    // A command that fails early (a bad option, a port in use) exits without reading.
    if let Err(error) = child.stdin.take().expect("stdin").write_all(stdin) {
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::BrokenPipe,
            "stdin: {error}"
        );
    }
    child.wait_with_output().expect("ncrx ends")
}

/// Runs `ncrx send --target <spec> --pcap <out> <extra...>` with `stdin`: the exit code,
/// stdout and stderr.
pub(crate) fn send_pcap(
    spec: &str,
    out: &Path,
    extra: &[&str],
    stdin: &[u8],
) -> (i32, String, String) {
    let mut args = vec![
        "send",
        "--target",
        spec,
        "--pcap",
        out.to_str().expect("UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    parts(&run(&args, stdin))
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

/// The workspace's sibling `shared/captures`, if present (else a note says the test ran on
/// the samples in `tests/data` only, or was skipped).
pub(crate) fn shared_captures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures");
    if !dir.is_dir() {
        eprintln!("note: ../shared/captures is absent: only the samples in tests/data were used");
        return None;
    }
    Some(dir)
}

/// `tests/data/<name>`: the samples kept in the repository.
pub(crate) fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// Starts `ncrx <command...> --bind 127.0.0.1:<free port> <extra...>` with stdout and stderr
/// piped, and reads the first line it writes on stderr. Another program may take the port
/// between the probe and the bind: then (exit code 6, "in use") another port is tried.
/// Returns the process, the address it is bound to, that first line and the rest of stderr.
pub(crate) fn spawn_bound(
    command: &[&str],
    extra: &[&str],
) -> (Child, String, String, BufReader<ChildStderr>) {
    spawn_bound_to(command, extra, Stdio::piped)
}

/// [`spawn_bound`] with standard output given by `stdout` (a file, `/dev/full`).
#[allow(dead_code, reason = "not every test binary uses it")]
pub(crate) fn spawn_bound_to(
    command: &[&str],
    extra: &[&str],
    stdout: impl Fn() -> Stdio,
) -> (Child, String, String, BufReader<ChildStderr>) {
    spawn_bound_in(&[], command, extra, stdout)
}

/// [`spawn_bound_to`], ncrx started by `wrapper` (a program and its arguments, ncrx's path
/// and arguments after them), e.g. a shell that sets a limit first and `exec`s it (so the
/// child is ncrx itself).
#[allow(dead_code, reason = "not every test binary uses it")]
pub(crate) fn spawn_bound_in(
    wrapper: &[&str],
    command: &[&str],
    extra: &[&str],
    stdout: impl Fn() -> Stdio,
) -> (Child, String, String, BufReader<ChildStderr>) {
    for _ in 0..5 {
        let bind = format!("127.0.0.1:{}", free_port());
        let mut ncrx = match wrapper {
            [] => ncrx(),
            [program, arguments @ ..] => {
                let mut wrapped = Command::new(program);
                wrapped.args(arguments).arg(env!("CARGO_BIN_EXE_ncrx"));
                wrapped
            }
        };
        let mut child = ncrx
            .args(command)
            .args(["--bind", &bind])
            .args(extra)
            .stdout(stdout())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ncrx runs");
        let (banner, stderr) = first_line(&mut child);
        if banner.contains("in use") {
            assert_eq!(child.wait().expect("exit").code(), Some(6));
            continue;
        }
        return (child, bind, banner, stderr);
    }
    panic!("no free port in 5 tries");
}

/// The path of the program `name` on PATH. Absent, the test is skipped with a message, but
/// under CI (`CI=true`), where `.ci/run` installs it, a missing tool fails the test.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is not installed (.ci/run installs it)"
        );
        eprintln!("skipped: {name} is not installed");
    }
    found
}

/// Sends `signal` (`"TERM"`, `"HUP"`) to `child` with kill(1).
pub(crate) fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {}", child.id());
}

/// `GET path` from the HTTP server at `addr`, with an `Accept` header: status line and body.
pub(crate) fn http_get(addr: &str, path: &str, accept: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The address of the metrics server, from the listener's next line on stderr.
pub(crate) fn metrics_addr(stderr: &mut BufReader<ChildStderr>) -> String {
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    line.trim_end()
        .strip_prefix("ncrx: metrics on http://")
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned()
}

/// The value of the metric `name` (a counter's full name, labels included) on the metrics
/// page at `addr`, in the Prometheus text format.
pub(crate) fn metric(addr: &str, name: &str) -> u64 {
    let (value, body) = metric_if_shown(addr, name);
    value.unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// The value of the metric `name` on the metrics page at `addr`, if the page has it (some
/// appear only once known, as the kernel drops once every thread has read them), and the
/// page.
pub(crate) fn metric_if_shown(addr: &str, name: &str) -> (Option<u64>, String) {
    let (_, body) = http_get(addr, "/metrics", "text/plain");
    let value = body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap());
    (value, body)
}

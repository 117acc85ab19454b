//! `ncrx listen --syslog` into a real rsyslog (Debian's, installed by `.ci/run`), started by
//! the test on loopback: every record lands with the sender's name, its severity and text;
//! rsyslog restarted mid-stream loses nothing (a restart may cost duplicates).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::scratch;

/// rsyslog receiving RFC 5424 over TCP on `port`, writing one line per message into
/// `DIR/out.log`: hostname, facility, severity, app-name, msgid, structured data, text.
fn rsyslog_config(dir: &Path, port: u16) -> PathBuf {
    let config = dir.join("rsyslog.conf");
    std::fs::write(
        &config,
        format!(
            r#"global(workDirectory="{dir}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="fields" type="string"
         string="%hostname%|%syslogfacility-text%|%syslogseverity-text%|%app-name%|%msgid%|%structured-data%|%msg%\n")
*.* action(type="omfile" file="{dir}/out.log" template="fields")
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    config
}

/// Starts rsyslogd in the foreground and waits until it accepts connections.
fn start_rsyslog(rsyslogd: &Path, config: &Path, dir: &Path, port: u16) -> Child {
    let child = Command::new(rsyslogd)
        .args(["-n", "-f"])
        .arg(config)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rsyslogd runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "rsyslogd does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The lines rsyslog wrote, once `done` says they are all there (or after a while).
fn wait_for(path: &Path, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The seq of an rsyslog line of a record, from its structured data.
fn seq_of(line: &str) -> Option<u64> {
    line.split("[ncrx@32473 seq=\"")
        .nth(1)?
        .split('"')
        .next()?
        .parse()
        .ok()
}

#[test]
fn records_reach_rsyslog_with_host_severity_and_text_across_a_restart() {
    let Some(rsyslogd) = common::tool("rsyslogd") else {
        return;
    };
    let dir = scratch("syslog");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = rsyslog_config(&dir, port);
    let mut rsyslog = start_rsyslog(&rsyslogd, &config, &dir, port);
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 web1\n").unwrap();
    let syslog = format!("tcp://127.0.0.1:{port}");
    let (mut child, bind, _banner, mut stderr) = common::spawn_bound(
        &["listen"],
        &[
            "--syslog",
            &syslog,
            "--hosts",
            hosts.to_str().unwrap(),
            "--threads",
            "1",
        ],
    );
    // The text lines are not what is tested here: read and dropped.
    let mut stdout = child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
    });
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |seq: u64| {
        let level = [3, 4, 6][(seq % 3) as usize];
        let record = if seq % 10 == 0 {
            format!(
                "{level},{seq},{seq}000,-;record {seq} \"quoted\" ]\n SUBSYSTEM=net\n DEVICE=n{seq}\n"
            )
        } else {
            format!("{level},{seq},{seq}000,-;record {seq}\n")
        };
        kernel.send_to(record.as_bytes(), &bind).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = dir.join("out.log");
    for seq in 0..=100 {
        send(seq);
    }
    wait_for(&out, |text| {
        text.lines().filter_map(seq_of).any(|s| s == 100)
    });
    // rsyslog goes away mid-stream; records keep coming and wait in ncrx's buffer.
    stop(&mut rsyslog);
    for seq in 101..=150 {
        send(seq);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut rsyslog = start_rsyslog(&rsyslogd, &config, &dir, port);
    for seq in 151..=200 {
        send(seq);
    }
    // 201 never comes: at the stop it goes out as a loss.
    send(202);
    std::thread::sleep(Duration::from_millis(300));
    common::signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    drain.join().unwrap();
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    let text = wait_for(&out, |text| text.contains("|lost|"));
    stop(&mut rsyslog);

    check(&text, &report);
}

/// Every record of 0..=200 and 202 landed with host, facility, severity, app-name, msgid,
/// structured data and text; 201 landed as a loss.
fn check(text: &str, report: &str) {
    let mut seen: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(seq) = seq_of(line) {
            seen.entry(seq).or_default().push(line);
        }
    }
    let missing: Vec<u64> = (0..=200)
        .chain([202])
        .filter(|s| !seen.contains_key(s))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}\n{report}\n{text}");
    for (seq, lines) in &seen {
        let fields: Vec<&str> = lines[0].splitn(7, '|').collect();
        let severity = ["err", "warning", "info"][(seq % 3) as usize];
        assert_eq!(
            &fields[..5],
            ["web1", "kern", severity, "kernel", "-"],
            "{}",
            lines[0]
        );
        assert!(
            fields[5].starts_with(&format!(
                "[ncrx@32473 seq=\"{seq}\" ts_usec=\"{}\" flag=\"-\"]",
                seq * 1000
            )),
            "{}",
            lines[0]
        );
        if seq % 10 == 0 {
            assert!(
                fields[5].ends_with(&format!("[dict@32473 SUBSYSTEM=\"net\" DEVICE=\"n{seq}\"]")),
                "{}",
                lines[0]
            );
            assert_eq!(fields[6], format!("record {seq} \"quoted\" ]"));
        } else {
            assert_eq!(fields[6], format!("record {seq}"));
        }
    }
    let lost = text
        .lines()
        .find(|l| l.contains("|lost|"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        lost.starts_with("web1|kern|warning|kernel|lost|[ncrx@32473 source=")
            && lost.contains("first_seq=\"201\" last_seq=\"201\"")
            && lost.ends_with("|lost records #201..#201"),
        "{lost}"
    );
    assert!(report.contains("ncrx: syslog: "), "{report}");
    assert!(report.contains(" 0 dropped"), "{report}");
}

/// A printk prefix whose facility syslog does not have (written to `/dev/kmsg` as `<999>`,
/// or `1695` as a Linux 7.3 capture shows) is sent with a PRI RFC 5424 allows (0–191): the
/// `user` facility with the record's level, the facility itself in structured data. One
/// within range is sent as it is.
#[test]
fn a_facility_syslog_does_not_have_is_sent_as_user_with_the_facility_kept() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let syslog = format!("udp://{}", collector.local_addr().unwrap());
    let (mut child, bind, _banner, _stderr) = common::spawn_bound_to(
        &["listen"],
        &["--syslog", &syslog, "--threads", "1"],
        Stdio::null,
    );
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    for record in [
        "999,0,1000,-;pri 999\n",
        "1695,1,2000,-;pri 1695\n",
        "14,2,3000,-;pri 14\n",
    ] {
        kernel.send_to(record.as_bytes(), &bind).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 3 {
        let (len, _) = collector.recv_from(&mut buf).expect("a syslog message");
        got.push(String::from_utf8(buf[..len].to_vec()).unwrap());
    }
    common::signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // 999 = facility 124, level 7; 1695 = facility 211, level 7; 14 = user.info.
    assert!(got[0].starts_with("<15>1 "), "{}", got[0]);
    assert!(
        got[0].contains("[ncrx@32473 seq=\"0\" ts_usec=\"1000\" flag=\"-\" facility=\"124\"]"),
        "{}",
        got[0]
    );
    assert!(got[1].starts_with("<15>1 "), "{}", got[1]);
    assert!(got[1].contains(" facility=\"211\"]"), "{}", got[1]);
    assert!(got[2].starts_with("<14>1 "), "{}", got[2]);
    assert!(!got[2].contains("facility="), "{}", got[2]);
    assert!(got[2].ends_with(" pri 14"), "{}", got[2]);
}

/// A UDP collector that is not running (its port answers "port unreachable"): the listener
/// says so once, not once a message, reconnects nothing, and counts the refused messages as
/// dropped, in the metrics and at the stop.
#[test]
fn a_udp_collector_that_refuses_is_said_once_and_counted() {
    // A port nobody receives on.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let syslog = format!("udp://{closed}");
    let (mut child, bind, _banner, mut stderr) = common::spawn_bound_to(
        &["listen"],
        &[
            "--syslog",
            &syslog,
            "--threads",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
        Stdio::null,
    );
    let metrics = common::metrics_addr(&mut stderr);
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..20 {
        let record = format!("6,{seq},{seq}000,-;record {seq}\n");
        kernel.send_to(record.as_bytes(), &bind).unwrap();
        // Each in a batch of its own.
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every message forwarded or dropped, once the forwarder has them all.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (_, dropped) = loop {
        let counts = (
            common::metric(&metrics, "ncrx_syslog_messages_sent_total"),
            common::metric(&metrics, "ncrx_syslog_messages_dropped_total"),
        );
        if counts.0 + counts.1 == 20 {
            break counts;
        }
        assert!(Instant::now() < deadline, "{counts:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(dropped >= 5, "{dropped}");
    assert_eq!(common::metric(&metrics, "ncrx_syslog_connections_total"), 1);
    assert_eq!(common::metric(&metrics, "ncrx_syslog_connected"), 1);
    common::signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    let said: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("ncrx: syslog: "))
        .collect();
    assert_eq!(said.len(), 2, "{report}");
    assert!(
        said[0].starts_with(&format!(
            "ncrx: syslog: {closed} refuses datagrams (port unreachable"
        )),
        "{report}"
    );
    // Every other message was refused (the ICMP of one is reported by the next send).
    let dropped: u64 = said[1]
        .split(" dropped")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(dropped >= 5, "{report}");
    assert!(said[1].ends_with(", 1 connections"), "{report}");
}

/// A TCP collector that accepts and closes every connection at once: the forwarder
/// reconnects again and again, but says so at most once a minute, not twice a reconnect.
#[test]
fn a_flapping_collector_is_said_once_a_minute() {
    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    let syslog = format!("tcp://{}", collector.local_addr().unwrap());
    let accepted = std::thread::spawn(move || {
        collector.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut accepted = 0;
        while Instant::now() < deadline {
            match collector.accept() {
                Ok((stream, _)) => {
                    accepted += 1;
                    drop(stream);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        accepted
    });
    let (mut child, bind, _banner, mut stderr) = common::spawn_bound_to(
        &["listen"],
        &["--syslog", &syslog, "--threads", "1"],
        Stdio::null,
    );
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..40 {
        let record = format!("6,{seq},{seq}000,-;record {seq}\n");
        kernel.send_to(record.as_bytes(), &bind).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    common::signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut report = String::new();
    stderr.read_to_string(&mut report).unwrap();
    let accepted = accepted.join().unwrap();
    let connections: u64 = report
        .lines()
        .find_map(|l| {
            l.strip_suffix(" connections")?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{report}"));
    // It flapped: many connections, every one of them accepted.
    assert!(connections >= 5, "{report}");
    assert!(accepted >= 5, "{accepted} accepted; {report}");
    let lost = report.matches("ncrx: syslog: connection to").count();
    let again = report.matches(" again\n").count();
    assert_eq!((lost, again), (1, 1), "{report}");
}

//! `ncrx listen --metrics ADDR:PORT`: live counters for Prometheus, served over HTTP as
//! OpenMetrics text (the `prometheus-client` crate encodes them).
//!
//! Each listener thread publishes a [`Snapshot`] of its counters about once a second; a
//! scrape adds the threads' snapshots up. Nothing is counted twice on the receive path: the
//! snapshot is taken from counters the thread keeps anyway. Per-sender series are kept for
//! at most `--metrics-sources` senders (those with the most records), so that a fleet of
//! 100,000 senders does not make 100,000 series; 0 turns them off.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use ncrx_core::StreamStats;

use crate::error::Failure;
use crate::sink::Counts;

/// How often each thread publishes its counters.
pub(crate) const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// One thread's counters at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// What came out, over every sender (malformed: datagrams the receiver could not parse).
    pub(crate) counts: Counts,
    pub(crate) datagrams: u64,
    pub(crate) refused: u64,
    pub(crate) oversized: u64,
    pub(crate) responses: u64,
    pub(crate) acks: u64,
    pub(crate) responses_failed: u64,
    pub(crate) requested: u64,
    pub(crate) port_unreachable: u64,
    pub(crate) kernel_drops: u64,
    /// The receivers' stream counters (what they dropped, by reason).
    pub(crate) streams: StreamStats,
    /// The kernel's drop counter could not be read: `kernel_drops` is left out.
    pub(crate) kernel_drops_unknown: bool,
    pub(crate) write_errors: u64,
    pub(crate) lines_not_written: u64,
    pub(crate) sources: u64,
    pub(crate) sources_evicted: u64,
    pub(crate) held_bytes: u64,
    /// Bytes of lines gathered or queued for the output and not yet written.
    pub(crate) unwritten_bytes: u64,
    /// Age of the oldest hole still open, in seconds (0 without holes).
    pub(crate) oldest_hole_seconds: f64,
    /// The senders with series: (host, source address, counts).
    pub(crate) per_source: Vec<(String, SocketAddr, Counts)>,
}

impl Snapshot {
    /// Adds another thread's counters (not its per-sender series).
    fn add(&mut self, slot: &Snapshot) {
        self.counts += slot.counts;
        self.datagrams += slot.datagrams;
        self.refused += slot.refused;
        self.oversized += slot.oversized;
        self.responses += slot.responses;
        self.acks += slot.acks;
        self.responses_failed += slot.responses_failed;
        self.requested += slot.requested;
        self.port_unreachable += slot.port_unreachable;
        self.kernel_drops += slot.kernel_drops;
        self.streams += slot.streams;
        self.kernel_drops_unknown |= slot.kernel_drops_unknown;
        self.write_errors += slot.write_errors;
        self.lines_not_written += slot.lines_not_written;
        self.sources += slot.sources;
        self.sources_evicted += slot.sources_evicted;
        self.held_bytes += slot.held_bytes;
        self.unwritten_bytes += slot.unwritten_bytes;
        self.oldest_hole_seconds = self.oldest_hole_seconds.max(slot.oldest_hole_seconds);
    }
}

/// The records the receivers dropped and did not write (a stream's counters): every
/// reason but duplicates, which lose nothing.
pub(crate) fn dropped_records(stats: &StreamStats) -> u64 {
    stats.conflicts
        + stats.forgotten
        + stats.out_of_order_dropped
        + stats.stale_emergency
        + stats.over_budget
}

/// Each reason a receiver drops records for, as the metrics label it, and its count.
fn drop_reasons(stats: &StreamStats) -> [(&'static str, u64); 6] {
    [
        ("duplicate", stats.duplicates),
        ("conflict", stats.conflicts),
        ("too_old", stats.forgotten),
        ("out_of_order", stats.out_of_order_dropped),
        ("stale_emergency", stats.stale_emergency),
        ("over_budget", stats.over_budget),
    ]
}

/// The threads' latest snapshots, one slot each.
#[derive(Clone)]
pub(crate) struct Board {
    slots: Arc<Mutex<Vec<Snapshot>>>,
    /// Per-sender series at most.
    pub(crate) per_source: usize,
    /// The `--syslog` forwarder's counters, once it runs.
    syslog: Arc<OnceLock<Arc<crate::syslog::Stats>>>,
}

impl Board {
    pub(crate) fn new(threads: usize, per_source: usize) -> Self {
        // A thread's kernel drops are unknown until it publishes (a page asked for before
        // then leaves the metric out rather than show 0).
        let unpublished = Snapshot {
            kernel_drops_unknown: true,
            ..Snapshot::default()
        };
        Board {
            slots: Arc::new(Mutex::new(vec![unpublished; threads])),
            per_source,
            syslog: Arc::new(OnceLock::new()),
        }
    }

    /// Shows the `--syslog` forwarder's counters too.
    pub(crate) fn show_syslog(&self, stats: Arc<crate::syslog::Stats>) {
        let _ = self.syslog.set(stats);
    }

    /// Thread `index` publishes its counters.
    pub(crate) fn publish(&self, index: usize, snapshot: Snapshot) {
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(slot) = slots.get_mut(index) {
                *slot = snapshot;
            }
        }
    }

    /// The OpenMetrics text of every thread's latest counters.
    pub(crate) fn render_openmetrics(&self) -> String {
        let slots = self.slots.lock().map(|s| s.clone()).unwrap_or_default();
        let mut registry = Registry::with_prefix("ncrx");
        let mut total = Snapshot::default();
        for slot in &slots {
            total.add(slot);
        }
        let counters = counters(&total);
        for (name, help, value) in counters {
            if name == "kernel_drops" && total.kernel_drops_unknown {
                continue;
            }
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            registry.register(name, help, counter);
        }
        for (name, help, value) in [
            ("sources", "Senders tracked now", total.sources),
            (
                "held_bytes",
                "Record bytes held, waiting for holes to fill",
                total.held_bytes,
            ),
            (
                "unwritten_bytes",
                "Bytes of lines gathered or queued for the output and not yet written (grows \
                 while the output is stalled, up to 16 MiB a thread)",
                total.unwritten_bytes,
            ),
        ] {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            registry.register(name, help, gauge);
        }
        let dropped = Family::<Vec<(&'static str, &'static str)>, Counter<u64>>::default();
        for (reason, count) in drop_reasons(&total.streams) {
            dropped
                .get_or_create(&vec![("reason", reason)])
                .inc_by(count);
        }
        registry.register(
            "dropped_records",
            "Records the receiver dropped, by reason (duplicate: a copy of a record already \
             taken; the others are records not written)",
            dropped,
        );
        if let Some(syslog) = self.syslog.get() {
            for (name, help, value) in [
                (
                    "syslog_messages_sent",
                    "Messages handed to the network for the syslog collector (over UDP, a \
                     closed port's refusal shows only at the next send, which is then dropped)",
                    &syslog.sent,
                ),
                (
                    "syslog_messages_dropped",
                    "Messages not forwarded: the buffer was full, the collector away at the \
                     stop, or a UDP collector refused them",
                    &syslog.dropped,
                ),
                (
                    "syslog_messages_resent",
                    "Messages sent again after a TCP reconnect",
                    &syslog.resent,
                ),
                (
                    "syslog_connections",
                    "Connections made to the syslog collector",
                    &syslog.connections,
                ),
            ] {
                let counter = Counter::<u64>::default();
                counter.inc_by(value.load(Ordering::Relaxed));
                registry.register(name, help, counter);
            }
            let connected = Gauge::<i64>::default();
            connected.set(i64::from(syslog.connected.load(Ordering::Relaxed)));
            registry.register(
                "syslog_connected",
                "Whether the forwarder holds a connection to the syslog collector (1) or not (0)",
                connected,
            );
        }
        let oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        oldest.set(total.oldest_hole_seconds);
        registry.register(
            "oldest_hole_age_seconds",
            "Age of the oldest hole still open, waiting for a retransmission or its timeout",
            oldest,
        );
        if self.per_source > 0 {
            self.per_source_series(&mut registry, &slots);
        }
        let mut text = String::new();
        let _ = encode(&mut text, &registry);
        text
    }

    fn per_source_series(&self, registry: &mut Registry, slots: &[Snapshot]) {
        type Labels = Vec<(&'static str, String)>;
        let records = Family::<Labels, Counter<u64>>::default();
        let lost = Family::<Labels, Counter<u64>>::default();
        let incomplete = Family::<Labels, Counter<u64>>::default();
        let restarts = Family::<Labels, Counter<u64>>::default();
        let malformed = Family::<Labels, Counter<u64>>::default();
        let mut senders: Vec<&(String, SocketAddr, Counts)> =
            slots.iter().flat_map(|s| &s.per_source).collect();
        senders.sort_by(|a, b| b.2.records.cmp(&a.2.records).then(a.1.cmp(&b.1)));
        senders.truncate(self.per_source);
        for (host, source, counts) in senders {
            let labels = vec![("host", host.clone()), ("source", source.to_string())];
            records.get_or_create(&labels).inc_by(counts.records);
            lost.get_or_create(&labels).inc_by(counts.lost);
            incomplete.get_or_create(&labels).inc_by(counts.incomplete);
            restarts.get_or_create(&labels).inc_by(counts.restarts);
            malformed.get_or_create(&labels).inc_by(counts.malformed);
        }
        registry.register("source_records", "Records written, per sender", records);
        registry.register(
            "source_lost_records",
            "Sequence numbers lost, per sender",
            lost,
        );
        registry.register(
            "source_incomplete_records",
            "Records given up on incomplete, per sender",
            incomplete,
        );
        registry.register("source_restarts", "Restarts, per sender", restarts);
        registry.register(
            "source_malformed_datagrams",
            "Datagrams that did not parse, per sender",
            malformed,
        );
    }
}

/// The counters of the metrics page: name, help, value.
fn counters(total: &Snapshot) -> [(&'static str, &'static str, u64); 20] {
    let c = total.counts;
    [
        (
            "datagrams",
            "Datagrams received (extended and plain)",
            total.datagrams,
        ),
        ("records", "Records written, in order or late", c.records),
        (
            "out_of_order_records",
            "Records written late (out of order)",
            c.out_of_order,
        ),
        (
            "lost_records",
            "Sequence numbers given up on (lost)",
            c.lost,
        ),
        (
            "incomplete_records",
            "Fragmented records given up on incomplete",
            c.incomplete,
        ),
        (
            "restarts",
            "Sender restarts (reboot, log replay)",
            c.restarts,
        ),
        (
            "plain_datagrams",
            "Plain (non-extended) datagrams written",
            c.plain,
        ),
        (
            "malformed_datagrams",
            "Datagrams that did not parse",
            c.malformed,
        ),
        (
            "refused_datagrams",
            "Datagrams of senders past --max-sources",
            total.refused,
        ),
        (
            "oversized_datagrams",
            "Datagrams longer than 64 KiB (IPv6 jumbograms), dropped",
            total.oversized,
        ),
        (
            "responses",
            "Retransmission requests and acks sent",
            total.responses,
        ),
        (
            "retransmission_requests",
            "Responses sent that asked for missing records",
            total.responses.saturating_sub(total.acks),
        ),
        ("acks", "Responses sent that only acknowledged", total.acks),
        (
            "response_failures",
            "Responses that could not be sent",
            total.responses_failed,
        ),
        (
            "requested_seqs",
            "Sequence numbers asked for again",
            total.requested,
        ),
        (
            "port_unreachable",
            "ICMP port unreachable from senders",
            total.port_unreachable,
        ),
        (
            "kernel_drops",
            "Datagrams the kernel dropped (receive buffer full)",
            total.kernel_drops,
        ),
        (
            "write_errors",
            "Errors writing the output (standard output or --dir files)",
            total.write_errors,
        ),
        (
            "lines_not_written",
            "Lines that could not be written",
            total.lines_not_written,
        ),
        (
            "sources_evicted",
            "Senders evicted (idle, or room needed)",
            total.sources_evicted,
        ),
    ]
}

/// Serves `board` at `http://ADDR/metrics` on its own thread.
pub(crate) fn serve(addr: SocketAddr, board: Board) -> Result<SocketAddr, Failure> {
    let listener = TcpListener::bind(addr).map_err(|source| Failure::Socket {
        what: "cannot serve metrics on",
        addr,
        source,
    })?;
    let bound = listener.local_addr().unwrap_or(addr);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream, &board);
        }
    });
    Ok(bound)
}

/// Answers one HTTP request: `GET /metrics` (or `/`, with or without a query) gets the
/// metrics, `HEAD` their headers, anything else 404.
fn answer(stream: TcpStream, board: &Board) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers, up to the blank line.
    let mut header = String::new();
    let mut openmetrics = false;
    while reader.read_line(&mut header)? > 2 {
        let lower = header.to_ascii_lowercase();
        if lower.starts_with("accept:") && lower.contains("application/openmetrics-text") {
            openmetrics = true;
        }
        header.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    // A query (`/metrics?name[]=...`, which some scrapers add) asks for the same page.
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let head = request.starts_with("HEAD ");
    let mut stream = stream;
    if (request.starts_with("GET ") || head) && (path == "/metrics" || path == "/") {
        // Prometheus asks for OpenMetrics; curl, promtool and older scrapers get the
        // Prometheus text format.
        let (content_type, body) = if openmetrics {
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                board.render_openmetrics(),
            )
        } else {
            (
                "text/plain; version=0.0.4; charset=utf-8",
                prometheus_text(&board.render_openmetrics()),
            )
        };
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            if head { "" } else { body.as_str() }
        )
    } else {
        let body = "only /metrics is served here\n";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

/// OpenMetrics text as the Prometheus text format (0.0.4): a counter's family is named with
/// its `_total` suffix in `# HELP` and `# TYPE`, and `# EOF` and `# UNIT` lines go.
pub(crate) fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counter_families_with_total() {
        let board = Board::new(2, 10);
        let counts = Counts {
            records: 5,
            lost: 2,
            ..Counts::default()
        };
        board.publish(
            0,
            Snapshot {
                counts,
                sources: 1,
                per_source: vec![("web1".into(), "192.0.2.1:6665".parse().unwrap(), counts)],
                ..Snapshot::default()
            },
        );
        board.publish(
            1,
            Snapshot {
                counts,
                sources: 2,
                ..Snapshot::default()
            },
        );
        let open = board.render_openmetrics();
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(
            open.contains("# TYPE ncrx_records counter\nncrx_records_total 10\n"),
            "{open}"
        );
        let text = prometheus_text(&open);
        assert!(
            text.contains(
                "# HELP ncrx_records_total Records written, in order or late.\n# TYPE ncrx_records_total counter\nncrx_records_total 10\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ncrx_sources gauge\nncrx_sources 3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "ncrx_source_lost_records_total{host=\"web1\",source=\"192.0.2.1:6665\"} 2\n"
            ),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    /// The kernel drops are shown once every thread has published them: before, a thread's
    /// are unknown, not 0.
    #[test]
    fn kernel_drops_wait_for_every_thread() {
        let board = Board::new(2, 0);
        let has_drops = |board: &Board| board.render_openmetrics().contains("ncrx_kernel_drops");
        assert!(!has_drops(&board));
        let known = Snapshot {
            kernel_drops: 3,
            ..Snapshot::default()
        };
        board.publish(0, known.clone());
        assert!(!has_drops(&board));
        board.publish(1, known);
        assert!(
            board
                .render_openmetrics()
                .contains("ncrx_kernel_drops_total 6\n")
        );
    }
}

//! `ncrx decode`: netconsole records out of a capture, through the same receiver a live
//! listener uses (`ncrx_core::Receiver`), with the capture's timestamps as time.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use ncrx_core::{Event, IncompleteRecord, Receiver, ReceiverConfig, Record, RestartReason};
use netconsole_proto::{Body, Flag, escape, received};
use netpoll_frame::Instant;

use crate::capture;
use crate::cli::{DecodeArgs, Format};
use crate::error::{Failure, Outcome};
use crate::json::{
    self, JsonIncomplete, JsonLine, JsonLost, JsonMeta, JsonPlain, JsonRecord, JsonRestart,
};

/// Bytes of lines gathered before they are written to standard output.
const STDOUT_BATCH: usize = 64 * 1024;

/// What happened per source, for the closing counts.
#[derive(Debug, Default, Clone, Copy)]
struct SourceCounts {
    records: u64,
    lost: u64,
    out_of_order: u64,
    incomplete: u64,
    restarts: u64,
    plain: u64,
    malformed: u64,
}

/// Where the lines go.
enum Destination {
    /// Standard output: whole lines gathered here, written under the stdout lock, so that
    /// several listener threads never interleave within a line.
    Stdout(Vec<u8>),
    /// One file per source, `DIR/<source>.log`, appended to.
    Dir {
        dir: PathBuf,
        files: BTreeMap<SocketAddr, BufWriter<File>>,
    },
}

/// Writes events as text or JSON lines.
pub(crate) struct Output {
    destination: Destination,
    format: Format,
    format_limit: Option<usize>,
    counts: BTreeMap<SocketAddr, SourceCounts>,
}

/// The fields of a record decoded for output.
struct Decoded {
    text: String,
    dict: Vec<(String, String)>,
    truncated: bool,
    escaped: bool,
}

/// Bytes as a JSON/text string: the decoded bytes when they are UTF-8 and escaping them again
/// gives the wire form back, otherwise `None`.
fn decoded_string(wire: &[u8]) -> Option<String> {
    String::from_utf8(received::decode_exact(wire)?.into_owned()).ok()
}

fn wire_string(wire: &[u8]) -> String {
    String::from_utf8_lossy(wire).into_owned()
}

/// The header fields of a JSON `record` or `incomplete` line.
fn meta(source: SocketAddr, record: &Record<'_>) -> JsonMeta {
    JsonMeta {
        source: source.to_string(),
        seq: record.seq,
        facility: record.facility,
        level: record.level,
        ts_usec: record.ts_usec,
        flag: flag_str(record.flag).to_owned(),
        caller: record.caller.map(|c| c.to_string()),
        release: record.release.map(wire_string),
    }
}

impl Output {
    /// Lines to standard output, or to one file per source under `dir`.
    pub(crate) fn new(
        format: Format,
        format_limit: Option<usize>,
        dir: Option<PathBuf>,
    ) -> Result<Self, Failure> {
        let destination = match dir {
            Some(dir) => {
                fs::create_dir_all(&dir).map_err(|source| Failure::File {
                    what: "cannot create directory",
                    path: dir.clone(),
                    source,
                })?;
                Destination::Dir {
                    dir,
                    files: BTreeMap::new(),
                }
            }
            None => Destination::Stdout(Vec::with_capacity(STDOUT_BATCH)),
        };
        Ok(Output {
            destination,
            format,
            format_limit,
            counts: BTreeMap::new(),
        })
    }

    /// Writes out what is buffered.
    pub(crate) fn flush(&mut self) -> Result<(), Failure> {
        let stdout_failure = |source| Failure::Stream {
            what: "cannot write to standard output",
            source,
        };
        match &mut self.destination {
            Destination::Stdout(batch) => {
                let mut stdout = io::stdout().lock();
                let written = stdout.write_all(batch).and_then(|()| stdout.flush());
                batch.clear();
                written.map_err(stdout_failure)
            }
            Destination::Dir { dir, files } => {
                for (source, file) in files {
                    file.flush().map_err(|e| Failure::File {
                        what: "cannot write",
                        path: dir.join(format!("{source}.log")),
                        source: e,
                    })?;
                }
                Ok(())
            }
        }
    }

    /// Counts a datagram from `source` that the receiver found malformed.
    pub(crate) fn malformed(&mut self, source: SocketAddr) {
        self.counts.entry(source).or_default().malformed += 1;
    }

    /// The closing counts, one line per source, on stderr.
    pub(crate) fn report_counts(&self) {
        for (source, c) in &self.counts {
            eprintln!(
                "ncrx: {source}: {} records, {} lost, {} out of order, {} incomplete, {} restarts, {} plain, {} bad datagrams",
                c.records, c.lost, c.out_of_order, c.incomplete, c.restarts, c.plain, c.malformed
            );
        }
    }

    fn body<'b>(&self, record: &Record<'_>, body: &'b [u8]) -> Body<'b> {
        match (self.format_limit, record.parse_header()) {
            (Some(limit), Ok(header)) => Body::parse_limited(body, header.kernel_len(), limit),
            // The sender's limit is not known: a Linux 6.3+ cut is recognised by what follows it.
            (None, Ok(header)) => received::split_body(body, header.kernel_len()),
            (_, Err(_)) => Body::parse(body),
        }
    }

    /// Splits and decodes a record's body. Where decoding would lose anything, every string
    /// holds the wire form instead and `escaped` is set.
    fn decode(&self, record: &Record<'_>, body: &[u8]) -> Decoded {
        let split = self.body(record, body);
        let lines: Vec<(&[u8], &[u8])> = split.lines().map(|l| (l.key(), l.value())).collect();
        let text = decoded_string(split.text());
        let dict: Option<Vec<(String, String)>> = lines
            .iter()
            .map(|(k, v)| Some((decoded_string(k)?, decoded_string(v)?)))
            .collect();
        let truncated = split.text_cut();
        match (text, dict) {
            (Some(text), Some(dict)) => Decoded {
                text,
                dict,
                truncated,
                escaped: false,
            },
            _ => Decoded {
                text: wire_string(split.text()),
                dict: lines
                    .iter()
                    .map(|(k, v)| (wire_string(k), wire_string(v)))
                    .collect(),
                truncated,
                escaped: true,
            },
        }
    }

    fn line(&mut self, source: SocketAddr, line: &str) -> Result<(), Failure> {
        match &mut self.destination {
            Destination::Stdout(batch) => {
                batch.extend_from_slice(line.as_bytes());
                batch.push(b'\n');
                if batch.len() >= STDOUT_BATCH {
                    self.flush()?;
                }
                Ok(())
            }
            Destination::Dir { dir, files } => {
                let path = dir.join(format!("{source}.log"));
                let file = match files.entry(source) {
                    std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::btree_map::Entry::Vacant(entry) => {
                        let file = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)
                            .map_err(|e| Failure::File {
                                what: "cannot open",
                                path: path.clone(),
                                source: e,
                            })?;
                        entry.insert(BufWriter::new(file))
                    }
                };
                writeln!(file, "{line}").map_err(|e| Failure::File {
                    what: "cannot write",
                    path,
                    source: e,
                })
            }
        }
    }

    fn record(
        &mut self,
        source: SocketAddr,
        record: &Record<'_>,
        out_of_order: bool,
    ) -> Result<(), Failure> {
        let counts = self.counts.entry(source).or_default();
        counts.records += 1;
        if out_of_order {
            counts.out_of_order += 1;
        }
        let decoded = self.decode(record, record.body);
        let line = match self.format {
            Format::Json => json::to_line(&JsonLine::Record(JsonRecord {
                meta: meta(source, record),
                text: decoded.text,
                dict: decoded.dict,
                emergency: record.ncemg,
                out_of_order,
                truncated: decoded.truncated,
                escaped: decoded.escaped,
            })),
            Format::Text => {
                let split = self.body(record, record.body);
                let mut line = format!(
                    "{source} #{} [{}] <{}> {}",
                    record.seq,
                    timestamp(record.ts_usec),
                    record.level,
                    wire_string(split.text())
                );
                for (mark, on) in [
                    (" [cut]", decoded.truncated),
                    (" [out of order]", out_of_order),
                    (" [emergency]", record.ncemg),
                ] {
                    if on {
                        line.push_str(mark);
                    }
                }
                line
            }
        };
        self.line(source, &line)
    }

    fn incomplete(
        &mut self,
        source: SocketAddr,
        incomplete: &IncompleteRecord<'_>,
    ) -> Result<(), Failure> {
        self.counts.entry(source).or_default().incomplete += 1;
        let record = &incomplete.record;
        // The text is known only when the first bytes of the body arrived.
        let first = incomplete
            .received()
            .next()
            .filter(|(offset, _)| *offset == 0)
            .map(|(_, bytes)| self.decode(record, bytes));
        let missing: Vec<[usize; 2]> = incomplete
            .missing
            .iter()
            .map(|range| [range.start, range.end - range.start])
            .collect();
        let line = match self.format {
            Format::Json => json::to_line(&JsonLine::Incomplete(JsonIncomplete {
                meta: meta(source, record),
                text: first.as_ref().map(|d| d.text.clone()),
                escaped: first.as_ref().is_some_and(|d| d.escaped),
                total: incomplete.total,
                missing,
            })),
            Format::Text => format!(
                "{source} #{} [{}] <{}> {} [incomplete: {} of {} bytes]",
                record.seq,
                timestamp(record.ts_usec),
                record.level,
                first.map(|d| d.text).unwrap_or_default(),
                incomplete.received_len(),
                incomplete.total
            ),
        };
        self.line(source, &line)
    }

    pub(crate) fn event(&mut self, source: SocketAddr, event: &Event<'_>) -> Result<(), Failure> {
        match event {
            Event::Record(record) => self.record(source, record, false),
            Event::Late(record) => self.record(source, record, true),
            Event::Incomplete(incomplete) => self.incomplete(source, incomplete),
            Event::Lost { seqs } => {
                self.counts.entry(source).or_default().lost += seqs.end - seqs.start;
                let (first, last) = (seqs.start, seqs.end.saturating_sub(1));
                let line = match self.format {
                    Format::Json => json::to_line(&JsonLine::Lost(JsonLost {
                        source: source.to_string(),
                        first_seq: first,
                        last_seq: last,
                    })),
                    Format::Text => format!("{source} lost #{first}..#{last}"),
                };
                self.line(source, &line)
            }
            Event::Restart(restart) => {
                self.counts.entry(source).or_default().restarts += 1;
                let reason = match restart.reason {
                    RestartReason::Release => "release",
                    RestartReason::Timestamp => "timestamp",
                    RestartReason::FarBack => "far_back",
                    RestartReason::OutOfOrder => "out_of_order",
                    _ => "other",
                };
                let line = match self.format {
                    Format::Json => json::to_line(&JsonLine::Restart(JsonRestart {
                        source: source.to_string(),
                        reason: reason.to_owned(),
                        seq: restart.seq,
                    })),
                    Format::Text => {
                        format!("{source} restart ({reason}) at #{}", restart.seq)
                    }
                };
                self.line(source, &line)
            }
            Event::Plain(text) => {
                self.counts.entry(source).or_default().plain += 1;
                let line = match self.format {
                    Format::Json => {
                        let (text, escaped) = match std::str::from_utf8(text) {
                            Ok(text) => (text.to_owned(), false),
                            Err(_) => (wire_string(&escape(text)), true),
                        };
                        json::to_line(&JsonLine::Plain(JsonPlain {
                            source: source.to_string(),
                            text,
                            escaped,
                        }))
                    }
                    Format::Text => format!(
                        "{source} {}",
                        text.strip_suffix(b"\n").unwrap_or(text).escape_ascii()
                    ),
                };
                self.line(source, &line)
            }
            // Evictions and kinds added later say nothing about the log itself.
            _ => Ok(()),
        }
    }
}

fn flag_str(flag: Flag) -> &'static str {
    match flag.as_byte() {
        b'c' => "c",
        b'+' => "+",
        _ => "-",
    }
}

/// `ts_usec` as dmesg shows it: seconds, 5 wide, and microseconds.
fn timestamp(ts_usec: u64) -> String {
    format!("{:5}.{:06}", ts_usec / 1_000_000, ts_usec % 1_000_000)
}

/// Takes every event and response out of the receiver (a capture cannot answer).
fn drain(
    rx: &mut Receiver<SocketAddr>,
    output: &mut Output,
    scratch: &mut [u8],
) -> Result<(), Failure> {
    while let Some((source, event)) = rx.poll_event() {
        output.event(source, &event)?;
    }
    while rx.poll_transmit(scratch).is_some() {}
    Ok(())
}

/// Runs the receiver's timers that are due by `now`, at their exact deadlines.
fn run_timers(
    rx: &mut Receiver<SocketAddr>,
    now: Instant,
    output: &mut Output,
    scratch: &mut [u8],
) -> Result<(), Failure> {
    while let Some(deadline) = rx.poll_timeout().filter(|&d| d <= now) {
        rx.handle_timeout(deadline);
        drain(rx, output, scratch)?;
    }
    Ok(())
}

/// Datagrams shown at most by `-v`, in bytes.
const SHOWN_BYTES: usize = 120;

/// Hands one datagram to the receiver and counts it in `output` when the receiver found it
/// malformed (shown on stderr with `verbose`).
pub(crate) fn feed(
    rx: &mut Receiver<SocketAddr>,
    output: &mut Output,
    now: Instant,
    source: SocketAddr,
    payload: &[u8],
    verbose: bool,
) {
    let malformed =
        |rx: &Receiver<SocketAddr>| rx.stream(&source).map_or(0, |s| s.stats().malformed);
    let before = malformed(rx);
    rx.handle_datagram(now, &source, payload);
    if malformed(rx) > before {
        output.malformed(source);
        if verbose {
            eprintln!(
                "ncrx: malformed datagram from {source} ({} bytes): {}",
                payload.len(),
                payload[..payload.len().min(SHOWN_BYTES)].escape_ascii()
            );
        }
    }
}

/// `ncrx decode`.
pub(crate) fn run(args: &DecodeArgs) -> Result<Outcome, Failure> {
    let mut output = Output::new(args.format, args.format_limit, args.dir.clone())?;
    let mut rx: Receiver<SocketAddr> = Receiver::new(ReceiverConfig::libncrx());
    let mut scratch = vec![0u8; 2048];
    let summary = capture::read_capture(&args.file, &args.port, |datagram| {
        run_timers(&mut rx, datagram.time, &mut output, &mut scratch)?;
        feed(
            &mut rx,
            &mut output,
            datagram.time,
            datagram.frame.source(),
            datagram.frame.payload(),
            args.verbose,
        );
        drain(&mut rx, &mut output, &mut scratch)
    })?;
    let malformed = rx.stats().streams.malformed;
    // The capture has ended: every timer fires, holes become losses, sources are flushed.
    rx.handle_timeout(Instant::MAX);
    drain(&mut rx, &mut output, &mut scratch)?;
    output.flush()?;
    eprintln!(
        "ncrx: {}: {}; {malformed} malformed datagrams",
        args.file.display(),
        summary.describe(&args.port)
    );
    output.report_counts();
    Ok(Outcome {
        bad_data: summary.bad_frames > 0 || malformed > 0,
        truncated: summary.truncated.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_only_when_nothing_is_lost() {
        assert_eq!(
            decoded_string(b"tab\\x09 \\x5c \\xc3\\xa9").as_deref(),
            Some("tab\t \\ é")
        );
        // Invalid UTF-8.
        assert_eq!(decoded_string(b"\\xff"), None);
        // A dangling backslash left by a cut.
        assert_eq!(decoded_string(b"cut \\"), None);
        // Not the kernel's escaping (userdata is sent raw: this backslash stands for itself).
        assert_eq!(decoded_string(b"a\\x41"), None);
        assert_eq!(timestamp(5_123_456), "    5.123456");
    }
}

//! `ncrx decode`: netconsole records out of a capture, through the same receiver a live
//! listener uses (`ncrx_core::Receiver`), with the capture's timestamps as time.

use std::net::SocketAddr;

use std::collections::BTreeMap;

use ncrx_core::{Event, Receiver, ReceiverConfig};
use netconsole_proto::{PRINTK_MESSAGE_MAX, plain_chunk_continues};
use netpoll_frame::Instant;

use crate::capture;
use crate::cli::DecodeArgs;
use crate::error::{Failure, Outcome};
use crate::sink::{Sink, SinkOptions, show_malformed};

/// The longest plain item put together from chunks: a plain console's text of one record is
/// at most its buffer (`PRINTK_MESSAGE_MAX`, 2048 bytes), so this bounds what a sender that
/// never ends its line can make `decode` hold.
const PLAIN_JOINED_MAX: usize = 4 * PRINTK_MESSAGE_MAX;

/// Plain datagrams that a line continues into the next (a console message longer than
/// `MAX_PRINT_CHUNK` is sent in several, see `netconsole_proto::plain_chunk_continues`),
/// held per source until the chunk that ends the line, then written as one `plain` item.
#[derive(Default)]
struct PlainLines {
    held: BTreeMap<SocketAddr, Vec<u8>>,
}

impl PlainLines {
    /// Writes `event`, joining a plain chunk with those before it from the same source.
    fn event(&mut self, output: &mut Sink, source: SocketAddr, event: &Event<'_>) {
        let Event::Plain(text) = event else {
            // Anything else from the source ends a line it left open.
            self.flush_source(output, source);
            output.event(source, event);
            return;
        };
        let continues = plain_chunk_continues(text);
        match self.held.remove(&source) {
            None if !continues => output.event(source, event),
            held => {
                let mut line = held.unwrap_or_default();
                line.extend_from_slice(text);
                if continues && line.len() < PLAIN_JOINED_MAX {
                    self.held.insert(source, line);
                } else {
                    output.event(source, &Event::Plain(&line));
                }
            }
        }
    }

    fn flush_source(&mut self, output: &mut Sink, source: SocketAddr) {
        if let Some(line) = self.held.remove(&source) {
            output.event(source, &Event::Plain(&line));
        }
    }

    /// Writes every line still held (the capture ended).
    fn flush(&mut self, output: &mut Sink) {
        for (source, line) in std::mem::take(&mut self.held) {
            output.event(source, &Event::Plain(&line));
        }
    }
}

/// Takes every event and response out of the receiver (a capture cannot answer).
fn drain(
    rx: &mut Receiver<SocketAddr>,
    output: &mut Sink,
    plain: &mut PlainLines,
    scratch: &mut [u8],
) -> Result<(), Failure> {
    while let Some((source, event)) = rx.poll_event() {
        plain.event(output, source, &event);
    }
    while rx.poll_transmit(scratch).is_some() {}
    if output.full() {
        output.flush()?;
    }
    Ok(())
}

/// Runs the receiver's timers that are due by `now`, at their exact deadlines.
fn run_timers(
    rx: &mut Receiver<SocketAddr>,
    now: Instant,
    output: &mut Sink,
    plain: &mut PlainLines,
    scratch: &mut [u8],
) -> Result<(), Failure> {
    while let Some(deadline) = rx.poll_timeout().filter(|&d| d <= now) {
        rx.handle_timeout(deadline);
        drain(rx, output, plain, scratch)?;
    }
    Ok(())
}

/// Hands one datagram to the receiver and counts it in `output` when the receiver found it
/// malformed (shown on stderr with `verbose`).
fn feed(
    rx: &mut Receiver<SocketAddr>,
    output: &mut Sink,
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
            show_malformed(source, payload);
        }
    }
}

/// `ncrx decode`.
pub(crate) fn run(args: &DecodeArgs) -> Result<Outcome, Failure> {
    let output = Sink::new(&SinkOptions::capture(
        args.format,
        args.format_limit,
        args.dir.clone(),
    ))?;
    let mut rx: Receiver<SocketAddr> = Receiver::new(ReceiverConfig::libncrx());
    let mut scratch = vec![0u8; 2048];
    let mut plain = PlainLines::default();
    let output = std::cell::RefCell::new(output);
    let summary = capture::read_capture(
        &args.file,
        &args.port,
        args.checksums.policy(),
        |datagram| {
            let output = &mut *output.borrow_mut();
            run_timers(&mut rx, datagram.time, output, &mut plain, &mut scratch)?;
            feed(
                &mut rx,
                output,
                datagram.time,
                datagram.frame.source(),
                datagram.frame.payload(),
                args.verbose,
            );
            drain(&mut rx, output, &mut plain, &mut scratch)
        },
        // Before waiting for more of a live capture, what is decoded goes out.
        || output.borrow_mut().flush(),
    )?;
    let mut output = output.into_inner();
    let malformed = rx.stats().streams.malformed;
    // The capture has ended: every timer fires, holes become losses, sources are flushed.
    rx.handle_timeout(Instant::MAX);
    output.closing();
    drain(&mut rx, &mut output, &mut plain, &mut scratch)?;
    plain.flush(&mut output);
    output.flush()?;
    eprintln!(
        "ncrx: {}: {}; {malformed} malformed datagrams",
        capture::display_name(&args.file),
        summary.describe(&args.port)
    );
    let mut sources: Vec<_> = output.per_source().collect();
    sources.sort_by_key(|(source, _)| **source);
    for (source, counts) in sources {
        eprintln!("ncrx: {source}: {counts}");
    }
    if output.write_errors.lines_lost > 0 {
        return Err(Failure::Stream {
            what: "cannot write every line",
            source: std::io::Error::other(format!(
                "{} lines not written; last error: {}",
                output.write_errors.lines_lost,
                output.write_errors.last().unwrap_or("?")
            )),
        });
    }
    Ok(Outcome {
        bad_data: summary.bad_frames > 0 || malformed > 0,
        truncated: summary.truncated.is_some(),
        unwritten: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cli::Format;

    /// The lines `output` holds for standard output.
    fn batched(output: &Sink) -> Vec<String> {
        output.stdout_lines()
    }

    #[test]
    fn plain_chunks_join_per_source_and_stay_bounded() {
        let mut output = Sink::new(&SinkOptions::capture(Format::Text, None, None)).unwrap();
        let mut plain = PlainLines::default();
        let a: SocketAddr = "192.0.2.1:6665".parse().unwrap();
        let b: SocketAddr = "192.0.2.9:6665".parse().unwrap();
        let mut first = b"[    1.000000] ".to_vec();
        first.resize(1000, b'x');
        plain.event(&mut output, a, &Event::Plain(&first));
        // Another source's message in between comes out at once.
        plain.event(&mut output, b, &Event::Plain(b"[    2.000000] short\n"));
        assert_eq!(batched(&output), ["192.0.2.9:6665 [    2.000000] short"]);
        plain.event(&mut output, a, &Event::Plain(b"yz end\n"));
        let lines = batched(&output);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].len(), "192.0.2.1:6665 ".len() + 1000 + 6);
        assert!(lines[1].ends_with("xxyz end"), "{}", lines[1]);
        // A line left open ends at the source's next other event, or at the end.
        plain.event(&mut output, a, &Event::Plain(&first));
        plain.flush(&mut output);
        assert_eq!(batched(&output).len(), 3);
        // A sender that never ends its line: held at most PLAIN_JOINED_MAX bytes at a time.
        let chunk = vec![b'x'; 1000];
        for _ in 0..20 {
            plain.event(&mut output, a, &Event::Plain(&chunk));
            assert!(plain.held.get(&a).map_or(0, Vec::len) < PLAIN_JOINED_MAX);
        }
        plain.flush(&mut output);
        let long: Vec<usize> = batched(&output)[3..].iter().map(String::len).collect();
        assert_eq!(
            long.iter()
                .map(|l| l - "192.0.2.1:6665 ".len())
                .sum::<usize>(),
            20_000
        );
    }
}

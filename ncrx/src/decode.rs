//! `ncrx decode`: netconsole records out of a capture, through the same receiver a live
//! listener uses (`ncrx_core::Receiver`), with the capture's timestamps as time.

use std::net::SocketAddr;

use ncrx_core::{Receiver, ReceiverConfig};
use netpoll_frame::Instant;

use crate::capture;
use crate::cli::{DecodeArgs, TimeShown};
use crate::error::{Failure, Outcome};
use crate::names::Names;
use crate::sink::{Sink, SinkOptions};

/// Takes every event and response out of the receiver (a capture cannot answer).
fn drain(
    rx: &mut Receiver<SocketAddr>,
    output: &mut Sink,
    scratch: &mut [u8],
) -> Result<(), Failure> {
    rx.drain_events(|source, event| output.event(*source, &event));
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
    let mut output = Sink::new(&SinkOptions {
        format: args.format,
        format_limit: args.format_limit,
        dir: args.dir.clone(),
        time: TimeShown::Kernel,
        stamp: false,
        names: Names::default(),
        syslog: false,
    })?;
    let mut rx: Receiver<SocketAddr> = Receiver::new(ReceiverConfig::default());
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
    output.closing();
    drain(&mut rx, &mut output, &mut scratch)?;
    output.flush()?;
    eprintln!(
        "ncrx: {}: {}; {malformed} malformed datagrams",
        args.file.display(),
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
    })
}

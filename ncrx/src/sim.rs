//! `ncrx sim`: runs `ncrx_core::sim` with the command line's parameters and prints its report.
//!
//! A progress bar (indicatif) is drawn on stderr while the senders push their records when
//! stderr is a terminal and neither `--json` nor `--quiet` is given. When stderr is not a
//! terminal (a log, a pipe), a run says how far it is and how long it has left in one line
//! every `--progress-interval` seconds (5 by default; not with `--quiet`), so a large run is
//! never silent for minutes.
//!
//! The report goes to standard output; a closed or full standard output ends the command
//! with exit code 3 and a message, as for `decode`.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ncrx_core::sim::{self, SimConfig, SimReport};
use serde::Serialize;

use crate::cli::SimArgs;
use crate::error::{Failure, Outcome};

/// The report as JSON (one object, `"type": "sim"` first).
#[derive(Debug, Serialize)]
struct JsonSim<'a> {
    r#type: &'static str,
    seed: u64,
    sources: u32,
    sent: u64,
    delivered: u64,
    late: u64,
    lost: u64,
    incomplete: u64,
    unseen: u64,
    restarts: u64,
    to_receiver: u64,
    to_sender: u64,
    retransmitted: u64,
    virtual_time_ms: u128,
    delay_p50_us: u128,
    delay_p99_us: u128,
    delay_max_us: u128,
    max_memory: usize,
    memory_bound: usize,
    violations: &'a [String],
}

fn config(args: &SimArgs) -> SimConfig {
    let mut config = SimConfig::default();
    config.seed = args.seed;
    config.sources = args.sources;
    config.records = args.records;
    config.loss_to_receiver = args.loss;
    config.loss_to_sender = args.reverse_loss;
    config.reorder = args.reorder;
    config.duplicate = args.dup;
    config.reboot_after = args.reboot_at;
    config.fragment_every = args.fragment_every;
    config.retransmission = !args.no_retransmission;
    config
}

#[allow(
    clippy::cast_precision_loss,
    reason = "percentages for display; counts far below 2^52"
)]
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 100.0;
    }
    part as f64 * 100.0 / whole as f64
}

fn text(args: &SimArgs, report: &SimReport) -> String {
    let mut out = format!(
        "sim: seed {}, {} source(s) x {} records, loss {} / reverse {}, reorder {}, dup {}{}\n",
        args.seed,
        args.sources,
        args.records,
        args.loss,
        args.reverse_loss,
        args.reorder,
        args.dup,
        args.reboot_at
            .map_or(String::new(), |k| format!(", reboot after {k}"))
    );
    let _ = writeln!(
        out,
        "sent {}, delivered {} ({:.3}%), late {}, lost {}, incomplete {}, unseen {}, restarts {}",
        report.sent,
        report.delivered,
        percent(report.delivered, report.sent),
        report.late,
        report.lost,
        report.incomplete,
        report.unseen,
        report.restarts
    );
    let _ = writeln!(
        out,
        "datagrams to the receiver {} ({} retransmissions), responses to the senders {}, virtual time {:.3} s, memory at most {} of {} bytes",
        report.to_receiver,
        report.retransmitted,
        report.to_sender,
        report.virtual_time.as_secs_f64(),
        report.max_memory,
        report.memory_bound
    );
    let _ = writeln!(
        out,
        "delivery delay (virtual time, first transmission to release): p50 {}, p99 {}, max {}",
        millis(report.delay_p50),
        millis(report.delay_p99),
        millis(report.delay_max)
    );
    if report.violations.is_empty() {
        out.push_str("invariants: all hold\n");
    } else {
        for violation in &report.violations {
            let _ = writeln!(out, "invariant broken: {violation}");
        }
    }
    out
}

/// A duration as milliseconds with three decimals.
fn millis(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

/// How many progress steps the bar gets over a whole run.
const PROGRESS_STEPS: u64 = 500;

/// One progress line for a stderr that is not a terminal: records pushed, elapsed wall time,
/// and the time left at the rate so far.
#[allow(
    clippy::cast_precision_loss,
    reason = "percentages and estimates for display"
)]
fn progress_line(done: u64, total: u64, elapsed: Duration) -> String {
    let mut line = format!(
        "ncrx: sim: {done} of {total} records pushed ({:.1}%) after {:.1} s",
        percent(done, total),
        elapsed.as_secs_f64()
    );
    if done > 0 && done < total {
        let left = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
        let _ = write!(line, ", about {left:.1} s left");
    } else if done == 0 {
        line.push_str(", no estimate yet");
    }
    line
}

/// Writes [`progress_line`]s every `every` until `stop` says the run ended.
fn progress_lines(done: &AtomicU64, total: u64, every: Duration, stop: &mpsc::Receiver<()>) {
    let start = std::time::Instant::now();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        eprintln!(
            "{}",
            progress_line(done.load(Ordering::Relaxed), total, start.elapsed())
        );
    }
}

/// `ncrx sim`.
pub(crate) fn run(args: &SimArgs) -> Result<Outcome, Failure> {
    if args.records == 0 {
        return Err(Failure::Usage("--records must be at least 1".into()));
    }
    if args.sources == 0 {
        return Err(Failure::Usage(
            "--sources must be at least 1 (the number of simulated senders)".into(),
        ));
    }
    let config = config(args);
    let total = config.records.saturating_mul(u64::from(config.sources));
    let terminal = std::io::stderr().is_terminal();
    let target = if args.json || args.quiet || !terminal {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The spinner and the elapsed time move even while no record is pushed (a run with many
    // sources spends long between pushes).
    bar.enable_steady_tick(Duration::from_millis(200));
    let done = AtomicU64::new(0);
    let report = thread::scope(|scope| {
        let (stop, stopped) = mpsc::channel::<()>();
        if !terminal && !args.quiet {
            let done = &done;
            let every = Duration::from_secs_f64(args.progress_interval);
            scope.spawn(move || progress_lines(done, total, every, &stopped));
        }
        let report = sim::run_with_progress(&config, (total / PROGRESS_STEPS).max(1), |progress| {
            bar.set_position(progress.done);
            done.store(progress.done, Ordering::Relaxed);
        });
        drop(stop);
        report
    });
    bar.finish_and_clear();
    let out = if args.json {
        let json = JsonSim {
            r#type: "sim",
            seed: args.seed,
            sources: args.sources,
            sent: report.sent,
            delivered: report.delivered,
            late: report.late,
            lost: report.lost,
            incomplete: report.incomplete,
            unseen: report.unseen,
            restarts: report.restarts,
            to_receiver: report.to_receiver,
            to_sender: report.to_sender,
            retransmitted: report.retransmitted,
            virtual_time_ms: report.virtual_time.as_millis(),
            delay_p50_us: report.delay_p50.as_micros(),
            delay_p99_us: report.delay_p99.as_micros(),
            delay_max_us: report.delay_max.as_micros(),
            max_memory: report.max_memory,
            memory_bound: report.memory_bound,
            violations: &report.violations,
        };
        let mut line = serde_json::to_string(&json).unwrap_or_default();
        line.push('\n');
        line
    } else {
        text(args, &report)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|source| Failure::Stream {
            what: "cannot write to standard output",
            source,
        })?;
    Ok(Outcome {
        bad_data: !report.violations.is_empty(),
        truncated: false,
        unwritten: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_say_how_long_is_left() {
        assert_eq!(
            progress_line(250, 1000, Duration::from_secs(10)),
            "ncrx: sim: 250 of 1000 records pushed (25.0%) after 10.0 s, about 30.0 s left"
        );
        assert_eq!(
            progress_line(0, 1000, Duration::from_secs(5)),
            "ncrx: sim: 0 of 1000 records pushed (0.0%) after 5.0 s, no estimate yet"
        );
    }
}

//! `ncrx send`: the kernel's netconsole sender in user space.
//!
//! [`run`] reads records ([`input`]), and this module sends each to every target as the
//! kernel would, with netconsole-proto's formatting: an extended message (userdata and
//! sysdata from [`extradata`] appended, `ncfrag` fragments) or console text cut in chunks.
//! The datagrams go to a [`sink`]: UDP sockets or frames in a pcap. `--reliable` runs
//! [`reliable`] instead: netconsole-proto's reliable sender on every target.

mod extradata;
mod input;
mod reliable;
mod sink;

use std::io;

use netconsole_proto::{
    ConsoleOptions, ConsoleRecord, ExtFragments, MAX_PRINT_CHUNK, SendOptions, format_console,
    plain_chunks,
};

use crate::cli::{ConsoleArgs, SendArgs};
use crate::error::{Failure, Outcome};
use extradata::Extradata;
use sink::Sink;

/// Counts for the closing line.
#[derive(Debug, Default)]
struct Counts {
    records: u64,
    datagrams: u64,
    bad: u64,
    skipped: u64,
}

/// The sender: targets, options and the sink.
struct Sender<'a> {
    args: &'a SendArgs,
    release: Option<String>,
    sink: Sink,
    counts: Counts,
    /// The console text of one record for plain targets (the console buffer).
    console: Vec<u8>,
    /// userdata and sysdata of extended targets.
    extradata: Extradata,
}

/// How plain targets' console formats records (`--console-*`, `--no-time`, `--syslog`).
fn console_options(args: &ConsoleArgs) -> ConsoleOptions {
    let mut options = ConsoleOptions::default();
    options.time = !args.no_time;
    options.caller = args.console_caller;
    options.syslog = args.syslog;
    options.buffer_size = args.console_buffer;
    options
}

impl Sender<'_> {
    /// Sends one formatted extended message (what `/dev/kmsg` returns) to every extended
    /// target, fragmented as `send_ext_msg_udp` does.
    fn send_extended(
        &mut self,
        msg: &[u8],
        release: Option<&str>,
        appended: &[u8],
    ) -> Result<(), Failure> {
        if let Sink::Reliable(queue) = &self.sink {
            if !appended.is_empty() {
                // The reliable sender appends nothing: the lines go with the message.
                let mut whole = msg.to_vec();
                whole.extend_from_slice(appended);
                return queue.send(whole).map_err(|_| Failure::Stream {
                    what: "the reliable sender stopped",
                    source: io::Error::other("reliable sender gone"),
                });
            }
            // The network side has stopped (a socket failed): stop reading.
            return queue.send(msg.to_vec()).map_err(|_| Failure::Stream {
                what: "the reliable sender stopped",
                source: io::Error::other("reliable sender gone"),
            });
        }
        let mut out = [0u8; MAX_PRINT_CHUNK];
        for (index, target) in self.args.target.targets.iter().enumerate() {
            if !target.extended {
                continue;
            }
            let mut options = SendOptions::default();
            if target.release {
                options.release = release.or(self.release.as_deref()).map(str::as_bytes);
            }
            let sysdata_len = self.extradata.next_sysdata(index);
            // The record's own appended lines (a received record's userdata and sysdata),
            // then the configured userdata.
            let userdata: std::borrow::Cow<'_, [u8]> = if appended.is_empty() {
                self.extradata.userdata.as_slice().into()
            } else {
                [appended, &self.extradata.userdata].concat().into()
            };
            options.userdata = &userdata;
            options.sysdata = &self.extradata.sysdata[..sysdata_len];
            let mut fragments = match ExtFragments::new(msg, options) {
                Ok(fragments) => fragments,
                Err(error) => {
                    self.bad(&format!("record not sent to target {}: {error}", index + 1));
                    continue;
                }
            };
            while let Some(len) = fragments.write_next(&mut out) {
                self.sink.send(index, &out[..len])?;
                self.counts.datagrams += 1;
            }
        }
        Ok(())
    }

    /// Whether any target is plain (so records need their console text).
    fn has_plain_targets(&self) -> bool {
        self.args.target.targets.iter().any(|t| !t.extended)
    }

    /// Whether the console loglevel lets a record of `level` out (`suppress_message_printing`).
    fn printed(&self, level: u8) -> bool {
        netconsole_proto::printed_on_console(level, self.args.console.console_loglevel)
    }

    /// Sends `record` to every plain target as the console prints it
    /// (`netconsole_proto::format_console`), in 1000-byte chunks.
    fn send_console(&mut self, record: &ConsoleRecord<'_>) -> Result<(), Failure> {
        if !self.has_plain_targets() {
            return Ok(());
        }
        let options = console_options(&self.args.console);
        let mut console = std::mem::take(&mut self.console);
        let len = format_console(record, &options, &mut console);
        let result = self.send_plain(&console[..len]);
        self.console = console;
        result
    }

    /// Sends console text to every plain target, cut in 1000-byte chunks.
    fn send_plain(&mut self, text: &[u8]) -> Result<(), Failure> {
        for (index, target) in self.args.target.targets.iter().enumerate() {
            if target.extended {
                continue;
            }
            for chunk in plain_chunks(text) {
                self.sink.send(index, chunk)?;
                self.counts.datagrams += 1;
            }
        }
        Ok(())
    }

    /// Counts a bad input record and says why it was skipped.
    fn bad(&mut self, why: &str) {
        self.counts.bad += 1;
        eprintln!("ncrx: input record {}: {why}", self.counts.records);
    }
}

/// Runs `ncrx send`.
pub(crate) fn run(args: &SendArgs) -> Result<Outcome, Failure> {
    if args.record_limit < 64 {
        return Err(Failure::Usage(format!(
            "--record-limit {} is too small (printk's buffers are 2048 or 8192 bytes)",
            args.record_limit
        )));
    }
    if args.console.console_buffer < 2 {
        return Err(Failure::Usage(format!(
            "--console-buffer {} is too small (the kernel's is 1024 or 2048 bytes)",
            args.console.console_buffer
        )));
    }
    let targets = &args.target.targets;
    let release = if targets.iter().any(|t| t.release) {
        Some(match &args.release {
            Some(release) => release.clone(),
            None => extradata::local_release()?,
        })
    } else {
        None
    };
    let (reader, live) = input::open(args)?;
    if args.reliable {
        return reliable::run(args, release, reader, live);
    }
    let mut sender = Sender {
        args,
        release,
        sink: Sink::open(args)?,
        counts: Counts::default(),
        console: vec![0; args.console.console_buffer],
        extradata: Extradata::new(args, args.release.as_deref())?,
    };
    sender.read(reader, live)?;
    let Sender { sink, counts, .. } = sender;
    sink.finish()?;
    let destination = match &args.pcap {
        Some(path) => format!("written to {}", path.display()),
        None => "sent".to_owned(),
    };
    eprintln!(
        "ncrx: {} records read, {} datagrams {destination}, {} bad records skipped, {} other lines skipped",
        counts.records, counts.datagrams, counts.bad, counts.skipped
    );
    Ok(Outcome {
        bad_data: counts.bad > 0,
        truncated: false,
        unwritten: false,
    })
}

//! The records `ncrx send` reads: `/dev/kmsg` records, ncrx's JSON lines or text lines, from
//! a file or standard input, each handed to the [`Sender`] as a message (and console text for
//! plain targets).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};

use netconsole_proto::received::{ReceivedRecord, RecordError};
use netconsole_proto::{Body, ConsoleRecord, DictEntry, Header, KmsgRecord, format_kmsg, unescape};

use super::Sender;
use crate::cli::{InputFormat, SendArgs};
use crate::error::Failure;
use crate::input::KmsgRecords;
use crate::json::{JsonLine, JsonRecord};

/// The input, buffered.
pub(super) type Input = BufReader<Box<dyn Read + Send>>;

/// Opens the input (`--file`, or standard input); also says whether it is live (a pipe or a
/// character device such as `/dev/kmsg`, read as records come) rather than a regular file.
pub(super) fn open(args: &SendArgs) -> Result<(Input, bool), Failure> {
    let (reader, live): (Box<dyn Read + Send>, bool) = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            let file = File::open(path).map_err(|source| Failure::File {
                what: "cannot open",
                path: path.clone(),
                source,
            })?;
            (Box::new(file), false)
        }
        _ => {
            let stdin = io::stdin();
            let regular = stdin_is_regular_file();
            (Box::new(stdin), !regular)
        }
    };
    // A /dev/kmsg record is at most 8 KiB and must be read whole in one read().
    Ok((BufReader::with_capacity(64 * 1024, reader), live))
}

/// Whether standard input is a regular file (then it is read like a file, not live).
fn stdin_is_regular_file() -> bool {
    fs::metadata("/dev/stdin").is_ok_and(|m| m.file_type().is_file())
}

impl Sender<'_> {
    /// Reads every record of the input and sends it.
    pub(super) fn read(&mut self, reader: Input, live: bool) -> Result<(), Failure> {
        match self.args.input {
            InputFormat::Kmsg => self.kmsg(KmsgRecords::new(reader, live)),
            InputFormat::Json => self.json(reader),
            InputFormat::Text => self.text(reader),
        }
    }

    fn kmsg(&mut self, mut records: KmsgRecords<Input>) -> Result<(), Failure> {
        loop {
            let record = match records.next_record() {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(()),
                // /dev/kmsg: records were overwritten before we read them.
                Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                    eprintln!("ncrx: some kernel records were overwritten before they were read");
                    continue;
                }
                Err(source) => {
                    return Err(Failure::Stream {
                        what: "cannot read the input",
                        source,
                    });
                }
            };
            if record.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.counts.records += 1;
            let header = match Header::parse(&record) {
                Ok((header, rest)) => (header, rest.len()),
                Err(error) => {
                    self.bad(&format!("not a /dev/kmsg record: {error}"));
                    continue;
                }
            };
            if !self.printed(header.0.fields.level) {
                self.counts.skipped += 1;
                continue;
            }
            self.send_extended(&record, None, &[])?;
            if self.has_plain_targets() {
                let (header, body_len) = header;
                // The console prints the raw text (escapes undone), without the dictionary.
                let body = Body::parse(&record[record.len() - body_len..]);
                let (text, _) = unescape(body.text());
                self.send_console(&ConsoleRecord::from_fields(header.fields, &text))?;
            }
        }
    }

    fn json(&mut self, reader: Input) -> Result<(), Failure> {
        for line in reader.lines() {
            let line = line.map_err(|source| Failure::Stream {
                what: "cannot read the input",
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            self.counts.records += 1;
            match serde_json::from_str::<JsonLine>(&line) {
                Ok(JsonLine::Record(record)) => {
                    if !self.printed(record.meta.level) {
                        self.counts.skipped += 1;
                        continue;
                    }
                    match format_json_record(&record, self.args.record_limit) {
                        Ok((msg, appended)) => {
                            self.send_extended(&msg, record.meta.release.as_deref(), &appended)?;
                            let text = if record.escaped {
                                unescape(record.text.as_bytes()).0
                            } else {
                                record.text.as_bytes().into()
                            };
                            let mut console = ConsoleRecord::new(
                                record.meta.level,
                                record.meta.seq,
                                record.meta.ts_usec,
                                &text,
                            );
                            console.fields.facility = record.meta.facility;
                            console.fields.caller =
                                record.meta.caller.as_deref().and_then(|c| c.parse().ok());
                            self.send_console(&console)?;
                        }
                        Err(why) => self.bad(&why),
                    }
                }
                Ok(JsonLine::Plain(plain)) if plain.escaped => {
                    self.send_plain(&unescape(plain.text.as_bytes()).0)?;
                }
                Ok(JsonLine::Plain(plain)) => self.send_plain(plain.text.as_bytes())?,
                Ok(_) => self.counts.skipped += 1,
                Err(error) => self.bad(&format!("not a JSON line of ncrx: {error}")),
            }
        }
        Ok(())
    }

    fn text(&mut self, reader: Input) -> Result<(), Failure> {
        let start = std::time::Instant::now();
        let mut buf = vec![0u8; self.args.record_limit];
        for (seq, line) in (self.args.seq..).zip(reader.split(b'\n')) {
            let line = line.map_err(|source| Failure::Stream {
                what: "cannot read the input",
                source,
            })?;
            self.counts.records += 1;
            if !self.printed(self.args.level) {
                self.counts.skipped += 1;
                continue;
            }
            let ts_usec = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            let mut record = KmsgRecord::new(self.args.level, seq, ts_usec, &line);
            record.fields.facility = self.args.facility;
            let len = format_kmsg(&record, &mut buf);
            let msg = buf[..len].to_vec();
            self.send_extended(&msg, None, &[])?;
            let mut console = ConsoleRecord::new(self.args.level, seq, ts_usec, &line);
            console.fields.facility = self.args.facility;
            self.send_console(&console)?;
        }
        Ok(())
    }
}

/// The message of a JSON `record` and the lines netconsole appends to it: the JSON fields
/// given to `netconsole_proto::received::ReceivedRecord`, which writes them as the sender's
/// kernel did (printk's part, cut at `limit` unless already printk's output, then the
/// appended userdata and sysdata).
fn format_json_record(record: &JsonRecord, limit: usize) -> Result<(Vec<u8>, Vec<u8>), String> {
    let meta = &record.meta;
    let seq = meta.seq;
    let lines: Vec<DictEntry<'_>> = record
        .dict
        .iter()
        .map(|(key, value)| DictEntry {
            key: key.as_bytes(),
            value: value.as_bytes(),
        })
        .collect();
    let mut fields = ReceivedRecord::new(meta.level, seq, meta.ts_usec, record.text.as_bytes());
    fields.facility = meta.facility;
    fields.flag = meta.flag.as_bytes();
    fields.caller = meta.caller.as_deref().map(str::as_bytes);
    fields.lines = &lines;
    fields.wire = record.escaped;
    fields.cut = record.truncated;
    fields.format_limit = limit;
    let why = |error| match error {
        RecordError::Flag => format!("seq {seq}: flag {:?} is not -, c or +", meta.flag),
        RecordError::Caller(_) => {
            format!(
                "seq {seq}: bad caller {:?}",
                meta.caller.as_deref().unwrap_or("")
            )
        }
        other => format!("seq {seq}: {other}"),
    };
    let mut message = vec![0; fields.message_capacity().map_err(why)?];
    let len = fields.format_message(&mut message).map_err(why)?;
    message.truncate(len);
    let mut appended = vec![0; fields.appended_len()];
    fields
        .format_appended(&mut appended)
        .map_err(|e| e.to_string())?;
    Ok((message, appended))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_json_records_are_named_by_seq_and_field() {
        let why = |line: &str| {
            let Ok(JsonLine::Record(record)) = serde_json::from_str::<JsonLine>(line) else {
                panic!("not a record line: {line}");
            };
            format_json_record(&record, 2048).unwrap_err()
        };
        let line =
            |extra: &str| format!(r#"{{"type":"record","seq":5,"ts_usec":1,"text":"t",{extra}}}"#);
        assert_eq!(
            why(&line(r#""level":6,"flag":"x""#)),
            r#"seq 5: flag "x" is not -, c or +"#
        );
        assert_eq!(
            why(&line(r#""level":6,"caller":"X1""#)),
            r#"seq 5: bad caller "X1""#
        );
        assert_eq!(why(&line(r#""level":9"#)), "seq 5: level 9 is not 0..7");
    }
}

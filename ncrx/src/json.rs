//! The JSON lines ncrx reads and writes: one object per line, `"type"` first.
//!
//! This is the contract other tools rely on; the README documents every field.
//! `ncrx decode --format json` writes `record`, `lost`, `incomplete`, `restart` and `plain`;
//! `ncrx send --input json` reads `record` and `plain` and skips the others (they describe
//! the receiver, not something to send); `ncrx oops ... --format json` writes `oops`.

use serde::{Deserialize, Serialize};

/// One JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum JsonLine {
    /// An extended record.
    Record(JsonRecord),
    /// Plain (non-extended) console text.
    Plain(JsonPlain),
    /// Sequence numbers given up on.
    Lost(JsonLost),
    /// A fragmented record given up on with bytes missing.
    Incomplete(JsonIncomplete),
    /// The sender restarted (rebooted, replayed its log).
    Restart(JsonRestart),
    /// A netoops dump.
    Oops(JsonOops),
    /// Any other type: nothing to send.
    #[serde(other)]
    Other,
}

/// The header fields of a record, first in `record` and `incomplete` lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JsonMeta {
    /// Sender as "IP:PORT" (empty when unknown).
    #[serde(default)]
    pub(crate) source: String,
    /// The sender's name (`--hosts`, `--resolve`) or address; `ncrx listen` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    /// When `ncrx listen` received the datagram that completed this line (RFC 3339 UTC,
    /// microseconds); `ncrx listen` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) received: Option<String>,
    /// printk sequence number.
    pub(crate) seq: u64,
    /// Syslog facility.
    #[serde(default)]
    pub(crate) facility: u8,
    /// Level 0..7.
    pub(crate) level: u8,
    /// Microseconds since the sender's boot.
    pub(crate) ts_usec: u64,
    /// "-", "c" or "+".
    #[serde(default = "normal_flag")]
    pub(crate) flag: String,
    /// `caller=` (`T<pid>` or `C<cpu>`), or null.
    #[serde(default)]
    pub(crate) caller: Option<String>,
    /// The release prepended by the sender, or null.
    #[serde(default)]
    pub(crate) release: Option<String>,
}

/// `"type": "record"`.
#[allow(
    clippy::struct_excessive_bools,
    reason = "the flags of the JSON contract, one field each"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JsonRecord {
    /// source, seq, facility, level, ts_usec, flag, caller, release.
    #[serde(flatten)]
    pub(crate) meta: JsonMeta,
    /// The text, decoded (or the exact wire form when `escaped`).
    pub(crate) text: String,
    /// `[key, value]` pairs in wire order: dictionary, userdata, sysdata.
    #[serde(default)]
    pub(crate) dict: Vec<(String, String)>,
    /// Sent by the reliable sender's emergency transmission (`ncemg=1`).
    #[serde(default)]
    pub(crate) emergency: bool,
    /// Released out of order.
    #[serde(default)]
    pub(crate) out_of_order: bool,
    /// The kernel cut the record (its text did not end in `\n`).
    #[serde(default)]
    pub(crate) truncated: bool,
    /// The strings hold the exact wire form, not decoded bytes.
    #[serde(default)]
    pub(crate) escaped: bool,
}

fn normal_flag() -> String {
    "-".to_owned()
}

/// `"type": "plain"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JsonPlain {
    /// Sender as "IP:PORT" (empty when unknown).
    #[serde(default)]
    pub(crate) source: String,
    /// The sender's name (`--hosts`, `--resolve`) or address; `ncrx listen` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    /// When `ncrx listen` received the datagram that completed this line (RFC 3339 UTC,
    /// microseconds); `ncrx listen` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) received: Option<String>,
    /// The console text as it came (console text is not escaped on the wire), or, when it
    /// is not valid UTF-8, in printk's escaping (`\xNN`) with `escaped` set.
    pub(crate) text: String,
    /// `text` holds the console bytes in printk's escaping.
    #[serde(default)]
    pub(crate) escaped: bool,
}

/// `"type": "lost"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JsonLost {
    /// Sender as "IP:PORT".
    pub(crate) source: String,
    /// The sender's name (`--hosts`, `--resolve`) or address; `ncrx listen` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    /// When `ncrx listen` received the datagram that completed this line (RFC 3339 UTC,
    /// microseconds); `ncrx listen` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) received: Option<String>,
    /// First sequence number lost.
    pub(crate) first_seq: u64,
    /// Last sequence number lost (inclusive).
    pub(crate) last_seq: u64,
}

/// `"type": "incomplete"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JsonIncomplete {
    /// source, seq, facility, level, ts_usec, flag, caller, release.
    #[serde(flatten)]
    pub(crate) meta: JsonMeta,
    /// The text, when the start of the body arrived (else null).
    pub(crate) text: Option<String>,
    /// `text` holds the wire form.
    pub(crate) escaped: bool,
    /// The body length announced by `ncfrag`.
    pub(crate) total: usize,
    /// `[offset, length]` of each byte range of the body that never arrived.
    pub(crate) missing: Vec<[usize; 2]>,
}

/// `"type": "restart"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JsonRestart {
    /// Sender as "IP:PORT".
    pub(crate) source: String,
    /// The sender's name (`--hosts`, `--resolve`) or address; `ncrx listen` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    /// When `ncrx listen` received the datagram that completed this line (RFC 3339 UTC,
    /// microseconds); `ncrx listen` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) received: Option<String>,
    /// "release", "timestamp", "far_back" or "out_of_order".
    pub(crate) reason: String,
    /// The first sequence number of the new epoch.
    pub(crate) seq: u64,
}

/// `"type": "oops"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JsonOops {
    /// Sender as "IP:PORT".
    pub(crate) source: String,
    /// `dump_id`.
    pub(crate) dump_id: u16,
    /// Packet layout version (2 or 3).
    pub(crate) version: u16,
    /// `type`: 1 oops/panic, 3 soft dump.
    pub(crate) dump_type: u16,
    /// The kernel release, as UTF-8 (invalid bytes replaced).
    pub(crate) kernel_version: String,
    /// Every packet arrived.
    pub(crate) complete: bool,
    /// "complete", "timed_out", "evicted" or "end_of_input" (open when the capture ended or
    /// the listener stopped).
    pub(crate) status: String,
    /// `packet_count`.
    pub(crate) packets: u32,
    /// Packet numbers never received, ascending.
    pub(crate) missing: Vec<u32>,
    /// Log bytes rebuilt.
    pub(crate) bytes: usize,
    /// The file written, when `--dir` was given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) file: Option<String>,
}

/// One line of JSON for `line`.
pub(crate) fn to_line(line: &JsonLine) -> String {
    // Serialising these types cannot fail: every field is a string, number, bool or list.
    serde_json::to_string(line).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_comes_first_and_round_trips() {
        let record = JsonLine::Record(JsonRecord {
            meta: JsonMeta {
                host: None,
                received: None,
                source: "192.0.2.1:6665".into(),
                seq: 7,
                facility: 0,
                level: 6,
                ts_usec: 123,
                flag: "-".into(),
                caller: None,
                release: Some("7.3.4".into()),
            },
            text: "eth0: link up".into(),
            dict: vec![("SUBSYSTEM".into(), "net".into())],
            emergency: false,
            out_of_order: false,
            truncated: false,
            escaped: false,
        });
        let line = to_line(&record);
        assert!(
            line.starts_with(r#"{"type":"record","source":"192.0.2.1:6665","seq":7,"#),
            "{line}"
        );
        assert!(line.contains(r#""dict":[["SUBSYSTEM","net"]]"#), "{line}");
        assert_eq!(serde_json::from_str::<JsonLine>(&line).unwrap(), record);
    }

    #[test]
    fn minimal_input_and_other_types() {
        let line: JsonLine =
            serde_json::from_str(r#"{"type":"record","seq":1,"level":3,"ts_usec":5,"text":"x"}"#)
                .unwrap();
        let JsonLine::Record(record) = line else {
            panic!("not a record");
        };
        assert_eq!(
            (
                record.meta.seq,
                record.meta.level,
                record.meta.flag.as_str()
            ),
            (1, 3, "-")
        );
        assert!(record.dict.is_empty() && !record.escaped);
        let lost: JsonLine =
            serde_json::from_str(r#"{"type":"lost","source":"a","first_seq":1,"last_seq":2}"#)
                .unwrap();
        assert_eq!(
            lost,
            JsonLine::Lost(JsonLost {
                host: None,
                received: None,
                source: "a".into(),
                first_seq: 1,
                last_seq: 2
            })
        );
        let other: JsonLine = serde_json::from_str(r#"{"type":"future","x":1}"#).unwrap();
        assert_eq!(other, JsonLine::Other);
        assert!(serde_json::from_str::<JsonLine>(r#"{"type":"record","seq":1}"#).is_err());
    }
}

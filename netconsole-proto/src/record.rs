//! Classifying a netconsole datagram and borrowing an extended record from it (the rule is
//! on [`Datagram`]).

use crate::body::Body;
use crate::header::{Header, HeaderError, looks_extended};
use crate::response::{Response, ResponseError};

#[cfg(feature = "alloc")]
use crate::header::RecordFields;
#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// One extended record (whole or one fragment), borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtRecord<'a> {
    /// The header fields.
    pub header: Header<'a>,
    /// The bytes after the `;` (a fragment's chunk when `header.ncfrag` is set).
    pub body: &'a [u8],
}

impl<'a> ExtRecord<'a> {
    /// Parses an extended datagram.
    #[inline]
    pub fn parse(datagram: &'a [u8]) -> Result<Self, HeaderError> {
        let (header, body) = Header::parse(datagram)?;
        Ok(ExtRecord { header, body })
    }

    /// Whether this datagram holds one fragment of a longer record.
    pub const fn is_fragment(&self) -> bool {
        self.header.ncfrag.is_some()
    }

    /// The body split into text and lines, assuming the record was not cut by printk's
    /// format limit. Only meaningful on a whole record (not a fragment).
    #[inline]
    pub fn split_body(&self) -> Body<'a> {
        Body::parse(self.body)
    }

    /// The body split knowing printk's format limit (see [`Body::parse_limited`]).
    pub fn split_body_limited(&self, format_limit: usize) -> Body<'a> {
        Body::parse_limited(self.body, self.header.kernel_len(), format_limit)
    }
}

/// What a netconsole UDP payload holds: one of
/// - an extended record or one fragment of it (header, `;`, body; see [`Header`] and
///   [`Body`]),
/// - a response packet of the reliable extension (`ncrx...`, see [`Response`]),
/// - plain console text (any bytes; never an error).
///
/// A payload is taken as extended when it starts like a kernel header: an optional release
/// field containing `.`, then `<digits>,<digits>,<digits>,<flag>` with flag `-`, `c` or `+`.
/// If it starts so but the rest of the header is wrong (no `;`, a bad field), parsing fails
/// with a typed [`HeaderError`]; anything that does not start so is plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Datagram<'a> {
    /// An extended record or one of its fragments.
    Extended(ExtRecord<'a>),
    /// A response packet (receiver to sender).
    Response(Response<'a>),
    /// Plain console text, passed on as is.
    Plain(&'a [u8]),
}

/// Why a datagram that looked extended or like a response could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The extended header is malformed.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The response packet is malformed.
    #[error(transparent)]
    Response(#[from] ResponseError),
}

impl<'a> Datagram<'a> {
    /// Classifies and parses a UDP payload. Plain text is never an error.
    #[inline]
    pub fn parse(payload: &'a [u8]) -> Result<Self, DatagramError> {
        if payload.starts_with(b"ncrx") {
            return Ok(Datagram::Response(Response::parse(payload)?));
        }
        // A header that parses always has the extended shape, so parse first and only ask
        // whether a failure looked extended (an error) or not (plain text).
        match ExtRecord::parse(payload) {
            Ok(record) => Ok(Datagram::Extended(record)),
            Err(e) if looks_extended(payload) => Err(e.into()),
            Err(_) => Ok(Datagram::Plain(payload)),
        }
    }
}

/// An extended record that owns its bytes (a reassembled record, or one kept past its
/// datagram). The body is the whole body (text, dictionary, userdata, sysdata), escaped.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OwnedRecord {
    /// Kernel release prepended by netconsole.
    pub release: Option<Vec<u8>>,
    /// The header's record fields (prefix, seq, ts_usec, flag, `caller=`).
    pub fields: RecordFields,
    /// `ncemg=1` was present.
    pub ncemg: bool,
    /// Unknown header fields, in order.
    pub unknown_fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// printk's header length (for [`Body::parse_limited`]).
    pub kernel_header_len: usize,
    /// The whole body, escaped, as sent.
    pub body: Vec<u8>,
}

#[cfg(feature = "alloc")]
impl OwnedRecord {
    /// Copies a header and a whole body.
    pub fn from_parts(header: &Header<'_>, body: &[u8]) -> Self {
        OwnedRecord {
            release: header.release.map(<[u8]>::to_vec),
            fields: header.fields,
            ncemg: header.ncemg,
            unknown_fields: header
                .unknown_fields()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
            kernel_header_len: header.kernel_len(),
            body: body.to_vec(),
        }
    }

    /// The body split, assuming it was not cut (see [`Body::parse`]).
    pub fn split_body(&self) -> Body<'_> {
        Body::parse(&self.body)
    }

    /// The body split knowing printk's format limit (see [`Body::parse_limited`]).
    pub fn split_body_limited(&self, format_limit: usize) -> Body<'_> {
        Body::parse_limited(&self.body, self.kernel_header_len, format_limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert!(matches!(
            Datagram::parse(b"6,1,0,-;hi\n"),
            Ok(Datagram::Extended(r)) if r.body == b"hi\n"
        ));
        assert!(matches!(
            Datagram::parse(b"[    0.000000] Linux version\n"),
            Ok(Datagram::Plain(_))
        ));
        assert!(matches!(Datagram::parse(b""), Ok(Datagram::Plain(b""))));
        assert!(matches!(
            Datagram::parse(b"ncrx5 7 9"),
            Ok(Datagram::Response(r)) if r.ack() == 5
        ));
        assert_eq!(
            Datagram::parse(b"6,1,0,- no semicolon"),
            Err(DatagramError::Header(HeaderError::NoSemicolon))
        );
    }

    #[test]
    fn owned_keeps_fields() {
        let r = ExtRecord::parse(b"6.1.0,4,2,3,c,caller=C1,zz=9;t\n K=V\n").unwrap();
        let o = OwnedRecord::from_parts(&r.header, r.body);
        assert_eq!(o.release.as_deref(), Some(&b"6.1.0"[..]));
        assert_eq!(o.fields.caller, Some(crate::Caller::Cpu(1)));
        assert_eq!(o.unknown_fields, [(b"zz".to_vec(), b"9".to_vec())]);
        assert_eq!(o.split_body().lines().next().unwrap().raw, b"K=V");
    }
}

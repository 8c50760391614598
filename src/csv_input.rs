//! CSV as people export it: reading set up once for the CLI's recipient files and
//! the API's suppression uploads, so both decode the same encodings and report the
//! same line numbers.

use std::borrow::Cow;
use std::io::Read;

use serde_json::{Map, Value};

use crate::intake::RecipientSpec;
use crate::template::Vars;

/// The text of a CSV file: UTF-8 (a byte-order mark, as Excel writes, is dropped);
/// or, when it is not UTF-8, GB18030 — the superset of GBK that Excel on Chinese
/// Windows saves "CSV" in. `label` (`utf-8`, `gbk`, `gb18030`, `big5`, … as the
/// WHATWG Encoding Standard names them) says which instead of guessing.
pub fn decode<'a>(bytes: &'a [u8], label: Option<&str>) -> Result<Cow<'a, str>, String> {
    decode_as(bytes, label.map(encoding).transpose()?)
}

/// The encoding a WHATWG `label` names.
pub fn encoding(label: &str) -> Result<&'static encoding_rs::Encoding, String> {
    encoding_rs::Encoding::for_label_no_replacement(label.as_bytes()).ok_or_else(|| {
        format!("unknown encoding `{label}`: use utf-8, gbk, gb18030 or another WHATWG label")
    })
}

/// [`decode`] with the encoding already looked up.
pub fn decode_as<'a>(
    bytes: &'a [u8],
    encoding: Option<&'static encoding_rs::Encoding>,
) -> Result<Cow<'a, str>, String> {
    let bytes = without_bom(bytes);
    let chosen = match encoding {
        Some(encoding) => encoding,
        None => match std::str::from_utf8(bytes) {
            Ok(text) => return Ok(Cow::Borrowed(text)),
            Err(_) => encoding_rs::GB18030,
        },
    };
    chosen
        .decode_without_bom_handling_and_without_replacement(bytes)
        .ok_or_else(|| match encoding {
            Some(_) => format!("not valid {}", chosen.name()),
            None => "neither UTF-8 nor GB18030/GBK: name its encoding".to_owned(),
        })
}

/// A CSV reader of a file with a header row: `\n` ends a record (so CRLF files
/// from Excel on Windows read like any other), every field is trimmed (dropping the
/// `\r` left at the end of a line), and records may have any number of fields (a
/// blank CRLF line is one empty field: skip [`is_blank`] records, then check the
/// count). Use [`Lines`] for line numbers.
pub fn with_header<R: Read>(input: R) -> csv::Reader<R> {
    builder().from_reader(input)
}

/// The same for a list without a header row.
pub fn loose<R: Read>(input: R) -> csv::Reader<R> {
    builder().has_headers(false).from_reader(input)
}

fn builder() -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    b.terminator(csv::Terminator::Any(b'\n'))
        .trim(csv::Trim::All)
        .flexible(true);
    b
}

/// Physical line numbers of positions in a CSV text read front to back (the csv
/// crate's own count skips blank lines).
pub struct Lines<'a> {
    text: &'a [u8],
    at: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    pub fn new(text: &'a [u8]) -> Self {
        Lines {
            text,
            at: 0,
            line: 1,
        }
    }

    /// The line of `record`, which must not come before the last one asked about.
    pub fn of(&mut self, record: &csv::StringRecord) -> u64 {
        let mut byte = record
            .position()
            .map_or(self.at, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX))
            .min(self.text.len());
        // After blank lines the crate's position is where they began: the record
        // starts after them.
        while byte < self.text.len() && matches!(self.text[byte], b'\n' | b'\r') {
            byte += 1;
        }
        if byte > self.at {
            let newlines = self.text[self.at..byte]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.line += newlines as u64;
            self.at = byte;
        }
        self.line
    }
}

/// Which columns of a recipient file's header row hold what: `to` (required),
/// `ref` (optional), and every other column is a template variable of that name.
#[derive(Debug, Clone)]
pub struct RecipientColumns {
    headers: Vec<String>,
    to: usize,
    reference: Option<usize>,
}

impl RecipientColumns {
    /// Reads the header row; an error says what is missing.
    pub fn from_header(header: &csv::StringRecord) -> Result<Self, String> {
        let headers: Vec<String> = header.iter().map(str::to_string).collect();
        for (i, header) in headers.iter().enumerate() {
            if !header.is_empty() && headers[..i].iter().any(|h| h.eq_ignore_ascii_case(header)) {
                return Err(format!(
                    "the header row names the column `{header}` twice: which one holds it is unclear"
                ));
            }
        }
        let column = |wanted: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(wanted));
        let Some(to) = column("to") else {
            return Err(format!(
                "the header row has no `to` column (found: {})",
                headers.join(", ")
            ));
        };
        let reference = column("ref");
        Ok(RecipientColumns {
            headers,
            to,
            reference,
        })
    }

    /// One recipient from a (non-blank) record; an error says what is wrong with it.
    pub fn recipient(&self, record: &csv::StringRecord) -> Result<RecipientSpec, String> {
        if record.len() != self.headers.len() {
            return Err(format!(
                "expected {} fields like the header, found {}",
                self.headers.len(),
                record.len()
            ));
        }
        if let Some(column) = record.iter().position(|field| field.contains('\0')) {
            return Err(format!(
                "the `{}` field holds a NUL character",
                self.headers[column]
            ));
        }
        let to = record.get(self.to).unwrap_or_default();
        if to.is_empty() {
            return Err("the `to` column is empty".into());
        }
        let vars: Map<String, Value> = self
            .headers
            .iter()
            .zip(record.iter())
            .enumerate()
            .filter(|(i, _)| *i != self.to && Some(*i) != self.reference)
            .map(|(_, (header, value))| (header.clone(), Value::String(value.to_string())))
            .collect();
        let reference = self
            .reference
            .and_then(|i| record.get(i))
            .filter(|r| !r.is_empty())
            .map(String::from);
        Ok(RecipientSpec {
            to: to.to_string(),
            vars: Vars::from(&vars),
            reference,
        })
    }
}

/// True for a record with nothing in it (a blank line, or a line of separators).
pub fn is_blank(record: &csv::StringRecord) -> bool {
    record.iter().all(str::is_empty)
}

/// Strips a UTF-8 byte-order mark, which Excel writes at the start of a UTF-8 CSV.
pub fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_gbk_and_named_encodings_decode() {
        let text = "to,name\n+8613800138000,李雷\n";
        let (gbk, _, _) = encoding_rs::GBK.encode(text);
        assert_eq!(decode(text.as_bytes(), None).unwrap(), text);
        assert_eq!(decode(&gbk, None).unwrap(), text, "GBK is guessed");
        assert_eq!(decode(&gbk, Some("gbk")).unwrap(), text);
        let bom = [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat();
        assert_eq!(decode(&bom, Some("UTF-8")).unwrap(), text);
        assert!(
            decode(&gbk, Some("utf-8"))
                .unwrap_err()
                .contains("not valid UTF-8")
        );
        assert!(
            decode(b"x", Some("klingon"))
                .unwrap_err()
                .contains("unknown encoding")
        );
    }

    #[test]
    fn lines_count_blank_lines_and_crlf_endings() {
        for text in [
            &b"\xEF\xBB\xBFa,b\r\n1,2\r\n\r\n3,4\r\n"[..],
            b"a,b\n1,2\n\n3,4",
            b"a,b\n1,2\n,\n3,4\n\n",
        ] {
            let text = without_bom(text);
            let mut lines = Lines::new(text);
            let found: Vec<(u64, String)> = loose(text)
                .records()
                .map(Result::unwrap)
                .filter(|rec| !is_blank(rec))
                .map(|rec| (lines.of(&rec), rec[0].to_string()))
                .collect();
            assert_eq!(
                found,
                [(1, "a".into()), (2, "1".into()), (4, "3".into())],
                "{text:?}"
            );
        }
    }
}

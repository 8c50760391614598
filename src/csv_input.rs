//! CSV as people export it: reading set up once for recipient files (the CLI's
//! and the API's uploads, through [`RecipientLines`]) and suppression lists, so
//! all decode the same encodings, refuse the same files and report the same line
//! numbers.

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

/// A CSV reader of a list without a header row: `\n` ends a record (so CRLF files
/// from Excel on Windows read like any other), every field is trimmed (dropping the
/// `\r` left at the end of a line), and records may have any number of fields (a
/// blank CRLF line is one empty field: skip [`is_blank`] records, then check the
/// count). Use [`Lines`] for line numbers.
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

/// A CSV of recipients read line by line, as the API reads an upload and the CLI a
/// file, so both take the same files and refuse the others with the same words:
/// its header row first ([`RecipientLines::from_header`]), then each line that is
/// not blank, numbered as in the file. A quoted field may run over several lines.
pub struct RecipientLines {
    columns: RecipientColumns,
    encoding: Option<&'static encoding_rs::Encoding>,
    /// A record whose quoted field is still open (an odd number of quotes so far),
    /// and the line it began on: it goes on on the next line.
    open: Option<(u64, String)>,
}

impl RecipientLines {
    /// Reads the header row (a line of the file, its `\r\n` or `\n` taken off) in
    /// `encoding`, or UTF-8 else GB18030 when `None`.
    pub fn from_header(
        line: &[u8],
        encoding: Option<&'static encoding_rs::Encoding>,
    ) -> Result<Self, String> {
        let columns = decode_as(line, encoding)
            .and_then(|text| record(&text))
            .and_then(|record| RecipientColumns::from_header(&record))?;
        Ok(RecipientLines {
            columns,
            encoding,
            open: None,
        })
    }

    /// The recipient that line `number` completes, with the line its record began
    /// on; `None` when a quoted field goes on on the next line, or for a line of
    /// separators only (as spreadsheets export blank rows).
    pub fn line(
        &mut self,
        number: u64,
        line: &[u8],
    ) -> Result<Option<(u64, RecipientSpec)>, String> {
        let text = decode_as(line, self.encoding)?;
        let (began, text) = match self.open.take() {
            Some((began, mut open)) => {
                open.push('\n');
                open.push_str(&text);
                (began, open)
            }
            None => (number, text.into_owned()),
        };
        if text.matches('"').count() % 2 == 1 {
            self.open = Some((began, text));
            return Ok(None);
        }
        let record = record(&text)?;
        if is_blank(&record) {
            return Ok(None);
        }
        self.columns.recipient(&record).map(|r| Some((began, r)))
    }

    /// What is wrong with the end of the file, if anything.
    pub fn end(&self) -> Result<(), String> {
        match self.open {
            Some(_) => Err("a quoted field is not closed by the end of the file".into()),
            None => Ok(()),
        }
    }
}

/// A whole CSV of recipients, read as [`RecipientLines`] reads an upload: each
/// recipient with the line it began on, or the first error with its line.
pub fn recipients(
    bytes: &[u8],
    encoding: Option<&'static encoding_rs::Encoding>,
) -> Result<Vec<(u64, RecipientSpec)>, (u64, String)> {
    let mut lines = bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .zip(1u64..)
        .filter(|(line, _)| !line.iter().all(u8::is_ascii_whitespace));
    let Some((header, number)) = lines.next() else {
        return Err((
            1,
            "the file is empty: it needs a header row and recipients".into(),
        ));
    };
    let mut reader = RecipientLines::from_header(header, encoding).map_err(|e| (number, e))?;
    let mut last = number;
    let mut out = Vec::new();
    for (line, number) in lines {
        last = number;
        if let Some(recipient) = reader.line(number, line).map_err(|e| (number, e))? {
            out.push(recipient);
        }
    }
    reader.end().map_err(|e| (last, e))?;
    Ok(out)
}

/// One CSV record of a line. A line without quotes is split on commas and its
/// fields trimmed, as the csv reader would; only quoted lines need one (a reader
/// costs a buffer of its own, per line).
pub fn record(text: &str) -> Result<csv::StringRecord, String> {
    if text.is_empty() {
        return Ok(csv::StringRecord::new());
    }
    if !text.contains('"') {
        return Ok(text.split(',').map(str::trim).collect());
    }
    let mut reader = loose(text.as_bytes());
    match reader.records().next() {
        Some(Ok(record)) => Ok(record),
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(csv::StringRecord::new()),
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

    #[test]
    fn lines_without_quotes_split_as_the_csv_reader_does() {
        for line in [
            "a,b,c",
            " a , b ,c ",
            "a,,c",
            ",",
            "",
            "李雷,+86 138,x y",
            "a\t,b",
            "\u{3000}a\u{3000},b",
        ] {
            let mut reader = loose(line.as_bytes());
            let by_reader = reader
                .records()
                .next()
                .map_or_else(csv::StringRecord::new, Result::unwrap);
            assert_eq!(record(line).unwrap(), by_reader, "{line:?}");
        }
        let quoted = record(r#""Wang, Wei",x"#).unwrap();
        assert_eq!(quoted.iter().collect::<Vec<_>>(), ["Wang, Wei", "x"]);
    }

    /// What the CSVs of the property test are made of.
    const PIECES: &[&[u8]] = &[
        b"\"",
        b",",
        b"\n",
        b"\r\n",
        b"\0",
        b" ",
        b"+8613800000001",
        b"Li",
        b"\xff",
        b"\xe4\xb8",
        b"\xc0\xc1",
        b"to",
        b"",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Any bytes under a header row are read or refused naming a line of the
        /// file, never a panic; what is read has a `to` on a line of the file.
        #[test]
        fn any_csv_is_read_or_refused_naming_a_line_of_it(
            body in proptest::collection::vec(
                proptest::sample::select(PIECES),
                0..60,
            )
        ) {
            let text = [&b"to,name\n"[..], &body.concat()].concat();
            let lines = text.split(|&b| b == b'\n').count() as u64;
            match recipients(&text, None) {
                Ok(read) => {
                    for (line, recipient) in read {
                        proptest::prop_assert!((2..=lines).contains(&line));
                        proptest::prop_assert!(!recipient.to.is_empty());
                    }
                }
                Err((line, message)) => {
                    proptest::prop_assert!((1..=lines).contains(&line), "{}", line);
                    proptest::prop_assert!(!message.is_empty());
                }
            }
        }
    }
}

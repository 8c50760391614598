//! Batch uploads that stream, for batches too big to send as one JSON document:
//!
//! - NDJSON (`content-type: application/x-ndjson`): a first line with the batch's
//!   options (the JSON of `POST /v1/batches` without `recipients`), then one
//!   recipient object per line.
//! - CSV (`content-type: text/csv`, `; charset=gbk` for a GBK file): the options in
//!   the query string, then a header row (`to`, optional `ref`, one column per
//!   template variable) and one recipient per line.
//!
//! Lines are read as they arrive and handed to the intake in chunks of
//! [`CHUNK`] recipients, so a million-recipient upload is never in memory whole.
//! A bad line fails the upload with its line number, and nothing is stored.

use axum::body::{Body, BodyDataStream};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Error;
use crate::csv_input::RecipientColumns;
use crate::domain::Channel;
use crate::intake::{self, BatchRequest, RecipientSpec, TemplateSpec};

mod outline;

/// An upload's recipients, chunk by chunk.
pub type Chunks =
    std::pin::Pin<Box<dyn Stream<Item = Result<Vec<RecipientSpec>, intake::Error>> + Send>>;

/// Recipients handed to the intake at a time.
pub const CHUNK: usize = 10_000;
/// A JSON body's first chunk; each next one is twice the size, up to [`CHUNK`].
const FIRST_CHUNK: usize = CHUNK / 4;

/// The longest line an upload may have.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Lines of a streamed body, with their numbers (from 1); a final line without a
/// newline counts. `\r\n` endings lose their `\r`.
pub struct Lines {
    body: BodyDataStream,
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    start: usize,
    line: u64,
    ended: bool,
    /// The SHA-256 the body must have (its `Content-Digest`), and the hash so far.
    digest: Option<(Vec<u8>, Sha256)>,
    /// Bytes read, and the most allowed.
    read: u64,
    limit: u64,
}

impl Lines {
    /// The lines of `body`, of at most `limit` bytes, which must have the SHA-256
    /// `digest` when one is given.
    pub fn new(body: Body, digest: Option<Vec<u8>>, limit: u64) -> Self {
        Lines {
            body: body.into_data_stream(),
            buffer: Vec::new(),
            start: 0,
            line: 0,
            ended: false,
            digest: digest.map(|d| (d, Sha256::new())),
            read: 0,
            limit,
        }
    }

    /// The next line and its number; `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, intake::Error> {
        loop {
            if let Some(at) = self.buffer[self.start..].iter().position(|&b| b == b'\n') {
                let end = self.start + at;
                let mut line = self.buffer[self.start..end].to_vec();
                self.start = end + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line += 1;
                return Ok(Some((self.line, line)));
            }
            if self.buffer.len() - self.start > MAX_LINE_BYTES {
                return Err(line_error(
                    self.line + 1,
                    format!("is longer than {MAX_LINE_BYTES} bytes"),
                ));
            }
            if self.ended {
                if self.start == self.buffer.len() {
                    return Ok(None);
                }
                let line = self.buffer[self.start..].to_vec();
                self.start = self.buffer.len();
                self.line += 1;
                return Ok(Some((self.line, line)));
            }
            // Keep only the unfinished line before reading on.
            self.buffer.drain(..self.start);
            self.start = 0;
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    self.read += bytes.len() as u64;
                    if self.read > self.limit {
                        return Err(too_large(self.limit));
                    }
                    if let Some((_, hash)) = &mut self.digest {
                        hash.update(&bytes);
                    }
                    self.buffer.extend_from_slice(&bytes);
                }
                Some(Err(e)) => {
                    return Err(intake::Error::Invalid {
                        field: "body".into(),
                        message: format!("the upload broke off: {e}"),
                    });
                }
                None => {
                    self.ended = true;
                    if let Some((expected, hash)) = self.digest.take()
                        && hash.finalize().as_slice() != expected.as_slice()
                    {
                        return Err(intake::Error::Invalid {
                            field: "content-digest".into(),
                            message: "the body's SHA-256 is not the one its Content-Digest \
                                      declares: it changed or broke off on the way"
                                .into(),
                        });
                    }
                }
            }
        }
    }

    /// The next line that is not blank.
    async fn next_filled(&mut self) -> Result<Option<(u64, Vec<u8>)>, intake::Error> {
        while let Some((number, line)) = self.next().await? {
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some((number, line)));
            }
        }
        Ok(None)
    }
}

/// The SHA-256 a `Content-Digest: sha-256=:<base64>:` header (RFC 9530) declares.
pub fn content_digest(value: &str) -> Result<Vec<u8>, Error> {
    use base64::Engine;
    let invalid = || Error::Invalid {
        field: "content-digest".into(),
        message: format!("`{value}` is not `sha-256=:<base64 of the body's SHA-256>:`"),
    };
    let encoded = value
        .split(',')
        .find_map(|item| item.trim().strip_prefix("sha-256=:")?.strip_suffix(':'))
        .ok_or_else(invalid)?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| invalid())?;
    if digest.len() == 32 {
        Ok(digest)
    } else {
        Err(invalid())
    }
}

fn too_large(limit: u64) -> intake::Error {
    intake::Error::TooLarge {
        field: "body".into(),
        message: format!("an upload may have {limit} bytes (limits.max_upload_bytes)"),
    }
}

fn line_error(line: u64, message: impl Into<String>) -> intake::Error {
    intake::Error::Invalid {
        field: format!("line {line}"),
        message: message.into(),
    }
}

/// How the lines of an upload become recipients.
trait Parse: Send {
    /// The recipient a line completes, `None` when the line is part of a record
    /// that goes on, or what is wrong with it.
    fn line(&mut self, line: &[u8]) -> Result<Option<RecipientSpec>, String>;

    /// What is wrong with the end of the upload, if anything.
    fn end(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Recipients parsed from lines, in chunks of [`CHUNK`]; the stream ends after the
/// first error.
fn chunks<P: Parse>(
    lines: Lines,
    parse: P,
) -> impl Stream<Item = Result<Vec<RecipientSpec>, intake::Error>> {
    futures_util::stream::unfold(Some((lines, parse)), |state| async move {
        let (mut lines, mut parse) = state?;
        let mut chunk = Vec::new();
        while chunk.len() < CHUNK {
            match lines.next_filled().await {
                Ok(Some((number, line))) => match parse.line(&line) {
                    Ok(Some(recipient)) => chunk.push(recipient),
                    Ok(None) => {}
                    Err(message) => return Some((Err(line_error(number, message)), None)),
                },
                Ok(None) => {
                    if let Err(message) = parse.end() {
                        return Some((Err(line_error(lines.line, message)), None));
                    }
                    return if chunk.is_empty() {
                        None
                    } else {
                        Some((Ok(chunk), None))
                    };
                }
                Err(e) => return Some((Err(e), None)),
            }
        }
        Some((Ok(chunk), Some((lines, parse))))
    })
}

/// Reads an NDJSON upload's first line: the batch's options. The rest of `lines`
/// are its recipients.
pub async fn ndjson_options(lines: &mut Lines) -> Result<(BatchRequest, Vec<u8>), Error> {
    let Some((number, line)) = lines.next_filled().await? else {
        return Err(Error::Invalid {
            field: "line 1".into(),
            message: "the upload is empty: the first line holds the batch's options".into(),
        });
    };
    let request: BatchRequest = serde_json::from_slice(&line).map_err(|e| Error::Invalid {
        field: format!("line {number}"),
        message: format!("the batch's options: {e}"),
    })?;
    if !request.recipients.is_empty() {
        return Err(Error::Invalid {
            field: format!("line {number}"),
            message: "put the recipients on the lines after the options, one per line".into(),
        });
    }
    Ok((request, line))
}

/// The recipients of an NDJSON upload, after its first line.
pub fn ndjson_recipients(
    lines: Lines,
) -> impl Stream<Item = Result<Vec<RecipientSpec>, intake::Error>> {
    chunks(lines, Ndjson)
}

struct Ndjson;

impl Parse for Ndjson {
    fn line(&mut self, line: &[u8]) -> Result<Option<RecipientSpec>, String> {
        serde_json::from_slice(line)
            .map(Some)
            .map_err(|e| format!("a recipient: {e}"))
    }
}

/// A CSV upload's options, from the query string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    channel: Channel,
    /// An inline template's body (and `subject`, for e-mail).
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    template_id: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    send_at: Option<String>,
    #[serde(default)]
    reject_recent_duplicates: bool,
    #[serde(default)]
    pub dry_run: bool,
}

impl CsvOptions {
    pub fn request(self) -> BatchRequest {
        BatchRequest {
            channel: self.channel,
            template: self.template.map(|body| TemplateSpec {
                body,
                subject: self.subject,
                stored_id: None,
            }),
            template_id: self.template_id,
            recipients: Vec::new(),
            provider: self.provider,
            priority: self.priority,
            send_at: self.send_at,
            reject_recent_duplicates: self.reject_recent_duplicates,
        }
    }
}

/// One CSV record of a line. A line without quotes is split on commas and its
/// fields trimmed, as the csv reader would; only quoted lines need one (a reader
/// costs a buffer of its own, per line).
fn record(text: &str) -> Result<csv::StringRecord, String> {
    if text.is_empty() {
        return Ok(csv::StringRecord::new());
    }
    if !text.contains('"') {
        return Ok(text.split(',').map(str::trim).collect());
    }
    let mut reader = crate::csv_input::loose(text.as_bytes());
    match reader.records().next() {
        Some(Ok(record)) => Ok(record),
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(csv::StringRecord::new()),
    }
}

/// The encoding a `charset` names. Lines are decoded one by one: UTF-8 and
/// GB18030 never hold a newline byte inside a character.
pub fn charset(label: &str) -> Result<&'static encoding_rs::Encoding, Error> {
    crate::csv_input::encoding(label).map_err(|message| Error::Invalid {
        field: "content-type".into(),
        message,
    })
}

/// Reads a CSV upload's header row and answers its recipients. A quoted field
/// may run over several lines.
pub async fn csv_recipients(
    mut lines: Lines,
    charset: Option<&'static encoding_rs::Encoding>,
) -> Result<impl Stream<Item = Result<Vec<RecipientSpec>, intake::Error>>, Error> {
    let Some((number, header)) = lines.next_filled().await? else {
        return Err(Error::Invalid {
            field: "line 1".into(),
            message: "the upload is empty: it needs a header row and recipients".into(),
        });
    };
    let header = crate::csv_input::decode_as(&header, charset)
        .and_then(|text| record(&text))
        .and_then(|record| RecipientColumns::from_header(&record))
        .map_err(|message| Error::Invalid {
            field: format!("line {number}"),
            message,
        })?;
    Ok(chunks(
        lines,
        Csv {
            columns: header,
            charset,
            open: None,
        },
    ))
}

struct Csv {
    columns: RecipientColumns,
    charset: Option<&'static encoding_rs::Encoding>,
    /// A record whose quoted field is still open (an odd number of quotes so far):
    /// it goes on on the next line.
    open: Option<String>,
}

impl Parse for Csv {
    fn line(&mut self, line: &[u8]) -> Result<Option<RecipientSpec>, String> {
        let text = crate::csv_input::decode_as(line, self.charset)?;
        let text = match self.open.take() {
            Some(mut open) => {
                open.push('\n');
                open.push_str(&text);
                open
            }
            None => text.into_owned(),
        };
        if text.matches('"').count() % 2 == 1 {
            self.open = Some(text);
            return Ok(None);
        }
        self.columns.recipient(&record(&text)?).map(Some)
    }

    fn end(&mut self) -> Result<(), String> {
        match self.open {
            Some(_) => Err("a quoted field is not closed by the end of the upload".into()),
            None => Ok(()),
        }
    }
}

/// A batch's JSON body: in memory when it is small, else in a temporary file.
pub enum JsonBody {
    Whole(axum::body::Bytes),
    Spooled(Spool),
}

/// A body written to a temporary file, removed when this is dropped, and the
/// SHA-256 of its bytes.
pub struct Spool {
    path: std::path::PathBuf,
    pub sha256: Vec<u8>,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads a JSON body of `length` bytes (its `Content-Length`, when it has one):
/// whole into memory up to `in_memory` bytes; past that into a temporary file, up
/// to `limit` bytes.
pub async fn read_json(
    body: Body,
    length: Option<u64>,
    in_memory: usize,
    limit: u64,
) -> Result<JsonBody, Error> {
    use tokio::io::AsyncWriteExt;
    let mut data = body.into_data_stream();
    let expected = length.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    // A body declared bigger than memory allows goes to the file from its first byte.
    let in_memory = if expected > in_memory { 0 } else { in_memory };
    let mut buffer = Vec::with_capacity(expected.min(in_memory));
    let mut file: Option<(tokio::fs::File, Spool)> = None;
    let mut hash = Sha256::new();
    let mut read = 0u64;
    let io = |e: std::io::Error| Error::Unavailable(format!("cannot spool the upload: {e}"));
    while let Some(bytes) = data.next().await {
        let bytes = bytes.map_err(|e| Error::Malformed {
            message: format!("the body broke off: {e}"),
            field: None,
        })?;
        read += bytes.len() as u64;
        if read > limit {
            return Err(too_large(limit).into());
        }
        // Only a spooled body needs its hash here (a body in memory is hashed where
        // its idempotency key is checked).
        match &mut file {
            Some((file, _)) => {
                hash.update(&bytes);
                file.write_all(&bytes).await.map_err(io)?;
            }
            None if buffer.len() + bytes.len() <= in_memory => buffer.extend_from_slice(&bytes),
            None => {
                hash.update(&buffer);
                hash.update(&bytes);
                let path = std::env::temp_dir()
                    .join(format!("herald-upload-{}.json", uuid::Uuid::now_v7()));
                let spool = Spool {
                    path: path.clone(),
                    sha256: Vec::new(),
                };
                let mut created = tokio::fs::File::create(&path).await.map_err(io)?;
                created.write_all(&buffer).await.map_err(io)?;
                created.write_all(&bytes).await.map_err(io)?;
                buffer = Vec::new();
                file = Some((created, spool));
            }
        }
    }
    match file {
        None => Ok(JsonBody::Whole(buffer.into())),
        Some((mut written, mut spool)) => {
            written.flush().await.map_err(io)?;
            spool.sha256 = hash.finalize().to_vec();
            Ok(JsonBody::Spooled(spool))
        }
    }
}

/// A spooled batch's options: every field but `recipients`, read in a first pass
/// (so they may come in any order).
pub async fn json_options(spool: &Spool) -> Result<BatchRequest, Error> {
    let path = spool.path.clone();
    tokio::task::spawn_blocking(move || -> Result<BatchRequest, Error> {
        let mut de = serde_json::Deserializer::from_reader(open(&path)?);
        options_of(&mut de)
    })
    .await
    .map_err(|e| Error::Internal(format!("reading the upload failed: {e}")))?
}

/// The options of a batch held in memory, as [`json_options`] reads a spooled one.
/// The recipients are cut out of the body first, where a scan finds them: skipping
/// them with the parser took twice the instructions of the scan, at the start of every
/// big submit.
/// Any error is the whole body's.
pub fn json_options_in(bytes: &[u8]) -> Result<BatchRequest, Error> {
    let whole = || options_of(&mut serde_json::Deserializer::from_slice(bytes));
    let Some(span) = outline::recipients_span(bytes) else {
        return whole();
    };
    let mut options = Vec::with_capacity(bytes.len() - span.len() + 2);
    options.extend_from_slice(&bytes[..span.start]);
    options.extend_from_slice(b"[]");
    options.extend_from_slice(&bytes[span.end..]);
    options_of(&mut serde_json::Deserializer::from_slice(&options)).or_else(|_| whole())
}

fn options_of<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
) -> Result<BatchRequest, Error> {
    let options = serde::Deserializer::deserialize_map(de, Options).map_err(|e| malformed(&e))?;
    super::request::parse_json(&serde_json::to_vec(&options).unwrap_or_default())
}

fn open(path: &std::path::Path) -> Result<std::io::BufReader<std::fs::File>, Error> {
    std::fs::File::open(path)
        .map(|f| std::io::BufReader::with_capacity(256 * 1024, f))
        .map_err(|e| Error::Unavailable(format!("cannot read the spooled upload: {e}")))
}

fn malformed(e: &serde_json::Error) -> Error {
    Error::Malformed {
        message: e.to_string(),
        field: None,
    }
}

/// Collects the top-level fields other than `recipients`.
struct Options;

impl<'de> serde::de::Visitor<'de> for Options {
    type Value = serde_json::Map<String, serde_json::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a batch object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut options = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "recipients" {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                let value = map.next_value()?;
                options.insert(key, value);
            }
        }
        Ok(options)
    }
}

/// Where a JSON batch too big to parse in one go is read from.
pub enum JsonSource {
    Spooled(Spool),
    Memory(axum::body::Bytes),
}

/// A JSON batch's recipients, read in a pass of their own on a blocking thread
/// (beside or after [`json_options`]) and handed over in chunks of [`CHUNK`], so
/// that checking a chunk overlaps parsing the next.
pub fn json_recipients(source: JsonSource) -> Chunks {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        // A body in memory is parsed again on an error, to name the field as a
        // body parsed whole does; a spooled one names the recipient.
        let elements = Recipients {
            tx: &tx,
            name_errors: matches!(source, JsonSource::Spooled(_)),
        };
        let read = match &source {
            JsonSource::Spooled(spool) => open(&spool.path).map(|reader| {
                let mut de = serde_json::Deserializer::from_reader(reader);
                serde::Deserializer::deserialize_map(&mut de, elements)
            }),
            JsonSource::Memory(bytes) => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                Ok(serde::Deserializer::deserialize_map(&mut de, elements))
            }
        };
        let failed = match read {
            Ok(Ok(())) => None,
            Ok(Err(_)) if !elements.name_errors => {
                let JsonSource::Memory(bytes) = &source else {
                    unreachable!("only a spooled body names its errors as it goes")
                };
                Some(match super::request::parse_json::<BatchRequest>(bytes) {
                    Err(Error::Malformed { field, message }) => {
                        intake::Error::Malformed { field, message }
                    }
                    _ => intake::Error::Malformed {
                        field: Some("recipients".into()),
                        message: "a recipient is malformed".into(),
                    },
                })
            }
            Ok(Err(e)) => Some(intake::Error::Invalid {
                field: "recipients".into(),
                message: e.to_string(),
            }),
            Err(e) => Some(intake::Error::Invalid {
                field: "body".into(),
                message: format!("{e:?}"),
            }),
        };
        if let Some(e) = failed {
            // The first error wins: a failed element already sent its own.
            let _ = tx.blocking_send(Err(e));
        }
        drop(source);
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

type ChunkSender = tokio::sync::mpsc::Sender<Result<Vec<RecipientSpec>, intake::Error>>;

/// Finds `recipients` and sends its elements on, chunk by chunk.
#[derive(Clone, Copy)]
struct Recipients<'a> {
    tx: &'a ChunkSender,
    /// Send the error of a malformed recipient, naming its index.
    name_errors: bool,
}

impl<'de> serde::de::Visitor<'de> for Recipients<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a batch object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "recipients" {
                map.next_value_seed(Elements {
                    tx: self.tx,
                    name_errors: self.name_errors,
                })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct Elements<'a> {
    tx: &'a ChunkSender,
    name_errors: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Elements<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of recipients")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        // The first chunks are smaller, so checking starts sooner.
        let mut size = FIRST_CHUNK;
        let mut chunk = Vec::with_capacity(size);
        let mut index = 0usize;
        loop {
            match seq.next_element::<RecipientSpec>() {
                Ok(Some(recipient)) => chunk.push(recipient),
                Ok(None) => break,
                Err(e) if !self.name_errors => return Err(e),
                Err(e) => {
                    let _ = self.tx.blocking_send(Err(intake::Error::Invalid {
                        field: format!("recipients[{index}]"),
                        message: e.to_string(),
                    }));
                    return Err(A::Error::custom("a recipient is malformed"));
                }
            }
            index += 1;
            if chunk.len() == size {
                size = (size * 2).min(CHUNK);
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(size));
                if self.tx.blocking_send(Ok(full)).is_err() {
                    return Err(A::Error::custom("the intake stopped reading"));
                }
            }
        }
        if !chunk.is_empty() && self.tx.blocking_send(Ok(chunk)).is_err() {
            return Err(A::Error::custom("the intake stopped reading"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let mut reader = crate::csv_input::loose(line.as_bytes());
            let by_reader = reader
                .records()
                .next()
                .map_or_else(csv::StringRecord::new, Result::unwrap);
            assert_eq!(record(line).unwrap(), by_reader, "{line:?}");
        }
        let quoted = record(r#""Wang, Wei",x"#).unwrap();
        assert_eq!(quoted.iter().collect::<Vec<_>>(), ["Wang, Wei", "x"]);
    }
}

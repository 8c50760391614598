//! A batch's JSON body too big to parse in one go: read into memory or spooled
//! to a temporary file, then read in two passes, its options and its recipients.

use axum::body::Body;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::line::too_large;
use super::{CHUNK, Chunks, FIRST_CHUNK, outline};
use crate::api::error::Error;
use crate::intake::{self, BatchRequest, RecipientSpec};

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
    crate::api::request::parse_json(&serde_json::to_vec(&options).unwrap_or_default())
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
                Some(
                    match crate::api::request::parse_json::<BatchRequest>(bytes) {
                        Err(Error::Malformed { field, message }) => {
                            intake::Error::Malformed { field, message }
                        }
                        Err(Error::Invalid { field, message }) => {
                            intake::Error::Invalid { field, message }
                        }
                        _ => intake::Error::Malformed {
                            field: Some("recipients".into()),
                            message: "a recipient is malformed".into(),
                        },
                    },
                )
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

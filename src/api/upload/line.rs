//! Lines of a streamed upload body, each with its number, within the upload's
//! size limit and checked against its `Content-Digest`.

use axum::body::{Body, BodyDataStream};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::api::error::Error;
use crate::intake;

/// The longest line an upload may have.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Lines of a streamed body, with their numbers (from 1); a final line without a
/// newline counts. `\r\n` endings lose their `\r`.
pub struct Lines {
    body: BodyDataStream,
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    start: usize,
    pub(super) line: u64,
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
    pub(super) async fn next_filled(&mut self) -> Result<Option<(u64, Vec<u8>)>, intake::Error> {
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

pub(super) fn too_large(limit: u64) -> intake::Error {
    intake::Error::TooLarge {
        field: "body".into(),
        message: format!("an upload may have {limit} bytes (limits.max_upload_bytes)"),
    }
}

pub(super) fn line_error(line: u64, message: impl Into<String>) -> intake::Error {
    intake::Error::Invalid {
        field: format!("line {line}"),
        message: message.into(),
    }
}

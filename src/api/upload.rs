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
//!
//! Its parts: `line` reads a streamed body line by line (checking its length and
//! `Content-Digest`); this file turns NDJSON and CSV lines into recipients;
//! `json` reads a big JSON body (spooled to a file past a size) in two passes,
//! options then recipients, and `outline` finds where its recipients are.

use futures_util::Stream;
use serde::Deserialize;

use super::error::Error;
use crate::csv_input::RecipientLines;
use crate::domain::Channel;
use crate::intake::{self, BatchRequest, RecipientSpec, TemplateSpec};

mod json;
mod line;
mod outline;

pub use self::json::{
    JsonBody, JsonSource, json_options, json_options_in, json_recipients, read_json,
};
use self::line::line_error;
pub use self::line::{Lines, content_digest};

/// An upload's recipients, chunk by chunk.
pub type Chunks =
    std::pin::Pin<Box<dyn Stream<Item = Result<Vec<RecipientSpec>, intake::Error>> + Send>>;

/// Recipients handed to the intake at a time.
pub const CHUNK: usize = 10_000;
/// A JSON body's first chunk; each next one is twice the size, up to [`CHUNK`].
const FIRST_CHUNK: usize = CHUNK / 4;

/// How the lines of an upload become recipients.
trait Parse: Send {
    /// The recipient a line completes, `None` when the line is part of a record
    /// that goes on, or what is wrong with it.
    fn line(&mut self, number: u64, line: &[u8]) -> Result<Option<RecipientSpec>, String>;

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
                Ok(Some((number, line))) => match parse.line(number, &line) {
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
    fn line(&mut self, _number: u64, line: &[u8]) -> Result<Option<RecipientSpec>, String> {
        serde_json::from_slice(line)
            .map(Some)
            .map_err(|e| format!("a recipient: {e}"))
    }
}

/// A CSV upload's options, from the query string; in the document, the query of
/// `POST /v1/batches` (whose JSON and NDJSON bodies carry their own options and
/// take only `dry_run` from it).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// A CSV upload's channel (a JSON or NDJSON body names its own).
    channel: Channel,
    /// A CSV upload's inline template body (and `subject`, for e-mail); or
    /// `template_id`, not both.
    #[serde(default)]
    #[schemars(pattern(intake::NOT_BLANK))]
    template: Option<String>,
    #[serde(default)]
    #[schemars(pattern(intake::ONE_LINE))]
    subject: Option<String>,
    #[serde(default)]
    template_id: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    #[schemars(range(min = *intake::PRIORITY_RANGE.start(), max = *intake::PRIORITY_RANGE.end()))]
    priority: Option<i32>,
    #[serde(default)]
    #[schemars(extend("format" = "date-time"))]
    send_at: Option<String>,
    #[serde(default)]
    #[schemars(extend("format" = "date-time"))]
    expires_at: Option<String>,
    #[serde(default)]
    #[schemars(range(min = 1, max = crate::domain::MAX_VALID_FOR_SECS))]
    valid_for: Option<i64>,
    #[serde(default)]
    reject_recent_duplicates: bool,
    /// An http(s) URL that every event of this batch is posted to, signed with
    /// `webhook.callback_secret` (which must be set).
    #[serde(default)]
    #[schemars(extend("format" = "uri"), pattern(crate::domain::HTTP_URL_PATTERN))]
    callback_url: Option<String>,
    /// Check and report only; store nothing (`200`). Read whatever the body.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    ignore_window: bool,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    max_cost: Option<f64>,
}

impl CsvOptions {
    /// The options in a CSV upload's query string. A value whose percent-encoding
    /// is not UTF-8 is refused, not read with replacement characters.
    pub fn from_query(query: &str) -> Result<CsvOptions, Error> {
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value.replace('+', " ");
            if percent_encoding::percent_decode_str(&value)
                .decode_utf8()
                .is_err()
            {
                return Err(Error::Invalid {
                    field: name.to_owned(),
                    message: "is not UTF-8 once percent-decoded".into(),
                });
            }
        }
        serde_urlencoded::from_str(query).map_err(|e| Error::Invalid {
            field: "query".into(),
            message: format!(
                "{e}: a CSV upload takes the batch's options in the query string \
                 (channel, template or template_id, subject, provider, priority, send_at, \
                 expires_at, valid_for, reject_recent_duplicates, callback_url, window, \
                 ignore_window, timezone, max_cost, dry_run)"
            ),
        })
    }

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
            expires_at: self.expires_at,
            valid_for: self.valid_for,
            reject_recent_duplicates: self.reject_recent_duplicates,
            callback_url: self.callback_url,
            window: self.window,
            ignore_window: self.ignore_window,
            timezone: self.timezone,
            max_cost: self.max_cost,
        }
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

/// Reads a CSV upload's header row and answers its recipients, read as
/// [`RecipientLines`] reads them.
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
    let reader =
        RecipientLines::from_header(&header, charset).map_err(|message| Error::Invalid {
            field: format!("line {number}"),
            message,
        })?;
    Ok(chunks(lines, reader))
}

impl Parse for RecipientLines {
    fn line(&mut self, number: u64, line: &[u8]) -> Result<Option<RecipientSpec>, String> {
        RecipientLines::line(self, number, line).map(|r| r.map(|(_, recipient)| recipient))
    }

    fn end(&mut self) -> Result<(), String> {
        RecipientLines::end(self)
    }
}

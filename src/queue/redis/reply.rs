//! Reading the values of Redis replies, with the errors a bad stored value gives.

use redis::Value;

use crate::domain::BatchId;
use crate::queue::{Error, Result, parse_batch_id};

pub(super) fn unexpected(what: &str) -> Error {
    Error::Corrupt(format!("redis answered {what} in an unexpected shape"))
}

/// A string reply; `None` for nil (or RESP3 false, which a Lua `false` becomes).
pub(super) fn text(v: &Value) -> Result<Option<String>> {
    match v {
        Value::Nil | Value::Boolean(false) => Ok(None),
        Value::BulkString(bytes) => String::from_utf8(bytes.clone())
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("a stored value is not UTF-8: {e}"))),
        Value::SimpleString(s) => Ok(Some(s.clone())),
        Value::Int(n) => Ok(Some(n.to_string())),
        Value::Okay => Ok(Some("OK".into())),
        other => Err(Error::Corrupt(format!(
            "expected a string from redis, got {other:?}"
        ))),
    }
}

pub(super) fn required(v: &Value, what: &str) -> Result<String> {
    text(v)?.ok_or_else(|| Error::Corrupt(format!("a stored {what} is missing")))
}

pub(super) fn number<T: std::str::FromStr>(v: &Value, what: &str) -> Result<T> {
    let s = required(v, what)?;
    s.parse()
        .map_err(|_| Error::Corrupt(format!("a stored {what} is not a number: `{s}`")))
}

pub(super) fn optional_number(v: &Value, what: &str) -> Result<Option<i64>> {
    text(v)?
        .map(|s| {
            s.parse()
                .map_err(|_| Error::Corrupt(format!("a stored {what} is not a number: `{s}`")))
        })
        .transpose()
}

pub(super) fn batch_id(v: &Value) -> Result<BatchId> {
    parse_batch_id(&required(v, "batch id")?)
}

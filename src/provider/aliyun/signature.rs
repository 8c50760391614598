//! Aliyun's RPC request signature (signature version 1.0): the parameters
//! canonicalized and percent-encoded as RFC 3986 says, then HMAC-SHA1 keyed with
//! the AccessKey secret.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// Percent-encoding as Aliyun's signature specifies (RFC 3986): letters, digits
/// and `-_.~` stay, every other byte of the UTF-8 becomes `%XY`.
pub(super) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonicalized query string: parameters in order of name, names and values
/// percent-encoded, `name=value` joined by `&`.
pub(super) fn canonicalize(params: &BTreeMap<&str, String>) -> String {
    params
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `METHOD&%2F&` and the percent-encoded canonicalized query string.
pub(super) fn string_to_sign(method: &str, canonical: &str) -> String {
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(canonical)
    )
}

/// Base64 of HMAC-SHA1 keyed with the secret and `&`.
pub(super) fn signature(secret: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

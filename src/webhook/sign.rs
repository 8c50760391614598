//! Standard Webhooks signatures: a `whsec_` secret, and the `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` headers of a signed request, so
//! that receivers verify Herald's posts with any Standard Webhooks library.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What starts a Standard Webhooks secret.
const PREFIX: &str = "whsec_";

/// The fewest bytes a secret's key may have: the specification's lower bound.
pub const MIN_SECRET_BYTES: usize = 24;

/// A Standard Webhooks signing secret: `whsec_` and the base64 of at least
/// [`MIN_SECRET_BYTES`] random bytes. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// Reads `whsec_<base64>`; the error says what is wrong, without the secret.
    pub fn parse(text: &str) -> Result<SigningSecret, String> {
        let Some(encoded) = text.strip_prefix(PREFIX) else {
            return Err(format!(
                "must be a Standard Webhooks secret: `{PREFIX}` and the base64 of at least {MIN_SECRET_BYTES} random bytes"
            ));
        };
        let key = BASE64
            .decode(encoded)
            .map_err(|e| format!("is not `{PREFIX}` and base64: {e}"))?;
        if key.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "holds {} bytes; a Standard Webhooks secret holds at least {MIN_SECRET_BYTES}",
                key.len()
            ));
        }
        Ok(SigningSecret(key))
    }

    /// `webhook-signature`'s value for a request of `id`, sent at `timestamp`
    /// (Unix seconds), whose body is `body`: `v1,` and the base64 of the
    /// HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with the secret's bytes.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }

    /// The three headers of a signed request, name first.
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", self.sign(id, timestamp, body)),
        ]
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl<'de> Deserialize<'de> for SigningSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SigningSecret::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The `webhook-id` of a request carrying the events `event_ids`, in order:
/// `msg_` and 128 bits of their SHA-256, so that a retry of the same events is
/// the same message to a receiver that dedupes by it.
pub fn request_id<'a>(event_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut hash = Sha256::new();
    for id in event_ids {
        hash.update(id.as_bytes());
        hash.update([0]);
    }
    format!("msg_{}", hex::encode(&hash.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example (its libraries' `sign` tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signing_the_specifications_example_gives_its_signature() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn the_headers_carry_the_id_the_timestamp_and_the_signature() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let headers = secret.headers(ID, TIMESTAMP, BODY.as_bytes());
        assert_eq!(
            headers,
            [
                ("webhook-id", ID.to_string()),
                ("webhook-timestamp", TIMESTAMP.to_string()),
                ("webhook-signature", SIGNATURE.to_string()),
            ]
        );
    }

    #[test]
    fn a_changed_body_or_timestamp_changes_the_signature() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_ne!(secret.sign(ID, TIMESTAMP + 1, BODY.as_bytes()), SIGNATURE);
        assert_ne!(secret.sign(ID, TIMESTAMP, b"{\"test\": 1}"), SIGNATURE);
    }

    #[test]
    fn a_secret_without_its_prefix_or_not_base64_or_too_short_is_refused() {
        let bare = SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err();
        assert!(bare.contains("whsec_"), "{bare}");
        let garbled = SigningSecret::parse("whsec_not base64!").unwrap_err();
        assert!(garbled.contains("base64"), "{garbled}");
        let short = SigningSecret::parse("whsec_c2hvcnQ=").unwrap_err();
        assert!(short.contains("5 bytes"), "{short}");
    }

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(format!("{secret:?}"), "SigningSecret(***)");
    }

    #[test]
    fn the_request_id_is_stable_for_the_same_events_and_differs_for_others() {
        let a = request_id(["b1.finished", "m1.sent"]);
        assert_eq!(a, request_id(["b1.finished", "m1.sent"]));
        assert!(a.starts_with("msg_") && a.len() == 4 + 32, "{a}");
        assert_ne!(a, request_id(["b1.finished"]));
        // Ids are separated, so that two ids never hash as their concatenation.
        assert_ne!(request_id(["ab", "c"]), request_id(["a", "bc"]));
    }
}

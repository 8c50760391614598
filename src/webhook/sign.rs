//! Standard Webhooks signatures: the `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` headers of a signed request, so that receivers verify
//! Herald's posts with any Standard Webhooks library.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::domain::SigningSecret;

/// `webhook-signature`'s value for a request of `id`, sent at `timestamp` (Unix
/// seconds), whose body is `body`: `v1,` and the base64 of the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` keyed with the secret's bytes.
pub fn sign(secret: &SigningSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.key()).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The three headers of a signed request, name first.
pub fn headers(
    secret: &SigningSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", sign(secret, id, timestamp, body)),
    ]
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
        assert_eq!(sign(&secret, ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn the_headers_carry_the_id_the_timestamp_and_the_signature() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let headers = headers(&secret, ID, TIMESTAMP, BODY.as_bytes());
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
        assert_ne!(sign(&secret, ID, TIMESTAMP + 1, BODY.as_bytes()), SIGNATURE);
        assert_ne!(sign(&secret, ID, TIMESTAMP, b"{\"test\": 1}"), SIGNATURE);
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

//! A Standard Webhooks signing secret (`whsec_` and base64), read from the
//! configuration and never shown in `Debug` output or logs; `webhook` signs with it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

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

    /// The key's bytes, for signing; never log them.
    pub fn key(&self) -> &[u8] {
        &self.0
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{secret:?}"), "SigningSecret(***)");
    }
}

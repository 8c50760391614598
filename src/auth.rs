//! Who may call a route ([`Access`]), and API tokens: made at random by
//! `herald token`, configured as their SHA-256 hashes
//! (`[auth] tokens = ["sha256:<hex>"]`), so that the configuration holds nothing
//! a reader could present, and checked in constant time.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How a configured hash starts.
const SCHEME: &str = "sha256:";
/// How a token made by `herald token` starts, so that one is recognisable in a
/// leaked file or a secret scanner.
const TOKEN_PREFIX: &str = "herald_";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: the route shows nothing of the store.
    Public,
    /// With API tokens configured, only a caller presenting one.
    Token,
}

/// The SHA-256 hash of one API token, written `sha256:` and 64 hex digits.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Parses `sha256:<64 hex digits>`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<TokenHash, String> {
        let hex_digits = text.strip_prefix(SCHEME).ok_or_else(|| {
            format!(
                "an API token hash must start with `{SCHEME}` (make one with `herald token`), not `{}…`",
                text.chars().take(7).collect::<String>()
            )
        })?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).map_err(|_| {
            format!(
                "an API token hash is `{SCHEME}` and 64 hex digits (make one with `herald token`)"
            )
        })?;
        Ok(TokenHash(bytes))
    }
}

impl TryFrom<String> for TokenHash {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        TokenHash::parse(&text)
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({self})")
    }
}

/// The tokens a server accepts; cheap to clone. Empty: none is asked for.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<[TokenHash]>);

impl Tokens {
    pub fn new(hashes: &[TokenHash]) -> Tokens {
        Tokens(hashes.into())
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `token` is one of them. Its hash is compared with every configured
    /// one, each in constant time, so the answer's timing says nothing of which
    /// bytes matched.
    pub fn accept(&self, token: &str) -> bool {
        let presented = TokenHash::of(token);
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, hash| {
                found | hash.0.ct_eq(&presented.0)
            })
            .into()
    }
}

/// A new random token (256 bits from the operating system) and its hash.
pub fn new_token() -> Result<(String, TokenHash), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = TokenHash::of(&token);
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_accepted_by_its_hash_and_no_other_token_is() {
        let (token, hash) = new_token().unwrap();
        assert!(
            token.starts_with("herald_") && token.len() == 7 + 64,
            "{token}"
        );
        let parsed = TokenHash::parse(&hash.to_string()).unwrap();
        let (other, other_hash) = new_token().unwrap();
        assert_ne!(token, other);
        let tokens = Tokens::new(&[other_hash, parsed]);
        assert!(tokens.accept(&token));
        assert!(tokens.accept(&other));
        assert!(!tokens.accept(&token[..token.len() - 1]));
        assert!(!tokens.accept(""));
        assert!(!Tokens::default().accept(&token));
    }

    #[test]
    fn a_hash_is_sha256_of_the_token_in_hex() {
        // printf %s secret | sha256sum
        assert_eq!(
            TokenHash::of("secret").to_string(),
            "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }

    #[test]
    fn a_malformed_hash_is_refused_saying_how_to_make_one() {
        for bad in [
            "2bb80d53",
            "sha256:xyz",
            "sha1:2bb80d537b1da3e38bd3",
            "sha256:",
        ] {
            let err = TokenHash::parse(bad).unwrap_err();
            assert!(err.contains("herald token"), "{bad}: {err}");
        }
    }
}

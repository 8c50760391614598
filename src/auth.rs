//! Who may call a route ([`Access`]), and API tokens: made at random by
//! `herald token`, configured as their SHA-256 hashes, so that the configuration
//! holds nothing a reader could present, and checked in constant time. A token
//! has a name, which the audit trail records for what it does: written
//! `[[auth.tokens]] name = "ops" hash = "sha256:<hex>"`, or as the bare hash
//! (`[auth] tokens = ["sha256:<hex>"]`), which is named by its first eight hex
//! digits (`sha256:1a2b3c4d`).

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
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

/// How many hex digits of its hash name a token written without a name.
const SHORT_HASH: usize = 8;

/// One configured API token: its name and hash. Read from a bare hash string
/// (named by the hash's first eight hex digits) or a table `{ name, hash }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// What the audit trail calls its holder: letters, digits, `.`, `-`, `_`.
    pub name: String,
    pub hash: TokenHash,
}

impl From<TokenHash> for ApiToken {
    fn from(hash: TokenHash) -> Self {
        let name = hash.to_string()[..SCHEME.len() + SHORT_HASH].to_owned();
        ApiToken { name, hash }
    }
}

impl ApiToken {
    /// The token `hash`, named `name`.
    pub fn named(name: &str, hash: TokenHash) -> ApiToken {
        ApiToken {
            name: name.to_owned(),
            hash,
        }
    }
}

/// Why `name` cannot name a token, if it cannot.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "a token name is 1 to 64 letters, digits, `.`, `-` and `_`, not `{name}`"
        ))
    }
}

/// Refuses two tokens with one name or one hash, and a name that is not valid.
pub fn check_tokens(tokens: &[ApiToken]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    let mut hashes = std::collections::HashSet::new();
    for token in tokens {
        check_name(&token.name).map_err(|e| format!("auth.tokens: {e}"))?;
        if !names.insert(token.name.as_str()) {
            return Err(format!(
                "auth.tokens: two tokens are named `{}`: each needs a name of its own",
                token.name
            ));
        }
        if !hashes.insert(token.hash.0) {
            return Err(format!(
                "auth.tokens: the token named `{}` is configured twice",
                token.name
            ));
        }
    }
    Ok(())
}

impl<'de> Deserialize<'de> for ApiToken {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Written;

        impl<'de> Visitor<'de> for Written {
            type Value = ApiToken;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token hash `sha256:<hex>` or a table { name, hash }")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<ApiToken, E> {
                TokenHash::parse(text)
                    .map(ApiToken::from)
                    .map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ApiToken, A::Error> {
                let (mut name, mut hash) = (None::<String>, None::<TokenHash>);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" => name = Some(map.next_value()?),
                        "hash" => hash = Some(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, &["name", "hash"])),
                    }
                }
                let hash = hash.ok_or_else(|| de::Error::missing_field("hash"))?;
                Ok(match name {
                    Some(name) => ApiToken { name, hash },
                    None => ApiToken::from(hash),
                })
            }
        }

        deserializer.deserialize_any(Written)
    }
}

/// The tokens a server accepts; cheap to clone. Empty: none is asked for.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<[ApiToken]>);

impl Tokens {
    pub fn new(tokens: &[ApiToken]) -> Tokens {
        Tokens(tokens.into())
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `token` is one of them.
    pub fn accept(&self, token: &str) -> bool {
        self.name_of(token).is_some()
    }

    /// The name of `token` if it is one of them. Its hash is compared with every
    /// configured one, each in constant time, so the answer's timing says nothing
    /// of which bytes matched.
    pub fn name_of(&self, token: &str) -> Option<&str> {
        let presented = TokenHash::of(token);
        let mut found = None;
        for configured in self.0.iter() {
            if bool::from(configured.hash.0.ct_eq(&presented.0)) {
                found = Some(configured.name.as_str());
            }
        }
        found
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
        let tokens = Tokens::new(&[other_hash.into(), ApiToken::named("ops", parsed)]);
        assert!(tokens.accept(&token));
        assert!(tokens.accept(&other));
        assert!(!tokens.accept(&token[..token.len() - 1]));
        assert!(!tokens.accept(""));
        assert!(!Tokens::default().accept(&token));
        assert_eq!(tokens.name_of(&token), Some("ops"));
        assert_eq!(tokens.name_of("nope"), None);
    }

    #[test]
    fn a_token_is_written_as_a_bare_hash_named_by_its_prefix_or_as_a_named_table() {
        #[derive(Deserialize)]
        struct Auth {
            tokens: Vec<ApiToken>,
        }
        let hash = TokenHash::of("secret");
        use figment::providers::{Format, Toml};
        let auth: Auth = figment::Figment::from(Toml::string(&format!(
            "tokens = [\"{hash}\", {{ name = \"ops\", hash = \"{}\" }}]",
            TokenHash::of("other")
        )))
        .extract()
        .unwrap();
        assert_eq!(auth.tokens[0].name, "sha256:2bb80d53");
        assert_eq!(auth.tokens[0].hash, hash);
        assert_eq!(auth.tokens[1].name, "ops");
        let twice = [auth.tokens[1].clone(), ApiToken::named("ops", hash.clone())];
        assert!(check_tokens(&twice).unwrap_err().contains("named `ops`"));
        let same = [
            ApiToken::named("a", hash.clone()),
            ApiToken::named("b", hash),
        ];
        assert!(check_tokens(&same).unwrap_err().contains("twice"));
        assert!(check_name("ops team").is_err());
        assert!(check_tokens(&auth.tokens).is_ok());
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

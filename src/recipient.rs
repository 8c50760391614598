//! Recipient address normalisation: phone numbers to E.164 by libphonenumber's
//! metadata and rules (the `phonenumber` crate; the compiled plans of `plan` decide
//! the common numbers fast), e-mail mailboxes to a checked address with an optional
//! display name. Pure; every refusal names the input and says why, in the words of
//! [`InvalidAddress`].

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::Once;

use phonenumber::country::Id;

use crate::domain::{Channel, InvalidAddress};

/// A country whose national numbering plan applies to numbers written without a
/// country code, such as `CN` for `138 0013 8000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region(Id);

impl FromStr for Region {
    type Err = String;

    /// Parses a two-letter ISO 3166 country code, in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.to_ascii_uppercase().parse().map(Region).map_err(|_| {
            format!("unknown region `{s}`: expected a two-letter country code such as CN or US")
        })
    }
}

impl<'de> serde::Deserialize<'de> for Region {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

/// How recipients of each channel are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    pub phone: PhoneRules,
    pub email: EmailRules,
}

/// A recipient as Herald stores and compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// What the message is sent to: E.164 for SMS, the mailbox (with its display
    /// name, if any) for e-mail.
    pub to: String,
    /// Who it reaches, for duplicates and the suppression list: E.164 for SMS, the
    /// bare address for e-mail.
    pub key: String,
}

/// Normalises `raw` as a recipient of `channel`, or says why it cannot be one.
pub fn normalize(channel: Channel, raw: &str, rules: &Rules) -> Result<Recipient, InvalidAddress> {
    normalize_to(channel, raw, rules).map(|(to, key)| Recipient {
        key: key.unwrap_or_else(|| to.clone()),
        to,
    })
}

/// [`normalize`]'s `to`, with its `key` only where the two differ (a mailbox with
/// a display name): a phone number, its own key, is not copied.
pub fn normalize_to(
    channel: Channel,
    raw: &str,
    rules: &Rules,
) -> Result<(String, Option<String>), InvalidAddress> {
    match channel {
        Channel::Sms => normalize_phone(raw, &rules.phone).map(|e164| (e164, None)),
        Channel::Email => Mailbox::parse(raw, &rules.email)
            .map(|mailbox| (mailbox.to_string(), Some(mailbox.address))),
    }
}

/// The key of an address Herald stored as a message's `to` (already normalised):
/// the number itself for SMS, the bare address of the mailbox for e-mail.
pub fn address_key(channel: Channel, to: &str) -> String {
    let lenient = EmailRules {
        allow_local_domains: true,
    };
    match channel {
        Channel::Sms => to.to_string(),
        Channel::Email => {
            Mailbox::parse(to, &lenient).map_or_else(|_| to.to_string(), |m| m.address)
        }
    }
}

/// Loads the numbering-plan metadata and compiles the default region's plans
/// (about 90 ms and 8 MB, once per process), so that the first batch's submit does
/// not pay for them. Other country codes are still compiled on first use.
pub fn prepare(rules: &PhoneRules) {
    plan::prepare(rules.default_region.map(|Region(id)| id));
}

/// How phone numbers are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhoneRules {
    /// The region of numbers written without a country code (national form, or an
    /// international call prefix such as `00`). Without one, every number must start
    /// with `+` and its country code.
    pub default_region: Option<Region>,
}

/// Normalises a phone number to E.164 (`+8613800138000`), or says why it is not a
/// number that can receive a message.
///
/// The input holds digits, an optional leading `+`, and spaces, dashes, dots and
/// parentheses as separators. It is accepted only when the numbering plan of its
/// country has a number with those digits (libphonenumber's `is_valid`), so a number
/// of the right length in an unallocated range is refused too. Normalising an E.164
/// result gives it back unchanged. A number costs well under a microsecond when the
/// compiled plans decide it, about 12 µs when it goes to the library parser (a
/// national prefix after the country code, a number invalid as written), and the
/// first number of each country code compiles its plans once (under 40 ms).
pub fn normalize_phone(raw: &str, rules: &PhoneRules) -> Result<String, InvalidAddress> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(InvalidAddress("empty address".into()));
    }
    let region = rules.default_region.map(|Region(id)| id);
    compact_phone(raw)
        .ok_or(Refusal::Characters)
        .and_then(|dialled| dial(&dialled, region))
        .map_err(|refusal| {
            InvalidAddress(format!("`{}` is not a phone number: {refusal}", shown(raw)))
        })
}

/// Why a phone number was refused, as the end of the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Characters,
    NoCountryCode,
    UnknownCountryCode,
    TooShort,
    TooLong,
    NotInPlan(u16),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Characters => {
                f.write_str("only digits, an optional leading + and separators are allowed")
            }
            Refusal::NoCountryCode => {
                f.write_str("it has no country code: write it with + and the country code, or set recipients.default_region (e.g. CN)")
            }
            Refusal::UnknownCountryCode => f.write_str("its country code is unknown"),
            Refusal::TooShort => f.write_str("it has too few digits"),
            Refusal::TooLong => f.write_str("it has too many digits"),
            Refusal::NotInPlan(code) => {
                write!(f, "no number of country code +{code} has these digits")
            }
        }
    }
}

/// The number without separators, keeping a leading `+`; `None` when it holds
/// anything else.
fn compact_phone(raw: &str) -> Option<String> {
    let (plus, rest) = match raw.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", raw),
    };
    let mut dialled = String::with_capacity(raw.len());
    dialled.push_str(plus);
    for c in rest.chars() {
        match c {
            '0'..='9' => dialled.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    Some(dialled)
}

/// Normalises compact digits as dialled from `region`. Most numbers are decided by
/// the compiled plans; the library parser decides those whose digits it may rewrite.
fn dial(dialled: &str, region: Option<Id>) -> Result<String, Refusal> {
    let international = dialled
        .strip_prefix('+')
        .or_else(|| region.and_then(|region| plan::strip_international_prefix(region, dialled)));
    match (international, region) {
        (Some(digits), _) => plan::international(digits)
            .unwrap_or_else(|| parse_with_library(None, &format!("+{digits}"))),
        (None, Some(region)) => plan::national(region, dialled)
            .map_or_else(|| parse_with_library(Some(region), dialled), Ok),
        (None, None) => Err(Refusal::NoCountryCode),
    }
}

/// Normalises with the `phonenumber` parser. International numbers (`+…`, and the
/// digits after an international call prefix) must come without a region: given
/// one, the parser strips that region's national prefix from the foreign number (a
/// `1` in the US), which turns `+86 138…` into a different number.
fn parse_with_library(region: Option<Id>, dialled: &str) -> Result<String, Refusal> {
    static CACHE_SIZED: Once = Once::new();
    CACHE_SIZED.call_once(|| {
        // The parser's patterns share one least-recently-used cache of 100 compiled
        // regexes; numbers of more countries than that recompile at every call.
        if let Ok(mut cache) = phonenumber::metadata::DATABASE.cache().lock() {
            cache.set_capacity(2048);
        }
    });
    let number = phonenumber::parse(region, dialled).map_err(|error| match error {
        phonenumber::ParseError::InvalidCountryCode => Refusal::UnknownCountryCode,
        phonenumber::ParseError::TooLong => Refusal::TooLong,
        _ => Refusal::TooShort,
    })?;
    if !phonenumber::is_valid(&number) {
        return Err(Refusal::NotInPlan(number.code().value()));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// How e-mail addresses are checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmailRules {
    /// Accept domains that only resolve inside a private network: names without a
    /// dot (`localhost`, `mailhost`) and names under the top-level names reserved
    /// for local or test use (`.local`, `.internal`, `.test`, …).
    pub allow_local_domains: bool,
}

/// Top-level names reserved for local or test use (RFC 2606, RFC 6761, RFC 6762,
/// RFC 9476, ICANN's `.internal`), which no Internet mail can reach, plus the
/// widespread `localdomain`.
const LOCAL_NAMES: &[&str] = &[
    "alt",
    "example",
    "internal",
    "invalid",
    "local",
    "localdomain",
    "localhost",
    "test",
];

/// An e-mail recipient: an address and an optional display name.
///
/// The address is an RFC 5322 `addr-spec` as mail systems accept it in practice: an
/// ASCII dot-atom local part of at most 64 octets (quoted local parts and address
/// literals are refused), `@`, and a DNS name of letter-digit-hyphen labels (UTF-8
/// labels allowed for international domains) that ends in an alphabetic top-level
/// name; 254 octets at most in all. The domain is stored in lower case, the local
/// part as given, because only its owner's server may interpret its case. UTF-8
/// labels are measured in octets, not in their punycode form, and are not
/// normalised (NFC) or checked for confusable characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name, unquoted and trimmed; never empty.
    pub name: Option<String>,
    /// The `addr-spec`, `local@domain`, without angle brackets.
    pub address: String,
}

impl Mailbox {
    /// Parses `li@example.com`, `Li Wei <li@example.com>`, `"Wei, Li" <li@example.com>`
    /// or `<li@example.com>`. Line breaks and other control characters are refused
    /// anywhere, so a mailbox can never smuggle a header into a message.
    pub fn parse(raw: &str, rules: &EmailRules) -> Result<Self, InvalidAddress> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(InvalidAddress("empty address".into()));
        }
        let invalid =
            |why: &str| InvalidAddress(format!("`{}` is not an e-mail address: {why}", shown(raw)));
        if raw.contains(['\r', '\n']) {
            return Err(invalid("it contains a line break"));
        }
        if raw.chars().any(char::is_control) {
            return Err(invalid("it contains control characters"));
        }
        let (name, addr_spec) = match raw.strip_suffix('>') {
            Some(bracketed) => {
                let Some((name, addr_spec)) = bracketed.rsplit_once('<') else {
                    return Err(invalid("it ends with > but has no <"));
                };
                (
                    display_name(name.trim()).map_err(invalid)?,
                    addr_spec.trim(),
                )
            }
            None => (None, raw),
        };
        let address = check_address(addr_spec, rules).map_err(|why| invalid(&why))?;
        Ok(Mailbox { name, address })
    }
}

impl fmt::Display for Mailbox {
    /// The RFC 5322 `mailbox` form: the bare address without a name, the name as is
    /// when it is a plain phrase of words, otherwise quoted with `"` and `\` escaped.
    /// Non-ASCII names are written as UTF-8 (RFC 6532); encoding them for transports
    /// without SMTPUTF8 belongs to the transport.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(name) = &self.name else {
            return f.write_str(&self.address);
        };
        if is_phrase(name) {
            return write!(f, "{name} <{}>", self.address);
        }
        f.write_char('"')?;
        for c in name.chars() {
            if matches!(c, '"' | '\\') {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        write!(f, "\" <{}>", self.address)
    }
}

/// The display name before `<`: a quoted string, or plain words (dots allowed, as
/// in `Dr. Li`). An empty name is no name.
fn display_name(text: &str) -> Result<Option<String>, &'static str> {
    let name = match text.strip_prefix('"') {
        Some(quoted) => unquote(quoted)?,
        None if text.contains(['"', '<', '>', '@', ',', ';', ':', '\\', '(', ')', '[', ']']) => {
            return Err("a display name with punctuation such as , or @ must be in double quotes");
        }
        None => text.to_string(),
    };
    let name = name.trim();
    Ok((!name.is_empty()).then(|| name.to_string()))
}

/// The content of a quoted string whose opening quote is already consumed; it must
/// end with the closing quote.
fn unquote(quoted: &str) -> Result<String, &'static str> {
    let mut name = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => name.push(escaped),
                None => return Err("the display name ends inside its quotes"),
            },
            '"' if chars.as_str().is_empty() => return Ok(name),
            '"' => return Err("the display name has text after its closing quote"),
            c => name.push(c),
        }
    }
    Err("the display name ends inside its quotes")
}

/// Whether `name` can be written unquoted: words of RFC 5322 `atext` (any non-ASCII
/// character counts, RFC 6532) separated by single spaces.
fn is_phrase(name: &str) -> bool {
    name.split(' ')
        .all(|word| !word.is_empty() && word.chars().all(|c| !c.is_ascii() || is_atext(c)))
}

/// RFC 5322 `atext` in ASCII: letters, digits and ``!#$%&'*+-/=?^_`{|}~``.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// Checks an `addr-spec` and returns it with its domain in lower case.
fn check_address(addr_spec: &str, rules: &EmailRules) -> Result<String, String> {
    if addr_spec.starts_with('"') {
        return Err("quoted local parts such as \"li wei\"@example.com are not accepted".into());
    }
    if addr_spec.chars().any(char::is_whitespace) {
        return Err("it contains white space".into());
    }
    let Some((local, domain)) = addr_spec.rsplit_once('@') else {
        return Err("it has no @".into());
    };
    if local.is_empty() || local.len() > 64 {
        return Err("the part before @ must have 1 to 64 characters".into());
    }
    if !local.chars().all(|c| c == '.' || is_atext(c)) {
        return Err(
            "the part before @ may hold only ASCII letters, digits, dots and !#$%&'*+-/=?^_`{|}~"
                .into(),
        );
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("the part before @ cannot start or end with a dot or have two in a row".into());
    }
    let domain = check_domain(domain, rules)?;
    let address = format!("{local}@{domain}");
    if address.len() > 254 {
        return Err(format!(
            "it has {} characters, an address has at most 254",
            address.len()
        ));
    }
    Ok(address)
}

/// Checks the domain of an address and returns it in lower case.
fn check_domain(domain: &str, rules: &EmailRules) -> Result<String, String> {
    if domain.starts_with('[') {
        return Err("address literals such as [192.0.2.1] are not accepted".into());
    }
    let domain = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        domain.to_lowercase()
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err("the domain must be a name with a dot, such as example.com".into());
    }
    let top = domain
        .rsplit('.')
        .next()
        .expect("split yields at least one label");
    let local = top.len() == domain.len() || LOCAL_NAMES.contains(&top);
    if local && !rules.allow_local_domains {
        return Err(format!(
            "`{domain}` is a local domain that mail from the Internet cannot reach"
        ));
    }
    if top.len() < domain.len() && !is_top_level_name(top) {
        return Err(format!("`{top}` is not a top-level domain name"));
    }
    Ok(domain)
}

/// Whether a label can be a top-level domain: two or more ASCII letters, an
/// internationalised name in its ASCII form (`xn--…`), or letters of any script.
fn is_top_level_name(label: &str) -> bool {
    if label.is_ascii() {
        label.starts_with("xn--")
            || (label.len() >= 2 && label.chars().all(|c| c.is_ascii_alphabetic()))
    } else {
        label.chars().all(char::is_alphabetic)
    }
}

/// The input as it may be quoted in a reason: control characters escaped, so a
/// refusal cannot break the line of a log or a report.
fn shown(raw: &str) -> String {
    let mut text = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_control() {
            text.extend(c.escape_default());
        } else {
            text.push(c);
        }
    }
    text
}

mod plan;

#[cfg(test)]
mod tests;

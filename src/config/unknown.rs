//! An unknown setting, said helpfully: which key, in which table, from which file
//! or environment variable, and the valid name nearest to it — or, for a key at
//! the top level that a section takes, that section.

use figment::error::Kind;
use serde::de::{self, Deserialize, Visitor};

use super::{AuthConfig, CircuitConfig, IntakeLimits, RecipientsConfig, RetryConfig};
use super::{RepliesConfig, ValidForConfig, WebhookSettings, WindowsConfig, WorkerConfig};

/// A key no table of the configuration reads.
#[derive(Debug)]
pub struct UnknownKey {
    /// The key as written, e.g. `tls`.
    pub key: String,
    /// The table it is in, e.g. `[[providers]] #1`, or `the top level`.
    pub table: String,
    /// The file or environment variable it came from.
    pub source: String,
    /// What it probably should be, e.g. `` `security` ``.
    pub hint: Option<String>,
    /// The keys the table reads (for a list entry, those of its `kind`), shown
    /// when no valid name is near.
    pub valid: &'static [&'static str],
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let UnknownKey {
            key, table, source, ..
        } = self;
        write!(f, "unknown setting `{key}` in {table} ({source})")?;
        match (&self.hint, self.valid) {
            (Some(hint), _) => write!(f, ": did you mean {hint}?"),
            (None, []) => write!(f, ": it is not a setting Herald reads"),
            (None, valid) => {
                let valid: Vec<String> = valid.iter().map(|k| format!("`{k}`")).collect();
                write!(f, ": the keys it reads include {}", valid.join(", "))
            }
        }
    }
}

impl UnknownKey {
    /// The unknown key `error` reports, if that is what it reports.
    /// `figment` is what was read, to tell which entry of a list holds the key.
    pub fn from_figment(error: &figment::Error, figment: &figment::Figment) -> Option<UnknownKey> {
        let Kind::UnknownField(key, expected) = &error.kind else {
            return None;
        };
        // The path ends with the key itself.
        let table_path = &error.path[..error.path.len().saturating_sub(1)];
        let table = table_name(table_path, key, figment);
        let source = match &error.metadata {
            Some(metadata) => match &metadata.source {
                Some(figment::Source::File(path)) => path.display().to_string(),
                // The environment's name for the key, e.g. `HERALD_DEFAULT_REGION`.
                _ if metadata.name.contains("environment") => {
                    let upper: Vec<String> =
                        error.path.iter().map(|k| k.to_ascii_uppercase()).collect();
                    format!("{}{}", super::ENV_PREFIX, upper.join(super::ENV_SPLIT))
                }
                _ => metadata.name.to_string(),
            },
            None => "the configuration".into(),
        };
        let hint = table_path
            .is_empty()
            .then(|| section_taking(key))
            .flatten()
            .or_else(|| nearest(key, expected).map(|name| format!("`{name}`")));
        Some(UnknownKey {
            key: key.clone(),
            table,
            source,
            hint,
            valid: expected,
        })
    }
}

/// `worker` as `[worker]`; for a list, which entry holds `key`:
/// `[[providers]] #2 (`mail`)`.
fn table_name(path: &[String], key: &str, figment: &figment::Figment) -> String {
    if path.is_empty() {
        return "the top level".into();
    }
    // A list of plain tables names its entry by index (`webhooks.0`); one of
    // tagged tables (`providers`) does not, and is searched for the key below.
    if let [list @ .., index] = path
        && let Ok(n) = index.parse::<usize>()
    {
        let dotted = list.join(".");
        let name = match figment.find_value(&dotted) {
            Ok(figment::value::Value::Array(_, entries)) => entries
                .get(n)
                .and_then(|e| e.as_dict())
                .and_then(|d| d.get("name"))
                .and_then(|name| name.as_str().map(str::to_string)),
            _ => None,
        };
        return match name {
            Some(name) => format!("[[{dotted}]] #{} (`{name}`)", n + 1),
            None => format!("[[{dotted}]] #{}", n + 1),
        };
    }
    let dotted = path.join(".");
    let Ok(figment::value::Value::Array(_, entries)) = figment.find_value(&dotted) else {
        return format!("[{dotted}]");
    };
    let Some((n, entry)) = entries
        .iter()
        .enumerate()
        .find_map(|(n, e)| e.as_dict().filter(|d| d.contains_key(key)).map(|d| (n, d)))
    else {
        return format!("[[{dotted}]]");
    };
    match entry.get("name").and_then(|name| name.as_str()) {
        Some(name) => format!("[[{dotted}]] #{} (`{name}`)", n + 1),
        None => format!("[[{dotted}]] #{}", n + 1),
    }
}

/// The valid name closest to `key`, when one is close enough to be a slip.
fn nearest(key: &str, expected: &[&'static str]) -> Option<&'static str> {
    expected
        .iter()
        .map(|name| (strsim::levenshtein(key, name), *name))
        .filter(|&(distance, name)| distance <= (name.len().max(key.len()) / 3).max(2))
        .min()
        .map(|(_, name)| name)
}

/// For a key at the top level: the section that reads a key of that name, e.g.
/// `` `default_region` under [recipients] ``.
fn section_taking(key: &str) -> Option<String> {
    let sections = [
        ("worker", keys_of::<WorkerConfig>()),
        ("retry", keys_of::<RetryConfig>()),
        ("limits", keys_of::<IntakeLimits>()),
        ("recipients", keys_of::<RecipientsConfig>()),
        ("valid_for", keys_of::<ValidForConfig>()),
        ("windows", keys_of::<WindowsConfig>()),
        ("circuit", keys_of::<CircuitConfig>()),
        ("auth", keys_of::<AuthConfig>()),
        ("replies", keys_of::<RepliesConfig>()),
        ("webhook", keys_of::<WebhookSettings>()),
    ];
    sections
        .iter()
        .find(|(_, keys)| keys.contains(&key))
        .map(|(section, _)| format!("`{key}` under [{section}]"))
}

/// The keys a section's struct reads, as its derived `Deserialize` names them:
/// asked of a deserializer that only listens.
fn keys_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    // The probe always fails: it only wants the list the struct passes it.
    let _ = T::deserialize(Probe(&mut keys));
    keys
}

struct Probe<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only a struct's keys are asked for"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("only a struct's keys are asked for"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

//! A recipient's template variables, kept as the JSON text they came in. A big
//! batch's pre-flight spent more on turning every recipient's `vars` into a map,
//! writing it out again to store it and freeing it than on rendering; the text is
//! stored as it is, and a render reads the names and values it holds in place.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// One recipient's template variables: always the text of a JSON object nested at
/// most [`MAX_DEPTH`] deep (its constructors check, so it can always be read again),
/// exactly as it was given. A name given twice means its last
/// value, as in a parsed map.
#[derive(Clone)]
pub struct Vars(Box<RawValue>);

impl Vars {
    /// The variables in `json`, which must be a JSON object.
    pub fn from_json(json: String) -> Result<Vars, serde_json::Error> {
        object(RawValue::from_string(json)?)
    }

    /// The JSON object's text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The JSON object's text, without copying it.
    pub fn into_json(self) -> String {
        Box::<str>::from(self.0).into_string()
    }

    /// True when the object has no variables.
    pub fn is_empty(&self) -> bool {
        self.json()[1..].trim_start().starts_with('}')
    }

    /// The variables as a map (a name given twice keeps its last value).
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.json()).expect("Vars holds a JSON object")
    }

    /// The variables' names and values, borrowed from the text where they need
    /// no unescaping.
    pub(super) fn fields(&self) -> Fields<'_> {
        scan(self.json()).unwrap_or_else(|| {
            let mut de = serde_json::Deserializer::from_str(self.json());
            (&mut de)
                .deserialize_map(FieldsVisitor)
                .expect("Vars holds a JSON object")
        })
    }
}

impl Default for Vars {
    fn default() -> Self {
        Vars::from_json("{}".into()).expect("`{}` is a JSON object")
    }
}

impl From<&Map<String, Value>> for Vars {
    fn from(map: &Map<String, Value>) -> Self {
        let json = serde_json::to_string(map).expect("JSON values serialize");
        Vars::from_json(json).expect("a map serializes to a JSON object")
    }
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl Serialize for Vars {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Vars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        object(Box::<RawValue>::deserialize(deserializer)?)
    }
}

impl schemars::JsonSchema for Vars {
    fn inline_schema() -> bool {
        <Map<String, Value>>::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        <Map<String, Value>>::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Map<String, Value>>::json_schema(generator)
    }
}

const EXPECTING: &str = "a JSON object";

/// How deep a recipient's vars may nest arrays and objects (the object itself is
/// level 1). A raw value is taken without counting its depth, while reading it
/// again stops at serde_json's limit of 128: vars are held well below it.
pub const MAX_DEPTH: usize = 32;

/// How the refusal of vars nested deeper than [`MAX_DEPTH`] begins: a value Herald
/// cannot use (`422`), not a body of the wrong shape.
pub const TOO_DEEP: &str = "nested more than 32 levels deep";

/// `raw` as vars when it is a JSON object no deeper than [`MAX_DEPTH`]; else an
/// error saying what it is.
fn object<E: de::Error>(raw: Box<RawValue>) -> Result<Vars, E> {
    let unexpected = match raw.get().as_bytes().first() {
        Some(b'{') if depth(raw.get()) <= MAX_DEPTH => return Ok(Vars(raw)),
        Some(b'{') => {
            return Err(E::custom(format!("{TOO_DEEP}: flatten the variables")));
        }
        Some(b'[') => Unexpected::Seq,
        Some(b'"') => Unexpected::Other("string"),
        Some(b't') => Unexpected::Bool(true),
        Some(b'f') => Unexpected::Bool(false),
        Some(b'n') => Unexpected::Unit,
        _ => Unexpected::Other("number"),
    };
    Err(E::invalid_type(unexpected, &EXPECTING))
}

/// The deepest nesting of arrays and objects in valid JSON `text`.
fn depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A recipient's variables read for a render, in the order given.
pub(super) struct Fields<'a>(Vec<(Cow<'a, str>, Field<'a>)>);

impl Fields<'_> {
    /// The value of the variable `name` (its last, when given twice).
    pub(super) fn get(&self, name: &str) -> Option<&Field<'_>> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

/// A variable's value, as far as a plain render reads it.
#[derive(Debug, PartialEq)]
pub(super) enum Field<'a> {
    Str(Cow<'a, str>),
    /// An integer (JSON numbers without a fraction or exponent that fit 64 bits).
    Int(i128),
    Bool(bool),
    /// A float, null, array or object.
    Other,
}

/// Reads the fields of a JSON object, which `json` is, when its names and string
/// values have no escapes and its other values are integers, `true`, `false` or
/// `null`, as a recipient's vars mostly are; `None` for anything else, which serde
/// then reads. Reading the fields this way takes about half the instructions of
/// serde's visitors.
fn scan(json: &str) -> Option<Fields<'_>> {
    let bytes = json.as_bytes();
    let skip_space = |mut at: usize| {
        while bytes
            .get(at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            at += 1;
        }
        at
    };
    // The string starting at `at` (a quote) and the index after it.
    let string = |at: usize| {
        let len = bytes[at + 1..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\')?;
        let end = at + 1 + len;
        (bytes[end] == b'"').then(|| (&json[at + 1..end], end + 1))
    };
    let mut fields = Vec::with_capacity(4);
    let mut at = skip_space(1);
    if bytes.get(at) == Some(&b'}') {
        return Some(Fields(fields));
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let (name, after) = string(at)?;
        at = skip_space(after);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        at = skip_space(at + 1);
        let (value, after) = match bytes.get(at)? {
            b'"' => string(at).map(|(s, after)| (Field::Str(Cow::Borrowed(s)), after))?,
            b'-' | b'0'..=b'9' => {
                let len = bytes[at..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'0'..=b'9'))
                    .unwrap_or(bytes.len() - at);
                let after = at + len;
                if matches!(bytes.get(after), Some(b'.' | b'e' | b'E')) {
                    return None;
                }
                (Field::Int(integer(&json[at..after])?), after)
            }
            b't' => (Field::Bool(true), at + 4),
            b'f' => (Field::Bool(false), at + 5),
            b'n' => (Field::Other, at + 4),
            _ => return None,
        };
        fields.push((Cow::Borrowed(name), value));
        at = skip_space(after);
        match bytes.get(at)? {
            b',' => at = skip_space(at + 1),
            b'}' => return Some(Fields(fields)),
            _ => return None,
        }
    }
}

/// A JSON integer as serde_json reads it, when it reads it as one: a `u64`, or a
/// negative `i64` (`-0` it reads as a float); `None` for the rest, read as floats.
fn integer(digits: &str) -> Option<i128> {
    match digits.strip_prefix('-') {
        Some(magnitude) => magnitude
            .parse::<u64>()
            .ok()
            .map(|m| -i128::from(m))
            .filter(|&n| n < 0 && n >= i128::from(i64::MIN)),
        None => digits.parse::<u64>().ok().map(i128::from),
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(Text(key)) = map.next_key()? {
            let value = map.next_value()?;
            fields.push((key, value));
        }
        Ok(Fields(fields))
    }
}

/// A string, borrowed from the text when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(FieldVisitor)
            .and_then(|field| match field {
                Field::Str(s) => Ok(Text(s)),
                _ => Err(de::Error::custom("a JSON object's key is a string")),
            })
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
        Ok(Field::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
        Ok(Field::Int(v.into()))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(v))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The field a parsed map's value reads as.
    fn field_of(value: &Value) -> Field<'_> {
        match value {
            Value::String(s) => Field::Str(Cow::Borrowed(s)),
            Value::Bool(b) => Field::Bool(*b),
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .map_or(Field::Other, Field::Int),
            Value::Null | Value::Array(_) | Value::Object(_) => Field::Other,
        }
    }

    /// Every name the map has reads as its value in the fields, and no other name
    /// reads at all; where the scan answers, it answers what serde reads. True when
    /// the scan answered.
    fn agree(vars: &Vars) -> Result<bool, TestCaseError> {
        let map = vars.to_map();
        let fields = vars.fields();
        for (name, value) in &map {
            prop_assert_eq!(fields.get(name), Some(&field_of(value)), "{}", vars.json());
        }
        for (name, _) in &fields.0 {
            prop_assert!(map.contains_key(name.as_ref()));
        }
        prop_assert_eq!(fields.get("not given"), None);
        let Some(scanned) = scan(vars.json()) else {
            return Ok(false);
        };
        let mut de = serde_json::Deserializer::from_str(vars.json());
        let read = (&mut de).deserialize_map(FieldsVisitor).unwrap();
        prop_assert_eq!(scanned.0, read.0, "{}", vars.json());
        Ok(true)
    }

    #[test]
    fn fields_read_what_a_parsed_map_reads() {
        let texts = [
            r#"{}"#,
            r#" { } "#,
            r#"{"name":"Li","code":"0042","n":-7,"big":18446744073709551615}"#,
            r#"{"name": "a \"quoted\" \u7528\u6237\n", "x": 2.5, "y": null, "z": true}"#,
            r#"{"a\u0062": "escaped key", "nested": {"a": [1, {"b": 2}]}, "list": [1, "x"]}"#,
            r#"{"name": "first", "name": "last"}"#,
            r#"{"wide": 123456789012345678901234567890, "neg": -0, "e": 1e3}"#,
            r#"{"neg": -0, "min": -9223372036854775808}"#,
            r#"{"under": -9223372036854775809, "over": 18446744073709551616}"#,
            r#"{"n": 1, "a": "x\"y"}"#,
        ];
        for text in texts {
            let vars: Vars = serde_json::from_str(text).unwrap();
            agree(&vars).unwrap();
        }
        let scanned = r#" {"name" : "Li", "n":-7, "big": 18446744073709551615, "t": true, "f": false, "z": null } "#;
        assert!(agree(&serde_json::from_str(scanned).unwrap()).unwrap());
        let vars: Vars = serde_json::from_str(r#"{"name": "first", "name": "last"}"#).unwrap();
        assert_eq!(vars.fields().get("name"), Some(&Field::Str("last".into())));
    }

    #[test]
    fn fields_of_any_object_read_what_a_parsed_map_reads() {
        use proptest::test_runner::{Config, TestRunner};
        const CASES: u32 = 512;
        let leaf = prop_oneof![
            2 => any::<i64>().prop_map(Value::from),
            2 => any::<u64>().prop_map(Value::from),
            1 => any::<f64>().prop_map(Value::from),
            2 => any::<bool>().prop_map(Value::from),
            1 => Just(Value::Null),
            8 => "[a-z 用户é]{0,6}".prop_map(Value::from),
            1 => "[a-z\"\\\\/\n\t用户\u{1F600}\u{7}]{0,6}".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                20 => inner.clone(),
                1 => prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                1 => prop::collection::btree_map("[a-c]", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        let name = prop_oneof![8 => "[a-c]{0,3}", 1 => "[a-c\"\\\\é]{0,3}"];
        let object = prop::collection::vec((name, value), 0..6);
        let scanned = std::cell::Cell::new(0);
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&(object, any::<bool>()), |(entries, pretty)| {
                // Written by hand, so that a name may come twice.
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| {
                        let v = if pretty {
                            serde_json::to_string_pretty(v).unwrap()
                        } else {
                            v.to_string()
                        };
                        format!("{}: {v}", json!(k))
                    })
                    .collect();
                let text = format!("{{{}}}", entries.join(if pretty { ",\n  " } else { "," }));
                let vars: Vars = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(vars.is_empty(), entries.is_empty());
                scanned.set(scanned.get() + u32::from(agree(&vars)?));
                Ok(())
            })
            .unwrap();
        // The scan must answer often, or this proves little of it.
        assert!(
            scanned.get() > CASES / 8,
            "the scan answered {} of {CASES}",
            scanned.get()
        );
    }

    #[test]
    fn only_an_object_is_vars() {
        for (text, error) in [
            ("[1]", "invalid type: sequence, expected a JSON object"),
            ("\"x\"", "invalid type: string, expected a JSON object"),
            ("3", "invalid type: number, expected a JSON object"),
            ("null", "invalid type: null, expected a JSON object"),
            (
                "true",
                "invalid type: boolean `true`, expected a JSON object",
            ),
        ] {
            let err = serde_json::from_str::<Vars>(text).unwrap_err().to_string();
            assert!(err.starts_with(error), "{text}: {err}");
            let err = Vars::from_json(text.into()).unwrap_err().to_string();
            assert!(err.starts_with(error), "{text}: {err}");
        }
        assert!(serde_json::from_str::<Vars>("{\"a\": }").is_err());
    }

    #[test]
    fn vars_are_stored_and_sent_as_given() {
        let text = r#"{"name": "Li",  "code": "0042"}"#;
        let vars: Vars = serde_json::from_str(text).unwrap();
        assert_eq!(vars.json(), text);
        assert_eq!(serde_json::to_string(&vars).unwrap(), text);
        assert_eq!(vars.clone().into_json(), text);
        assert_eq!(
            vars.to_map(),
            *json!({"name": "Li", "code": "0042"}).as_object().unwrap()
        );
        assert!(Vars::default().is_empty());
        assert!(!vars.is_empty());
        let from_map = Vars::from(json!({"b": 1, "a": "x"}).as_object().unwrap());
        assert_eq!(from_map.json(), r#"{"a":"x","b":1}"#);
    }

    /// JSON-ish text: brackets, braces, quotes, escapes and separators in any order.
    fn json_like() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("{"),
                Just("}"),
                Just("["),
                Just("]"),
                Just("\""),
                Just("\\"),
                Just(":"),
                Just(","),
                Just("1"),
                Just("-"),
                Just("null"),
                Just("\"a\":"),
                Just("\\u00e9"),
                Just(" "),
            ],
            0..300,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever text comes as vars is refused, or read back without a panic.
        #[test]
        fn any_text_as_vars_is_refused_or_read_back(text in json_like()) {
            if let Ok(vars) = serde_json::from_str::<Vars>(&text) {
                let _ = vars.to_map();
                let _ = vars.fields();
            }
        }

        /// Vars nested to any depth are taken up to the limit and refused past it,
        /// saying so.
        #[test]
        fn nested_vars_are_taken_up_to_the_limit(levels in 0usize..200) {
            let text = format!(r#"{{"x": {}1{}}}"#, "[".repeat(levels), "]".repeat(levels));
            let read = serde_json::from_str::<Vars>(&text);
            prop_assert_eq!(read.is_ok(), levels < MAX_DEPTH, "{} levels", levels);
            if let Err(e) = &read {
                prop_assert!(e.to_string().starts_with(TOO_DEEP), "{}", e);
                prop_assert!(TOO_DEEP.contains(&MAX_DEPTH.to_string()));
            }
            if let Ok(vars) = read {
                prop_assert_eq!(vars.to_map().len(), 1);
            }
        }
    }
}

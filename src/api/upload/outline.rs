//! Where a big JSON batch keeps its recipients, found by a scan of the body's
//! structure: its options are read without parsing the recipients a second time
//! (the recipients' own pass parses them).

use std::ops::Range;

/// Where the top-level `recipients` value of the JSON object `json` lies. Only
/// strings and brackets are followed and nothing is checked: the recipients' pass
/// parses the body in full. `None` when the body is not of the plain shape this
/// reads (a top-level name with an escape, `recipients` twice or not at all,
/// anything unexpected); the options are then parsed from the whole body.
pub(super) fn recipients_span(json: &[u8]) -> Option<Range<usize>> {
    let mut at = space(json, 0);
    if json.get(at) != Some(&b'{') {
        return None;
    }
    at = space(json, at + 1);
    let mut found = None;
    loop {
        if json.get(at) != Some(&b'"') {
            return None;
        }
        let after = string_end(json, at)?;
        let name = &json[at + 1..after - 1];
        if name.contains(&b'\\') {
            return None;
        }
        at = space(json, after);
        if json.get(at) != Some(&b':') {
            return None;
        }
        at = space(json, at + 1);
        let end = value_end(json, at)?;
        if name == b"recipients" {
            if found.is_some() {
                return None;
            }
            found = Some(at..end);
        }
        at = space(json, end);
        match json.get(at)? {
            b',' => at = space(json, at + 1),
            b'}' => return found,
            _ => return None,
        }
    }
}

/// The index of the first byte from `at` on that is not JSON whitespace.
fn space(json: &[u8], mut at: usize) -> usize {
    while json
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// Bytes that end a run inside a string (`"`, `\\`) and outside one (`"`,
/// brackets), flagged in a table so that the scan is one load and test a byte.
const IN_STRING: u8 = 1;
const OUTSIDE: u8 = 2;
const STOPS: [u8; 256] = {
    let mut table = [0; 256];
    table[b'"' as usize] = IN_STRING | OUTSIDE;
    table[b'\\' as usize] = IN_STRING;
    table[b'[' as usize] = OUTSIDE;
    table[b']' as usize] = OUTSIDE;
    table[b'{' as usize] = OUTSIDE;
    table[b'}' as usize] = OUTSIDE;
    table
};

/// The index of the first byte from `at` on that is a `kind` stop, if any.
fn next_stop(json: &[u8], mut at: usize, kind: u8) -> Option<usize> {
    while STOPS[usize::from(*json.get(at)?)] & kind == 0 {
        at += 1;
    }
    Some(at)
}

/// The index after the string that starts (with its quote) at `at`.
fn string_end(json: &[u8], mut at: usize) -> Option<usize> {
    at += 1;
    loop {
        at = next_stop(json, at, IN_STRING)?;
        if json[at] == b'"' {
            return Some(at + 1);
        }
        // The escape and the character it escapes.
        at += 2;
    }
}

/// The index after the JSON value that starts at `at`.
fn value_end(json: &[u8], at: usize) -> Option<usize> {
    match json.get(at)? {
        b'"' => string_end(json, at),
        b'[' | b'{' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                i = next_stop(json, i, OUTSIDE)?;
                match json[i] {
                    b'"' => {
                        i = string_end(json, i)?;
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    _ => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                }
                i += 1;
            }
        }
        _ => {
            let len = json[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))?;
            (len > 0).then_some(at + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use serde_json::value::RawValue;
    use serde_json::{Value, json};

    use super::*;

    /// The span of `recipients` as serde_json finds it.
    fn parsed_span(json: &str) -> Option<Range<usize>> {
        let fields: HashMap<String, &RawValue> = serde_json::from_str(json).ok()?;
        let raw = fields.get("recipients")?.get();
        let start = raw.as_ptr() as usize - json.as_ptr() as usize;
        Some(start..start + raw.len())
    }

    #[test]
    fn the_recipients_are_found_wherever_they_are() {
        for json in [
            r#"{"channel":"sms","recipients":[{"to":"1"}],"template":{"body":"x"}}"#,
            r#" { "recipients" : [ ] , "a" : "]}\"[{" } "#,
            r#"{"template":{"body":"{% if a %}]{{b}}"},"recipients":[{"to":"\\\"","vars":{"a":[1,{"b":null}]}}]}"#,
            "{\n  \"priority\": -5,\n  \"recipients\": [{\"to\": \"+86 138\"}],\n  \"dry\": true\n}",
            r#"{"recipients":"not a list"}"#,
        ] {
            assert_eq!(
                recipients_span(json.as_bytes()),
                parsed_span(json),
                "{json}"
            );
            assert!(recipients_span(json.as_bytes()).is_some(), "{json}");
        }
        for json in [
            r#"{"channel":"sms"}"#,
            r#"{"recipients":[],"recipients":[]}"#,
            r#"{"recipient\u0073":[]}"#,
            r#"["recipients"]"#,
            r#"{"recipients":[}"#,
            r#"{"recipients" [1]}"#,
            "",
        ] {
            assert_eq!(recipients_span(json.as_bytes()), None, "{json}");
        }
    }

    /// A JSON value of strings full of brackets, quotes and escapes, nested.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
            "[a-z\\[\\]{}\"\\\\:, \n用]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z\\[\"\\\\]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_scan_finds_what_the_parser_finds(
            before in prop::collection::vec(("[a-q]{1,6}", value()), 0..3),
            recipients in value(),
            after in prop::collection::vec(("[s-z]{1,6}", value()), 0..3),
            pretty in any::<bool>(),
        ) {
            let write = |v: &Value| if pretty {
                serde_json::to_string_pretty(v).unwrap()
            } else {
                v.to_string()
            };
            let fields: Vec<String> = before
                .iter()
                .map(|(k, v)| format!("{}: {}", json!(k), write(v)))
                .chain([format!("\"recipients\": {}", write(&recipients))])
                .chain(after.iter().map(|(k, v)| format!("{}: {}", json!(k), write(v))))
                .collect();
            let body = format!("{{{}}}", fields.join(if pretty { ",\n  " } else { "," }));
            let found = recipients_span(body.as_bytes());
            prop_assert!(found.is_some(), "{}", body);
            prop_assert_eq!(found, parsed_span(&body), "{}", body);
        }
    }
}

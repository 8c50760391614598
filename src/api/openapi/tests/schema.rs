//! A JSON Schema 2020-12 checker for the document's schemas: a keyword it does
//! not know fails the test, so what the document states is what is checked.

use serde_json::Value;

/// What `#/components/…/name` points at.
pub(super) fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.trim_start_matches('#');
    let target = doc.pointer(pointer).unwrap_or(&Value::Null);
    assert!(!target.is_null(), "`{reference}` points at nothing");
    target
}

/// Keywords that only annotate: they constrain nothing `check` must test.
const ANNOTATIONS: [&str; 7] = [
    "description",
    "title",
    "format",
    "default",
    "examples",
    // In 2020-12 these annotate a string's content; they assert nothing.
    "contentMediaType",
    "contentSchema",
];

/// Checks `value` against `schema` (JSON Schema 2020-12). A keyword it does not
/// know fails the test rather than being skipped, so what the document states
/// is what is checked.
pub(super) fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{at}: {value} is refused by `false`")),
        Value::Object(schema) => schema,
        other => panic!("{at}: {other} is not a schema"),
    };
    for keyword in schema.keys() {
        assert!(
            ANNOTATIONS.contains(&keyword.as_str())
                || [
                    "$ref",
                    "oneOf",
                    "anyOf",
                    "allOf",
                    "type",
                    "enum",
                    "const",
                    "required",
                    "properties",
                    "additionalProperties",
                    "items",
                    "minimum",
                    "maximum",
                    "minLength",
                    "maxLength",
                    "pattern",
                    "minItems",
                    "not",
                    "propertyNames",
                ]
                .contains(&keyword.as_str()),
            "{at}: the check does not know `{keyword}`"
        );
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        check(doc, resolve(doc, reference), value, at)?;
    }
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let fitting = alternatives
            .iter()
            .filter(|alternative| check(doc, alternative, value, at).is_ok())
            .count();
        if fitting != 1 {
            return Err(format!(
                "{at}: {value} fits {fitting} of the oneOf alternatives, not one"
            ));
        }
    }
    if let Some(alternatives) = schema.get("anyOf").and_then(Value::as_array)
        && !alternatives
            .iter()
            .any(|alternative| check(doc, alternative, value, at).is_ok())
    {
        return Err(format!("{at}: {value} fits none of the anyOf alternatives"));
    }
    if let Some(negated) = schema.get("not")
        && check(doc, negated, value, at).is_ok()
    {
        return Err(format!("{at}: {value} fits what `not` refuses"));
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(doc, part, value, at)?;
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            many => many
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect(),
        };
        let fits = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            // JSON Schema's integer is any number without a fraction, `4.0` too.
            "integer" => value.as_f64().is_some_and(|n| n.fract() == 0.0),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            other => panic!("unknown type {other}"),
        });
        if !fits {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return Err(format!("{at}: {value} is not {constant}"));
    }
    if let Some(number) = value.as_f64() {
        if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64)
            && number < minimum
        {
            return Err(format!("{at}: {value} is below {minimum}"));
        }
        if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64)
            && number > maximum
        {
            return Err(format!("{at}: {value} is above {maximum}"));
        }
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|min| length < min)
            || schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|max| length > max)
        {
            return Err(format!("{at}: {value} has a length out of bounds"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let regex = regex::Regex::new(pattern).expect("the pattern is a regex");
            if !regex.is_match(text) {
                return Err(format!("{at}: {value} does not match `{pattern}`"));
            }
        }
    }
    if let Some(object) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: `{name}` is missing"));
            }
        }
        if let Some(names) = schema.get("propertyNames") {
            for key in object.keys() {
                check(
                    doc,
                    names,
                    &Value::String(key.clone()),
                    &format!("{at} key"),
                )?;
            }
        }
        let properties = schema.get("properties");
        for (key, field) in object {
            let at = format!("{at}.{key}");
            match (
                properties.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => check(doc, property, field, &at)?,
                (None, Some(additional)) => check(doc, additional, field, &at)
                    .map_err(|e| format!("{e} ({at} is not in the schema's properties)"))?,
                (None, None) => {}
            }
        }
    }
    if let (Some(min), Some(array)) = (
        schema.get("minItems").and_then(Value::as_u64),
        value.as_array(),
    ) && (array.len() as u64) < min
    {
        return Err(format!("{at}: {value} has fewer than {min} items"));
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

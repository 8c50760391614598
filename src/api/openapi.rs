//! The API described in OpenAPI 3.1, built from the code once: [`build`] takes
//! the routes table of `api::route` (each route's path, access and the function
//! of `path` that says what its methods take and answer) and gives each path the
//! security of its route's access. Every schema is derived with `schemars` from
//! the types the handlers read (as they deserialize) and write (as they
//! serialize), so a field added to one is in the document with no edit here.
//! Tests hold it to the router: it describes every route and method served and no
//! other, real answers of every operation fit the schema it documents for their
//! status, and the JSON requests accepted fit their schemas; the requests refused
//! for their shape are refused by the document too. A property-based run
//! (`tests/e2e/contract.rs`) holds it to a running server.

use std::collections::BTreeMap;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::transform::transform_subschemas;
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use super::error::ErrorBody;
use crate::auth::Access;

pub(super) mod path;

/// What a route's methods take and answer, their schemas drawn from `Schemas`.
pub(super) type Describe = fn(&mut Schemas) -> Vec<Operation>;

/// The whole document: every route of `routes` with its operations.
pub(super) fn build(routes: impl IntoIterator<Item = (&'static str, Access, Describe)>) -> Value {
    let mut schemas = Schemas::new();
    let error = schemas.answer::<ErrorBody>();
    let mut paths = Map::new();
    for (path, access, describe) in routes {
        let item: Map<String, Value> = describe(&mut schemas)
            .into_iter()
            .map(|operation| operation.finish(access))
            .collect();
        paths.insert(path.to_owned(), Value::Object(item));
    }
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Herald",
            "description": format!(
                "{} With API tokens configured, every operation but those with \
                 `security: []` needs `Authorization: Bearer <token>`.",
                env!("CARGO_PKG_DESCRIPTION")
            ),
            "version": env!("CARGO_PKG_VERSION"),
            "license": {"name": env!("CARGO_PKG_LICENSE")},
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token made by `herald token`, when the server has `[auth] tokens`.",
                },
            },
            "responses": {
                "Error": {
                    "description": "What was wrong, and where.",
                    "content": {"application/json": {"schema": error}},
                },
                "Unauthorized": {
                    "description": "No API token, or not one this server accepts.",
                    "content": {"application/json": {"schema": error}},
                },
                "Unavailable": {
                    "description": "The store cannot be reached: nothing was done; try again after `Retry-After`.",
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds to wait before trying again.",
                            "required": true,
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    },
                    "content": {"application/json": {"schema": error}},
                },
            },
            },
    });
    schemas.place(&mut document);
    document
}

/// The schemas of the document: requests' as they deserialize, answers' as they
/// serialize. Answers' are referred to under `components/answers` until [`Schemas::place`]
/// puts them beside requests' in `components/schemas`.
pub(super) struct Schemas {
    requests: SchemaGenerator,
    answers: SchemaGenerator,
}

impl Schemas {
    fn new() -> Schemas {
        let settings = |path: &'static str| {
            SchemaSettings::draft2020_12().with(|s| s.definitions_path = path.into())
        };
        Schemas {
            requests: settings(SCHEMAS).for_deserialize().into_generator(),
            answers: settings(ANSWERS)
                .for_serialize()
                .with_transform(closed)
                .into_generator(),
        }
    }

    /// The schema of a request body `T` (a `$ref` for a named type).
    fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }

    /// The schema of an answer `T` (a `$ref` for a named type).
    pub(super) fn answer<T: JsonSchema>(&mut self) -> Value {
        let mut schema = self.answers.subschema_for::<T>();
        closed(&mut schema);
        schema.to_value()
    }

    /// The query parameters a handler reads into `T`: its fields named in `only`,
    /// or all of them when `only` is empty.
    fn query<T: JsonSchema>(&mut self, only: &[&str]) -> Vec<Value> {
        let schema = T::json_schema(&mut self.requests).to_value();
        let required = &schema["required"];
        let properties = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for name in only {
            assert!(
                properties.contains_key(*name),
                "`{name}` is not a query parameter of {}",
                T::schema_name()
            );
        }
        properties
            .into_iter()
            .filter(|(name, _)| only.is_empty() || only.contains(&name.as_str()))
            .map(|(name, mut property)| {
                let description = property
                    .as_object_mut()
                    .and_then(|p| p.remove("description"));
                let mut parameter = json!({
                    "name": name,
                    "in": "query",
                    "required": required.as_array().is_some_and(|r| r.contains(&json!(name))),
                    // An absent parameter is `None`: the query never carries `null`.
                    "schema": not_null(property),
                });
                if let Some(description) = description {
                    parameter["description"] = description;
                }
                parameter
            })
            .collect()
    }

    /// Puts every named schema in `document`'s `components/schemas` and points
    /// its references there. An answer's schema shares its name with a request's
    /// when they are the same, and takes `<name>Answer` when they differ (a type
    /// read more loosely than it is written).
    fn place(mut self, document: &mut Value) {
        let mut schemas = self.requests.take_definitions(true);
        let mut moved = BTreeMap::new();
        for (name, schema) in self.answers.take_definitions(true) {
            // One of these names is free or holds the same schema: there are more
            // candidates than names taken.
            let placed = (0..=schemas.len())
                .map(|n| match n {
                    0 => name.clone(),
                    1 => format!("{name}Answer"),
                    n => format!("{name}Answer{n}"),
                })
                .find(|candidate| schemas.get(candidate).is_none_or(|held| *held == schema))
                .expect("more candidates than names");
            moved.insert(format!("#{ANSWERS}/{name}"), format!("#{SCHEMAS}/{placed}"));
            schemas.insert(placed, schema);
        }
        document["components"]["schemas"] = Value::Object(schemas);
        repoint(document, &moved);
    }
}

/// Where `components/schemas` is, and where answers' schemas are until placed there.
const SCHEMAS: &str = "/components/schemas";
const ANSWERS: &str = "/components/answers";

/// Points every `$ref` of `value` named in `moved` at its new place.
fn repoint(value: &mut Value, moved: &BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match field {
                    Value::String(reference) if key == "$ref" => {
                        if let Some(to) = moved.get(reference.as_str()) {
                            *reference = to.clone();
                        }
                    }
                    field => repoint(field, moved),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| repoint(item, moved)),
        _ => {}
    }
}

/// Answers hold exactly their fields: an object schema that lists its properties
/// gets `additionalProperties: false` unless it says otherwise.
fn closed(schema: &mut Schema) {
    if schema.get("properties").is_some() && schema.get("additionalProperties").is_none() {
        schema.insert("additionalProperties".into(), false.into());
    }
    transform_subschemas(&mut closed, schema);
}

/// `schema` without its `null` alternative (nor a `null` default).
fn not_null(mut schema: Value) -> Value {
    let Some(object) = schema.as_object_mut() else {
        return schema;
    };
    if object.get("default") == Some(&Value::Null) {
        object.remove("default");
    }
    if let Some(types) = object.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if let [one] = types.as_slice() {
            let one = one.clone();
            object.insert("type".into(), one);
        }
    }
    if let Some(alternatives) = schema["anyOf"].as_array() {
        let rest: Vec<_> = alternatives
            .iter()
            .filter(|a| **a != json!({"type": "null"}))
            .cloned()
            .collect();
        if let [one] = rest.as_slice() {
            return one.clone();
        }
    }
    schema
}

/// One operation: its method and its OpenAPI object, built up.
pub(super) struct Operation {
    method: &'static str,
    object: Map<String, Value>,
}

pub(super) fn op(method: &'static str, summary: &str) -> Operation {
    let mut object = Map::new();
    object.insert("summary".into(), summary.into());
    Operation { method, object }
}

impl Operation {
    fn description(mut self, text: &str) -> Operation {
        self.object.insert("description".into(), text.into());
        self
    }

    fn parameters(mut self, parameters: impl IntoIterator<Item = Value>) -> Operation {
        let list = self.object.entry("parameters").or_insert_with(|| json!([]));
        list.as_array_mut()
            .expect("parameters are a list")
            .extend(parameters);
        self
    }

    /// An optional request body, by media type.
    fn optional_body<'a>(
        mut self,
        content: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Operation {
        self.object.insert(
            "requestBody".into(),
            json!({"required": false, "content": media(content)}),
        );
        self
    }

    /// A required request body, by media type.
    fn body<'a>(mut self, content: impl IntoIterator<Item = (&'a str, Value)>) -> Operation {
        self.object.insert(
            "requestBody".into(),
            json!({"required": true, "content": media(content)}),
        );
        self
    }

    /// The answer of `status`, by media type (none for an empty body).
    pub(super) fn answer<'a>(
        mut self,
        status: u16,
        description: &str,
        content: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Operation {
        let mut answer = json!({"description": description});
        let content = media(content);
        if !content.is_empty() {
            answer["content"] = Value::Object(content);
        }
        self.responses().insert(status.to_string(), answer);
        self
    }

    /// Error answers of these statuses, with the one error body (and, on `503`,
    /// `Retry-After`).
    fn errors(mut self, statuses: &[u16]) -> Operation {
        for status in statuses {
            let answer = match status {
                503 => "#/components/responses/Unavailable",
                _ => "#/components/responses/Error",
            };
            self.responses()
                .insert(status.to_string(), json!({"$ref": answer}));
        }
        self
    }

    fn responses(&mut self) -> &mut Map<String, Value> {
        self.object
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("responses are an object")
    }

    /// The method and the operation object of a route of `access`: a public one
    /// needs no security, a protected one may answer `401`.
    fn finish(mut self, access: Access) -> (String, Value) {
        match access {
            Access::Public => {
                self.object.insert("security".into(), json!([]));
            }
            Access::Token => {
                self.responses()
                    .entry("401")
                    .or_insert_with(|| json!({"$ref": "#/components/responses/Unauthorized"}));
            }
        }
        (self.method.to_owned(), Value::Object(self.object))
    }
}

fn media<'a>(content: impl IntoIterator<Item = (&'a str, Value)>) -> Map<String, Value> {
    content
        .into_iter()
        .map(|(media, schema)| (media.to_owned(), json!({"schema": schema})))
        .collect()
}

pub(super) fn json_of(schema: Value) -> (&'static str, Value) {
    ("application/json", schema)
}

pub(super) fn text() -> Value {
    json!({"type": "string"})
}

fn path_parameter(name: &str, schema: Value, description: &str) -> Value {
    let mut parameter = json!({"name": name, "in": "path", "required": true, "schema": schema});
    if !description.is_empty() {
        parameter["description"] = description.into();
    }
    parameter
}

fn header(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "header", "schema": schema, "description": description})
}

fn if_none_match() -> Value {
    header(
        "If-None-Match",
        json!({"type": "string"}),
        "The `ETag` of the copy the browser has: `304` when it is current.",
    )
}

#[cfg(test)]
mod tests;

//! `GET /openapi.json`: the API described in OpenAPI 3.1, built from the code once.
//! Its paths are [`super::routes`]'s, each with the security of its route's access;
//! [`operations`] says what each path's methods take and answer; and every schema
//! is derived with `schemars` from the types the handlers read (as they deserialize)
//! and write (as they serialize), so a field added to one is in the document with
//! no edit here. Tests hold it to the router: it describes every route and method
//! served and no other, real answers of every operation fit the schema it
//! documents for their status, and the JSON requests accepted fit their schemas.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::transform::transform_subschemas;
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use super::batch::{ACTIONS, BatchesParams, MessagesParams};
use super::error::ErrorBody;
use super::events::Progress;
use super::receipts::Tally;
use super::route::{Health, Index};
use super::seed::SeedAnswer;
use super::submit::SubmitParams;
use super::suppressions::{self, AddRequest, RemoveRequest};
use super::templates::{self, TemplatePage, TemplateRequest, TemplateView};
use super::{Access, BatchPage, BatchView, MessagePage};
use crate::ingest::job::SmsJob;
use crate::intake::{BatchRequest, Report};
use crate::provider::WireReceipt;
use crate::provider::receipt::{ALIYUN_ANSWER, AliyunReport, TENCENT_ANSWER, TencentReport};

/// The document, as served.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| build().to_string());

pub(super) async fn document() -> Response {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

/// The whole document: every route of [`super::routes`] with its operations.
fn build() -> Value {
    let mut schemas = Schemas::new();
    let error = schemas.answer::<ErrorBody>();
    let mut paths = Map::new();
    for (path, access, _) in super::routes() {
        let item: Map<String, Value> = operations(path, &mut schemas)
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
            },
            },
    });
    schemas.place(&mut document);
    document
}

/// What the methods of route `path` take and answer.
fn operations(path: &str, s: &mut Schemas) -> Vec<Operation> {
    let batch_id = path_parameter("id", json!({"type": "string", "format": "uuid"}), "");
    match path {
        "/" => vec![
            op("get", "The web page")
                .description("The page that composes, sends and follows batches through this API. Served with an `ETag` and `Cache-Control: no-cache`.")
                .parameters([if_none_match()])
                .answer(200, "The page.", [("text/html", text())])
                .answer(304, "The browser's copy is current.", []),
        ],
        "/assets/{name}" => {
            let assets: Vec<_> = crate::web::assets().collect();
            let names: Vec<_> = assets.iter().map(|(name, _)| *name).collect();
            vec![
                op("get", "The web page's script and stylesheet")
                    .description("Served with an `ETag` and `Cache-Control: no-cache`.")
                    .parameters([
                        path_parameter("name", json!({"type": "string", "enum": names}), ""),
                        if_none_match(),
                    ])
                    .answer(200, "The file.", assets.iter().map(|(_, media)| (*media, text())))
                    .answer(304, "The browser's copy is current.", [])
                    .answer(404, "No asset has that name.", [("text/plain", text())]),
            ]
        }
        "/v1" => vec![
            op("get", "What this server is")
                .answer(200, "The server's name, version and main routes.", [json_of(s.answer::<Index>())]),
        ],
        "/healthz" => vec![
            op("get", "Liveness").answer(200, "Alive.", [json_of(s.answer::<Health>())]),
        ],
        "/openapi.json" => vec![
            op("get", "This document")
                .answer(200, "The OpenAPI document.", [json_of(json!({"type": "object"}))]),
        ],
        "/metrics" => vec![
            op("get", "Prometheus metrics")
                .answer(200, "Prometheus's text format 0.0.4.", [("text/plain", text())]),
        ],
        "/v1/batches" => vec![
            op("post", "Accept a batch")
                .description("JSON (`application/json`), NDJSON (`application/x-ndjson` or `application/jsonl`: the batch without `recipients`, then a recipient per line) or CSV (`text/csv`: the batch's options in the query — channel, template or template_id, subject, provider, priority, send_at, reject_recent_duplicates, dry_run —, a header row `to`, optional `ref`, then variables). `202` once stored; nothing is stored on any other answer.")
                .parameters(s.query::<SubmitParams>(&[]))
                .parameters([
                    header("Idempotency-Key", json!({"type": "string", "minLength": 1, "maxLength": super::submit::MAX_IDEMPOTENCY_KEY}), "A replay with the same key and body answers what the first did; another body, `409`."),
                    header("Content-Digest", json!({"type": "string"}), "`sha-256=:<base64>:` of an upload's body (RFC 9530)."),
                ])
                .body([
                    json_of(s.request::<BatchRequest>()),
                    ("application/x-ndjson", text()),
                    ("application/jsonl", text()),
                    ("text/csv", text()),
                ])
                .answer(202, "Stored; a replay of an idempotent submit also carries `Idempotent-Replayed: true`.", [json_of(s.answer::<Report>())])
                .answer(200, "The report of a dry run.", [json_of(s.answer::<Report>())])
                .errors(&[400, 409, 413, 422]),
            op("get", "List batches, newest first")
                .parameters(s.query::<BatchesParams>(&[]))
                .answer(200, "A page of batches.", [json_of(s.answer::<BatchPage>())])
                .errors(&[400, 422]),
        ],
        "/v1/batches/{id}" => vec![
            op("get", "A batch's state and counts")
                .parameters([batch_id])
                .answer(200, "The batch.", [json_of(s.answer::<BatchView>())])
                .errors(&[404]),
        ],
        "/v1/batches/{id}/messages" => vec![
            op("get", "A batch's ledger, in recipient order")
                .parameters([batch_id])
                .parameters(s.query::<MessagesParams>(&[]))
                .answer(200, "A page of messages.", [json_of(s.answer::<MessagePage>())])
                .errors(&[400, 404, 422]),
        ],
        "/v1/batches/{id}/events" => vec![
            op("get", "A batch's progress as server-sent events")
                .description("`event: progress` at once and on every change (at most four a second), `event: end` when nothing is left pending, sending, paused or of unknown outcome, then the stream closes. Each event's `data` is one line of JSON, a `Progress`. A `: keep-alive` comment comes every 15 s.")
                .parameters([batch_id])
                .answer(200, "The event stream; each event's data is a Progress.", [("text/event-stream", s.answer::<Progress>())])
                .errors(&[404]),
        ],
        "/v1/batches/{id}/{action}" => {
            let actions: Vec<_> = ACTIONS.iter().map(|(name, _)| *name).collect();
            vec![
                op("post", "Pause, resume, cancel or retry a batch")
                    .description("`retry` requeues the failed messages, and only those, with a fresh attempt budget.")
                    .parameters([batch_id, path_parameter("action", json!({"type": "string", "enum": actions}), "")])
                    .answer(200, "The batch after the action.", [json_of(s.answer::<BatchView>())])
                    .errors(&[404, 409]),
            ]
        }
        "/v1/templates" => vec![
            op("post", "Store a template")
                .body([json_of(s.request::<TemplateRequest>())])
                .answer(201, "Stored as version 1.", [json_of(s.answer::<TemplateView>())])
                .errors(&[400, 409, 422]),
            op("get", "List templates by id")
                .parameters(s.query::<templates::ListParams>(&[]))
                .answer(200, "A page of templates.", [json_of(s.answer::<TemplatePage>())])
                .errors(&[400, 422]),
        ],
        "/v1/templates/{id}" => {
            let id = path_parameter("id", json!({"type": "string"}), "");
            vec![
                op("get", "Read a template")
                    .parameters([id.clone()])
                    .answer(200, "The template.", [json_of(s.answer::<TemplateView>())])
                    .errors(&[404]),
                op("put", "Replace a template (its version goes up)")
                    .parameters([id.clone()])
                    .body([json_of(s.request::<TemplateRequest>())])
                    .answer(200, "The new version.", [json_of(s.answer::<TemplateView>())])
                    .errors(&[400, 404, 422]),
                op("delete", "Delete a template; accepted batches keep their text")
                    .parameters([id])
                    .answer(204, "Deleted.", [])
                    .errors(&[404]),
            ]
        }
        "/v1/suppressions" => vec![
            op("post", "Add recipients who must not be messaged")
                .description("JSON, or a CSV upload (`text/csv`, `?channel=&reason=`, lines `address[,reason]`).")
                .parameters(s.query::<suppressions::Params>(&["channel", "reason"]))
                .body([json_of(s.request::<AddRequest>()), ("text/csv", text())])
                .answer(200, "What was added, updated and refused.", [json_of(s.answer::<suppressions::Added>())])
                .errors(&[400, 413, 422]),
            op("get", "List suppressions")
                .parameters(s.query::<suppressions::Params>(&["channel", "after", "limit"]))
                .answer(200, "A page of suppressions.", [json_of(s.answer::<suppressions::Page>())])
                .errors(&[400, 422]),
            op("delete", "Remove suppressions")
                .body([json_of(s.request::<RemoveRequest>())])
                .answer(200, "How many were removed.", [json_of(s.answer::<suppressions::Removed>())])
                .errors(&[400, 422]),
        ],
        "/send-sms" => vec![
            op("post", "The classic send-SMS request")
                .description("`template_id`, `mobiles[]` and `content`, form-encoded (as jQuery sends them) or JSON. Errors carry `success: false`.")
                .body([
                    ("application/x-www-form-urlencoded", s.request::<SmsJob>()),
                    json_of(s.request::<SmsJob>()),
                ])
                .answer(202, "Queued.", [json_of(s.answer::<SeedAnswer>())])
                .errors(&[400, 422]),
        ],
        "/v1/receipts/{provider}" => {
            let webhook = s.request::<WireReceipt>();
            let acknowledgement = |text: &str, description: &str| {
                let body: Value = serde_json::from_str(text).expect("the acknowledgements are JSON");
                json!({"const": body, "description": description})
            };
            vec![
                op("post", "Delivery receipts from a provider")
                    .description("Each provider, by its configured name, in its own format: the webhook's receipts (one object or an array of them, signed with `X-Herald-Signature: sha256=<hex of HMAC-SHA256(secret, raw body)>`; the provider needs a `secret`), Twilio's status callbacks (form-encoded, signed with `X-Twilio-Signature`; the provider needs `status_callback_url` and `auth_token`), Aliyun's `SmsReport` push and Tencent Cloud's status callback (JSON arrays, not signed). Providers cannot present a bearer token: the route needs none, and each request is checked by its provider's signature where it has one. A report moves a `sent` message to `delivered` or `undelivered`; one naming an id not recorded yet is held for a day.")
                    .parameters([
                        path_parameter("provider", json!({"type": "string"}), "A configured provider's `name`."),
                        header("X-Herald-Signature", json!({"type": "string"}), "For a webhook provider: `sha256=<hex>`, required."),
                        header("X-Twilio-Signature", json!({"type": "string"}), "For a Twilio provider: required."),
                    ])
                    .body([
                        json_of(json!({"anyOf": [
                            webhook,
                            {"type": "array", "items": webhook},
                            {"type": "array", "items": s.request::<AliyunReport>(), "description": "Aliyun's SmsReport push."},
                            {"type": "array", "items": s.request::<TencentReport>(), "description": "Tencent Cloud's status callback."},
                        ]})),
                        ("application/x-www-form-urlencoded", json!({"type": "object", "description": "Twilio's status callback: `MessageSid`, `MessageStatus`, `ErrorCode`, `To`, …"})),
                    ])
                    .answer(200, "Applied: the webhook's receivers get what became of each report; Aliyun and Tencent Cloud the acknowledgement they expect.", [json_of(json!({"oneOf": [
                        s.answer::<Tally>(),
                        acknowledgement(ALIYUN_ANSWER, "Aliyun's acknowledgement."),
                        acknowledgement(TENCENT_ANSWER, "Tencent Cloud's acknowledgement."),
                    ]}))])
                    .answer(204, "Applied (Twilio, which reads only the status).", [])
                    .errors(&[400, 413])
                    .answer(401, "The provider's signature is missing or wrong.", [json_of(s.answer::<ErrorBody>())])
                    .answer(404, "No provider has that name, or it takes no receipts (a webhook without `secret`, Twilio without `status_callback_url` and `auth_token`, log, SMTP).", [json_of(s.answer::<ErrorBody>())]),
            ]
        }
        _ => Vec::new(),
    }
}

/// The schemas of the document: requests' as they deserialize, answers' as they
/// serialize. Answers' are referred to under `components/answers` until [`Schemas::place`]
/// puts them beside requests' in `components/schemas`.
struct Schemas {
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
    fn answer<T: JsonSchema>(&mut self) -> Value {
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

/// `schema` without its `null` alternative.
fn not_null(mut schema: Value) -> Value {
    if let Some(types) = schema["type"].as_array_mut() {
        types.retain(|t| t != "null");
        if let [one] = types.as_slice() {
            schema["type"] = one.clone();
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
struct Operation {
    method: &'static str,
    object: Map<String, Value>,
}

fn op(method: &'static str, summary: &str) -> Operation {
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

    /// A required request body, by media type.
    fn body<'a>(mut self, content: impl IntoIterator<Item = (&'a str, Value)>) -> Operation {
        self.object.insert(
            "requestBody".into(),
            json!({"required": true, "content": media(content)}),
        );
        self
    }

    /// The answer of `status`, by media type (none for an empty body).
    fn answer<'a>(
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

    /// Error answers of these statuses, with the one error body.
    fn errors(mut self, statuses: &[u16]) -> Operation {
        for status in statuses {
            self.responses().insert(
                status.to_string(),
                json!({"$ref": "#/components/responses/Error"}),
            );
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

fn json_of(schema: Value) -> (&'static str, Value) {
    ("application/json", schema)
}

fn text() -> Value {
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

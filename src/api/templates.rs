//! Stored templates: `POST /v1/templates`, `GET /v1/templates`,
//! `GET|PUT|DELETE /v1/templates/{id}`. A batch (or the seed's `/send-sms`) names one
//! by `template_id` instead of sending its text.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::audit::audited;
use super::error::Error;
use super::request::{
    DEFAULT_PAGE, MAX_PAGE, accept_content, body_bytes, page_limit, parse_json, query_params,
};
use super::state::AppState;
use crate::audit::{Actor, AuditAction};
use crate::domain::ProviderTemplate;
use crate::domain::{Channel, format_ms};
use crate::queue::StoredTemplate;

/// The longest template id.
const MAX_ID: usize = 64;

/// What a template id is: 1 to 64 letters, digits, `_`, `-` or `.`.
const ID_PATTERN: &str = r"^[A-Za-z0-9_.-]{1,64}$";

/// A template as `PUT /v1/templates/{id}` takes it, and `POST /v1/templates` with
/// its `id`. An e-mail template has a subject.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "anyOf" = [
        {"properties": {"channel": {"const": "sms"}}},
        {"required": ["subject"], "properties": {"subject": {"type": "string"}}},
    ],
))]
pub(super) struct TemplateRequest {
    /// Read on `POST`; a `PUT` may repeat the path's, which the document leaves out.
    #[serde(default)]
    #[schemars(skip)]
    id: Option<String>,
    channel: Channel,
    #[serde(default)]
    #[schemars(pattern(crate::intake::ONE_LINE))]
    subject: Option<String>,
    #[schemars(pattern(crate::intake::NOT_BLANK))]
    body: String,
    /// Per provider (by its configured name): its pre-approved template code and
    /// sign name.
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"minLength": 1}))]
    providers: BTreeMap<String, ProviderTemplate>,
}

/// `POST /v1/templates`' body, in the document: a [`TemplateRequest`] whose `id`
/// is required (the handler reads a `TemplateRequest` and checks it is there).
pub(super) struct NewTemplate;

impl JsonSchema for NewTemplate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NewTemplate".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = TemplateRequest::json_schema(generator);
        schema.insert(
            "description".into(),
            "A template to store, with its id. An e-mail template has a subject.".into(),
        );
        let id = template_id();
        if let Some(properties) = schema
            .ensure_object()
            .entry("properties")
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
        {
            properties.insert("id".into(), id.to_value());
        }
        if let Some(required) = schema
            .ensure_object()
            .entry("required")
            .or_insert_with(|| serde_json::json!([]))
            .as_array_mut()
        {
            required.insert(0, "id".into());
        }
        schema
    }
}

/// The schema of a template's id, in a body or a path.
pub(super) fn template_id() -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": ID_PATTERN,
        "description": "1 to 64 letters, digits, `_`, `-` or `.`.",
    })
}

/// A template as the API shows it.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Template")]
pub(super) struct TemplateView {
    id: String,
    channel: Channel,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    body: String,
    providers: BTreeMap<String, ProviderTemplate>,
    /// 1 when created, one more on every replace.
    version: u32,
    #[schemars(extend("format" = "date-time"))]
    created_at: String,
    #[schemars(extend("format" = "date-time"))]
    updated_at: String,
}

impl From<StoredTemplate> for TemplateView {
    fn from(t: StoredTemplate) -> Self {
        TemplateView {
            id: t.id,
            channel: t.channel,
            subject: t.subject,
            body: t.body,
            providers: t.providers,
            version: t.version,
            created_at: format_ms(t.created_at_ms),
            updated_at: format_ms(t.updated_at_ms),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks an id: 1 to 64 letters, digits, `_`, `-` or `.`.
fn check_id(id: &str) -> Result<(), Error> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "id",
            format!(
                "`{id}` is not a template id: use 1 to {MAX_ID} letters, digits, `_`, `-` or `.`"
            ),
        ))
    }
}

/// Checks a request's text the way a batch's inline template is checked, so a
/// stored template that is accepted here always compiles when a batch uses it.
fn checked(id: String, request: TemplateRequest) -> Result<StoredTemplate, Error> {
    check_id(&id)?;
    if request.body.trim().is_empty() {
        return Err(invalid("body", "must not be empty"));
    }
    if request.channel == Channel::Email && request.subject.is_none() {
        return Err(invalid("subject", "is required for e-mail"));
    }
    crate::template::Template::compile(&request.body, request.subject.as_deref()).map_err(|e| {
        // The compiler names `template.body` / `template.subject`; here they stand alone.
        let field = e.field.trim_start_matches("template.");
        invalid(field, e.message)
    })?;
    for name in request.providers.keys() {
        if name.is_empty() {
            return Err(invalid("providers", "a provider name must not be empty"));
        }
    }
    Ok(StoredTemplate {
        id,
        channel: request.channel,
        subject: request.subject,
        body: request.body,
        providers: request.providers,
        version: 0,
        created_at_ms: 0,
        updated_at_ms: 0,
    })
}

pub(super) async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    accept_content(&headers, &[])?;
    let mut request: TemplateRequest = parse_json(&body_bytes(body)?)?;
    let id = request
        .id
        .take()
        .ok_or_else(|| invalid("id", "is required"))?;
    let target = id.clone();
    let template = checked(id, request)?;
    let stored = state
        .queue
        .records()
        .create_template(template)
        .await
        .map_err(Error::from);
    let stored = audited(&state, &actor, AuditAction::TemplateCreate, &target, stored).await?;
    Ok((StatusCode::CREATED, Json(TemplateView::from(stored))).into_response())
}

pub(super) async fn replace(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TemplateView>, Error> {
    let result = replace_template(&state, id.clone(), &headers, body).await;
    audited(&state, &actor, AuditAction::TemplateUpdate, &id, result).await
}

/// Replaces template `id` with the one `body` describes.
async fn replace_template(
    state: &AppState,
    id: String,
    headers: &axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TemplateView>, Error> {
    accept_content(headers, &[])?;
    let mut request: TemplateRequest = parse_json(&body_bytes(body)?)?;
    if let Some(named) = request.id.take()
        && named != id
    {
        return Err(invalid(
            "id",
            format!("the body names `{named}` but the path `{id}`: a template's id cannot change"),
        ));
    }
    let template = checked(id.clone(), request)?;
    let stored = state
        .queue
        .records()
        .replace_template(template)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(stored.into()))
}

pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TemplateView>, Error> {
    let template = state
        .queue
        .records()
        .template(&id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(template.into()))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let result = match state.queue.records().delete_template(&id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(not_found(&id)),
        Err(e) => Err(e.into()),
    };
    audited(&state, &actor, AuditAction::TemplateDelete, &id, result).await
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct ListParams {
    /// A page's `next_after`.
    after: Option<String>,
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
    limit: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct TemplatePage {
    templates: Vec<TemplateView>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<TemplatePage>, Error> {
    let params = query_params(params)?;
    let limit = page_limit(params.limit)?;
    let templates = state.queue.records().templates(params.after, limit).await?;
    let next_after = (templates.len() == limit as usize)
        .then(|| templates.last().map(|t| t.id.clone()))
        .flatten();
    Ok(Json(TemplatePage {
        templates: templates.into_iter().map(TemplateView::from).collect(),
        next_after,
    }))
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no template `{id}`"))
}

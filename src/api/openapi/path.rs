//! What each route's methods take and answer, one function per route of the
//! table in `api::route`, which names them beside their handlers.

use serde_json::{Value, json};

use super::{Operation, Schemas, header, if_none_match, json_of, op, path_parameter, text};
use crate::api::audit;
use crate::api::batch::{
    ACTIONS, BatchPage, BatchView, BatchesParams, ControlRequest, MessagePage, MessagesParams,
};
use crate::api::erase::ErasureView;
use crate::api::error::ErrorBody;
use crate::api::events::Progress;
use crate::api::inbound::Tally as ReplyTally;
use crate::api::messages::{FoundPage, SearchParams};
use crate::api::receipts::Tally;
use crate::api::replies;
use crate::api::seed::SeedAnswer;
use crate::api::submit::MAX_IDEMPOTENCY_KEY;
use crate::api::suppressions::{self, AddRequest, RemoveRequest};
use crate::api::templates::{self, NewTemplate, TemplatePage, TemplateRequest, TemplateView};
use crate::api::upload::CsvOptions;
use crate::api::webhooks::{self, Endpoints, ReplayRequest, Replayed};
use crate::ingest::job::SmsJob;
use crate::intake::{BatchRequest, Report};
use crate::provider::receipt::{ALIYUN_ANSWER, AliyunReport, TENCENT_ANSWER, TencentReport};
use crate::provider::{AliyunUplink, TencentReply, WireReceipt, WireReply};

/// A batch's id, in its path.
fn batch_id() -> Value {
    path_parameter("id", json!({"type": "string", "format": "uuid"}), "")
}

/// What `/` takes and answers.
pub(in crate::api) fn page(_s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("get", "The web page")
            .description("The page that composes, sends and follows batches through this API. Served with an `ETag` and `Cache-Control: no-cache`.")
            .parameters([if_none_match()])
            .answer(200, "The page.", [("text/html", text())])
            .answer(304, "The browser's copy is current.", []),
    ]
}

/// What `/assets/{name}` takes and answers.
pub(in crate::api) fn assets(_s: &mut Schemas) -> Vec<Operation> {
    let assets: Vec<_> = crate::web::assets().collect();
    let names: Vec<_> = assets.iter().map(|(name, _)| *name).collect();
    vec![
        op("get", "The web page's script and stylesheet")
            .description("Served with an `ETag` and `Cache-Control: no-cache`.")
            .parameters([
                path_parameter("name", json!({"type": "string", "enum": names}), ""),
                if_none_match(),
            ])
            .answer(
                200,
                "The file.",
                assets.iter().map(|(_, media)| (*media, text())),
            )
            .answer(304, "The browser's copy is current.", [])
            .errors(&[404]),
    ]
}

/// What `/v1/batches` takes and answers.
pub(in crate::api) fn batches(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("post", "Accept a batch")
            .description("JSON (`application/json`), NDJSON (`application/x-ndjson` or `application/jsonl`: the batch without `recipients`, then a recipient per line) or CSV (`text/csv`: the batch's options in the query — channel, template or template_id, subject, provider, priority, send_at, reject_recent_duplicates, dry_run —, a header row `to`, optional `ref`, then variables). `202` once stored; nothing is stored on any other answer.")
            .parameters(s.query::<CsvOptions>(&[]))
            .parameters([
                header("Idempotency-Key", json!({"type": "string", "pattern": "^[!-~]+$", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY}), "A replay with the same key and body answers what the first did; another body, `409`."),
                header("Content-Digest", json!({"type": "string", "pattern": "^sha-256=:[A-Za-z0-9+/]{43}=:$"}), "`sha-256=:<base64>:` of an upload's body (RFC 9530)."),
            ])
            .body([
                json_of(s.request::<BatchRequest>()),
                ("application/x-ndjson", text()),
                ("application/jsonl", text()),
                ("text/csv", text()),
            ])
            .answer(202, "Stored; a replay of an idempotent submit also carries `Idempotent-Replayed: true`.", [json_of(s.answer::<Report>())])
            .answer(200, "The report of a dry run.", [json_of(s.answer::<Report>())])
            .errors(&[400, 409, 413, 422, 503]),
        op("get", "List batches, newest first")
            .parameters(s.query::<BatchesParams>(&[]))
            .answer(200, "A page of batches.", [json_of(s.answer::<BatchPage>())])
            .errors(&[400, 422, 503]),
    ]
}

/// What `/v1/batches/{id}` takes and answers.
pub(in crate::api) fn batch(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("get", "A batch's state and counts")
            .parameters([batch_id()])
            .answer(200, "The batch.", [json_of(s.answer::<BatchView>())])
            .errors(&[404, 503]),
    ]
}

/// What `/v1/batches/{id}/messages` takes and answers.
pub(in crate::api) fn messages(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("get", "A batch's ledger, in recipient order")
            .parameters([batch_id()])
            .parameters(s.query::<MessagesParams>(&[]))
            .answer(
                200,
                "A page of messages; with `format=csv`, the whole ledger as CSV (UTF-8 with a byte-order mark).",
                [json_of(s.answer::<MessagePage>()), ("text/csv", text())],
            )
            .errors(&[400, 404, 422, 503]),
    ]
}

/// What `/v1/batches/{id}/events` takes and answers.
pub(in crate::api) fn events(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("get", "A batch's progress as server-sent events")
            .description("`event: progress` at once and on every change (at most four a second), then, when nothing is left pending, sending, paused or of unknown outcome, the final `event: progress` and `event: end` with the same data, and the stream closes (a finished batch's stream is just those two). Each event's `data` is one line of JSON, a `Progress`. A `: keep-alive` comment comes every 15 s.")
            .parameters([batch_id()])
            .answer(200, "The event stream; each event's data is a Progress.", [("text/event-stream", json!({
                "description": "One event: its name and its data, a Progress as JSON.",
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"enum": ["progress", "end"]},
                    "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": s.answer::<Progress>()},
                },
            }))])
            .errors(&[404, 503]),
    ]
}

/// What `/v1/batches/{id}/{action}` takes and answers.
pub(in crate::api) fn control(s: &mut Schemas) -> Vec<Operation> {
    let actions: Vec<_> = ACTIONS.iter().map(|(name, _)| *name).collect();
    vec![
            op("post", "Pause, resume, cancel or retry a batch")
                .description("`retry` requeues the failed and expired messages, and only those, with a fresh attempt budget, and gives the batch a fresh deadline: its body's `expires_at` or `valid_for`, else the configured default (none when none is configured). `resume` may give a higher `max_cost`, putting the messages held at the batch's spend cap back to be sent. The other actions take no body. `409` when the batch's state makes the action meaningless: a finished batch has nothing to pause, resume or cancel, and only failed or expired messages to retry; a cancelled batch can only be cancelled again; a batch held at its spend cap resumes only with a `max_cost` above what it has spent.")
                .parameters([batch_id(), path_parameter("action", json!({"type": "string", "enum": actions}), "")])
                .optional_body([json_of(s.request::<ControlRequest>())])
                .answer(200, "The batch after the action.", [json_of(s.answer::<BatchView>())])
                .errors(&[400, 404, 409, 422, 503]),
        ]
}

/// What `/v1/templates` takes and answers.
pub(in crate::api) fn templates(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("post", "Store a template")
            .body([json_of(s.request::<NewTemplate>())])
            .answer(
                201,
                "Stored as version 1.",
                [json_of(s.answer::<TemplateView>())],
            )
            .errors(&[400, 409, 422, 503]),
        op("get", "List templates by id")
            .parameters(s.query::<templates::ListParams>(&[]))
            .answer(
                200,
                "A page of templates.",
                [json_of(s.answer::<TemplatePage>())],
            )
            .errors(&[400, 422, 503]),
    ]
}

/// What `/v1/templates/{id}` takes and answers.
pub(in crate::api) fn template(s: &mut Schemas) -> Vec<Operation> {
    let id = path_parameter("id", templates::template_id().to_value(), "");
    vec![
        op("get", "Read a template")
            .parameters([id.clone()])
            .answer(200, "The template.", [json_of(s.answer::<TemplateView>())])
            .errors(&[404, 503]),
        op("put", "Replace a template (its version goes up)")
            .parameters([id.clone()])
            .body([json_of(s.request::<TemplateRequest>())])
            .answer(
                200,
                "The new version.",
                [json_of(s.answer::<TemplateView>())],
            )
            .errors(&[400, 404, 422, 503]),
        op(
            "delete",
            "Delete a template; accepted batches keep their text",
        )
        .parameters([id])
        .answer(204, "Deleted.", [])
        .errors(&[404, 503]),
    ]
}

/// What `/v1/suppressions` takes and answers.
pub(in crate::api) fn suppressions(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("post", "Add recipients who must not be messaged")
            .description("JSON, or a CSV upload (`text/csv`, `?channel=&reason=`, lines `address[,reason]`).")
            .parameters(s.query::<suppressions::Params>(&["channel", "reason"]))
            .body([json_of(s.request::<AddRequest>()), ("text/csv", text())])
            .answer(200, "What was added, updated and refused.", [json_of(s.answer::<suppressions::Added>())])
            .errors(&[400, 413, 422, 503]),
        op("get", "List suppressions")
            .parameters(s.query::<suppressions::Params>(&["channel", "after", "limit"]))
            .answer(200, "A page of suppressions.", [json_of(s.answer::<suppressions::Page>())])
            .errors(&[400, 422, 503]),
        op("delete", "Remove suppressions")
            .body([json_of(s.request::<RemoveRequest>())])
            .answer(200, "How many were removed.", [json_of(s.answer::<suppressions::Removed>())])
            .errors(&[400, 422, 503]),
    ]
}

/// What `/send-sms` takes and answers.
pub(in crate::api) fn send_sms(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("post", "The classic send-SMS request")
            .description("`template_id`, `mobiles[]` and `content`, form-encoded (as jQuery sends them) or JSON. Errors carry `success: false`.")
            .body([
                ("application/x-www-form-urlencoded", s.request::<SmsJob>()),
                json_of(s.request::<SmsJob>()),
            ])
            .answer(202, "Queued.", [json_of(s.answer::<SeedAnswer>())])
            .errors(&[400, 422, 503]),
    ]
}

/// What a provider's own requests (receipts, replies) name: the provider, and
/// the signatures of those that sign.
fn provider_parameters() -> [Value; 3] {
    [
        path_parameter(
            "provider",
            json!({"type": "string"}),
            "A configured provider's `name`.",
        ),
        header(
            "X-Herald-Signature",
            json!({"type": "string"}),
            "For a webhook provider: `sha256=<hex>`, required.",
        ),
        header(
            "X-Twilio-Signature",
            json!({"type": "string"}),
            "For a Twilio provider: required.",
        ),
    ]
}

/// A provider's fixed acknowledgement `text`, as a schema.
fn acknowledgement(text: &str, description: &str) -> Value {
    let body: Value = serde_json::from_str(text).expect("the acknowledgements are JSON");
    json!({"const": body, "description": description})
}

/// What `/v1/receipts/{provider}` takes and answers.
pub(in crate::api) fn receipts(s: &mut Schemas) -> Vec<Operation> {
    let webhook = s.request::<WireReceipt>();
    vec![
            op("post", "Delivery receipts from a provider")
                .description("Each provider, by its configured name, in its own format: the webhook's receipts (one object or an array of them, signed with `X-Herald-Signature: sha256=<hex of HMAC-SHA256(secret, raw body)>`; the provider needs a `secret`), Twilio's status callbacks (form-encoded, signed with `X-Twilio-Signature`; the provider needs `status_callback_url` and `auth_token`), Aliyun's `SmsReport` push and Tencent Cloud's status callback (JSON arrays, not signed). Providers cannot present a bearer token: the route needs none, and each request is checked by its provider's signature where it has one. A report moves a `sent` message to `delivered` or `undelivered`; one naming an id not recorded yet is held for a day.")
                .parameters(provider_parameters())
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
                .errors(&[400, 413, 503])
                .answer(401, "The provider's signature is missing or wrong.", [json_of(s.answer::<ErrorBody>())])
                .answer(404, "No provider has that name, or it takes no receipts (a webhook without `secret`, Twilio without `status_callback_url` and `auth_token`, log, SMTP).", [json_of(s.answer::<ErrorBody>())]),
        ]
}

/// What `/v1/inbound/{provider}` takes and answers.
pub(in crate::api) fn inbound(s: &mut Schemas) -> Vec<Operation> {
    let webhook = s.request::<WireReply>();
    vec![
        op("post", "Replies from a provider")
            .description("What people text back to a provider's numbers, each provider, by its configured name, in its own format: the webhook's replies (one object or an array of them, signed with `X-Herald-Signature: sha256=<hex of HMAC-SHA256(secret, raw body)>`; the provider needs a `secret`), Twilio's incoming-message webhook (form-encoded, signed with `X-Twilio-Signature` over the provider's `inbound_url`, which it needs with `auth_token`), Aliyun's `SmsUp` push (a JSON array) and Tencent Cloud's reply callback (a JSON object), neither signed. The route needs no bearer token. Each reply is recorded once (`GET /v1/replies`), linked to the latest message sent to its sender through that provider; a reply that is only an opt-out keyword suppresses the sender on the SMS channel, an opt-in keyword lifts a suppression a reply made, and either is answered with the configured auto-reply.")
            .parameters(provider_parameters())
            .body([
                json_of(json!({"anyOf": [
                    webhook,
                    {"type": "array", "items": webhook},
                    {"type": "array", "items": s.request::<AliyunUplink>(), "description": "Aliyun's SmsUp push."},
                    s.request::<TencentReply>(),
                ]})),
                ("application/x-www-form-urlencoded", json!({"type": "object", "description": "Twilio's incoming message: `MessageSid`, `From`, `To`, `Body`, …"})),
            ])
            .answer(200, "Recorded: the webhook's receivers get counts; Aliyun and Tencent Cloud the acknowledgement they expect; Twilio empty TwiML (`text/xml`).", [json_of(json!({"oneOf": [
                s.answer::<ReplyTally>(),
                acknowledgement(ALIYUN_ANSWER, "Aliyun's acknowledgement."),
                acknowledgement(TENCENT_ANSWER, "Tencent Cloud's acknowledgement."),
            ]})), ("text/xml", json!({"type": "string"}))])
            .errors(&[400, 413])
            .answer(401, "The provider's signature is missing or wrong.", [json_of(s.answer::<ErrorBody>())])
            .answer(404, "No provider has that name, or it takes no replies (a webhook without `secret`, Twilio without `inbound_url` and `auth_token`, log, SMTP).", [json_of(s.answer::<ErrorBody>())]),
    ]
}

/// What `/v1/replies` takes and answers.
pub(in crate::api) fn replies(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("get", "List replies, oldest first")
            .parameters(s.query::<replies::Params>(&["from", "after", "limit"]))
            .answer(
                200,
                "A page of replies.",
                [json_of(s.answer::<replies::Page>())],
            )
            .errors(&[400, 422]),
    ]
}

/// A webhook endpoint's name, in its path.
fn endpoint() -> Value {
    path_parameter(
        "endpoint",
        json!({"type": "string"}),
        "A configured `[[webhooks]]` name, or `callback` for batches' own `callback_url`s.",
    )
}

/// What `/v1/webhooks` takes and answers.
pub(in crate::api) fn webhooks(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("get", "List the status webhooks' endpoints")
            .description("Each configured endpoint (and `callback`, when `webhook.callback_secret` is set), with how many events wait to be posted and how many were given up on.")
            .answer(200, "The endpoints.", [json_of(s.answer::<Endpoints>())]),
    ]
}

/// What `/v1/webhooks/{endpoint}/deliveries` takes and answers.
pub(in crate::api) fn webhook_deliveries(s: &mut Schemas) -> Vec<Operation> {
    let mut parameters = vec![endpoint()];
    parameters.extend(s.query::<webhooks::Params>(&["state", "before", "limit"]));
    vec![
        op("get", "List an endpoint's deliveries")
            .description("Newest first: each event with its state (`pending`, `posted`, `failed`), attempts and last error. Posted deliveries are kept for `webhook.keep_posted`.")
            .parameters(parameters)
            .answer(200, "A page of deliveries.", [json_of(s.answer::<webhooks::Page>())])
            .errors(&[400, 404, 422]),
    ]
}

/// What `/v1/webhooks/{endpoint}/replay` takes and answers.
pub(in crate::api) fn webhook_replay(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("post", "Post events again")
            .description("`{\"event_id\": …}` posts that event again, `{\"failed\": true}` every failed one: each is made pending and due now, its attempts and retry window started over.")
            .parameters([endpoint()])
            .body([json_of(s.request::<ReplayRequest>())])
            .answer(200, "How many deliveries are pending again.", [json_of(s.answer::<Replayed>())])
            .errors(&[400, 404, 422]),
    ]
}

/// What `/v1/spend` takes and answers.
pub(in crate::api) fn spend(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("get", "Each provider's spend today")
            .description("Every provider with prices: what its messages were charged on its local day (`budget_time_zone`, else UTC), its `daily_budget`, and, when that is spent, until when its sending pauses. A batch's own spend and cap are in the batch (`spent`, `max_cost`).")
            .answer(200, "The providers' spend.", [json_of(s.answer::<crate::api::spend::Spend>())])
            .errors(&[503]),
    ]
}

/// What `/v1/messages` takes and answers.
pub(in crate::api) fn search_messages(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("get", "Messages to an address or with a ref, across batches")
            .description("Newest first, through an index on each engine. `to` is normalised as batch recipients are (E.164; an e-mail address without its display name); an erased address is found by the `erased:…` value its erasure answered, not by the address.")
            .parameters(s.query::<SearchParams>(&[]))
            .answer(
                200,
                "A page of messages; with `format=csv`, every message found as CSV (UTF-8 with a byte-order mark).",
                [json_of(s.answer::<FoundPage>()), ("text/csv", text())],
            )
            .errors(&[400, 422, 503]),
    ]
}

/// What `/v1/recipients/{address}` takes and answers.
pub(in crate::api) fn recipient(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("delete", "Erase a person")
            .description("Cancels the messages still queued to the address, then replaces it by `erased:<HMAC-SHA256 of the store's salt and the address>` in every message, reply and stored webhook event. The suppression list keeps the address. Waits for sends in flight to the address to settle; erasing again answers zeros.")
            .parameters([path_parameter(
                "address",
                json!({"type": "string"}),
                "A phone number or an e-mail address, normalised as batch recipients are.",
            )])
            .answer(200, "What was erased.", [json_of(s.answer::<ErasureView>())])
            .errors(&[409, 422, 503]),
    ]
}

/// What `/v1/audit` takes and answers.
pub(in crate::api) fn audit(s: &mut Schemas) -> Vec<Operation> {
    vec![
        op("get", "List the audit trail, newest first")
            .parameters(s.query::<audit::Params>(&["action", "actor", "before", "limit"]))
            .answer(
                200,
                "A page of the audit trail: who did what to which batch, template or address, when, and how it ended.",
                [json_of(s.answer::<audit::Page>())],
            )
            .errors(&[400, 422]),
    ]
}

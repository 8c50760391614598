"""Schemathesis hooks for the property run of tests/e2e/contract.rs.

The run generates requests from /openapi.json and fails on any schema-valid
request the server refuses. A few rules depend on facts no schema can hold, and
these hooks set those values, and only those, to ones that meet them:

- recipient addresses must be real numbers and e-mail addresses of the batch's
  channel (fresh ones every time, so that no recipient is a recent duplicate or
  suppressed);
- `provider` and `template_id` must name a configured provider and a stored
  template of the channel (the test stores `sms-t` and `email-t` first, and
  the run may not delete or replace them);
- a CSV upload's options, in the query, take one of `template` and
  `template_id` (an either-or of query parameters no schema can state);
- a value a stateful link carries from one operation into another's path
  still fits that path's schema;
- a status webhook's endpoint in a path must be a configured one (`app`);
- a search names a real address as `to`, or a `ref` (at least one of them, an
  either-or of query parameters), and an erasure a real address;
- `send_at` and `expires_at` must lie in the next ten years, in that order;
- a batch's `window` must be a window that opens (`/send-sms`'s one that is
  open), not with `ignore_window`, and its `timezone` an IANA zone's name;
- a batch's `max_cost` must be at least its estimated cost;
- a template's text must be valid template syntax (braces are replaced);
- an upload body (CSV, NDJSON) must be an upload, its `Content-Digest` its
  own, and a receipt must reach the provider whose format it is.

Everything else — types, required fields, ranges, enums, the either-or rules —
is as generated.
"""

import base64
import hashlib
import itertools
import json
import re
from datetime import datetime, timedelta, timezone

import schemathesis

_fresh = itertools.count(1)

# The test's configuration: see tests/e2e/contract.rs.
PROVIDERS = {"sms": "log", "email": "log"}
TEMPLATES = {"sms": "sms-t", "email": "email-t"}
TEMPLATE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _address(channel):
    n = next(_fresh)
    if channel == "email":
        return f"r{n}@example.com"
    return f"+86139{n:08d}"


def _text(value):
    if not isinstance(value, str):
        return value
    return value.replace("{", "(").replace("}", ")")


def _times(options):
    now = datetime.now(timezone.utc)
    for name, hours in (("send_at", 1), ("expires_at", 2)):
        if options.get(name) is not None:
            options[name] = (now + timedelta(hours=hours)).isoformat()


def _batch_options(options, channel):
    _times(options)
    # A window the grammar reads and that opens, and an IANA zone's name: neither
    # fits a schema; `window` and `ignore_window` are either-or.
    if options.get("window") is not None:
        options["window"] = "mon-fri 08:00-21:00"
        options.pop("ignore_window", None)
    if options.get("timezone") is not None:
        options["timezone"] = "Europe/London"
    # A cap at least the batch's estimate, which depends on its recipients.
    if options.get("max_cost") is not None:
        options["max_cost"] = 1000000000
    if options.get("provider") is not None:
        options["provider"] = PROVIDERS[channel]
    if options.get("template_id") is not None:
        options["template_id"] = TEMPLATES[channel]


def _channel(options):
    channel = options.get("channel")
    return channel if channel in ("sms", "email") else "sms"


def _batch(body):
    channel = _channel(body)
    _batch_options(body, channel)
    template = body.get("template")
    if isinstance(template, dict):
        for name in ("body", "subject"):
            if name in template:
                template[name] = _text(template[name])
    recipients = body.get("recipients")
    for recipient in recipients if isinstance(recipients, list) else []:
        if isinstance(recipient, dict):
            recipient["to"] = _address(channel)


def _upload_query(query):
    """A CSV upload's options: one of `template` and `template_id`, as a batch's."""
    channel = _channel(query)
    _batch_options(query, channel)
    if query.get("expires_at") is not None:
        query.pop("valid_for", None)
    query["template"] = _text(query.get("template"))
    query["subject"] = _text(query.get("subject"))
    if query.get("template") is None and query.get("template_id") is None:
        query["template"] = "Hello"
    if query.get("template") is not None:
        query.pop("template_id", None)
        if channel == "email" and query.get("subject") is None:
            query["subject"] = "Hi"
    return channel


@schemathesis.hook
def before_call(context, case, kwargs):
    """Sets the values no schema can hold, just before each request is sent:
    every request of every phase passes here, those made from the coverage
    phase's explicit examples and from stateful links too, which the
    generation hooks (`map_case`, …) never see."""
    path = case.operation.path
    method = case.operation.method.upper()
    body = case.body
    media = case.media_type or ""
    if path == "/v1/batches" and method == "POST":
        query = case.query if case.query is not None else {}
        if media == "text/csv":
            channel = _upload_query(query)
            case.query = query
            case.body = "to,ref\n" + "".join(f"{_address(channel)},r{i}\n" for i in range(2))
        elif media in ("application/x-ndjson", "application/jsonl"):
            options = {"channel": "sms", "template": {"body": "Hello"}}
            lines = [options] + [{"to": _address("sms")} for _ in range(2)]
            case.body = "".join(json.dumps(line) + "\n" for line in lines)
        elif isinstance(body, dict):
            _batch(body)
    elif path == "/v1/batches/{id}/{action}" and isinstance(body, dict):
        _times(body)
    if path == "/v1/messages":
        query = case.query if case.query is not None else {}
        if query.get("to"):
            query["to"] = _address("sms")
        if not query.get("to") and not query.get("ref"):
            query["ref"] = "r0"
        case.query = query
    if path == "/v1/recipients/{address}":
        case.path_parameters = {**(case.path_parameters or {}), "address": _address("sms")}
    if path.startswith("/v1/webhooks/{endpoint}"):
        # The one configured status webhook: no schema can name it.
        case.path_parameters = {**(case.path_parameters or {}), "endpoint": "app"}
    if path == "/v1/templates/{id}":
        template = (case.path_parameters or {}).get("id")
        # The stored templates the batches name stay as they are; and a stateful
        # link may carry any label (a job's `template_id`) into this path, where
        # the id's pattern applies.
        if template in TEMPLATES.values() or not (
            isinstance(template, str) and TEMPLATE_ID.fullmatch(template)
        ):
            case.path_parameters = {**(case.path_parameters or {}), "id": "other"}
    if path == "/v1/templates" and isinstance(body, dict) and body.get("id") in TEMPLATES.values():
        body["id"] = "other"
    if path in ("/v1/templates", "/v1/templates/{id}") and isinstance(body, dict):
        for name in ("body", "subject"):
            if name in body:
                body[name] = _text(body[name])
    elif path == "/v1/suppressions" and method in ("POST", "DELETE"):
        if media == "text/csv":
            channel = _channel(case.query or {})
            case.body = "address,reason\n" + f"{_address(channel)},csv\n"
        elif isinstance(body, dict):
            addresses = body.get("addresses")
            if isinstance(addresses, list):
                body["addresses"] = [_address(_channel(body)) for _ in addresses]
    elif path == "/send-sms" and isinstance(body, dict):
        if body.get("max_cost") is not None:
            body["max_cost"] = 1000000000
        # A window that is always open: the stateful phase reads the batch's
        # event stream, which ends only once every message is sent.
        if body.get("window") is not None:
            body["window"] = "00:00-24:00"
            body.pop("ignore_window", None)
        if body.get("timezone") is not None:
            body["timezone"] = "Europe/London"
        mobiles = body.get("mobiles")
        if isinstance(mobiles, list):
            body["mobiles"] = [_address("sms") for _ in mobiles]
        elif isinstance(mobiles, str):
            body["mobiles"] = ",".join(_address("sms") for _ in range(2))
    elif path == "/v1/receipts/{provider}":
        # Each provider reads its own format; a webhook's or Twilio's receipt goes
        # to the webhook provider, which answers 401 to an unsigned one.
        provider = "hook"
        if isinstance(body, list) and all(isinstance(item, dict) for item in body):
            if all("biz_id" in item for item in body):
                provider = "ali"
            elif all("sid" in item for item in body):
                provider = "tc"
        case.path_parameters = {**(case.path_parameters or {}), "provider": provider}
    elif path == "/v1/inbound/{provider}":
        # The same for replies: Aliyun's uplink array, Tencent's reply object, else
        # the webhook provider's (unsigned: 401).
        provider = "hook"
        if isinstance(body, list) and body and all(isinstance(i, dict) and "sequence_id" in i for i in body):
            provider = "ali"
        elif isinstance(body, dict) and "nationcode" in body:
            provider = "tc"
        case.path_parameters = {**(case.path_parameters or {}), "provider": provider}
    if case.headers and "Content-Digest" in case.headers:
        # The digest must be the body's own: of an upload's text, computed here.
        if isinstance(case.body, str):
            digest = base64.b64encode(hashlib.sha256(case.body.encode()).digest()).decode()
            case.headers["Content-Digest"] = f"sha-256=:{digest}:"
        else:
            del case.headers["Content-Digest"]

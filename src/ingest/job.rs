//! The jobs an ingest queue carries, as the classic "push it on a list, a worker
//! pops it" recipe writes them: the SMS job (`template_id`, `mobiles`, `content`),
//! the e-mail job (`from_email`, `to_email`, `title`, `content`), and Herald's own
//! batch JSON. Each is read here and turned into what [`Intake`] takes;
//! `POST /send-sms` reads its request as an [`SmsJob`] too.

use serde_json::{Map, Value};

use crate::domain::Channel;
use crate::intake::{self, BatchRequest, Body, Intake, RecipientSpec, TemplateSpec, WindowRequest};
use crate::template::Vars;

/// The classic SMS job: one text to many mobiles.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SmsJob {
    /// A stored SMS template's id; any other value is the producer's own label and
    /// `content` is then the text.
    pub template_id: Option<String>,
    /// As written: normalized (and refused one by one) by intake.
    pub mobiles: Vec<String>,
    /// The text; with a stored template, its variable `content`.
    pub content: Option<String>,
    /// Where the batch's status events are posted (see intake's `callback_url`).
    pub callback_url: Option<String>,
    /// The batch's spend cap (see intake's `max_cost`), as written: a number.
    pub max_cost: Option<String>,
    /// Quiet hours (see intake's `window`): `08:00-21:00`, optionally after days.
    pub window: Option<String>,
    /// Send at any hour (see intake's `ignore_window`), as written: `true` or
    /// `false` (in a form also `1` or `0`).
    pub ignore_window: Option<String>,
    /// The IANA time zone of numbers of no known zone (see intake's `timezone`).
    pub timezone: Option<String>,
}

/// What an SMS job says of its window, read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JobWindow {
    pub window: Option<String>,
    pub ignore_window: bool,
    pub timezone: Option<String>,
}

impl JobWindow {
    /// As intake takes it.
    pub fn request(&self) -> WindowRequest<'_> {
        WindowRequest {
            window: self.window.as_deref(),
            ignore_window: self.ignore_window,
            timezone: self.timezone.as_deref(),
        }
    }
}

/// The classic e-mail job: one subject and text to one or several addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EmailJob {
    /// The sender the producer asked for; it picks the provider (see `ingest`).
    pub from_email: Option<String>,
    /// The recipients' addresses, as written.
    pub to_email: Vec<String>,
    /// The subject; with a stored template, its variable `title`.
    pub title: Option<String>,
    /// The text; with a stored template, its variable `content`.
    pub content: Option<String>,
}

/// One queue item, understood.
#[derive(Debug, Clone)]
pub enum Job {
    Sms(SmsJob),
    Email(EmailJob),
    /// Herald's own batch, as `POST /v1/batches` takes it.
    Batch(Box<BatchRequest>),
}

fn invalid(field: &str, message: impl Into<String>) -> intake::Error {
    intake::Error::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A string or a number as text (PHP's `json_encode` writes ids and mobiles as either).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Appends the comma-separated parts of `value`, trimmed, empty ones skipped.
pub fn split_list(value: &str, into: &mut Vec<String>) {
    into.extend(
        value
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(String::from),
    );
}

/// An optional string field; `null` is absent.
fn optional_string(map: &Map<String, Value>, field: &str) -> Result<Option<String>, intake::Error> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

/// A list field: an array of strings (or numbers), or one comma-separated string.
fn list(map: &Map<String, Value>, field: &str) -> Result<Vec<String>, intake::Error> {
    let mut items = Vec::new();
    match map.get(field) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => split_list(s, &mut items),
        Some(Value::Array(values)) => {
            for (i, value) in values.iter().enumerate() {
                let item = scalar(value).ok_or_else(|| {
                    invalid(&format!("{field}[{i}]"), "must be a string or a number")
                })?;
                items.push(item);
            }
        }
        Some(_) => {
            return Err(invalid(
                field,
                "must be an array or a comma-separated string",
            ));
        }
    }
    Ok(items)
}

/// The job as [`SmsJob::from_json`] reads it (and [`SmsJob::from_form`], field for
/// field): `POST /send-sms`'s request in the OpenAPI document.
impl schemars::JsonSchema for SmsJob {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SmsJob".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            // `content` may be left out when `template_id` names a stored template
            // that does not read it, which no schema can tell.
            "required": ["mobiles", "content"],
            "properties": {
                "template_id": {
                    "type": ["string", "number", "null"],
                    "description": "A stored SMS template's id, rendered with `content` as its variable `content`; any other value is the producer's own label.",
                },
                "mobiles": {
                    "description": "An array of strings or numbers, or one comma-separated string (form-encoded: `mobiles[]` repeated, or `mobiles=a,b`).",
                    "anyOf": [
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {"anyOf": [{"type": "string", "pattern": crate::intake::NOT_BLANK}, {"type": "number"}]},
                        },
                        {"type": "string", "pattern": "[^,\\s]"},
                    ],
                },
                "content": {
                    "type": "string",
                    "pattern": crate::intake::NOT_BLANK,
                    "description": "The text, or the stored template's variable `content`.",
                },
                "callback_url": {
                    "type": "string",
                    "format": "uri",
                    "pattern": crate::domain::HTTP_URL_PATTERN,
                    "description": "An http(s) URL the batch's status events are posted to, signed with `webhook.callback_secret` (which must be set).",
                },
                "max_cost": {
                    "anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}],
                    "description": "The most the batch may spend, in its provider's currency (a number; in a form, as text). The provider needs prices, and the estimate must be within it.",
                },
                "window": {
                    "type": "string",
                    "examples": ["08:00-21:00", "mon-fri 08:00-21:00"],
                    "description": "Quiet hours: the sending window in each recipient's local time, `HH:MM-HH:MM` optionally after days; overrides the configured `[windows]`. A message outside it waits until it opens. Not with `ignore_window`.",
                },
                "ignore_window": {
                    "anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false", "1", "0"]}],
                    "description": "Send at any hour, whatever window is configured (in a form: `true`, `false`, `1` or `0`).",
                },
                "timezone": {
                    "type": "string",
                    "examples": ["Asia/Shanghai"],
                    "description": "The IANA time zone of numbers of no known zone. Default `[windows] timezone`, else UTC.",
                },
            },
        })
    }
}

impl SmsJob {
    /// Reads the job from a JSON object.
    pub fn from_json(map: &Map<String, Value>) -> Result<SmsJob, intake::Error> {
        let template_id = match map.get("template_id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                scalar(v).ok_or_else(|| invalid("template_id", "must be a string or a number"))?,
            ),
        };
        Ok(SmsJob {
            template_id,
            mobiles: list(map, "mobiles")?,
            content: optional_string(map, "content")?,
            callback_url: optional_string(map, "callback_url")?,
            max_cost: match map.get("max_cost") {
                None | Some(Value::Null) => None,
                Some(v) => Some(scalar(v).ok_or_else(|| invalid("max_cost", "must be a number"))?),
            },
            window: optional_string(map, "window")?,
            ignore_window: match map.get("ignore_window") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(b.to_string()),
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(invalid("ignore_window", "must be true or false")),
            },
            timezone: optional_string(map, "timezone")?,
        })
    }

    /// What the job says of its window; an error naming `ignore_window` when it is
    /// neither true nor false.
    pub fn window(&self) -> Result<JobWindow, intake::Error> {
        let ignore_window = match self.ignore_window.as_deref().map(str::trim) {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(invalid(
                    "ignore_window",
                    format!("must be true or false, not `{other}`"),
                ));
            }
        };
        Ok(JobWindow {
            window: self.window.clone(),
            ignore_window,
            timezone: self.timezone.clone(),
        })
    }

    /// The job's `max_cost` as a number; an error naming it when it is not one.
    pub fn max_cost(&self) -> Result<Option<f64>, intake::Error> {
        self.max_cost
            .as_deref()
            .map(|raw| {
                raw.trim()
                    .parse::<f64>()
                    .map_err(|_| invalid("max_cost", format!("must be a number, not `{raw}`")))
            })
            .transpose()
    }

    /// Reads the job from a form body as jQuery posts it: `mobiles[]=…` repeated,
    /// or `mobiles=a,b`.
    pub fn from_form(bytes: &[u8]) -> SmsJob {
        let mut job = SmsJob::default();
        for (key, value) in form_urlencoded::parse(bytes) {
            match key.as_ref() {
                "template_id" => job.template_id = Some(value.into_owned()),
                "content" => job.content = Some(value.into_owned()),
                "callback_url" => job.callback_url = Some(value.into_owned()),
                "max_cost" => job.max_cost = Some(value.into_owned()),
                "window" => job.window = Some(value.into_owned()),
                "ignore_window" => job.ignore_window = Some(value.into_owned()),
                "timezone" => job.timezone = Some(value.into_owned()),
                k if k == "mobiles" || (k.starts_with("mobiles[") && k.ends_with(']')) => {
                    split_list(&value, &mut job.mobiles)
                }
                _ => {}
            }
        }
        job
    }

    /// How its messages are made, and to whom. A `template_id` naming a stored SMS
    /// template (or, when the job names none, `fallback_template`, which must be
    /// stored) is rendered with `content` as its variable `content`; otherwise
    /// `content` is the text.
    pub async fn submission(
        self,
        intake: &Intake,
        fallback_template: Option<&str>,
    ) -> Result<(Body, Vec<RecipientSpec>), intake::Error> {
        if self.mobiles.is_empty() {
            return Err(invalid("mobiles", "must list at least one mobile"));
        }
        let stored = match self.template_id.as_deref() {
            Some(id) => intake.stored_sms_template(id).await?,
            None => fallback(intake, Channel::Sms, fallback_template).await?,
        };
        let mut vars = Map::new();
        let body = match (stored, self.content) {
            (Some(template), content) => {
                if let Some(content) = content {
                    vars.insert("content".into(), content.into());
                }
                Body::Template(template)
            }
            (None, Some(body)) => Body::Literal {
                subject: None,
                body,
            },
            (None, None) => {
                return Err(invalid(
                    "content",
                    "is required unless template_id names a stored template",
                ));
            }
        };
        Ok((body, recipients(self.mobiles, &vars)))
    }
}

impl EmailJob {
    /// Reads the job from a JSON object. `to_email` is one address, several
    /// separated by commas, or an array.
    pub fn from_json(map: &Map<String, Value>) -> Result<EmailJob, intake::Error> {
        Ok(EmailJob {
            from_email: optional_string(map, "from_email")?,
            to_email: list(map, "to_email")?,
            title: optional_string(map, "title")?,
            content: optional_string(map, "content")?,
        })
    }

    /// How its messages are made, and to whom: `fallback_template` (a stored
    /// e-mail template) rendered with the variables `title` and `content` when
    /// given; otherwise `title` is the subject and `content` the text.
    pub async fn submission(
        self,
        intake: &Intake,
        fallback_template: Option<&str>,
    ) -> Result<(Body, Vec<RecipientSpec>), intake::Error> {
        if self.to_email.is_empty() {
            return Err(invalid("to_email", "must name at least one address"));
        }
        let mut vars = Map::new();
        let body = match fallback(intake, Channel::Email, fallback_template).await? {
            Some(template) => {
                for (name, value) in [("title", self.title), ("content", self.content)] {
                    if let Some(value) = value {
                        vars.insert(name.into(), value.into());
                    }
                }
                Body::Template(template)
            }
            None => Body::Literal {
                subject: self.title,
                body: self
                    .content
                    .ok_or_else(|| invalid("content", "is required"))?,
            },
        };
        Ok((body, recipients(self.to_email, &vars)))
    }
}

/// The stored template `id` of `channel`, which must exist when named.
async fn fallback(
    intake: &Intake,
    channel: Channel,
    id: Option<&str>,
) -> Result<Option<TemplateSpec>, intake::Error> {
    let Some(id) = id else { return Ok(None) };
    let template = intake.stored_template(channel, id).await?;
    template.map(Some).ok_or_else(|| {
        invalid(
            "template_id",
            format!("no stored {channel} template `{id}`"),
        )
    })
}

fn recipients(addresses: Vec<String>, vars: &Map<String, Value>) -> Vec<RecipientSpec> {
    let vars = Vars::from(vars);
    addresses
        .into_iter()
        .map(|to| RecipientSpec {
            to,
            vars: vars.clone(),
            reference: None,
        })
        .collect()
}

impl Job {
    /// Reads one queue item: a JSON object that is Herald's batch (it has
    /// `recipients`), an SMS job (`mobiles`) or an e-mail job (`to_email`). With
    /// `channel` set, the queue carries only that channel: a classic job is read as
    /// that channel's, and a batch of another channel is refused. The error says
    /// what is wrong, for the dead-letter entry.
    pub fn parse(item: &[u8], channel: Option<Channel>) -> Result<Job, String> {
        let value: Value = serde_json::from_slice(item).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err("not a JSON object".into());
        };
        if map.contains_key("recipients") {
            let batch: BatchRequest = serde_json::from_value(Value::Object(map))
                .map_err(|e| format!("not a Herald batch: {e}"))?;
            if let Some(channel) = channel
                && batch.channel != channel
            {
                return Err(format!(
                    "channel: this queue carries {channel}, the batch is {}",
                    batch.channel
                ));
            }
            return Ok(Job::Batch(Box::new(batch)));
        }
        let kind = match channel {
            Some(channel) => channel,
            None if map.contains_key("mobiles") => Channel::Sms,
            None if map.contains_key("to_email") => Channel::Email,
            None => {
                return Err(
                    "neither an SMS job (`mobiles`), an e-mail job (`to_email`) nor a Herald batch (`recipients`)"
                        .into(),
                );
            }
        };
        let job = match kind {
            Channel::Sms => SmsJob::from_json(&map).map(Job::Sms),
            Channel::Email => EmailJob::from_json(&map).map(Job::Email),
        };
        job.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(item: &str, channel: Option<Channel>) -> Result<Job, String> {
        Job::parse(item.as_bytes(), channel)
    }

    #[test]
    fn a_jobs_max_cost_is_read_as_a_number_from_json_or_a_form_and_refused_otherwise() {
        let map = |v: Value| v.as_object().cloned().expect("an object");
        let json = SmsJob::from_json(&map(serde_json::json!({"mobiles": ["1"], "max_cost": 2.5})));
        assert_eq!(json.expect("read").max_cost().expect("a number"), Some(2.5));
        let form = SmsJob::from_form(b"mobiles=1&content=x&max_cost=0.75");
        assert_eq!(form.max_cost().expect("a number"), Some(0.75));
        let bad = SmsJob::from_form(b"mobiles=1&content=x&max_cost=lots");
        match bad.max_cost() {
            Err(intake::Error::Invalid { field, .. }) => assert_eq!(field, "max_cost"),
            other => panic!("expected max_cost refused, got {other:?}"),
        }
        assert_eq!(
            SmsJob::from_form(b"mobiles=1").max_cost().expect("none"),
            None
        );
    }

    #[test]
    fn a_jobs_window_is_read_from_json_or_a_form_and_a_bad_ignore_window_refused() {
        let map = |v: Value| v.as_object().cloned().expect("an object");
        let json = SmsJob::from_json(&map(serde_json::json!({
            "mobiles": ["1"],
            "window": "mon-fri 08:00-21:00",
            "timezone": "Asia/Shanghai",
        })))
        .expect("read");
        let window = json.window().expect("a window");
        assert_eq!(window.window.as_deref(), Some("mon-fri 08:00-21:00"));
        assert_eq!(window.timezone.as_deref(), Some("Asia/Shanghai"));
        assert!(!window.ignore_window);
        let ignoring = SmsJob::from_json(&map(
            serde_json::json!({"mobiles": ["1"], "ignore_window": true}),
        ));
        assert!(
            ignoring
                .expect("read")
                .window()
                .expect("read")
                .ignore_window
        );
        let form = SmsJob::from_form(b"mobiles=1&content=x&window=09%3A00-18%3A00&ignore_window=0");
        let window = form.window().expect("read");
        assert_eq!(window.window.as_deref(), Some("09:00-18:00"));
        assert!(!window.ignore_window);
        assert!(
            SmsJob::from_form(b"mobiles=1&ignore_window=1")
                .window()
                .expect("read")
                .ignore_window
        );
        for bad in [
            SmsJob::from_form(b"mobiles=1&ignore_window=sometimes")
                .window()
                .err(),
            SmsJob::from_json(&map(
                serde_json::json!({"mobiles": ["1"], "ignore_window": 2}),
            ))
            .err(),
        ] {
            match bad {
                Some(intake::Error::Invalid { field, .. }) => assert_eq!(field, "ignore_window"),
                other => panic!("expected ignore_window refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn jquery_form_arrays_and_comma_lists_are_both_read() {
        let r = SmsJob::from_form(
            b"template_id=7&mobiles%5B%5D=13800000001&mobiles%5B%5D=13800000002&content=Hi%20there",
        );
        assert_eq!(r.template_id.as_deref(), Some("7"));
        assert_eq!(r.mobiles, ["13800000001", "13800000002"]);
        assert_eq!(r.content.as_deref(), Some("Hi there"));
        let r = SmsJob::from_form(b"mobiles=1380000001,%201380000002&content=x");
        assert_eq!(r.mobiles, ["1380000001", "1380000002"]);
    }

    #[test]
    fn the_php_sms_job_is_read_with_numbers_or_strings_and_either_list_form() {
        let Ok(Job::Sms(job)) = parse(
            r#"{"template_id": 3, "mobiles": [13800000001, "13800000002"], "content": "x"}"#,
            None,
        ) else {
            panic!("an SMS job")
        };
        assert_eq!(job.template_id.as_deref(), Some("3"));
        assert_eq!(job.mobiles, ["13800000001", "13800000002"]);
        let Ok(Job::Sms(job)) = parse(
            r#"{"mobiles": "1380000001, 1380000002", "content": "x"}"#,
            None,
        ) else {
            panic!("an SMS job")
        };
        assert_eq!(job.mobiles, ["1380000001", "1380000002"]);
    }

    #[test]
    fn a_bad_mobile_names_its_index() {
        let err = parse(r#"{"mobiles": ["1", true]}"#, None).unwrap_err();
        assert_eq!(err, "mobiles[1]: must be a string or a number");
    }

    #[test]
    fn the_email_job_takes_one_address_or_a_list() {
        let Ok(Job::Email(job)) = parse(
            r#"{"from_email": "shop@example.com", "to_email": "li@example.com", "title": "Hi", "content": "Body"}"#,
            None,
        ) else {
            panic!("an e-mail job")
        };
        assert_eq!(job.to_email, ["li@example.com"]);
        assert_eq!(job.from_email.as_deref(), Some("shop@example.com"));
        assert_eq!(job.title.as_deref(), Some("Hi"));
        let Ok(Job::Email(job)) =
            parse(r#"{"to_email": ["a@example.com", "b@example.com"]}"#, None)
        else {
            panic!("an e-mail job")
        };
        assert_eq!(job.to_email.len(), 2);
    }

    #[test]
    fn a_herald_batch_is_read_and_must_match_the_queues_channel() {
        let batch = r#"{"channel": "sms", "template": {"body": "Hi"}, "recipients": [{"to": "+8613800000001"}]}"#;
        assert!(matches!(parse(batch, None), Ok(Job::Batch(_))));
        assert!(matches!(
            parse(batch, Some(Channel::Sms)),
            Ok(Job::Batch(_))
        ));
        let err = parse(batch, Some(Channel::Email)).unwrap_err();
        assert!(err.starts_with("channel:"), "{err}");
        let err = parse(r#"{"channel": "sms", "recipients": [], "colour": 1}"#, None).unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn items_that_are_no_job_say_why() {
        assert!(parse("not json", None).unwrap_err().starts_with("not JSON"));
        assert_eq!(parse("[1]", None).unwrap_err(), "not a JSON object");
        assert!(
            parse(r#"{"mobile": "1"}"#, None)
                .unwrap_err()
                .starts_with("neither")
        );
        // A queue of one channel reads every classic job as that channel's.
        let Ok(Job::Sms(job)) = parse(r#"{"mobile": "1"}"#, Some(Channel::Sms)) else {
            panic!("read as an SMS job")
        };
        assert!(job.mobiles.is_empty());
    }
}

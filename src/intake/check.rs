//! Checks and renders each recipient of a chunk, on kept threads for big ones.

use std::sync::{Arc, LazyLock, Mutex};

use super::*;
use crate::domain::Channel;
use crate::recipient::{self, Rules};
use crate::sms::{self, Segments};
use crate::template::{RenderError, Template};

pub(super) enum Renderer {
    Template {
        template: Box<Template>,
        /// Keep each rendered body with its message; without it, a body is
        /// rendered only to be checked and measured.
        keep_body: bool,
    },
    Literal {
        subject: Option<String>,
        body: String,
    },
}

/// A recipient ready to store.
pub(super) struct Checked {
    pub(super) to: String,
    /// Who it reaches, for duplicates and suppressions, where that is not `to`.
    pub(super) key: Option<String>,
    /// [`key_hash`] of the key (`key`, else `to`).
    pub(super) hash: u128,
    /// The SMS body's encoding and segments (`None` for e-mail).
    pub(super) segments: Option<Segments>,
    pub(super) reference: Option<String>,
    pub(super) subject: Option<String>,
    pub(super) body: String,
    pub(super) vars: Option<String>,
}

/// Below this many recipients, checking on one thread is faster than splitting.
pub(super) const PARALLEL_FROM: usize = 2_000;

/// Checks and renders every recipient, in order; large batches are split across
/// the machine's cores (rendering is most of the work): one part is checked on
/// the calling thread, the others by [`checkers`].
pub(super) fn check_all(
    renderer: &Arc<Renderer>,
    channel: Channel,
    rules: Rules,
    recipients: Vec<RecipientSpec>,
) -> Vec<Result<Checked, Rejection>> {
    let check_part = move |renderer: &Renderer, part: Vec<RecipientSpec>| {
        part.into_iter()
            .map(|r| check(renderer, channel, &rules, r))
            .collect::<Vec<_>>()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = checkers();
    if recipients.len() < PARALLEL_FROM || threads < 2 || pool.is_none() {
        return check_part(renderer, recipients);
    }
    let chunk = recipients.len().div_ceil(threads);
    let mut recipients = recipients.into_iter();
    let mine: Vec<RecipientSpec> = recipients.by_ref().take(chunk).collect();
    let handed: Vec<_> = (1..threads)
        .map(|_| {
            let part: Vec<RecipientSpec> = recipients.by_ref().take(chunk).collect();
            let (done, answer) = std::sync::mpsc::sync_channel(1);
            let renderer = renderer.clone();
            let job: CheckJob = Box::new(move || {
                let _ = done.send(check_part(&renderer, part));
            });
            let refused = pool.and_then(|pool| {
                let jobs = pool.lock().unwrap_or_else(|p| p.into_inner());
                jobs.send(job).err()
            });
            (answer, refused)
        })
        .collect();
    let mut checked = check_part(renderer, mine);
    for (answer, refused) in handed {
        if let Some(std::sync::mpsc::SendError(job)) = refused {
            // No checker is left to take it: check it here.
            job();
        }
        checked.extend(answer.recv().expect("checking recipients does not panic"));
    }
    checked
}

pub(super) type CheckJob = Box<dyn FnOnce() + Send>;

/// Threads that check parts of big batches, started at the first and kept: a
/// thread made per part paid for a new stack and allocator heap each time, and
/// for freeing from other threads what it had allocated. `None` when they cannot
/// be started; batches are then checked on their caller's thread.
pub(super) fn checkers() -> Option<&'static Mutex<std::sync::mpsc::Sender<CheckJob>>> {
    static CHECKERS: LazyLock<Option<Mutex<std::sync::mpsc::Sender<CheckJob>>>> =
        LazyLock::new(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let (jobs, queue) = std::sync::mpsc::channel::<CheckJob>();
            let queue = Arc::new(Mutex::new(queue));
            let mut started = 0;
            for n in 1..threads {
                let queue = queue.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("herald-check-{n}"))
                    .spawn(move || {
                        loop {
                            let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            match job {
                                Ok(job) => job(),
                                Err(_) => return,
                            }
                        }
                    });
                started += usize::from(spawned.is_ok());
            }
            (started > 0).then(|| Mutex::new(jobs))
        });
    CHECKERS.as_ref()
}

/// Checks one recipient. A rejection's `index` is filled in by the caller.
pub(super) fn check(
    renderer: &Renderer,
    channel: Channel,
    rules: &Rules,
    recipient: RecipientSpec,
) -> Result<Checked, Rejection> {
    let refuse = |reason: &str, variable: Option<String>, detail: String| Rejection {
        index: 0,
        to: recipient.to.clone(),
        reason: reason.into(),
        variable,
        first_index: None,
        detail,
    };
    let (to, key) = recipient::normalize_to(channel, &recipient.to, rules)
        .map_err(|e| refuse("invalid_address", None, e.0))?;
    if let Some(r) = &recipient.reference
        && r.len() > MAX_REF_BYTES
    {
        let detail = format!("ref is {} bytes, the limit is {MAX_REF_BYTES}", r.len());
        return Err(refuse("invalid_ref", None, detail));
    }
    let measure = |body: &str| (channel == Channel::Sms).then(|| sms::measure(body));
    let (subject, body, segments) = match renderer {
        Renderer::Literal { subject, body } => (subject.clone(), body.clone(), measure(body)),
        Renderer::Template {
            template,
            keep_body,
            ..
        } => {
            thread_local! {
                /// Bodies rendered only to be checked, one after another.
                static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
            }
            let rendered = if *keep_body {
                template
                    .render(&recipient.vars)
                    .map(|r| (r.subject, measure(&r.body), r.body))
            } else {
                SCRATCH.with_borrow_mut(|scratch| {
                    let subject = template.render_into(&recipient.vars, scratch)?;
                    Ok((subject, measure(scratch), String::new()))
                })
            };
            match rendered {
                Ok((subject, segments, body)) => (subject, body, segments),
                Err(RenderError::MissingVariable(name)) => {
                    let detail = format!(
                        "the template uses `{name}`, which this recipient's vars do not set"
                    );
                    return Err(refuse("missing_variable", Some(name), detail));
                }
                Err(RenderError::Failed(detail)) => {
                    return Err(refuse("render_failed", None, detail));
                }
            }
        }
    };
    // A template's message is stored with its vars, from which the store renders
    // its body again at claim (and some providers render their own template).
    let vars = matches!(renderer, Renderer::Template { .. }).then(|| recipient.vars.into_json());
    Ok(Checked {
        segments,
        hash: key_hash(key.as_deref().unwrap_or(&to)),
        to,
        key,
        reference: recipient.reference,
        subject,
        body,
        vars,
    })
}

/// How far in the past a `send_at` may be (clocks disagree; a batch due a moment
/// ago is sent now) and how far ahead, in milliseconds.
const SEND_AT_PAST_MS: i64 = 24 * 3_600_000;
const SEND_AT_AHEAD_MS: i64 = 10 * 366 * 24 * 3_600_000;

/// A batch's `send_at` in Unix milliseconds: an RFC 3339 time from a day ago to ten
/// years ahead of `now`. A time outside that is a mistake (a year `0000` would be
/// sent at once), refused saying so.
pub(super) fn send_at(s: &str, now: i64) -> Result<i64, Error> {
    let out_of_range = || {
        invalid(
            "send_at",
            format!("`{s}` is not between a day ago and ten years ahead: omit send_at to send now"),
        )
    };
    let at = s
        .parse::<Timestamp>()
        .map_err(|e| match s.get(..4).and_then(|y| y.parse::<u16>().ok()) {
            Some(year) if !(1..=9998).contains(&year) => out_of_range(),
            _ => invalid(
                "send_at",
                format!("`{s}` is not an RFC 3339 time with an offset: {e}"),
            ),
        })?
        .as_millisecond();
    if at < now - SEND_AT_PAST_MS || at > now + SEND_AT_AHEAD_MS {
        return Err(out_of_range());
    }
    Ok(at)
}

//! Renders the bodies of claimed messages of a batch stored with its template.
//!
//! Every engine stores such a batch's template once and each message's variables
//! rather than its body (about half the bytes a message), so the body is made
//! again here, when the message is claimed, exactly as intake made it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{BatchTemplate, Claimed, Outcome, Settlement};
use crate::domain::BatchId;
use crate::template::{RenderError, Template, Vars};

/// How many batches' compiled templates a handle keeps; past it they are
/// dropped and compiled again as their messages are claimed.
const MAX_COMPILED: usize = 256;

/// Compiled templates by batch, shared by a handle's clones; a template that
/// does not compile is kept as why.
#[derive(Clone, Default)]
pub(super) struct Compiled(Arc<Mutex<HashMap<BatchId, Compile>>>);

/// A template compiled, or why it does not compile.
type Compile = Result<Arc<Template>, String>;

impl Compiled {
    /// Renders the body of each of `claimed` that has a template, and takes away the
    /// variables of every one whose batch names no stored template: only a provider
    /// that renders a stored template of its own reads them. A message that cannot be
    /// rendered (which only a store edited by hand can cause) is taken out of
    /// `claimed` and comes back as a settlement that fails it with why.
    pub(super) fn render(&self, claimed: &mut Vec<Claimed>) -> Vec<Settlement> {
        let mut failed = Vec::new();
        claimed.retain_mut(|c| {
            let Some(source) = c.template.take() else {
                if c.template_id.is_none() {
                    c.vars = None;
                }
                return true;
            };
            match self
                .template(c.batch_id, &source)
                .and_then(|t| render(&t, c))
            {
                Ok(body) => {
                    c.body = body;
                    if c.template_id.is_none() {
                        c.vars = None;
                    }
                    true
                }
                Err(why) => {
                    tracing::error!(
                        message = %c.id,
                        reason = %why,
                        "a claimed message cannot be rendered; it fails"
                    );
                    failed.push(Settlement {
                        lease: c.lease,
                        outcome: Outcome::Failed {
                            error: format!("cannot be rendered: {why}"),
                        },
                        sent_by: None,
                    });
                    false
                }
            }
        });
        failed
    }

    /// Batch `id`'s template, compiled from `source` the first time; the lock is
    /// held for the look-up (and a compile), never for a render.
    fn template(&self, id: BatchId, source: &BatchTemplate) -> Compile {
        let mut compiled = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if compiled.len() >= MAX_COMPILED && !compiled.contains_key(&id) {
            compiled.clear();
        }
        compiled
            .entry(id)
            .or_insert_with(|| compile(source))
            .clone()
    }
}

fn compile(source: &BatchTemplate) -> Compile {
    Template::compile(&source.body, source.subject.as_deref())
        .map(Arc::new)
        .map_err(|e| format!("its batch's template does not compile: {}", e.message))
}

fn render(template: &Template, claimed: &Claimed) -> Result<String, String> {
    let vars = claimed
        .vars
        .clone()
        .ok_or_else(|| "it has no variables".to_owned())?;
    let vars =
        Vars::from_json(vars).map_err(|e| format!("its variables are not a JSON object: {e}"))?;
    let rendered = template.render(&vars).map_err(|e| match e {
        RenderError::MissingVariable(name) => format!("its variables lack `{name}`"),
        RenderError::Failed(why) => format!("its template no longer renders: {why}"),
    })?;
    Ok(rendered.body)
}

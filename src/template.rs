//! Message templates: compiled once per batch, rendered once per recipient with
//! minijinja in strict mode. A template can neither read files (no loader is set)
//! nor run for ever (every render has a fuel budget and an output cap).

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectExt, Serde};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use self::plain::Plain;
pub use self::vars::{TOO_DEEP, Vars};

mod plain;
mod vars;

/// Instructions one render may execute before it is stopped.
const FUEL: u64 = 100_000;
/// The largest template source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;
/// The largest rendered subject or body, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// Globals minijinja provides; they are never a recipient's missing variable.
const BUILTIN_GLOBALS: [&str; 4] = ["range", "dict", "debug", "namespace"];

/// A template that failed to compile; `field` names the part of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub field: &'static str,
    pub message: String,
}

/// A recipient whose message could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The template uses a variable this recipient does not supply.
    MissingVariable(String),
    /// Anything else: a type error, a filter failure, fuel or size exhausted.
    Failed(String),
}

/// One recipient's rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: Option<String>,
    pub body: String,
}

/// A compiled body template and optional subject template.
pub struct Template {
    env: Environment<'static>,
    has_subject: bool,
    /// Top-level names the templates read; used to name a missing variable.
    variables: BTreeSet<String>,
    /// The body's and the subject's plain forms, when they have one.
    plain_body: Option<Plain>,
    plain_subject: Option<Plain>,
}

impl Template {
    /// Compiles `body` (and `subject`, for e-mail). Errors name the failing field.
    /// A subject is one line: a line break in its source would be in every
    /// message's subject, which no message may have (but a final `\n`, which a
    /// template drops).
    pub fn compile(body: &str, subject: Option<&str>) -> Result<Self, CompileError> {
        if subject.is_some_and(|s| s.strip_suffix('\n').unwrap_or(s).contains(['\r', '\n'])) {
            return Err(CompileError {
                field: "template.subject",
                message: "must be one line, without a line break".into(),
            });
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);

        let mut parts = vec![("template.body", "body", body)];
        if let Some(subject) = subject {
            parts.push(("template.subject", "subject", subject));
        }
        let mut variables = BTreeSet::new();
        let mut plain = Vec::new();
        for (field, name, source) in parts {
            if source.len() > MAX_SOURCE_BYTES {
                return Err(CompileError {
                    field,
                    message: format!("is {} bytes, the limit is {MAX_SOURCE_BYTES}", source.len()),
                });
            }
            env.add_template_owned(name, source.to_owned())
                .map_err(|e| CompileError {
                    field,
                    message: e.to_string(),
                })?;
            let tmpl = env.get_template(name).expect("template was just added");
            variables.extend(tmpl.undeclared_variables(false));
            plain.push(Plain::of(&tmpl));
        }
        variables.retain(|v| !BUILTIN_GLOBALS.contains(&v.as_str()));
        let mut plain = plain.into_iter();
        Ok(Template {
            has_subject: subject.is_some(),
            variables,
            plain_body: plain.next().flatten(),
            plain_subject: plain.next().flatten(),
            env,
        })
    }

    /// The top-level variables the template reads, sorted.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(String::as_str)
    }

    /// Renders one recipient's message from its variables.
    pub fn render(&self, vars: &Vars) -> Result<Rendered, RenderError> {
        let mut body = String::new();
        let subject = self.render_into(vars, &mut body)?;
        Ok(Rendered { subject, body })
    }

    /// Renders one recipient's message body into `body` (emptied first, its
    /// capacity kept for the next) and answers the subject, when there is one.
    pub fn render_into(
        &self,
        vars: &Vars,
        body: &mut String,
    ) -> Result<Option<String>, RenderError> {
        let plain = self.plain_body.is_some() || self.plain_subject.is_some();
        let mut read = Read {
            vars,
            fields: plain.then(|| vars.fields()),
            context: None,
        };
        self.render_one("body", self.plain_body.as_ref(), &mut read, body)?;
        if !self.has_subject {
            return Ok(None);
        }
        let mut subject = String::new();
        self.render_one(
            "subject",
            self.plain_subject.as_ref(),
            &mut read,
            &mut subject,
        )?;
        if subject.contains(['\r', '\n']) {
            return Err(RenderError::Failed(
                "the rendered subject contains a line break".into(),
            ));
        }
        Ok(Some(subject))
    }

    /// Renders the part `name` into `out` by its plain form when it has one and
    /// that can, else by minijinja.
    fn render_one(
        &self,
        name: &str,
        plain: Option<&Plain>,
        read: &mut Read<'_>,
        out: &mut String,
    ) -> Result<(), RenderError> {
        out.clear();
        if let (Some(plain), Some(fields)) = (plain, &read.fields)
            && plain.render(fields, out)
        {
            return Ok(());
        }
        let context = read
            .context
            .get_or_insert_with(|| Arc::new(Context(read.vars.to_map())));
        *out = self.render_minijinja(name, context)?;
        Ok(())
    }

    fn render_minijinja(&self, name: &str, context: &Arc<Context>) -> Result<String, RenderError> {
        let tmpl = self
            .env
            .get_template(name)
            .expect("compiled in Template::compile");
        let ctx = minijinja::Value::from_dyn_object(context.clone());
        let out = tmpl.render(ctx).map_err(|e| self.explain(&e, &context.0))?;
        if out.len() > MAX_OUTPUT_BYTES {
            return Err(RenderError::Failed(format!(
                "the rendered {name} is {} bytes, the limit is {MAX_OUTPUT_BYTES}",
                out.len()
            )));
        }
        Ok(out)
    }

    fn explain(&self, err: &minijinja::Error, vars: &Map<String, Value>) -> RenderError {
        // In strict mode a variable the recipient lacks fails the render, as an
        // undefined error or (inside an expression) an invalid operation: either
        // way, the absent variable is the cause worth naming.
        let fuel = err.kind() == minijinja::ErrorKind::OutOfFuel;
        if !fuel && let Some(missing) = self.variables.iter().find(|v| !vars.contains_key(*v)) {
            return RenderError::MissingVariable(missing.clone());
        }
        let mut message = err.kind().to_string();
        if let Some(detail) = err.detail() {
            message = format!("{message}: {detail}");
        }
        if let Some(line) = err.line() {
            message = format!("{message} (line {line})");
        }
        RenderError::Failed(message)
    }
}

/// A recipient's variables as they are read in one render: borrowed from their
/// text by a plain render, parsed into a map only when minijinja renders.
struct Read<'a> {
    vars: &'a Vars,
    /// Read only when the template has a plain form to render with them.
    fields: Option<vars::Fields<'a>>,
    context: Option<Arc<Context>>,
}

/// One recipient's variables as minijinja reads them: a variable is converted to
/// a template value when the template reads it, and only then (a recipient's vars
/// may hold many the template never uses).
#[derive(Debug)]
struct Context(Map<String, Value>);

impl Object for Context {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        self.0.get(key.as_str()?).map(template_value)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|vars| {
            Box::new(vars.0.keys().map(|k| minijinja::Value::from(k.as_str())))
        })
    }
}

/// `value` as a template value. Scalars are converted directly (a short string
/// is kept inline, with no allocation); arrays and objects through serde.
fn template_value(value: &Value) -> minijinja::Value {
    match value {
        Value::String(s) => minijinja::Value::from(s.as_str()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Null => minijinja::Value::from(()),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => minijinja::Value::from(i),
            (None, Some(u)) => minijinja::Value::from(u),
            _ => minijinja::Value::from(Serde(value)),
        },
        Value::Array(_) | Value::Object(_) => minijinja::Value::from(Serde(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Vars {
        Vars::from(v.as_object().unwrap())
    }

    #[test]
    fn renders_body_and_subject_per_recipient() {
        let t = Template::compile("Hello {{name}}, code {{code}}", Some("For {{name}}")).unwrap();
        let r = t
            .render(&vars(json!({"name": "Li", "code": 1234})))
            .unwrap();
        assert_eq!(r.body, "Hello Li, code 1234");
        assert_eq!(r.subject.as_deref(), Some("For Li"));
    }

    #[test]
    fn a_subject_with_a_line_break_is_refused_when_compiled() {
        for subject in [
            "Hi\nthere",
            "Hi\r",
            "Hi\r\n",
            "Hi\n\n",
            "{# a\ncomment #}Hi",
        ] {
            let err = Template::compile("ok", Some(subject)).err().unwrap();
            assert_eq!(err.field, "template.subject");
            assert!(err.message.contains("one line"), "{err:?}");
        }
        // A template drops its final line break.
        let t = Template::compile("ok", Some("Hi {{name}}\n")).unwrap();
        let r = t.render(&vars(json!({"name": "Li"}))).unwrap();
        assert_eq!(r.subject.as_deref(), Some("Hi Li"));
    }

    #[test]
    fn a_missing_variable_is_named() {
        let t = Template::compile("Hello {{name}}, code {{code}}", None).unwrap();
        let err = t.render(&vars(json!({"name": "Li"}))).unwrap_err();
        assert_eq!(err, RenderError::MissingVariable("code".into()));
    }

    #[test]
    fn a_syntax_error_names_the_field() {
        let err = Template::compile("ok", Some("{% if %}")).err().unwrap();
        assert_eq!(err.field, "template.subject");
    }

    #[test]
    fn endless_loops_run_out_of_fuel() {
        let t = Template::compile(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            None,
        )
        .unwrap();
        match t.render(&Vars::default()) {
            Err(RenderError::Failed(m)) => assert!(m.contains("fuel"), "{m}"),
            other => panic!("expected fuel exhaustion, got {other:?}"),
        }
    }

    #[test]
    fn templates_cannot_include_files() {
        let err = Template::compile("{% include '/etc/passwd' %}", None)
            .err()
            .unwrap();
        assert!(err.message.contains("include"), "{}", err.message);
    }

    #[test]
    fn variables_read_as_serde_would_convert_them() {
        let long = "a string longer than any kept inline, in 用户 text".repeat(3);
        for v in [
            json!("短"),
            json!(long),
            json!(""),
            json!(true),
            json!(null),
            json!(0),
            json!(-42),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(2.5),
            json!([1, "a", null]),
            json!({"k": {"n": 1}}),
        ] {
            let direct = template_value(&v);
            let serde = minijinja::Value::from(Serde(&v));
            assert_eq!(direct, serde, "{v}");
            assert_eq!(direct.kind(), serde.kind(), "{v}");
            assert_eq!(direct.to_string(), serde.to_string(), "{v}");
        }
    }

    #[test]
    fn html_is_not_escaped_in_plain_messages() {
        let t = Template::compile("{{a}}", None).unwrap();
        assert_eq!(t.render(&vars(json!({"a": "<b>&"}))).unwrap().body, "<b>&");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Any source is compiled or refused, and a compiled one renders or says
        /// why not, for vars holding the names it reads: never a panic.
        #[test]
        fn any_template_compiles_or_is_refused_without_a_panic(
            source in "(\\{\\{|\\}\\}|\\{%|%\\}|\\{#|#\\}|[ a-z.|()\\[\\]'\"0-9-]|é){0,40}"
        ) {
            if let Ok(t) = Template::compile(&source, Some(&source)) {
                let names: serde_json::Map<String, Value> = t
                    .variables()
                    .map(|name| (name.to_owned(), json!([1, {"a": "x"}])))
                    .collect();
                let _ = t.render(&Vars::from(&names));
            }
        }
    }
}

//! Plain templates: the instructions minijinja compiled a template to, run
//! without its machine when every one is of the few kinds a message template
//! mostly uses — text, variables, `if` / `elif` / `else` on comparisons of
//! strings, integers and booleans, `and`, `or`, `not`. A pre-flight renders every
//! recipient's message, and minijinja spends most of a short render setting up a
//! state and a context; this needs neither.
//!
//! It gives way rather than guess: a render that meets anything else (a missing
//! variable, a float, a comparison of different kinds, output near the fuel or
//! size limit) gives up, and the template is rendered by minijinja, which also
//! words every error. Where it answers, it answers what minijinja renders; a
//! property test holds it to that.

use minijinja::machinery::Instruction;
use minijinja::value::ValueKind;

use super::vars::{Field, Fields};
use super::{FUEL, MAX_OUTPUT_BYTES};

/// minijinja's fuel units: each fuel is 64 units, each instruction run costs 64
/// and each byte written 1 (`vm/fuel.rs`).
const UNITS_PER_FUEL: u64 = 64;
const INSTRUCTION_UNITS: u64 = 64;

/// A compiled template of plain steps only.
#[derive(Debug)]
pub(super) struct Plain {
    steps: Vec<Step>,
    /// Bytes of text the template holds: a first guess at a render's size.
    text_bytes: usize,
}

/// One of minijinja's instructions, of the kinds [`Plain`] runs.
#[derive(Debug)]
enum Step {
    Text(String),
    Lookup(String),
    Const(Const),
    Emit,
    Eq,
    Ne,
    Not,
    Jump(usize),
    JumpIfFalse(usize),
    JumpIfFalseOrPop(usize),
    JumpIfTrueOrPop(usize),
}

#[derive(Debug)]
enum Const {
    Str(String),
    Int(i128),
    Bool(bool),
}

/// A value on the stack while rendering: a recipient's or a constant, borrowed.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Str(&'a str),
    Int(i128),
    Bool(bool),
}

impl Scalar<'_> {
    /// Jinja's truth, for the kinds there are here.
    fn is_true(self) -> bool {
        match self {
            Scalar::Str(s) => !s.is_empty(),
            Scalar::Int(i) => i != 0,
            Scalar::Bool(b) => b,
        }
    }

    /// `==` between values of one kind; `None` between kinds, which minijinja
    /// compares by its own coercions.
    fn equals(self, other: Scalar<'_>) -> Option<bool> {
        match (self, other) {
            (Scalar::Str(a), Scalar::Str(b)) => Some(a == b),
            (Scalar::Int(a), Scalar::Int(b)) => Some(a == b),
            (Scalar::Bool(a), Scalar::Bool(b)) => Some(a == b),
            _ => None,
        }
    }
}

impl Plain {
    /// The plain form of a compiled template's instructions; `None` when any is of
    /// another kind, or jumps backwards (only loops do: a plain template runs each
    /// step at most once).
    pub(super) fn of(tmpl: &minijinja::Template<'_, '_>) -> Option<Plain> {
        let compiled = minijinja::machinery::get_compiled_template(tmpl);
        if !compiled.blocks.is_empty() {
            return None;
        }
        let mut steps = Vec::new();
        let mut text_bytes = 0;
        while let Some(instruction) = compiled.instructions.get(u32::try_from(steps.len()).ok()?) {
            let here = steps.len();
            let forward = |target: &u32| {
                let target = usize::try_from(*target).ok()?;
                (target > here).then_some(target)
            };
            steps.push(match instruction {
                Instruction::EmitRaw(text) => {
                    text_bytes += text.len();
                    Step::Text((*text).to_owned())
                }
                Instruction::Lookup(name) => Step::Lookup((*name).to_owned()),
                Instruction::LoadConst(value) => Step::Const(match value.kind() {
                    ValueKind::String => Const::Str(value.as_str()?.to_owned()),
                    ValueKind::Bool => Const::Bool(value.is_true()),
                    ValueKind::Number if value.is_integer() => {
                        Const::Int(i128::try_from(value.clone()).ok()?)
                    }
                    _ => return None,
                }),
                Instruction::Emit => Step::Emit,
                Instruction::Eq => Step::Eq,
                Instruction::Ne => Step::Ne,
                Instruction::Not => Step::Not,
                Instruction::Jump(t) => Step::Jump(forward(t)?),
                Instruction::JumpIfFalse(t) => Step::JumpIfFalse(forward(t)?),
                Instruction::JumpIfFalseOrPop(t) => Step::JumpIfFalseOrPop(forward(t)?),
                Instruction::JumpIfTrueOrPop(t) => Step::JumpIfTrueOrPop(forward(t)?),
                _ => return None,
            });
        }
        Some(Plain { steps, text_bytes })
    }

    /// Appends the template rendered with `vars` to `out`, as minijinja renders it,
    /// and answers true; false when this render needs minijinja (see the module's
    /// notes), with `out` then holding part of it.
    pub(super) fn render(&self, vars: &Fields<'_>, out: &mut String) -> bool {
        self.run(vars, out).is_some()
    }

    fn run(&self, vars: &Fields<'_>, out: &mut String) -> Option<()> {
        let start = out.len();
        out.reserve(self.text_bytes + 32);
        let mut stack = Stack::default();
        let mut units = 0u64;
        let mut pc = 0;
        while let Some(step) = self.steps.get(pc) {
            pc += 1;
            units += INSTRUCTION_UNITS;
            match step {
                Step::Text(text) => out.push_str(text),
                Step::Lookup(name) => stack.push(scalar(vars.get(name)?)?)?,
                Step::Const(c) => stack.push(match c {
                    Const::Str(s) => Scalar::Str(s),
                    Const::Int(i) => Scalar::Int(*i),
                    Const::Bool(b) => Scalar::Bool(*b),
                })?,
                Step::Emit => match stack.pop()? {
                    Scalar::Str(s) => out.push_str(s),
                    Scalar::Int(i) => {
                        use std::fmt::Write as _;
                        write!(out, "{i}").ok()?;
                    }
                    // minijinja writes `true` / `false`; rare enough to leave to it.
                    Scalar::Bool(_) => return None,
                },
                Step::Eq | Step::Ne => {
                    let (b, a) = (stack.pop()?, stack.pop()?);
                    let equal = a.equals(b)?;
                    stack.push(Scalar::Bool(equal == matches!(step, Step::Eq)))?;
                }
                Step::Not => {
                    let a = stack.pop()?;
                    stack.push(Scalar::Bool(!a.is_true()))?;
                }
                Step::Jump(target) => pc = *target,
                Step::JumpIfFalse(target) => {
                    if !stack.pop()?.is_true() {
                        pc = *target;
                    }
                }
                Step::JumpIfFalseOrPop(target) => {
                    if stack.last()?.is_true() {
                        stack.pop();
                    } else {
                        pc = *target;
                    }
                }
                Step::JumpIfTrueOrPop(target) => {
                    if stack.last()?.is_true() {
                        pc = *target;
                    } else {
                        stack.pop();
                    }
                }
            }
        }
        // What minijinja would charge is at most this; near the budget or the size
        // limit, let minijinja decide and word the error.
        let written = out.len() - start;
        units += written as u64;
        (units < FUEL * UNITS_PER_FUEL / 2 && written <= MAX_OUTPUT_BYTES).then_some(())
    }
}

/// The values of a render in progress, without allocating: the expressions of
/// message templates are shallow, and a deeper one is left to minijinja.
struct Stack<'a> {
    values: [Scalar<'a>; 16],
    len: usize,
}

impl Default for Stack<'_> {
    fn default() -> Self {
        Stack {
            values: [Scalar::Bool(false); 16],
            len: 0,
        }
    }
}

impl<'a> Stack<'a> {
    fn push(&mut self, value: Scalar<'a>) -> Option<()> {
        *self.values.get_mut(self.len)? = value;
        self.len += 1;
        Some(())
    }

    fn pop(&mut self) -> Option<Scalar<'a>> {
        self.len = self.len.checked_sub(1)?;
        Some(self.values[self.len])
    }

    fn last(&self) -> Option<Scalar<'a>> {
        self.values.get(self.len.checked_sub(1)?).copied()
    }
}

/// A recipient's variable as a [`Scalar`]; `None` for the kinds left to minijinja
/// (floats, null, arrays, objects).
fn scalar<'a>(value: &'a Field<'_>) -> Option<Scalar<'a>> {
    match value {
        Field::Str(s) => Some(Scalar::Str(s)),
        Field::Bool(b) => Some(Scalar::Bool(*b)),
        Field::Int(i) => Some(Scalar::Int(*i)),
        Field::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use serde_json::json;

    use super::super::{Context, Template, Vars};

    fn context(vars: &Vars) -> Arc<Context> {
        Arc::new(Context(vars.to_map()))
    }

    // `range` is also a global: a recipient's variable of that name wins over it.
    const NAMES: &[&str] = &["a", "b", "lang", "name", "range"];

    /// A constant or a variable, as template source.
    fn atom() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(NAMES).prop_map(str::to_owned),
            1 => prop::sample::select(&[
                "\"zh\"", "\"\"", "'x y'", "0", "3", "-2", "true", "false", "none", "2.5",
                "18446744073709551615",
            ][..])
            .prop_map(str::to_owned),
        ]
    }

    /// An expression of the kinds a plain template runs, now and then one it does not.
    fn expression() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            20 => atom(),
            10 => (atom(), prop::sample::select(&["==", "!="][..]), atom())
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            1 => (atom(), prop::sample::select(&["<", "~", "in"][..]), atom())
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            1 => atom().prop_map(|a| format!("{a}|upper")),
        ];
        leaf.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| format!("not {e}")),
                (
                    inner.clone(),
                    prop::sample::select(&["and", "or"][..]),
                    inner
                )
                    .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            ]
        })
    }

    /// Template text: the characters around tags, with `{` only where it opens none.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(
                &[
                    "a", "Z", " ", "\n", "\r\n", "}", "%", "-", "#", "{ ", "用户", "é", ".",
                ][..],
            ),
            0..6,
        )
        .prop_map(|parts| parts.concat())
    }

    /// A template of text, `{{ … }}` and `{% if %}` blocks, with whitespace
    /// control, comments and loops now and then.
    fn template() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            20 => text(),
            20 => (expression(), prop::sample::select(&["{{ ", "{{", "{{- "][..]), prop::sample::select(&[" }}", "}}", " -}}"][..]))
                .prop_map(|(e, open, close)| format!("{open}{e}{close}")),
            2 => Just("{# a comment #}".to_owned()),
            1 => Just("{% for i in [1, 2] %}{{ i }}{% endfor %}".to_owned()),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(|parts| parts.concat()),
                (
                    expression(),
                    inner.clone(),
                    prop::option::of((expression(), inner.clone())),
                    prop::option::of(inner),
                )
                    .prop_map(|(cond, then, elif, otherwise)| {
                        let mut t = format!("{{% if {cond} %}}{then}");
                        if let Some((cond, body)) = elif {
                            t += &format!("{{% elif {cond} %}}{body}");
                        }
                        if let Some(body) = otherwise {
                            t += &format!("{{%- else %}}{body}");
                        }
                        t + "{% endif %}"
                    }),
            ]
        })
    }

    /// A recipient's variables: each name mostly a string or an integer, now and
    /// then absent or of a kind left to minijinja.
    fn vars() -> impl Strategy<Value = Vars> {
        let value = prop_oneof![
            12 => prop::sample::select(vec![
                json!("zh"),
                json!(""),
                json!("x y"),
                json!("用户 {{ a }}"),
                json!("say \"hi\"\n"),
                json!(0),
                json!(3),
                json!(-2),
                json!(u64::MAX),
                json!(i64::MIN),
            ])
            .prop_map(Some),
            1 => prop::sample::select(vec![json!(true), json!(false), json!(2.5), json!(null), json!([1])])
                .prop_map(Some),
            1 => Just(None),
        ];
        prop::collection::vec(value, NAMES.len()).prop_map(|values| {
            let map = NAMES
                .iter()
                .zip(values)
                .filter_map(|(name, v)| Some(((*name).to_owned(), v?)))
                .collect();
            Vars::from(&map)
        })
    }

    #[test]
    fn a_plain_render_is_what_minijinja_renders() {
        use proptest::test_runner::{Config, TestRunner};
        const CASES: u32 = 2048;
        let answered = std::sync::atomic::AtomicU32::new(0);
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        let cases = (
            template(),
            prop::sample::select(&["", "\n", "\n\n"][..]),
            vars(),
        );
        runner
            .run(&cases, |(source, trailing, vars)| {
                let source = source + trailing;
                let Ok(t) = Template::compile(&source, None) else {
                    return Ok(());
                };
                let mut plain = String::new();
                if t.plain_body
                    .as_ref()
                    .is_some_and(|p| p.render(&vars.fields(), &mut plain))
                {
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    prop_assert_eq!(
                        Ok(plain),
                        t.render_minijinja("body", &context(&vars)),
                        "{}",
                        source
                    );
                }
                Ok(())
            })
            .unwrap();
        // The cases must reach the plain form often, or they prove little: about a
        // quarter do (the others compare kinds it leaves to minijinja, or miss a
        // variable).
        let answered = answered.into_inner();
        assert!(
            answered > CASES / 8,
            "only {answered} of {CASES} renders were plain"
        );
    }

    #[test]
    fn message_templates_have_a_plain_form_and_others_not() {
        let plain = [
            "Hello {{name}}, your code is {{code}}",
            "{% if lang == \"zh\" %}您好 {{ name }}{% elif lang != 'en' and not vip %}Hi{% else %}Hello {{name}}{% endif %}\n",
            "{{- name -}} {# said #} {% if a or b %}{{ a }}{% endif %}",
        ];
        for source in plain {
            let t = Template::compile(source, Some(source)).unwrap();
            assert!(
                t.plain_body.is_some() && t.plain_subject.is_some(),
                "{source}"
            );
        }
        let other = [
            "{{ name|upper }}",
            "{% for i in range(3) %}{{ i }}{% endfor %}",
            "{{ user.name }}",
            "{{ 2.5 }}",
            "{% set x = 1 %}{{ x }}",
            "{{ a ~ b }}",
        ];
        for source in other {
            let t = Template::compile(source, None).unwrap();
            assert!(t.plain_body.is_none(), "{source}");
        }
    }

    #[test]
    fn renders_the_plain_form_answers_are_minijinjas() {
        let t = Template::compile(
            "{% if lang == \"zh\" %}{{name}}您好，验证码{{code}}{% else %}Hello {{name}}, code {{code}}.{% endif %}\n",
            Some("{{ name }} {{ n }}"),
        )
        .unwrap();
        let cases = [
            (json!({"lang": "zh", "name": "用户", "code": "0042"}), true),
            (
                json!({"lang": "en", "name": "Li", "code": 42, "n": -7}),
                true,
            ),
            (
                json!({"lang": "en", "name": "Li", "code": u64::MAX, "n": 1}),
                true,
            ),
            // Left to minijinja: a float, a null, a missing variable, a bool to write.
            (
                json!({"lang": "en", "name": "Li", "code": 2.5, "n": 1}),
                false,
            ),
            (
                json!({"lang": "en", "name": null, "code": 1, "n": 1}),
                false,
            ),
            (json!({"lang": "en", "name": "Li", "n": 1}), false),
            (
                json!({"lang": "en", "name": true, "code": 1, "n": 1}),
                false,
            ),
        ];
        for (vars, plain) in cases {
            let vars = Vars::from(vars.as_object().unwrap());
            let mut body = String::new();
            let answered = t
                .plain_body
                .as_ref()
                .unwrap()
                .render(&vars.fields(), &mut body);
            assert_eq!(answered, plain, "{vars:?}");
            if answered {
                assert_eq!(Ok(body), t.render_minijinja("body", &context(&vars)));
            }
        }
    }
}

//! Opt-out and opt-in keywords: a reply that is only such a word (case, width and
//! punctuation folded, see [`fold`]) takes its number off the SMS channel or puts
//! it back. Mainland China numbers (`+86`) have words of their own besides the
//! common ones.

use std::collections::HashSet;

/// What a reply asks by its keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Keyword {
    /// Stop messaging this number (STOP, 退订, …).
    OptOut,
    /// Messages may come again (START, 恢复, …).
    OptIn,
}

impl Keyword {
    /// The stored and serialized name: `opt_out` or `opt_in`.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::OptOut => "opt_out",
            Keyword::OptIn => "opt_in",
        }
    }

    /// The keyword a stored name names.
    pub fn parse(s: &str) -> Option<Keyword> {
        match s {
            "opt_out" => Some(Keyword::OptOut),
            "opt_in" => Some(Keyword::OptIn),
            _ => None,
        }
    }
}

/// The words that opt out and in, folded (see [`fold`]).
#[derive(Debug, Clone, Default)]
pub struct Keywords {
    opt_out: HashSet<String>,
    opt_in: HashSet<String>,
    opt_out_china: HashSet<String>,
    opt_in_china: HashSet<String>,
}

/// The default opt-out words, for every number.
pub const OPT_OUT: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];
/// The default opt-in words, for every number.
pub const OPT_IN: &[&str] = &["START", "UNSTOP"];
/// The default opt-out words for mainland China numbers, besides [`OPT_OUT`].
pub const OPT_OUT_CHINA: &[&str] = &["T", "TD", "R", "退订", "拒收"];
/// The default opt-in words for mainland China numbers, besides [`OPT_IN`].
pub const OPT_IN_CHINA: &[&str] = &["恢复"];

impl Keywords {
    /// The words as configured; each is folded, and one that folds to nothing is
    /// ignored.
    pub fn new(
        opt_out: &[String],
        opt_in: &[String],
        opt_out_china: &[String],
        opt_in_china: &[String],
    ) -> Keywords {
        let set = |words: &[String]| -> HashSet<String> {
            words
                .iter()
                .map(|w| fold(w))
                .filter(|w| !w.is_empty())
                .collect()
        };
        Keywords {
            opt_out: set(opt_out),
            opt_in: set(opt_in),
            opt_out_china: set(opt_out_china),
            opt_in_china: set(opt_in_china),
        }
    }

    /// What a reply of `body` from `from` (E.164) asks, when it is only a keyword.
    /// Opting out wins when a word is configured both ways.
    pub fn of(&self, from: &str, body: &str) -> Option<Keyword> {
        let word = fold(body);
        if word.is_empty() {
            return None;
        }
        let china = from.starts_with("+86");
        if self.opt_out.contains(&word) || (china && self.opt_out_china.contains(&word)) {
            Some(Keyword::OptOut)
        } else if self.opt_in.contains(&word) || (china && self.opt_in_china.contains(&word)) {
            Some(Keyword::OptIn)
        } else {
            None
        }
    }
}

/// `text` with full-width forms made ASCII (`ＳＴＯＰ` → `STOP`), letters upper-cased,
/// and everything but letters and digits (spaces, punctuation, symbols) left out:
/// ` Stop! `, `stop。` and `ＳＴＯＰ` all fold to `STOP`, `退订！` to `退订`.
pub fn fold(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            // The full-width forms of ASCII `!` … `~`.
            '\u{FF01}'..='\u{FF5E}' => {
                char::from_u32(u32::from(c) - 0xFEE0).expect("an ASCII code point")
            }
            c => c,
        })
        .flat_map(char::to_uppercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn defaults() -> Keywords {
        let owned = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        Keywords::new(
            &owned(OPT_OUT),
            &owned(OPT_IN),
            &owned(OPT_OUT_CHINA),
            &owned(OPT_IN_CHINA),
        )
    }

    #[test]
    fn case_width_and_punctuation_are_folded() {
        assert_eq!(fold(" Stop! "), "STOP");
        assert_eq!(fold("ＳＴＯＰ"), "STOP");
        assert_eq!(fold("stop。"), "STOP");
        assert_eq!(fold("退订！"), "退订");
        assert_eq!(fold("…"), "");
    }

    #[test]
    fn a_reply_that_is_only_a_keyword_opts_out_or_in() {
        let k = defaults();
        assert_eq!(k.of("+15551230000", "stop"), Some(Keyword::OptOut));
        assert_eq!(k.of("+15551230000", "Unsubscribe."), Some(Keyword::OptOut));
        assert_eq!(k.of("+15551230000", "ＱＵＩＴ"), Some(Keyword::OptOut));
        assert_eq!(k.of("+15551230000", "start"), Some(Keyword::OptIn));
        assert_eq!(k.of("+15551230000", "please stop"), None);
        assert_eq!(k.of("+15551230000", "Thanks!"), None);
    }

    #[test]
    fn chinese_words_count_for_mainland_numbers_only() {
        let k = defaults();
        assert_eq!(k.of("+8613800138000", "退订"), Some(Keyword::OptOut));
        assert_eq!(k.of("+8613800138000", "td"), Some(Keyword::OptOut));
        assert_eq!(k.of("+8613800138000", "Ｔ"), Some(Keyword::OptOut));
        assert_eq!(k.of("+8613800138000", "拒收。"), Some(Keyword::OptOut));
        assert_eq!(k.of("+8613800138000", "恢复"), Some(Keyword::OptIn));
        assert_eq!(k.of("+8613800138000", "STOP"), Some(Keyword::OptOut));
        assert_eq!(k.of("+15551230000", "T"), None);
        assert_eq!(k.of("+15551230000", "退订"), None);
    }

    #[test]
    fn configured_words_are_folded_too() {
        let k = Keywords::new(&["Arrêt!".into()], &[], &[], &[]);
        assert_eq!(k.of("+33612345678", "ARRÊT"), Some(Keyword::OptOut));
        assert_eq!(k.of("+33612345678", "stop"), None);
    }

    proptest! {
        #[test]
        fn folding_twice_changes_nothing(text in "\\PC{0,40}") {
            let once = fold(&text);
            prop_assert_eq!(fold(&once), once.clone());
        }

        #[test]
        fn punctuation_and_spaces_around_a_keyword_never_hide_it(
            before in "[ .!?,。！\\t]{0,4}",
            after in "[ .!?,。！\\t]{0,4}",
            upper in any::<bool>(),
        ) {
            let word = if upper { "STOP" } else { "stop" };
            let body = format!("{before}{word}{after}");
            prop_assert_eq!(defaults().of("+15551230000", &body), Some(Keyword::OptOut));
        }

        #[test]
        fn a_reply_with_other_letters_is_no_keyword(extra in "[a-zA-Z0-9]{1,6}") {
            let body = format!("STOP {extra}");
            prop_assume!(!["ALL"].contains(&extra.to_uppercase().as_str()));
            prop_assert_eq!(defaults().of("+15551230000", &body), None);
        }
    }
}

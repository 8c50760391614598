//! `[replies.sms]`: what replies to the SMS channel's messages do — the opt-out
//! and opt-in keywords (see [`crate::provider::keyword`]) and the optional
//! auto-replies to them. SMS is the only channel that takes replies.

use serde::Deserialize;

use crate::provider::Keywords;
use crate::provider::keyword::{OPT_IN, OPT_IN_CHINA, OPT_OUT, OPT_OUT_CHINA, fold};

/// What replies do, per channel.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepliesConfig {
    /// Replies to SMS (`[replies.sms]`).
    pub sms: ReplyRules,
}

/// The keywords of one channel's replies and the auto-replies to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplyRules {
    /// Words that take the sender's number off the channel, for every number.
    pub opt_out: Vec<String>,
    /// Words that put it back (they lift only a suppression a reply made).
    pub opt_in: Vec<String>,
    /// Opt-out words for mainland China numbers (`+86`), besides `opt_out`.
    pub opt_out_china: Vec<String>,
    /// Opt-in words for mainland China numbers, besides `opt_in`.
    pub opt_in_china: Vec<String>,
    /// Sent back to a number that opted out, through the provider the reply came
    /// by; none when unset.
    pub opt_out_reply: Option<String>,
    /// Sent back to a number that opted in; none when unset.
    pub opt_in_reply: Option<String>,
}

impl Default for ReplyRules {
    fn default() -> Self {
        let owned = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect();
        ReplyRules {
            opt_out: owned(OPT_OUT),
            opt_in: owned(OPT_IN),
            opt_out_china: owned(OPT_OUT_CHINA),
            opt_in_china: owned(OPT_IN_CHINA),
            opt_out_reply: None,
            opt_in_reply: None,
        }
    }
}

impl ReplyRules {
    /// The keywords, folded.
    pub fn keywords(&self) -> Keywords {
        Keywords::new(
            &self.opt_out,
            &self.opt_in,
            &self.opt_out_china,
            &self.opt_in_china,
        )
    }

    /// Refuses a keyword with no letter or digit (it could never match), one that
    /// is both an opt-out and an opt-in word, and an empty auto-reply; `table`
    /// names the table in the message.
    pub fn validate(&self, table: &str) -> Result<(), String> {
        let lists = [
            ("opt_out", &self.opt_out),
            ("opt_in", &self.opt_in),
            ("opt_out_china", &self.opt_out_china),
            ("opt_in_china", &self.opt_in_china),
        ];
        for (key, words) in lists {
            if let Some(word) = words.iter().find(|w| fold(w).is_empty()) {
                return Err(format!(
                    "{table}.{key}: `{word}` has no letter or digit, so no reply could be it"
                ));
            }
        }
        let outs: Vec<String> = self
            .opt_out
            .iter()
            .chain(&self.opt_out_china)
            .map(|w| fold(w))
            .collect();
        if let Some(word) = self
            .opt_in
            .iter()
            .chain(&self.opt_in_china)
            .find(|w| outs.contains(&fold(w)))
        {
            return Err(format!(
                "{table}: `{word}` is both an opt-out and an opt-in word"
            ));
        }
        for (key, text) in [
            ("opt_out_reply", &self.opt_out_reply),
            ("opt_in_reply", &self.opt_in_reply),
        ] {
            if text.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(format!(
                    "{table}.{key} must not be empty: leave it out to send none"
                ));
            }
        }
        Ok(())
    }
}

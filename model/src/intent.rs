//! Inbound intent classification (docs/metrics.md, "Intent keywords").
//!
//! The whole message, trimmed, compared case-insensitively with trailing punctuation
//! removed, must equal a configured keyword of an intent; anything else is `other`.
//! Runs of inner whitespace count as one space (`OPT  OUT` is `OPT OUT`).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What an inbound message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    Stop,
    Start,
    Help,
    Other,
}

impl Intent {
    /// The value stored in the lake.
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Stop => "stop",
            Intent::Start => "start",
            Intent::Help => "help",
            Intent::Other => "other",
        }
    }

    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<Intent> {
        match s {
            "stop" => Some(Intent::Stop),
            "start" => Some(Intent::Start),
            "help" => Some(Intent::Help),
            "other" => Some(Intent::Other),
            _ => None,
        }
    }
}

/// Keywords per intent (`[intent]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntentOptions {
    /// Opt-out keywords.
    pub stop: Vec<String>,
    /// Opt-in keywords.
    pub start: Vec<String>,
    /// Help keywords.
    pub help: Vec<String>,
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for IntentOptions {
    fn default() -> Self {
        IntentOptions {
            stop: strings(&[
                "STOP",
                "STOPALL",
                "UNSUBSCRIBE",
                "CANCEL",
                "END",
                "QUIT",
                "OPT OUT",
                "OPTOUT",
                "PARAR",
                "BAJA",
                "ALTO",
                "ARRÊTER",
                "ARRET",
                "STOPP",
                "ABMELDEN",
            ]),
            start: strings(&["START", "UNSTOP", "SUBSCRIBE", "YES"]),
            help: strings(&["HELP", "INFO", "AYUDA", "AJUDA", "AIDE", "HILFE"]),
        }
    }
}

/// Classifies message text against the configured keywords.
#[derive(Debug, Clone)]
pub struct IntentClassifier {
    keywords: HashMap<String, Intent>,
}

/// Trim, drop trailing punctuation, collapse inner whitespace, uppercase.
fn canonical(text: &str) -> String {
    let trimmed = text.trim().trim_end_matches(|c: char| {
        c.is_ascii_punctuation() || is_unicode_punct(c) || c.is_whitespace()
    });
    let mut out = String::with_capacity(trimmed.len());
    for (i, word) in trimmed.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.to_uppercase()
}

fn is_unicode_punct(c: char) -> bool {
    matches!(
        c,
        '¡' | '¿'
            | '…'
            | '。'
            | '！'
            | '？'
            | '、'
            | '，'
            | '؟'
            | '«'
            | '»'
            | '“'
            | '”'
            | '‘'
            | '’'
    )
}

impl IntentClassifier {
    /// Builds the lookup; a keyword listed under two intents keeps the first of
    /// stop, start, help.
    pub fn new(options: &IntentOptions) -> IntentClassifier {
        let mut keywords = HashMap::new();
        for (list, intent) in [
            (&options.help, Intent::Help),
            (&options.start, Intent::Start),
            (&options.stop, Intent::Stop),
        ] {
            for k in list {
                let c = canonical(k);
                if !c.is_empty() {
                    keywords.insert(c, intent);
                }
            }
        }
        IntentClassifier { keywords }
    }

    /// The intent of a whole message.
    pub fn classify(&self, text: &str) -> Intent {
        if text.len() > 64 {
            return Intent::Other;
        }
        self.keywords
            .get(&canonical(text))
            .copied()
            .unwrap_or(Intent::Other)
    }
}

impl Default for IntentClassifier {
    fn default() -> Self {
        IntentClassifier::new(&IntentOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_message_case_and_punctuation() {
        let c = IntentClassifier::default();
        assert_eq!(c.classify("STOP"), Intent::Stop);
        assert_eq!(c.classify("  stop!! "), Intent::Stop);
        assert_eq!(c.classify("Stop."), Intent::Stop);
        assert_eq!(c.classify("opt   out"), Intent::Stop);
        assert_eq!(c.classify("arrêter"), Intent::Stop);
        assert_eq!(c.classify("Parar"), Intent::Stop);
        assert_eq!(c.classify("baja"), Intent::Stop);
        assert_eq!(c.classify("please stop"), Intent::Other);
        assert_eq!(c.classify("stop it"), Intent::Other);
        assert_eq!(
            c.classify("¿ayuda?"),
            Intent::Other,
            "leading punctuation is kept"
        );
        assert_eq!(c.classify("ayuda?"), Intent::Help);
        assert_eq!(c.classify("yes"), Intent::Start);
        assert_eq!(c.classify(""), Intent::Other);
    }

    #[test]
    fn keywords_are_configurable() {
        let c = IntentClassifier::new(&IntentOptions {
            stop: vec!["sair".into()],
            start: vec![],
            help: vec![],
        });
        assert_eq!(c.classify("SAIR"), Intent::Stop);
        assert_eq!(c.classify("STOP"), Intent::Other);
    }
}

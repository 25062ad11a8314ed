//! `Prompt`: trimmed, non-empty, bounded.

use super::Invalid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt(String);

impl Prompt {
    /// `max_chars` is `BACKEND_MAX_PROMPT_CHARS`.
    pub(crate) fn parse(raw: &str, max_chars: usize) -> Result<Self, Invalid> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(Invalid("prompt must not be empty".into()));
        }
        let chars = text.chars().count();
        if chars > max_chars {
            return Err(Invalid(format!(
                "prompt is {chars} characters long; the limit is {max_chars}"
            )));
        }
        if text.contains('\0') {
            return Err(Invalid("prompt must not contain NUL characters".into()));
        }
        Ok(Self(text.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_trimmed_and_bounded() {
        assert_eq!(Prompt::parse("  hi \n", 10).unwrap().as_str(), "hi");
        assert!(Prompt::parse(" \n\t", 10).is_err());
        assert!(Prompt::parse("ééééé", 5).is_ok());
        assert!(Prompt::parse("éééééé", 5).is_err());
    }
}

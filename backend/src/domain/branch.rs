//! `BranchName` (a branch to commit on or push to, as `git check-ref-format
//! --branch` accepts it) and `CommitMessage`.

use super::{GitRef, Invalid};

/// A branch name: the rules of [`GitRef`], not a commit id's look-alike
/// check, and not `HEAD`. Travels into `refs/heads/<name>` and into
/// forge URLs and bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchName(String);

impl BranchName {
    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = GitRef::parse(raw)
            .map_err(|Invalid(why)| Invalid(why.replacen("ref ", "branch ", 1)))?;
        let name = name.as_str();
        let name = name.strip_prefix("refs/heads/").unwrap_or(name);
        if name == "HEAD" || name.starts_with("refs/") || name.is_empty() {
            return Err(Invalid(format!(
                "branch {raw:?} is not a branch name (HEAD and refs/… other than refs/heads/ are not branches)"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// `refs/heads/<name>`.
    pub(crate) fn refname(&self) -> String {
        format!("refs/heads/{}", self.0)
    }
}

impl std::fmt::Display for BranchName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A commit message: not blank, no NUL (git cuts a message there), at most
/// [`CommitMessage::MAX_BYTES`]. Trailing whitespace is dropped and one
/// newline ends it, as `git commit` cleans a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitMessage(String);

impl CommitMessage {
    pub const MAX_BYTES: usize = 64 * 1024;

    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() > Self::MAX_BYTES {
            return Err(Invalid(format!(
                "message is {} bytes; the limit is {} bytes",
                raw.len(),
                Self::MAX_BYTES
            )));
        }
        if raw.contains('\0') {
            return Err(Invalid("message contains a NUL byte".to_owned()));
        }
        let trimmed = raw.trim_end();
        if trimmed.trim_start().is_empty() {
            return Err(Invalid("message is empty".to_owned()));
        }
        Ok(Self(format!("{trimmed}\n")))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_follow_check_ref_format() {
        for good in [
            "feature/x",
            "repo-runner/abcd1234",
            "refs/heads/fix",
            "ünïcode",
        ] {
            assert!(BranchName::parse(good).is_ok(), "{good}");
        }
        assert_eq!(BranchName::parse("refs/heads/fix").unwrap().as_str(), "fix");
        for bad in [
            "",
            "a..b",
            "a@{1}",
            "-x",
            "a\u{7}b",
            "a b",
            "a~1",
            "x.lock",
            "/x",
            "x/",
            ".x",
            "HEAD",
            "refs/tags/v1",
            "a:b",
            "a\\b",
        ] {
            assert!(BranchName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commit_messages_are_cleaned_and_bounded() {
        assert_eq!(
            CommitMessage::parse("Fix it  \n\n").unwrap().as_str(),
            "Fix it\n"
        );
        assert!(CommitMessage::parse(" \n\t").is_err());
        assert!(CommitMessage::parse("a\0b").is_err());
        assert!(CommitMessage::parse(&"x".repeat(1024 * 1024)).is_err());
    }
}

//! `GitRef` (a branch, tag or commit to check out) and `Depth` (shallow
//! clone depth).

use super::Invalid;

/// A ref name as `git check-ref-format` would accept it, or a commit id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef(String);

impl GitRef {
    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        let raw = raw.trim();
        let bad = |why: &str| {
            Err(Invalid(format!(
                "ref {raw:?} is not a valid git ref: {why}"
            )))
        };
        if raw.is_empty() {
            return bad("it is empty");
        }
        if raw.len() > 255 {
            return bad("it is longer than 255 characters");
        }
        if raw.starts_with('-') {
            return bad("it starts with '-'");
        }
        if raw.starts_with('/')
            || raw.ends_with('/')
            || raw.ends_with('.')
            || raw.ends_with(".lock")
        {
            return bad("it starts or ends with '/' or ends with '.' or '.lock'");
        }
        if raw.contains("..") || raw.contains("//") || raw.contains("@{") || raw == "@" {
            return bad("it contains '..', '//' or '@{'");
        }
        if raw
            .chars()
            .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
        {
            return bad("it contains a space, a control character or one of ~^:?*[\\");
        }
        if raw.split('/').any(|part| part.starts_with('.')) {
            return bad("a component starts with '.'");
        }
        Ok(Self(raw.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it could be an (abbreviated) commit id.
    pub(crate) fn looks_like_commit(&self) -> bool {
        (4..=40).contains(&self.0.len()) && self.0.chars().all(|c| c.is_ascii_hexdigit())
    }
}

/// Shallow clone depth: 1 to 1,000,000 commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth(i32);

impl Depth {
    pub(crate) fn parse(raw: i64) -> Result<Self, Invalid> {
        match i32::try_from(raw) {
            Ok(depth) if (1..=1_000_000).contains(&depth) => Ok(Self(depth)),
            _ => Err(Invalid(format!(
                "depth must be between 1 and 1000000, got {raw}"
            ))),
        }
    }

    pub(crate) fn get(self) -> i32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_tags_and_commits_are_accepted() {
        for raw in [
            "main",
            "feature/x-1",
            "v1.2.3",
            "0123abcd",
            "release-2024.01",
        ] {
            assert_eq!(GitRef::parse(raw).unwrap().as_str(), raw);
        }
        assert!(GitRef::parse("0123abcd").unwrap().looks_like_commit());
        assert!(!GitRef::parse("main").unwrap().looks_like_commit());
    }

    #[test]
    fn invalid_refs_are_refused() {
        for raw in [
            "", "-x", "a..b", "a b", "a~1", "x.lock", "/x", ".hidden", "a/.b", "a@{1}",
        ] {
            assert!(GitRef::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        assert_eq!(Depth::parse(1).unwrap().get(), 1);
        assert!(Depth::parse(0).is_err());
        assert!(Depth::parse(-3).is_err());
        assert!(Depth::parse(i64::MAX).is_err());
    }
}

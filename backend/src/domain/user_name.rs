//! A user's name: what `backend admin` is given and the dashboard shows.

use super::Invalid;

/// 1 to 64 characters of letters, digits, `.`, `_`, `-` and `@`: safe in a
/// log line, a terminal and a URL, and unambiguous to type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid(format!(
                "a user name is 1 to 64 letters, digits, '.', '_', '-' or '@': {raw:?} is not"
            )))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_people_type_pass_and_others_do_not() {
        for good in ["alice", "bob.smith", "ci-bot_2", "a@example.org"] {
            assert_eq!(UserName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "has space", "new\nline", "ünï", &"x".repeat(65), "a;b"] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! The id of one approval a run asks for: `approval-<n>`, `n` counting
//! from 1 within its run. It travels from the runner's events through the
//! backend into a URL path of the runner's API, so it is parsed into this
//! type before it goes anywhere, and only this one form is accepted.

use std::fmt;

/// An approval's id, `approval-<n>` with `n` a positive decimal number
/// without leading zeros, at most 19 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApprovalId(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an approval id has the form approval-<number>")]
pub struct ApprovalIdError;

const PREFIX: &str = "approval-";

impl ApprovalId {
    /// The `n`th approval of a run (from 1).
    pub fn nth(n: u64) -> Self {
        Self(n.max(1))
    }

    pub fn parse(raw: &str) -> Result<Self, ApprovalIdError> {
        let digits = raw.strip_prefix(PREFIX).ok_or(ApprovalIdError)?;
        let well_formed = !digits.is_empty()
            && digits.len() <= 19
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !well_formed {
            return Err(ApprovalIdError);
        }
        digits.parse().map(Self).map_err(|_| ApprovalIdError)
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.0)
    }
}

impl std::str::FromStr for ApprovalId {
    type Err = ApprovalIdError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_one_form_is_an_approval_id() {
        for good in ["approval-1", "approval-42", "approval-9999999999999999999"] {
            assert_eq!(ApprovalId::parse(good).unwrap().to_string(), good);
        }
        for bad in [
            "",
            "approval-",
            "approval-0",
            "approval-01",
            "approval--1",
            "approval-+1",
            "approval-1 ",
            " approval-1",
            "Approval-1",
            "approval-1/",
            "approval-1%2F",
            "..%2F..%2Fx%2Fapprovals%2Fapproval-1",
            "../interrupt",
            "..",
            "approval-1/../../interrupt",
            "approval-99999999999999999999",
            "approval-١",
        ] {
            assert_eq!(ApprovalId::parse(bad), Err(ApprovalIdError), "{bad:?}");
        }
        assert_eq!(ApprovalId::nth(3).to_string(), "approval-3");
    }
}

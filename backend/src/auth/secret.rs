//! Secrets handed to people and browsers: API tokens, sign-in cookies and
//! codes, preview grants.
//!
//! Each is 256 bits from the operating system's random source, written as
//! URL-safe base64 behind a prefix that says what it is (`rr_` for a token,
//! `rrc_` for a cookie, `rrs_` for a one-time sign-in code, `rrp_` for a
//! preview grant), so a token pasted in the wrong place is
//! recognisable. Only a SHA-256 of each is stored: a leaked database holds
//! nothing that signs anyone in. A fast hash is right for 256-bit random
//! secrets (nothing to brute-force), and lets a request find its token by
//! an indexed lookup.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// What a secret is for; its prefix.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    ApiToken,
    Cookie,
    /// A one-time sign-in code of a sign-in link.
    SigninCode,
    /// A preview grant (`preview_grant`).
    PreviewGrant,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::ApiToken => "rr_",
            Kind::Cookie => "rrc_",
            Kind::SigninCode => "rrs_",
            Kind::PreviewGrant => "rrp_",
        }
    }
}

/// A new secret, as shown once, and the hash that is stored.
pub struct Minted {
    pub secret: String,
    pub sha256: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct NoRandomness(String);

pub(crate) fn mint(kind: Kind) -> Result<Minted, NoRandomness> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| NoRandomness(e.to_string()))?;
    let secret = format!(
        "{}{}",
        kind.prefix(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let sha256 = hash(&secret);
    Ok(Minted { secret, sha256 })
}

/// The stored form of a secret a request presents.
pub(crate) fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_256_random_bits_behind_its_prefix_and_stored_as_its_hash() {
        let a = mint(Kind::ApiToken).unwrap();
        let b = mint(Kind::ApiToken).unwrap();
        assert!(a.secret.starts_with("rr_"));
        // 32 bytes in unpadded base64: 43 characters.
        assert_eq!(a.secret.len(), 3 + 43);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.sha256, hash(&a.secret));
        assert_eq!(a.sha256.len(), 32);
        assert!(mint(Kind::Cookie).unwrap().secret.starts_with("rrc_"));
    }
}

//! Secrets the backend must read back: a session's repository token, kept
//! for pushes and pull requests when the session was created with
//! `keep_token`. Sealed at rest with XChaCha20-Poly1305 under a key derived
//! by HKDF-SHA256 from `BACKEND_SECRET_KEY`, with the session's id as
//! associated data, so a sealed token copied onto another session's row
//! does not open. A random 192-bit nonce per seal (XChaCha's nonce is
//! large enough for random ones).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use uuid::Uuid;

/// Shortest `BACKEND_SECRET_KEY` accepted, in characters.
pub const MIN_KEY_CHARS: usize = 32;

/// The format's first byte: a new format gets a new number.
const VERSION: u8 = 1;
const NONCE_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("BACKEND_SECRET_KEY must be at least {MIN_KEY_CHARS} characters (e.g. `openssl rand -hex 32`)")]
    ShortKey,
    /// Tampered with, sealed for another session, or under another key.
    #[error("the sealed secret does not open with this key")]
    Unopenable,
    #[error("no random bytes from the operating system")]
    Random,
}

/// Seals and opens with the key of `BACKEND_SECRET_KEY`. Its `Debug`
/// shows nothing of the key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    pub(crate) fn new(secret_key: &str) -> Result<Self, SealError> {
        if secret_key.chars().count() < MIN_KEY_CHARS {
            return Err(SealError::ShortKey);
        }
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"repo-runner"), secret_key.as_bytes())
            .expand(b"session repository token v1", &mut key)
            .map_err(|_| SealError::ShortKey)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|_| SealError::ShortKey)?;
        Ok(Self { cipher })
    }

    /// `VERSION || nonce || ciphertext`, bound to `session`.
    pub(crate) fn seal(&self, session: Uuid, secret: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: session.as_bytes(),
                },
            )
            .map_err(|_| SealError::Unopenable)?;
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub(crate) fn open(&self, session: Uuid, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Unopenable)?;
        if version != VERSION || rest.len() < NONCE_BYTES {
            return Err(SealError::Unopenable);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Unopenable)?;
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: session.as_bytes(),
                },
            )
            .map_err(|_| SealError::Unopenable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_sealed_secret_opens_only_for_its_session_and_key() {
        let sealer = Sealer::new(KEY).unwrap();
        let (session, other) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = sealer.seal(session, b"ghp_secret").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"ghp_secret"));
        assert_eq!(sealer.open(session, &sealed).unwrap(), b"ghp_secret");
        assert!(sealer.open(other, &sealed).is_err());
        let another_key = Sealer::new(&format!("{KEY}x")).unwrap();
        assert!(another_key.open(session, &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(session, &tampered).is_err());
        // Two seals of one secret differ (a fresh nonce each).
        assert_ne!(sealer.seal(session, b"ghp_secret").unwrap(), sealed);
    }

    #[test]
    fn a_short_key_is_refused() {
        assert!(matches!(Sealer::new("too short"), Err(SealError::ShortKey)));
        assert_eq!(format!("{:?}", Sealer::new(KEY).unwrap()), "Sealer(***)");
    }
}

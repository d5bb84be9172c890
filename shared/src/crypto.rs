//! Encryption of tokens at rest and signing of cookies.
//!
//! Tokens are sealed with AES-256-GCM. A sealed value carries the id of the key that sealed
//! it, so keys can rotate: `TOKEN_ENCRYPTION_KEY` seals everything new, the keys in
//! `TOKEN_ENCRYPTION_OLD_KEYS` still open what they sealed, and a value opened with an old
//! key is sealed again with the current one the next time it is written. The associated
//! data binds a ciphertext to its row and column, so one user's token cannot be pasted into
//! another's row.
//!
//! Layout: `0x01` (format), 8-byte key id (first bytes of SHA-256 of the key), 12-byte
//! random nonce, ciphertext with its 16-byte tag.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::{Key32, KeyConfig};
use crate::secret::{Secret, random_bytes};

const FORMAT: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("no configured key opens this value (key id {0})")]
    UnknownKey(String),
    #[error("the sealed value does not open: wrong key, wrong row, or tampered")]
    Tampered,
    /// This function is not given TOKEN_ENCRYPTION_KEY (see `crate::secrets::needed_by`).
    #[error("TOKEN_ENCRYPTION_KEY is not given to this function")]
    NotGiven,
}

/// What a function not given a key tells whoever reached for it: the table of what each
/// function is given (`crate::secrets::needed_by`) is wrong.
fn not_given(variable: &str) -> String {
    format!(
        "{variable} is not given to this function: add it to the function's secrets in \
         shared::secrets::needed_by and template.yaml"
    )
}

struct SealingKey {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

impl SealingKey {
    fn new(key: &Key32) -> Self {
        let digest = Sha256::digest(key.expose());
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self {
            id,
            cipher: Aes256Gcm::new(key.expose().into()),
        }
    }
}

/// Seals and opens tokens (see the module docs).
pub struct TokenCipher {
    /// `None` in a function not given TOKEN_ENCRYPTION_KEY: it seals and opens nothing.
    current: Option<SealingKey>,
    old: Vec<SealingKey>,
}

impl TokenCipher {
    pub fn new(keys: &KeyConfig) -> Self {
        Self {
            current: keys.token_encryption_key.as_ref().map(SealingKey::new),
            old: keys
                .token_encryption_old_keys
                .iter()
                .map(SealingKey::new)
                .collect(),
        }
    }

    /// Seals `plaintext` with the current key; `context` names where it is stored.
    ///
    /// # Panics
    ///
    /// In a function not given TOKEN_ENCRYPTION_KEY: sealing with any other key would store
    /// a token nobody can open.
    pub fn seal(&self, plaintext: &str, context: &str) -> Vec<u8> {
        let current = self
            .current
            .as_ref()
            .unwrap_or_else(|| panic!("{}", not_given("TOKEN_ENCRYPTION_KEY")));
        let nonce_bytes = random_bytes(NONCE_LEN);
        let nonce = Nonce::from_slice(&nonce_bytes);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        // Encryption fails only for inputs beyond GCM's size limit (64 GiB).
        let ciphertext = current
            .cipher
            .encrypt(nonce, payload)
            .expect("a token is far below AES-GCM's size limit");
        let mut sealed = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + ciphertext.len());
        sealed.push(FORMAT);
        sealed.extend_from_slice(&current.id);
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens a value sealed with the current or an old key under the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Secret<String>, CryptoError> {
        let header = 1 + KEY_ID_LEN + NONCE_LEN;
        if sealed.len() < header + 16 || sealed[0] != FORMAT {
            return Err(CryptoError::Malformed);
        }
        let id = &sealed[1..1 + KEY_ID_LEN];
        if self.current.is_none() {
            return Err(CryptoError::NotGiven);
        }
        let key = self
            .current
            .iter()
            .chain(&self.old)
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey(hex::encode(id)))?;
        let nonce = Nonce::from_slice(&sealed[1 + KEY_ID_LEN..header]);
        let payload = Payload {
            msg: &sealed[header..],
            aad: context.as_bytes(),
        };
        let plaintext = key
            .cipher
            .decrypt(nonce, payload)
            .map_err(|_| CryptoError::Tampered)?;
        String::from_utf8(plaintext)
            .map(Secret::new)
            .map_err(|_| CryptoError::Malformed)
    }

    /// Whether `sealed` was sealed with the current key (else it is re-sealed on next write).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        self.current
            .as_ref()
            .is_some_and(|current| sealed.get(1..1 + KEY_ID_LEN) == Some(&current.id[..]))
    }
}

/// HMAC-SHA256 signatures with `SESSION_SECRET`, for cookies and CSRF tokens.
pub struct Signer {
    /// `None` in a function not given SESSION_SECRET: it signs nothing and accepts no
    /// signature.
    key: Option<Key32>,
}

impl Signer {
    pub fn new(keys: &KeyConfig) -> Self {
        Self {
            key: keys.session_secret.clone(),
        }
    }

    fn mac(&self, purpose: &str, value: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref()?.expose())
            .expect("HMAC takes keys of any length");
        // The purpose keeps a signature made for one use from being accepted for another.
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        Some(mac)
    }

    /// [`Signer::mac`] for signing, which a function not given the key must never do.
    fn signing_mac(&self, purpose: &str, value: &str) -> Hmac<Sha256> {
        self.mac(purpose, value)
            .unwrap_or_else(|| panic!("{}", not_given("SESSION_SECRET")))
    }

    /// `value.signature` (URL-safe base64).
    pub(crate) fn sign(&self, purpose: &str, value: &str) -> String {
        let tag = self.signing_mac(purpose, value).finalize().into_bytes();
        format!("{value}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The bare signature of `value` (a CSRF token: proves knowledge of the session).
    pub fn tag(&self, purpose: &str, value: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.signing_mac(purpose, value).finalize().into_bytes())
    }

    /// Whether `tag` is the signature of `value` (constant-time).
    pub(crate) fn verify_tag(&self, purpose: &str, value: &str, tag: &str) -> bool {
        let Some(mac) = self.mac(purpose, value) else {
            return false;
        };
        URL_SAFE_NO_PAD
            .decode(tag)
            .is_ok_and(|tag| mac.verify_slice(&tag).is_ok())
    }

    /// The value of a `sign`ed string whose signature checks out (constant-time).
    pub(crate) fn verify<'a>(&self, purpose: &str, signed: &'a str) -> Option<&'a str> {
        let (value, tag) = signed.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(purpose, value)?.verify_slice(&tag).ok()?;
        Some(value)
    }
}

/// A random URL-safe token of `bytes` bytes of entropy (256-bit OAuth state, session ids).
pub fn random_token(bytes: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(bytes))
}

/// SHA-256, for storing session ids so that the database alone opens no session.
pub fn sha256(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

/// Whether two secrets are equal, in time that depends on neither: their SHA-256 digests (of
/// equal length whatever the inputs) are compared without an early exit.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (sha256(a), sha256(b));
    a.iter().zip(&b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(current: u8, old: &[u8]) -> KeyConfig {
        KeyConfig {
            token_encryption_key: Some(Secret::new([current; 32])),
            token_encryption_old_keys: old.iter().map(|b| Secret::new([*b; 32])).collect(),
            session_secret: Some(Secret::new([9; 32])),
            generated_key_file: None,
        }
    }

    #[test]
    fn a_sealed_token_opens_only_in_its_own_place() {
        let cipher = TokenCipher::new(&keys(1, &[]));
        let sealed = cipher.seal("oauth-token-123", "u1/twitch/access");
        assert!(!String::from_utf8_lossy(&sealed).contains("oauth-token-123"));
        assert_eq!(
            cipher.open(&sealed, "u1/twitch/access").unwrap().expose(),
            "oauth-token-123"
        );
        assert_eq!(
            cipher.open(&sealed, "u2/twitch/access"),
            Err(CryptoError::Tampered)
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            cipher.open(&flipped, "u1/twitch/access"),
            Err(CryptoError::Tampered)
        );
        assert_eq!(
            cipher.open(&sealed[..10], "u1/twitch/access"),
            Err(CryptoError::Malformed)
        );
        assert_ne!(
            sealed,
            cipher.seal("oauth-token-123", "u1/twitch/access"),
            "fresh nonce"
        );
    }

    #[test]
    fn rotated_keys_still_open_old_values_and_new_values_use_the_new_key() {
        let before = TokenCipher::new(&keys(1, &[]));
        let sealed_before = before.seal("t", "c");
        let after = TokenCipher::new(&keys(2, &[1]));
        assert_eq!(after.open(&sealed_before, "c").unwrap().expose(), "t");
        assert!(!after.is_current(&sealed_before));
        assert!(after.is_current(&after.seal("t", "c")));
        let forgotten = TokenCipher::new(&keys(3, &[]));
        assert!(matches!(
            forgotten.open(&sealed_before, "c"),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn signatures_check_value_and_purpose() {
        let signer = Signer::new(&keys(1, &[]));
        let signed = signer.sign("session", "abc");
        assert_eq!(signer.verify("session", &signed), Some("abc"));
        assert_eq!(signer.verify("state", &signed), None);
        assert_eq!(
            signer.verify("session", &signed.replace("abc", "abd")),
            None
        );
        assert_eq!(signer.verify("session", "abc"), None);
        assert_eq!(signer.verify("session", "abc.%%%"), None);
        let tag = signer.tag("csrf", "session-id");
        assert!(signer.verify_tag("csrf", "session-id", &tag));
        assert!(!signer.verify_tag("csrf", "other-session", &tag));
        assert!(!signer.verify_tag("csrf", "session-id", "garbage"));
    }

    #[test]
    fn a_function_not_given_the_keys_opens_nothing_and_accepts_no_signature() {
        let given = keys(1, &[]);
        let sealed = TokenCipher::new(&given).seal("t", "c");
        let signed = Signer::new(&given).sign("session", "abc");
        let without = KeyConfig {
            token_encryption_key: None,
            token_encryption_old_keys: Vec::new(),
            session_secret: None,
            generated_key_file: None,
        };

        let cipher = TokenCipher::new(&without);
        let signer = Signer::new(&without);

        assert_eq!(cipher.open(&sealed, "c"), Err(CryptoError::NotGiven));
        assert!(!cipher.is_current(&sealed));
        assert_eq!(signer.verify("session", &signed), None);
        let sealing =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cipher.seal("t", "c")))
                .unwrap_err();
        let message = sealing.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("TOKEN_ENCRYPTION_KEY is not given"),
            "{message}"
        );
    }

    #[test]
    fn random_tokens_carry_the_asked_entropy() {
        let token = random_token(32);
        assert_eq!(token.len(), 43);
        assert_ne!(token, random_token(32));
    }

    #[test]
    fn constant_time_eq_tells_equal_from_different() {
        assert!(constant_time_eq("s3cret-token", "s3cret-token"));
        assert!(!constant_time_eq("s3cret-token", "s3cret-tokem"));
        assert!(!constant_time_eq("s3cret-token", ""));
        assert!(!constant_time_eq("", "x"));
    }
}

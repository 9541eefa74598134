//! Secrets at rest: passwords, secret header values and URLs with a
//! password in them are sealed with XChaCha20-Poly1305 under a 32-byte key
//! before they reach the store, as `enc:v1:<base64 of nonce ‖ ciphertext>`.
//!
//! The key comes from `TETHER_SECRET_KEY` (base64 of 32 bytes, what
//! `openssl rand -base64 32` prints) or from a key file. Without one the host
//! refuses to store a secret, unless the config says `secrets = "plaintext"`.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The prefix of a sealed value.
const SEALED: &str = "enc:v1:";
const NONCE_LEN: usize = 24;

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key text is not base64 of 32 bytes.
    #[error(
        "the secret key must be 32 bytes as base64 (what `openssl rand -base64 32` prints); {0}"
    )]
    BadKey(String),
    /// A secret must be stored and there is no key.
    #[error("this host has no secret key, so it cannot store {what}: set TETHER_SECRET_KEY (openssl rand -base64 32) or [host] secret_key_file, or put secrets = \"plaintext\" in [host] to store secrets unencrypted")]
    NoKey {
        /// What was to be stored.
        what: String,
    },
    /// A sealed value does not open with this key.
    #[error("a stored secret does not decrypt with this key: {0}")]
    WrongKey(String),
}

/// A 32-byte key.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// Parses base64 (standard or URL-safe, padding optional) of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|e| e.decode(text).ok())
            .ok_or_else(|| SecretError::BadKey("it is not base64".into()))?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            SecretError::BadKey(format!("it decodes to {} bytes", b.len()))
        })?;
        Ok(SecretKey(key))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        SecretKey(rand::random())
    }

    /// The key as base64.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Key material for another purpose (the web UI's session MACs),
    /// derived so that it reveals nothing about this key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"tether key derivation\0");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(self.0);
        h.finalize().into()
    }
}

/// How the store treats secrets: sealed under a key, kept in plaintext on
/// the operator's explicit word, or refused.
#[derive(Debug, Clone)]
pub enum Secrets {
    /// Sealed under this key.
    Sealed(SecretKey),
    /// `secrets = "plaintext"`: stored as they are.
    Plaintext,
    /// No key and no permission: storing a secret is an error.
    Refused,
}

impl Secrets {
    /// Whether `stored` is a sealed value.
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED)
    }

    /// The form to store `value` in; `what` names it in errors.
    pub fn seal(&self, value: &str, what: &str) -> Result<String, SecretError> {
        match self {
            Secrets::Sealed(key) => Ok(seal_with(key, value)),
            Secrets::Plaintext => Ok(value.to_string()),
            Secrets::Refused => Err(SecretError::NoKey {
                what: what.to_string(),
            }),
        }
    }

    /// The value of a stored form (plaintext forms pass through, so a store
    /// written before encryption still reads).
    pub fn open(&self, stored: &str) -> Result<String, SecretError> {
        if !Self::is_sealed(stored) {
            return Ok(stored.to_string());
        }
        match self {
            Secrets::Sealed(key) => open_with(key, stored),
            _ => Err(SecretError::WrongKey(
                "the store holds encrypted secrets and no key was given; set TETHER_SECRET_KEY"
                    .into(),
            )),
        }
    }
}

/// Seals `value` under `key` with a random nonce.
pub fn seal_with(key: &SecretKey, value: &str) -> String {
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let nonce: [u8; NONCE_LEN] = rand::random();
    // Encryption into a Vec cannot fail for inputs this size.
    let ciphertext = cipher
        .encrypt(XNonce::from_slice(&nonce), value.as_bytes())
        .unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    format!(
        "{SEALED}{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    )
}

/// Opens a sealed value.
pub fn open_with(key: &SecretKey, stored: &str) -> Result<String, SecretError> {
    let body = stored
        .strip_prefix(SEALED)
        .ok_or_else(|| SecretError::WrongKey("not a sealed value".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| SecretError::WrongKey(format!("bad base64: {e}")))?;
    if bytes.len() < NONCE_LEN {
        return Err(SecretError::WrongKey("too short".into()));
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let plain = cipher
        .decrypt(XNonce::from_slice(nonce), ciphertext)
        .map_err(|_| {
            SecretError::WrongKey(
                "authentication failed (another key, or the value was altered)".into(),
            )
        })?;
    String::from_utf8(plain).map_err(|_| SecretError::WrongKey("not UTF-8".into()))
}

/// The setting that proves which key sealed the store.
pub(super) const KEY_CHECK: &str = "secret_key_check";
pub(super) const KEY_CHECK_TEXT: &str = "tether secret key check";

/// Checks the key against the one `store` was sealed with (recording it on
/// first use).
pub(super) async fn check_key(
    store: &dyn super::Store,
    secrets: &Secrets,
) -> Result<(), super::StoreError> {
    let check = store.setting(KEY_CHECK).await?;
    match (secrets, check) {
        (Secrets::Sealed(key), None) => {
            store
                .set_setting(KEY_CHECK, &seal_with(key, KEY_CHECK_TEXT))
                .await
        }
        (Secrets::Sealed(_), Some(check)) => {
            secrets.open(&check).map_err(|_| {
                super::StoreError::Secret(SecretError::WrongKey(
                    "TETHER_SECRET_KEY is not the key this store was sealed with".into(),
                ))
            })?;
            Ok(())
        }
        (_, Some(_)) => Err(super::StoreError::Secret(SecretError::WrongKey(
            "this store holds encrypted secrets: set TETHER_SECRET_KEY (or secret_key_file) to its key".into(),
        ))),
        (_, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let key = SecretKey::generate();
        let sealed = seal_with(&key, "hunter2");
        assert!(sealed.starts_with("enc:v1:") && !sealed.contains("hunter2"));
        assert_ne!(sealed, seal_with(&key, "hunter2"), "nonces differ");
        assert_eq!(open_with(&key, &sealed).unwrap(), "hunter2");
        let other = SecretKey::generate();
        assert!(open_with(&other, &sealed).is_err());
        let mut altered = sealed.clone();
        altered.pop();
        altered.push('A');
        assert!(open_with(&key, &altered).is_err());
    }

    #[test]
    fn keys_parse_from_openssl_base64() {
        let key = SecretKey::generate();
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        assert!(SecretKey::from_base64(&format!("{text}\n")).is_ok());
        let e = SecretKey::from_base64("c2hvcnQ=").unwrap_err().to_string();
        assert!(e.contains("5 bytes"), "{e}");
        assert!(SecretKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn refused_without_a_key_and_plaintext_on_request() {
        let e = Secrets::Refused
            .seal("x", "the password of \"k\"")
            .unwrap_err();
        assert!(e.to_string().contains("TETHER_SECRET_KEY"), "{e}");
        assert_eq!(Secrets::Plaintext.seal("x", "p").unwrap(), "x");
        let sealed = seal_with(&SecretKey::generate(), "x");
        assert!(Secrets::Plaintext.open(&sealed).is_err());
        assert_eq!(Secrets::Refused.open("plain").unwrap(), "plain");
    }
}

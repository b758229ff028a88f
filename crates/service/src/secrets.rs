//! Secrets: random credentials, their hashes, app-scoped member ids and sealed cursors.
//!
//! Client secrets are kept as argon2 hashes; tokens and operator keys (high-entropy random
//! text) as BLAKE3 hashes. Nothing here keeps a secret in clear.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use consentry_types::{AppId, MemberId};
use rand::RngCore;

/// The server's own 256-bit key, kept in the data directory.
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(…)")
    }
}

impl ServerKey {
    pub fn generate() -> ServerKey {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        ServerKey(key)
    }
    pub fn from_bytes(bytes: [u8; 32]) -> ServerKey {
        ServerKey(bytes)
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
    fn derive(&self, purpose: &str) -> [u8; 32] {
        blake3::derive_key(purpose, &self.0)
    }

    /// The id an app sees for a member: a keyed hash of (app, member), so two apps cannot
    /// join what they received.
    pub fn scoped_member_id(&self, app: &AppId, member: &MemberId) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.derive("consentry 2026 app-scoped member id"));
        hasher.update(app.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(member.as_str().as_bytes());
        let hash = hasher.finalize();
        let hex = hash.to_hex();
        format!("m_{}", hex.get(..32).unwrap_or(&hex))
    }

    /// The secret a developer verifies webhook signatures with. Derived, not stored: it exists
    /// only while a signature is made or when the platform hands it to the developer.
    pub fn webhook_secret(&self, developer: &consentry_types::DeveloperId) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.derive("consentry 2026 webhook secret"));
        hasher.update(developer.as_str().as_bytes());
        format!("whsec_{}", hasher.finalize().to_hex())
    }

    /// Seals `payload` into an opaque cursor bound to `scope` (app, group, route).
    pub fn seal_cursor(&self, scope: &str, payload: &str) -> String {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let mut body = payload.as_bytes().to_vec();
        self.keystream(&nonce, &mut body);
        let tag = self.cursor_tag(scope, &nonce, &body);
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&body);
        sealed.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(sealed)
    }

    /// Opens a cursor sealed by [`ServerKey::seal_cursor`] for the same scope.
    pub fn open_cursor(&self, scope: &str, cursor: &str) -> Option<String> {
        if cursor.len() > 512 {
            return None;
        }
        let sealed = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce, rest) = sealed.split_at(12);
        let (body, tag) = rest.split_at(rest.len() - 16);
        let expected = self.cursor_tag(scope, nonce, body);
        if !constant_time_eq(&expected, tag) {
            return None;
        }
        let mut plain = body.to_vec();
        self.keystream(nonce, &mut plain);
        String::from_utf8(plain).ok()
    }

    fn keystream(&self, nonce: &[u8], data: &mut [u8]) {
        let mut hasher = blake3::Hasher::new_keyed(&self.derive("consentry 2026 cursor encryption"));
        hasher.update(nonce);
        let mut stream = vec![0u8; data.len()];
        hasher.finalize_xof().fill(&mut stream);
        for (byte, key) in data.iter_mut().zip(stream) {
            *byte ^= key;
        }
    }

    fn cursor_tag(&self, scope: &str, nonce: &[u8], body: &[u8]) -> [u8; 16] {
        let mut hasher = blake3::Hasher::new_keyed(&self.derive("consentry 2026 cursor mac"));
        hasher.update(scope.as_bytes());
        hasher.update(&[0]);
        hasher.update(nonce);
        hasher.update(body);
        let mut tag = [0u8; 16];
        hasher.finalize_xof().fill(&mut tag);
        tag
    }
}

/// Random text with `bytes` bytes of entropy, base64url.
pub fn random_text(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    OsRng.fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Random lowercase hex with `bytes` bytes of entropy.
pub fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    OsRng.fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored form of a high-entropy secret (token, operator key).
pub fn fast_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// The stored form of a client secret.
pub fn slow_hash(secret: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a client secret against its stored argon2 hash.
pub fn slow_verify(secret: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|hash| Argon2::default().verify_password(secret.as_bytes(), &hash).is_ok())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(text: &str) -> AppId {
        AppId::parse(text).unwrap_or_else(|e| unreachable!("{e}"))
    }
    fn member(text: &str) -> MemberId {
        MemberId::parse(text).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn scoped_ids_differ_between_apps_and_are_stable() {
        let key = ServerKey::generate();
        let a = key.scoped_member_id(&app("a1"), &member("alice"));
        assert_eq!(a, key.scoped_member_id(&app("a1"), &member("alice")));
        assert_ne!(a, key.scoped_member_id(&app("a2"), &member("alice")));
        assert!(!a.contains("alice"));
        // The separator keeps ("a1", "2x") and ("a12", "x") apart.
        assert_ne!(
            key.scoped_member_id(&app("a1"), &member("2x")),
            key.scoped_member_id(&app("a12"), &member("x"))
        );
    }

    #[test]
    fn cursor_opens_only_in_its_scope_and_unaltered() {
        let key = ServerKey::generate();
        let cursor = key.seal_cursor("app1/g1/members", "member-42");
        assert!(!cursor.contains("member-42"));
        assert_eq!(key.open_cursor("app1/g1/members", &cursor), Some("member-42".to_string()));
        assert_eq!(key.open_cursor("app2/g1/members", &cursor), None);
        let mut tampered = cursor.into_bytes();
        if let Some(b) = tampered.get_mut(14) {
            *b = if *b == b'A' { b'B' } else { b'A' };
        }
        let tampered = String::from_utf8(tampered).unwrap_or_default();
        assert_eq!(key.open_cursor("app1/g1/members", &tampered), None);
        assert_eq!(key.open_cursor("app1/g1/members", "%%%"), None);
        assert_eq!(ServerKey::generate().open_cursor("app1/g1/members", &key.seal_cursor("s", "x")), None);
    }

    #[test]
    fn client_secret_hash_verifies_only_the_secret() {
        let hash = slow_hash("s3cret").unwrap_or_default();
        assert!(hash.starts_with("$argon2id$"));
        assert!(slow_verify("s3cret", &hash));
        assert!(!slow_verify("s3creT", &hash));
        assert!(!slow_verify("s3cret", "not a hash"));
    }
}

//! Secrets: random credentials, their hashes, app-scoped member and post ids and sealed cursors.
//!
//! Client secrets are kept as argon2 hashes; tokens and operator keys (high-entropy random
//! text) as BLAKE3 hashes, compared in constant time (`subtle`). Cursors are sealed with
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`), the list they belong to as associated
//! data: no cryptography here is hand-built. Nothing here keeps a secret in clear.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use consentry_types::{AppId, MemberId, PostId};
use rand::RngCore;
use subtle::ConstantTimeEq;

/// XChaCha20-Poly1305's nonce: 192 bits, so random nonces never repeat in practice.
const NONCE_LEN: usize = 24;
/// Poly1305's tag.
const TAG_LEN: usize = 16;
/// The longest cursor text accepted; longer text is refused before it is decoded.
const MAX_CURSOR_LEN: usize = 512;

/// The server's keys, the same on every node (kept in the store, see `server_keys.rs`): the
/// identity key behind app-scoped ids, which never changes, and the cursor and webhook keys,
/// which rotate. Each rotating purpose has its current key first and, for a while after a
/// rotation, the one before it: cursors it sealed still open and webhooks are signed with both.
/// Generation 0 of each is derived from the identity key (what a `server.key` file of earlier
/// versions meant); later generations are random.
#[derive(Clone)]
pub struct ServerKey {
    pub(crate) identity: [u8; 32],
    /// Current first, then the previous generation while it is still accepted.
    pub(crate) cursor: Vec<[u8; 32]>,
    pub(crate) webhook: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(…)")
    }
}

pub(crate) const CURSOR_PURPOSE: &str = "consentry 2026 cursor xchacha20-poly1305";
pub(crate) const WEBHOOK_PURPOSE: &str = "consentry 2026 webhook secret";

impl ServerKey {
    pub fn generate() -> ServerKey {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        ServerKey::from_bytes(key)
    }
    /// The keys of an identity key alone: generation 0 of every purpose.
    pub fn from_bytes(bytes: [u8; 32]) -> ServerKey {
        ServerKey {
            identity: bytes,
            cursor: vec![blake3::derive_key(CURSOR_PURPOSE, &bytes)],
            webhook: vec![blake3::derive_key(WEBHOOK_PURPOSE, &bytes)],
        }
    }
    /// The identity key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.identity
    }
    fn derive(&self, purpose: &str) -> [u8; 32] {
        blake3::derive_key(purpose, &self.identity)
    }

    /// The id an app sees for a member: a keyed hash of (app, member), so two apps cannot
    /// join what they received.
    pub fn scoped_member_id(&self, app: &AppId, member: &MemberId) -> String {
        self.scoped_id("consentry 2026 app-scoped member id", "m_", app, member.as_str())
    }

    /// The id an app sees for a post: a keyed hash of (app, post), like member ids, so that a
    /// post two apps both read cannot join their member ids.
    pub fn scoped_post_id(&self, app: &AppId, post: &PostId) -> String {
        self.scoped_id("consentry 2026 app-scoped post id", "p_", app, post.as_str())
    }

    fn scoped_id(&self, purpose: &str, prefix: &str, app: &AppId, id: &str) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.derive(purpose));
        hasher.update(app.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(id.as_bytes());
        let hash = hasher.finalize();
        let hex = hash.to_hex();
        format!("{prefix}{}", hex.get(..32).unwrap_or(&hex))
    }

    /// The secret a developer verifies webhook signatures with (the current generation's).
    /// Derived, not stored: it exists only while a signature is made or when the platform
    /// hands it to the developer.
    pub fn webhook_secret(&self, developer: &consentry_types::DeveloperId) -> String {
        self.webhook_secrets(developer).into_iter().next().unwrap_or_default()
    }

    /// Every secret a webhook to `developer` is signed with now: the current one, and after a
    /// rotation, for a while, the previous one too (developers switch without losing one).
    pub fn webhook_secrets(&self, developer: &consentry_types::DeveloperId) -> Vec<String> {
        self.webhook
            .iter()
            .map(|key| {
                let mut hasher = blake3::Hasher::new_keyed(key);
                hasher.update(developer.as_str().as_bytes());
                format!("whsec_{}", hasher.finalize().to_hex())
            })
            .collect()
    }

    /// Seals `payload` into an opaque cursor bound to `scope` (app, group, route):
    /// `nonce || XChaCha20-Poly1305(payload, associated data = scope)`, base64url. `None` only
    /// if the cipher refuses, which it does for inputs of gigabytes.
    pub fn seal_cursor(&self, scope: &str, payload: &str) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cursor_ciphers()
            .next()?
            .encrypt(&XNonce::from(nonce), Payload { msg: payload.as_bytes(), aad: scope.as_bytes() })
            .ok()?;
        let mut cursor = nonce.to_vec();
        cursor.extend_from_slice(&sealed);
        Some(URL_SAFE_NO_PAD.encode(cursor))
    }

    /// Opens a cursor sealed by [`ServerKey::seal_cursor`] for the same scope, with the current
    /// cursor key or the previous one while it is accepted; anything else (another scope,
    /// another key, any byte changed, garbage) is `None`.
    pub fn open_cursor(&self, scope: &str, cursor: &str) -> Option<String> {
        if cursor.len() > MAX_CURSOR_LEN {
            return None;
        }
        let sealed = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).ok()?;
        let plain = self
            .cursor_ciphers()
            .find_map(|cipher| cipher.decrypt(&nonce, Payload { msg: body, aad: scope.as_bytes() }).ok())?;
        String::from_utf8(plain).ok()
    }

    fn cursor_ciphers(&self) -> impl Iterator<Item = XChaCha20Poly1305> + '_ {
        self.cursor.iter().map(|key| XChaCha20Poly1305::new(&(*key).into()))
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

/// Compares secrets' hashes in time independent of where they differ (`subtle`).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
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
    fn post_ids_differ_between_apps_and_from_member_ids() {
        let key = ServerKey::generate();
        let post = PostId::parse("hikers-p1").unwrap_or_else(|e| unreachable!("{e}"));
        let a = key.scoped_post_id(&app("a1"), &post);
        assert_eq!(a, key.scoped_post_id(&app("a1"), &post));
        assert_ne!(a, key.scoped_post_id(&app("a2"), &post));
        assert!(a.starts_with("p_") && !a.contains("hikers"));
        // A post and a member with the same text do not share an id.
        assert_ne!(a.get(2..), key.scoped_member_id(&app("a1"), &member("hikers-p1")).get(2..));
        assert_ne!(a, ServerKey::generate().scoped_post_id(&app("a1"), &post));
    }

    fn seal(key: &ServerKey, scope: &str, payload: &str) -> String {
        key.seal_cursor(scope, payload).unwrap_or_default()
    }

    #[test]
    fn cursor_opens_only_in_its_scope_and_unaltered() {
        let key = ServerKey::generate();
        let cursor = seal(&key, "app1/g1/members", "member-42");
        assert!(!cursor.contains("member-42"));
        assert_eq!(key.open_cursor("app1/g1/members", &cursor), Some("member-42".to_string()));
        assert_eq!(key.open_cursor("app2/g1/members", &cursor), None);
        assert_eq!(key.open_cursor("app1/g1/posts", &cursor), None);
        assert_eq!(key.open_cursor("app1/g1/members", "%%%"), None);
        assert_eq!(key.open_cursor("app1/g1/members", ""), None);
        assert_eq!(key.open_cursor("app1/g1/members", &"A".repeat(600)), None);
        // Sealed twice, the same payload gives two different cursors (random nonces).
        assert_ne!(cursor, seal(&key, "app1/g1/members", "member-42"));
    }

    #[test]
    fn any_flipped_bit_or_cut_refuses_the_cursor() {
        let key = ServerKey::generate();
        let sealed = URL_SAFE_NO_PAD.decode(seal(&key, "s", "member-42")).unwrap_or_default();
        assert_eq!(sealed.len(), NONCE_LEN + "member-42".len() + TAG_LEN);
        for at in 0..sealed.len() {
            for bit in 0..8 {
                let mut tampered = sealed.clone();
                if let Some(b) = tampered.get_mut(at) {
                    *b ^= 1 << bit;
                }
                assert_eq!(
                    key.open_cursor("s", &URL_SAFE_NO_PAD.encode(&tampered)),
                    None,
                    "byte {at} bit {bit}"
                );
            }
        }
        for len in 0..sealed.len() {
            let cut = URL_SAFE_NO_PAD.encode(sealed.get(..len).unwrap_or_default());
            assert_eq!(key.open_cursor("s", &cut), None, "cut to {len}");
        }
        let mut longer = sealed;
        longer.push(0);
        assert_eq!(key.open_cursor("s", &URL_SAFE_NO_PAD.encode(&longer)), None);
    }

    #[test]
    fn a_cursor_of_another_key_refuses() {
        let (key, other) = (ServerKey::generate(), ServerKey::generate());
        assert_eq!(other.open_cursor("s", &seal(&key, "s", "x")), None);
        assert_eq!(key.open_cursor("s", &seal(&other, "s", "x")), None);
        assert_eq!(
            ServerKey::from_bytes(key.to_bytes()).open_cursor("s", &seal(&key, "s", "x")),
            Some("x".into())
        );
    }

    #[test]
    fn cursor_is_xchacha20_poly1305_with_the_scope_as_associated_data() {
        // Sealed and opened here with the RustCrypto cipher directly, independently of
        // seal_cursor/open_cursor: the format is nonce || ciphertext || tag, nothing home-made.
        let key = ServerKey::generate();
        let cipher = XChaCha20Poly1305::new(&key.derive("consentry 2026 cursor xchacha20-poly1305").into());
        let nonce = [7u8; NONCE_LEN];
        let sealed = cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: b"hikers-p9", aad: b"app1/hikers/posts" })
            .unwrap_or_default();
        let mut cursor = nonce.to_vec();
        cursor.extend_from_slice(&sealed);
        assert_eq!(
            key.open_cursor("app1/hikers/posts", &URL_SAFE_NO_PAD.encode(&cursor)),
            Some("hikers-p9".into())
        );
        let ours = URL_SAFE_NO_PAD.decode(seal(&key, "app1/hikers/posts", "hikers-p9")).unwrap_or_default();
        let (their_nonce, body) = ours.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(their_nonce).unwrap_or_else(|_| unreachable!("24 bytes"));
        let opened = cipher.decrypt(&nonce, Payload { msg: body, aad: b"app1/hikers/posts" });
        assert_eq!(opened.ok().as_deref(), Some(&b"hikers-p9"[..]));
        assert!(cipher.decrypt(&nonce, Payload { msg: body, aad: b"app2/hikers/posts" }).is_err());
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
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

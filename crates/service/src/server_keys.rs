//! One server key on every node: the keys behind app-scoped ids, cursors and webhook
//! signatures live in the store, which every node shares, so whichever node answers, an app
//! sees one id per member, a cursor from one node opens on another, and a developer's webhook
//! secret is the same.
//!
//! Kept in the store, not in a file each node would need a copy of: the store is already what
//! the nodes share and back up, and losing the identity key would change every app-scoped id
//! for ever. It is kept as it is (not wrapped under another key, which each node would then
//! need and could lose); whoever can read the store can read the members' data itself. It is
//! never logged (`Debug` hides it) and never served over any API.
//!
//! The identity generation never changes. Cursor and webhook keys rotate
//! ([`Service::rotate_server_key`]): a new generation becomes current, and the one before it
//! stays accepted (cursors it sealed open; webhooks carry a signature under both secrets)
//! until the rotation's `previous_until`. Nodes reload the keys from the store (`serve` every
//! few seconds, and at once when a cursor does not open).
//!
//! A `server.key` file of an earlier version is imported as the identity generation, so ids,
//! cursors and webhook secrets keep their meaning; a different file on another node is refused.

use consentry_store::{SecretPurpose, ServerSecret, Store};
use consentry_types::Instant;
use rand::RngCore;

use crate::secrets::{ServerKey, CURSOR_PURPOSE, WEBHOOK_PURPOSE};
use crate::{Service, ServiceError, ServiceResult};

/// Where the keys a node uses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The store had them.
    Store,
    /// This node made the first identity key and stored it.
    Created,
    /// The `server.key` file of an earlier version was stored as the identity key.
    Imported,
}

impl ServerKey {
    /// The keys in force at `now` among the store's generations; `None` without an identity.
    pub fn from_secrets(secrets: &[ServerSecret], now: Instant) -> Option<ServerKey> {
        let identity = secrets
            .iter()
            .find(|s| s.purpose == SecretPurpose::Identity && s.generation == 0)
            .map(|s| s.material)?;
        let mut key = ServerKey::from_bytes(identity);
        for (purpose, label) in
            [(SecretPurpose::Cursor, CURSOR_PURPOSE), (SecretPurpose::Webhook, WEBHOOK_PURPOSE)]
        {
            let mut generations: Vec<&ServerSecret> =
                secrets.iter().filter(|s| s.purpose == purpose && s.generation > 0).collect();
            generations.sort_by_key(|s| s.generation);
            let Some(latest) = generations.last() else { continue };
            let derived = |generation: u32| -> Option<[u8; 32]> {
                if generation == 0 {
                    return Some(blake3::derive_key(label, &identity));
                }
                generations
                    .iter()
                    .find(|s| s.generation == generation)
                    .map(|s| blake3::derive_key(label, &s.material))
            };
            let mut keys: Vec<[u8; 32]> = derived(latest.generation).into_iter().collect();
            if now < latest.previous_until {
                keys.extend(derived(latest.generation - 1));
            }
            match purpose {
                SecretPurpose::Cursor => key.cursor = keys,
                _ => key.webhook = keys,
            }
        }
        Some(key)
    }
}

fn random() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// The server keys from the store, creating the identity generation on an empty store from
/// `legacy` (a `server.key` file of an earlier version) or at random. Two nodes starting on an
/// empty store at once end with the same keys (the store keeps the first). A `legacy` key
/// that differs from the stored identity is refused: that node would give apps other ids.
pub fn load_server_key(
    store: &dyn Store,
    legacy: Option<&ServerKey>,
    now: Instant,
) -> ServiceResult<(ServerKey, KeyOrigin)> {
    let mut origin = KeyOrigin::Store;
    if !store.server_secrets()?.iter().any(|s| s.purpose == SecretPurpose::Identity) {
        let (material, made) = match legacy {
            Some(key) => (key.to_bytes(), KeyOrigin::Imported),
            None => (random(), KeyOrigin::Created),
        };
        let identity = ServerSecret {
            purpose: SecretPurpose::Identity,
            generation: 0,
            material,
            created_at: now,
            previous_until: now,
        };
        if store.add_server_secret(&identity)? {
            origin = made;
        }
    }
    let key = ServerKey::from_secrets(&store.server_secrets()?, now)
        .ok_or_else(|| ServiceError::Internal("the store has no identity key".into()))?;
    if let Some(legacy) = legacy {
        if legacy.to_bytes() != key.to_bytes() {
            return Err(ServiceError::Conflict(
                "this node's server.key differs from the server key the store holds: its app-scoped ids would differ from the other nodes'; remove the file (the store's key is used) or start from the store it belongs to".into(),
            ));
        }
    }
    Ok((key, origin))
}

impl Service {
    /// The server keys in use now.
    pub fn server_key(&self) -> std::sync::Arc<ServerKey> {
        self.key.read().map(|k| k.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Reads the keys from the store again (another node may have rotated them).
    pub fn reload_server_key(&self) -> ServiceResult<()> {
        let now = self.clock.now();
        let key = ServerKey::from_secrets(&self.store.server_secrets()?, now)
            .ok_or_else(|| ServiceError::Internal("the store has no identity key".into()))?;
        if key.to_bytes() != self.server_key().to_bytes() {
            return Err(ServiceError::Internal(
                "the store's identity key is not the one this node serves with".into(),
            ));
        }
        if let Ok(mut slot) = self.key.write() {
            *slot = std::sync::Arc::new(key);
        }
        if let Ok(mut at) = self.key_loaded_at.lock() {
            *at = Some(now);
        }
        Ok(())
    }

    /// Reloads the keys unless they were loaded within the last second (a cursor that does
    /// not open may come from a node that rotated them).
    pub(crate) fn reload_server_key_soon(&self) {
        let now = self.clock.now();
        let recent = self
            .key_loaded_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| now.millis() - at.millis() < 1_000);
        if !recent {
            let _ = self.reload_server_key();
        }
    }

    /// Makes a new generation of the cursor or webhook key current; the one before stays
    /// accepted for `overlap_secs`. The identity key never rotates. Returns the generation.
    pub fn rotate_server_key(&self, purpose: SecretPurpose, overlap_secs: i64) -> ServiceResult<u32> {
        if purpose == SecretPurpose::Identity {
            return Err(ServiceError::InvalidInput(
                "the identity key never rotates: app-scoped ids are kept by developers for ever".into(),
            ));
        }
        if !(0..=90 * 86_400).contains(&overlap_secs) {
            return Err(ServiceError::InvalidInput("the overlap must be 0 to 90 days".into()));
        }
        let now = self.clock.now();
        loop {
            let latest = self
                .store
                .server_secrets()?
                .iter()
                .filter(|s| s.purpose == purpose)
                .map(|s| s.generation)
                .max()
                .unwrap_or(0);
            let generation = latest + 1;
            let secret = ServerSecret {
                purpose,
                generation,
                material: random(),
                created_at: now,
                previous_until: now.plus_secs(overlap_secs),
            };
            if self.store.add_server_secret(&secret)? {
                self.reload_server_key()?;
                return Ok(generation);
            }
        }
    }
}

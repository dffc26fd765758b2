//! What every backend keeps beside its connections: the keyring (the master keys values
//! are opened and sealed with), the parsed installation keys, and the audit log's
//! hashing key. None of it touches a database by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bunq_signing::{PrivateKey, ServerPublicKey};
use ring::hmac;
use secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

use crate::StoreError;
use crate::key::{MasterKey, sealed_key_id};

/// The master keys a store can open values with; the first one seals new values.
///
/// After a rotation the old key stays here (in memory only, until the store is
/// reopened): a read whose snapshot predates the rotation's commit still finds values
/// under the old key.
pub(crate) struct Keyring {
    keys: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring of one key.
    pub(crate) fn single(key: MasterKey) -> Self {
        Self { keys: vec![key] }
    }

    /// The keys values can be opened with.
    pub(crate) fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    /// The key new values are sealed under.
    pub(crate) fn sealer(&self) -> &MasterKey {
        &self.keys[0]
    }

    pub(crate) fn open(
        &self,
        blob: &[u8],
        table: &'static str,
        column: &'static str,
        row: &str,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.key_for(blob, table, column, row)?
            .open(blob, table, column, row)
    }

    pub(crate) fn open_string(
        &self,
        blob: &[u8],
        table: &'static str,
        column: &'static str,
        row: &str,
    ) -> Result<secrecy::SecretString, StoreError> {
        self.key_for(blob, table, column, row)?
            .open_string(blob, table, column, row)
    }

    fn key_for(
        &self,
        blob: &[u8],
        table: &'static str,
        column: &'static str,
        row: &str,
    ) -> Result<&MasterKey, StoreError> {
        let id = sealed_key_id(blob, table, column, row)?;
        // Fall back to the sealing key, whose `open` reports the unknown id in full.
        Ok(self
            .keys
            .iter()
            .find(|k| k.id() == id)
            .unwrap_or(&self.keys[0]))
    }
}

/// Parsed installation keys by credential. Parsing an RSA key (AWS-LC validates it) and
/// a PEM costs far more than the rest of a context lookup, and both change only with a
/// new installation, so the parsed forms are kept and reused while the decrypted bytes
/// still match.
pub(crate) struct ParsedKeys {
    pub(crate) private_key: PrivateKey,
    pub(crate) server_public_key: ServerPublicKey,
    /// SHA-256 of the stored server key PEM, to recognise the row's text without
    /// keeping 450 bytes of it per credential.
    server_public_key_pem_sha256: [u8; 32],
}

impl ParsedKeys {
    pub(crate) fn new(
        private_key: PrivateKey,
        server_public_key: ServerPublicKey,
        server_public_key_pem: &str,
    ) -> Self {
        Self {
            private_key,
            server_public_key,
            server_public_key_pem_sha256: sha256(server_public_key_pem),
        }
    }

    /// Whether these are the parses of a row holding `pkcs8_der` and
    /// `server_public_key_pem`. Comparing the decrypted bytes (not a cache key) means
    /// a re-installation under the same credential can never be served a stale key.
    pub(crate) fn matches(&self, pkcs8_der: &[u8], server_public_key_pem: &str) -> bool {
        self.private_key.pkcs8_der().expose_secret() == pkcs8_der
            && self.server_public_key_pem_sha256 == sha256(server_public_key_pem)
    }
}

fn sha256(text: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref());
    out
}

/// Bounds memory for stores with very many credentials; past it the cache starts over.
const KEY_CACHE_CAPACITY: usize = 10_000;

/// The keyring, the parsed-key cache and the audit key of one store.
pub(crate) struct Vault {
    keyring: RwLock<Arc<Keyring>>,
    key_cache: Mutex<HashMap<String, Arc<ParsedKeys>>>,
    /// The audit log's HMAC key, unsealed on first use (the keyring may change by then:
    /// a store opened with a new key before the rotation reads it after the rotation).
    audit_key: OnceLock<Arc<hmac::Key>>,
}

impl Vault {
    /// A vault holding `key` (and the audit key, when the open just created it).
    pub(crate) fn new(key: MasterKey, audit_key: Option<Arc<hmac::Key>>) -> Self {
        Self {
            keyring: RwLock::new(Arc::new(Keyring { keys: vec![key] })),
            key_cache: Mutex::new(HashMap::new()),
            audit_key: audit_key.map(OnceLock::from).unwrap_or_default(),
        }
    }

    pub(crate) fn keyring(&self) -> Arc<Keyring> {
        match self.keyring.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the keyring (after a committed rotation).
    pub(crate) fn set_keys(&self, keys: Vec<MasterKey>) {
        let ring = Arc::new(Keyring { keys });
        match self.keyring.write() {
            Ok(mut k) => *k = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
    }

    /// The audit key, if it was loaded already.
    pub(crate) fn loaded_audit_key(&self) -> Option<Arc<hmac::Key>> {
        self.audit_key.get().cloned()
    }

    /// Keeps the audit key a backend just loaded; returns the one kept.
    pub(crate) fn set_audit_key(&self, key: hmac::Key) -> Arc<hmac::Key> {
        let key = Arc::new(key);
        // Two loads at once load the same key; either copy will do.
        Arc::clone(self.audit_key.get_or_init(|| key))
    }

    pub(crate) fn cached_keys(&self, credential: &str) -> Option<Arc<ParsedKeys>> {
        self.key_cache.lock().ok()?.get(credential).cloned()
    }

    pub(crate) fn cache_keys(&self, credential: &str, keys: Arc<ParsedKeys>) {
        if let Ok(mut cache) = self.key_cache.lock() {
            if cache.len() >= KEY_CACHE_CAPACITY && !cache.contains_key(credential) {
                cache.clear();
            }
            cache.insert(credential.to_owned(), keys);
        }
    }

    pub(crate) fn evict_keys(&self, credential: &str) {
        if let Ok(mut cache) = self.key_cache.lock() {
            cache.remove(credential);
        }
    }
}

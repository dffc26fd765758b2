//! The master key and the sealing of secret columns (AES-256-GCM).
//!
//! A sealed value is one blob: `version (1) || key_id (8) || nonce (12) || ciphertext+tag`.
//! The associated data is the blob's header followed by `table \0 column \0 row-key`, so
//! a ciphertext copied to another row or column (or relabelled with another key id)
//! fails authentication instead of decrypting to someone else's secret.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use secrecy::{ExposeSecret as _, SecretBox};
use zeroize::Zeroizing;

use crate::StoreError;

/// The format byte leading every sealed value; a future format gets another number.
pub(crate) const FORMAT_V1: u8 = 1;
const KEY_ID_LEN: usize = 8;
const HEADER_LEN: usize = 1 + KEY_ID_LEN;
const TAG_LEN: usize = 16;
/// Domain separation: the key id is a hash of the key that must never collide with any
/// other use of the same bytes.
const KEY_ID_DOMAIN: &[u8] = b"bunq-store master key id v1\0";

/// Names a master key without revealing it: the first 8 bytes of a domain-separated
/// SHA-256 of the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// The raw id, as it stands in a sealed value's header.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

struct Inner {
    bytes: SecretBox<[u8; 32]>,
    id: KeyId,
    /// The AES key schedule, computed once per key rather than once per value.
    aead: LessSafeKey,
}

/// The 32-byte key every secret column is sealed under. It comes from the caller (a
/// config value or a key file) and never touches the database.
///
/// Cheap to clone. `Debug` shows only the key id.
#[derive(Clone)]
pub struct MasterKey(Arc<Inner>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("key_id", &self.0.id.to_string())
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let bytes = SecretBox::new(Box::new(bytes));
        let digest = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(KEY_ID_DOMAIN);
            ctx.update(bytes.expose_secret());
            ctx.finish()
        };
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        // AES-256 takes any 32 bytes, so this cannot fail for a 32-byte key.
        #[allow(clippy::expect_used)]
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes.expose_secret()).expect("32-byte AES-256 key");
        Self(Arc::new(Inner {
            bytes,
            id: KeyId(id),
            aead: LessSafeKey::new(unbound),
        }))
    }

    /// Reads a base64 (standard alphabet, padded) encoding of 32 bytes; surrounding
    /// whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, StoreError> {
        let decoded = Zeroizing::new(
            BASE64
                .decode(text.trim())
                .map_err(|_| StoreError::InvalidKey("not valid base64"))?,
        );
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::InvalidKey("base64 does not decode to 32 bytes"))?;
        Ok(Self::from_bytes(bytes))
    }

    /// Reads a key file: exactly 32 raw bytes, or the base64 of 32 bytes.
    ///
    /// Refuses a file that group or others may read (as `bunq_signing::PrivateKey::load`
    /// does): a master key others could have copied must not be used without a word.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        // A key file is tiny; a longer file is a wrong path (a log file, a device) and
        // is refused without being read whole.
        let contents = bunq_signing::read_private_file(path, 256)?;
        if let Ok(raw) = <[u8; 32]>::try_from(contents.as_slice()) {
            return Ok(Self::from_bytes(raw));
        }
        let text = std::str::from_utf8(&contents)
            .map_err(|_| StoreError::InvalidKey("key file is neither 32 raw bytes nor base64"))?;
        Self::from_base64(text)
    }

    /// A fresh random key from the operating system's random source.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| StoreError::Crypto("system random source failed"))?;
        Ok(Self::from_bytes(*bytes))
    }

    /// The key as base64, e.g. to write a new key file. Handle with care.
    pub fn to_base64(&self) -> secrecy::SecretString {
        BASE64.encode(self.0.bytes.expose_secret()).into()
    }

    /// Identifies the key without revealing it (16 hex digits of a domain-separated
    /// SHA-256): what the store records beside every sealed value, and what errors and
    /// the audit log name.
    pub fn key_id(&self) -> String {
        self.0.id.to_string()
    }

    pub(crate) fn id(&self) -> KeyId {
        self.0.id
    }

    /// Seals `plaintext` for `table.column` of the row keyed `row`.
    pub(crate) fn seal(
        &self,
        plaintext: &[u8],
        table: &'static str,
        column: &'static str,
        row: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::Crypto("system random source failed"))?;
        let mut blob = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        blob.push(FORMAT_V1);
        blob.extend_from_slice(&self.0.id.0);
        let aad = associated_data(&blob[..HEADER_LEN], table, column, row);
        blob.extend_from_slice(&nonce);
        let body_start = blob.len();
        blob.extend_from_slice(plaintext);
        let mut body = blob.split_off(body_start);
        self.0
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| StoreError::Crypto("AES-256-GCM seal failed"))?;
        blob.append(&mut body);
        Ok(blob)
    }

    /// Opens a value sealed by [`MasterKey::seal`] for the same table, column and row.
    pub(crate) fn open(
        &self,
        blob: &[u8],
        table: &'static str,
        column: &'static str,
        row: &str,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let key_id = sealed_key_id(blob, table, column, row)?;
        if key_id != self.0.id {
            return Err(StoreError::UnknownKeyId {
                key_id: key_id.to_string(),
                held: self.key_id(),
                table,
                column,
                row: row.to_owned(),
            });
        }
        let aad = associated_data(&blob[..HEADER_LEN], table, column, row);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
        let mut body = Zeroizing::new(blob[HEADER_LEN + NONCE_LEN..].to_vec());
        let len = self
            .0
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| StoreError::Decrypt {
                table,
                column,
                row: row.to_owned(),
            })?
            .len();
        body.truncate(len);
        Ok(body)
    }

    /// Opens a sealed UTF-8 string.
    pub(crate) fn open_string(
        &self,
        blob: &[u8],
        table: &'static str,
        column: &'static str,
        row: &str,
    ) -> Result<secrecy::SecretString, StoreError> {
        let mut bytes = self.open(blob, table, column, row)?;
        let text = String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
            // Zeroize what failed to parse, too.
            drop(Zeroizing::new(e.into_bytes()));
            StoreError::Corrupt(format!("{table}.{column} of row {row:?} is not UTF-8"))
        })?;
        Ok(text.into())
    }
}

/// The key id a sealed value was sealed under (checked for a well-formed header).
pub(crate) fn sealed_key_id(
    blob: &[u8],
    table: &'static str,
    column: &'static str,
    row: &str,
) -> Result<KeyId, StoreError> {
    if blob.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || blob[0] != FORMAT_V1 {
        return Err(StoreError::Corrupt(format!(
            "{table}.{column} of row {row:?} is not a sealed value"
        )));
    }
    let mut id = [0; KEY_ID_LEN];
    id.copy_from_slice(&blob[1..HEADER_LEN]);
    Ok(KeyId(id))
}

fn associated_data(header: &[u8], table: &str, column: &str, row: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + table.len() + column.len() + row.len() + 2);
    aad.extend_from_slice(header);
    aad.extend_from_slice(table.as_bytes());
    aad.push(0);
    aad.extend_from_slice(column.as_bytes());
    aad.push(0);
    aad.extend_from_slice(row.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_value_round_trips_for_its_own_row() {
        let key = MasterKey::generate().unwrap();
        let blob = key
            .seal(b"token", "users", "access_token", "alice")
            .unwrap();
        let plain = key.open(&blob, "users", "access_token", "alice").unwrap();
        assert_eq!(plain.as_slice(), b"token");
    }

    #[test]
    fn sealing_twice_uses_fresh_nonces() {
        let key = MasterKey::generate().unwrap();
        let a = key
            .seal(b"token", "users", "access_token", "alice")
            .unwrap();
        let b = key
            .seal(b"token", "users", "access_token", "alice")
            .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_value_moved_to_other_row_or_column() {
        let key = MasterKey::generate().unwrap();
        let blob = key
            .seal(b"token", "users", "access_token", "alice")
            .unwrap();
        assert!(matches!(
            key.open(&blob, "users", "access_token", "bob"),
            Err(StoreError::Decrypt { row, .. }) if row == "bob"
        ));
        assert!(matches!(
            key.open(&blob, "contexts", "secret", "alice"),
            Err(StoreError::Decrypt { .. })
        ));
    }

    #[test]
    fn rejects_tampered_ciphertext_and_truncated_blob() {
        let key = MasterKey::generate().unwrap();
        let mut blob = key
            .seal(b"token", "users", "access_token", "alice")
            .unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert!(matches!(
            key.open(&blob, "users", "access_token", "alice"),
            Err(StoreError::Decrypt { .. })
        ));
        assert!(matches!(
            key.open(&blob[..10], "users", "access_token", "alice"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn wrong_key_is_named_by_key_id() {
        let key = MasterKey::generate().unwrap();
        let other = MasterKey::generate().unwrap();
        let blob = key
            .seal(b"token", "users", "access_token", "alice")
            .unwrap();
        match other.open(&blob, "users", "access_token", "alice") {
            Err(StoreError::UnknownKeyId { key_id, held, .. }) => {
                assert_eq!(key_id, key.key_id());
                assert_eq!(held, other.key_id());
            }
            other => panic!("expected UnknownKeyId, got {other:?}"),
        }
    }

    #[test]
    fn key_id_is_stable_and_hides_the_key() {
        let key = MasterKey::from_bytes([7; 32]);
        assert_eq!(key.key_id(), MasterKey::from_bytes([7; 32]).key_id());
        assert_eq!(key.key_id().len(), 16);
        assert_ne!(key.key_id(), MasterKey::from_bytes([8; 32]).key_id());
        let debug = format!("{key:?}");
        assert!(debug.contains(&key.key_id()));
        assert!(!debug.contains("7, 7"));
    }

    #[test]
    fn base64_key_must_be_32_bytes() {
        let key = MasterKey::from_bytes([9; 32]);
        let b64 = key.to_base64();
        let again = MasterKey::from_base64(&format!(" {}\n", b64.expose_secret())).unwrap();
        assert_eq!(again.key_id(), key.key_id());
        assert!(matches!(
            MasterKey::from_base64("c2hvcnQ="),
            Err(StoreError::InvalidKey(_))
        ));
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(StoreError::InvalidKey(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_accepts_raw_or_base64_and_refuses_open_modes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, [5u8; 32]).unwrap();
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            MasterKey::from_file(&raw).unwrap().key_id(),
            MasterKey::from_bytes([5; 32]).key_id()
        );

        let b64 = dir.path().join("b64.key");
        let text = format!(
            "{}\n",
            MasterKey::from_bytes([6; 32]).to_base64().expose_secret()
        );
        std::fs::write(&b64, text).unwrap();
        std::fs::set_permissions(&b64, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(
            MasterKey::from_file(&b64).unwrap().key_id(),
            MasterKey::from_bytes([6; 32]).key_id()
        );

        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            MasterKey::from_file(&raw),
            Err(StoreError::KeyFile(bunq_signing::KeyFileError::TooOpen {
                mode: 0o640,
                ..
            }))
        ));
        assert!(matches!(
            MasterKey::from_file(dir.path().join("missing")),
            Err(StoreError::KeyFile(_))
        ));
    }
}

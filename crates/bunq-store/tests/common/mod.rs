//! Shared fixtures for the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bunq_session::{ApiContext, Device, Installation, Session, UserKind};
use bunq_signing::PrivateKey;
use bunq_store::{MasterKey, Store};
use secrecy::SecretString;

/// RSA generation is slow; one installation key and one "server" key per test binary.
pub fn installation_key() -> PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate().unwrap()).clone()
}

pub fn server_key() -> PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate().unwrap()).clone()
}

/// A temporary directory with a database path inside.
pub struct TempDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn temp_db() -> TempDb {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    TempDb { dir, path }
}

pub async fn open(path: &Path, key: &MasterKey) -> Store {
    Store::open(path, key.clone()).await.unwrap()
}

/// A realistic context: real keys, device, live session.
pub fn context(
    secret: &str,
    installation_token: &str,
    session_token: &str,
    session_id: u64,
) -> ApiContext {
    ApiContext {
        api_base: "https://public-api.sandbox.bunq.com/v1".to_owned(),
        secret: SecretString::from(secret.to_owned()),
        installation: Installation {
            id: 11,
            token: SecretString::from(installation_token.to_owned()),
            private_key: installation_key(),
            server_public_key: server_key().public_key(),
        },
        device: Some(Device { id: 22 }),
        session: Some(Session {
            id: session_id,
            token: SecretString::from(session_token.to_owned()),
            user_id: 33,
            kind: UserKind::UserApiKey,
            granted_by_user_id: None,
            expires_at: SystemTime::UNIX_EPOCH + Duration::new(1_900_000_000, 123_456_789),
        }),
    }
}

/// A raw connection to the same file, for attacks and inspection behind the store's back.
pub fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

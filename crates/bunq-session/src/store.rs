//! Where contexts live between calls and across restarts.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use crate::{ApiContext, CreationLock, CredentialId};

/// A failure of the storage behind a [`ContextStore`]; the source says what.
#[derive(Debug, thiserror::Error)]
#[error("context store: {0}")]
pub struct ContextStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Persistence of one [`ApiContext`] per credential.
///
/// bunq allows one `session-server` call per 30 s per IP, so a session is worth keeping:
/// whatever implements this must make a saved context survive a restart (bunq-store keeps
/// it encrypted in SQLite; [`MemoryContextStore`] is for tests and one-shot tools).
pub trait ContextStore: Send + Sync + 'static {
    /// The context saved for `credential`, if any.
    fn load(
        &self,
        credential: &CredentialId,
    ) -> impl Future<Output = Result<Option<ApiContext>, ContextStoreError>> + Send;

    /// Saves (inserts or replaces) the context for `credential`.
    fn save(
        &self,
        credential: &CredentialId,
        context: &ApiContext,
    ) -> impl Future<Output = Result<(), ContextStoreError>> + Send;

    /// For a store that several processes share: a lock on `credential` held while one
    /// of them creates a session for it. With `Some`, the [`SessionManager`](crate::SessionManager)
    /// reads the context again once it holds the lock, and uses the session another
    /// process stored meanwhile instead of opening one more (bunq allows one per 30 s per
    /// IP). `None` (the default): the store is this process's alone, whose creations are
    /// single-flight already.
    fn lock_creation(
        &self,
        credential: &CredentialId,
    ) -> impl Future<Output = Result<Option<CreationLock>, ContextStoreError>> + Send {
        let _ = credential;
        async { Ok(None) }
    }
}

/// A [`ContextStore`] in memory: nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryContextStore {
    contexts: Mutex<HashMap<CredentialId, ApiContext>>,
}

impl MemoryContextStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ContextStore for MemoryContextStore {
    async fn load(
        &self,
        credential: &CredentialId,
    ) -> Result<Option<ApiContext>, ContextStoreError> {
        let contexts = self
            .contexts
            .lock()
            .map_err(|_| ContextStoreError("memory store lock poisoned".into()))?;
        Ok(contexts.get(credential).cloned())
    }

    async fn save(
        &self,
        credential: &CredentialId,
        context: &ApiContext,
    ) -> Result<(), ContextStoreError> {
        let mut contexts = self
            .contexts
            .lock()
            .map_err(|_| ContextStoreError("memory store lock poisoned".into()))?;
        contexts.insert(credential.clone(), context.clone());
        Ok(())
    }
}

/// Shares one store between several owners (two managers in a restart test, a manager
/// and the application).
impl<T: ContextStore> ContextStore for std::sync::Arc<T> {
    fn load(
        &self,
        credential: &CredentialId,
    ) -> impl Future<Output = Result<Option<ApiContext>, ContextStoreError>> + Send {
        (**self).load(credential)
    }

    fn save(
        &self,
        credential: &CredentialId,
        context: &ApiContext,
    ) -> impl Future<Output = Result<(), ContextStoreError>> + Send {
        (**self).save(credential, context)
    }

    fn lock_creation(
        &self,
        credential: &CredentialId,
    ) -> impl Future<Output = Result<Option<CreationLock>, ContextStoreError>> + Send {
        (**self).lock_creation(credential)
    }
}

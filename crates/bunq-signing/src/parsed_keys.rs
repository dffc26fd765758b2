//! Where parsed key material lives, so that memory does not grow ~12 KB per session.
//!
//! AWS-LC's parsed RSA private key holds its CRT values, and after its first signature
//! its Montgomery contexts and blinding: about 9.6 KB. A gateway with 10,000 live
//! sessions held 10,000 of them, though a session signs with its key only when a
//! request has a body (the empty body's signature is computed once and kept by the
//! key). So a [`PrivateKey`](crate::PrivateKey) keeps its PKCS#8 DER, and the parsed
//! form of the most recently used keys lives here, in a bounded LRU cache; a key that
//! falls out is parsed again at its next signature.
//!
//! Public keys are the other way round: every installation with bunq is told the same
//! server key, and each stored context parsed its own copy (2.3 KB each). Public keys
//! are interned by their DER, so every holder of one key shares one parse, and the
//! entry goes when its last holder does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use aws_lc_rs::signature::RsaKeyPair;
use hashlink::LruCache;

/// How many parsed private keys are kept by default: ~10 MB at 9.6 KB each, the keys
/// of the last 1,024 users who sent a body (a payment, say). A miss costs one parse
/// (see `cargo bench -p bunq-signing`), against the signature's own ~0.25 ms.
pub const DEFAULT_PARSED_KEY_CAPACITY: usize = 1024;

static PRIVATE: LazyLock<Mutex<LruCache<u64, Arc<RsaKeyPair>>>> =
    LazyLock::new(|| Mutex::new(LruCache::new(DEFAULT_PARSED_KEY_CAPACITY)));

static NEXT_PRIVATE_ID: AtomicU64 = AtomicU64::new(1);

/// A poisoned lock only means another thread panicked while holding it; the map is
/// still consistent (every operation on it is a single call), so it is used anyway.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets how many parsed private keys are kept (at least one). Lowering it drops the
/// least recently used at once.
pub fn set_parsed_key_capacity(capacity: usize) {
    lock(&PRIVATE).set_capacity(capacity.max(1));
}

/// How many parsed private keys are held now.
pub fn parsed_key_count() -> usize {
    lock(&PRIVATE).len()
}

/// A private key's name in the cache: a counter, never reused within the process, so a
/// dropped key's entry can never answer for another key.
pub(crate) fn new_private_id() -> u64 {
    NEXT_PRIVATE_ID.fetch_add(1, Ordering::Relaxed)
}

/// The parsed key `id`, if it is still cached (and now the most recently used).
pub(crate) fn cached_private(id: u64) -> Option<Arc<RsaKeyPair>> {
    lock(&PRIVATE).get(&id).cloned()
}

/// Keeps `pair` as key `id`'s parse; the cache evicts the least recently used beyond
/// its capacity.
pub(crate) fn keep_private(id: u64, pair: Arc<RsaKeyPair>) {
    lock(&PRIVATE).insert(id, pair);
}

/// Forgets key `id`'s parse (the key itself was dropped).
pub(crate) fn forget_private(id: u64) {
    lock(&PRIVATE).remove(&id);
}

/// Public keys by their PKCS#1 DER. Entries hold `Weak`s: the table never keeps a key
/// alive, and a key's last holder removes its entry.
static PUBLIC: LazyLock<Mutex<PublicTable>> = LazyLock::new(Default::default);

type PublicTable = HashMap<Box<[u8]>, Weak<crate::verify::Parsed>>;

/// The shared parse of the public key `pkcs1_der`, made by `parse` if no live holder
/// has one.
pub(crate) fn intern_public<E>(
    pkcs1_der: Vec<u8>,
    parse: impl FnOnce(Vec<u8>) -> Result<crate::verify::Parsed, E>,
) -> Result<Arc<crate::verify::Parsed>, E> {
    if let Some(live) = lock(&PUBLIC)
        .get(pkcs1_der.as_slice())
        .and_then(Weak::upgrade)
    {
        return Ok(live);
    }
    // Parsed outside the lock; if another thread interned the same key meanwhile, its
    // parse wins and ours is dropped, also outside the lock (dropping a `Parsed` takes
    // the lock to remove its entry).
    let fresh = Arc::new(parse(pkcs1_der)?);
    let existing = {
        let mut table = lock(&PUBLIC);
        match table.get(fresh.pkcs1_der()).and_then(Weak::upgrade) {
            Some(live) => Some(live),
            None => {
                table.insert(fresh.pkcs1_der().into(), Arc::downgrade(&fresh));
                None
            }
        }
    };
    Ok(existing.unwrap_or(fresh))
}

/// Removes the entry of a public key whose last holder is going, unless a new parse of
/// the same key has taken its place meanwhile.
pub(crate) fn forget_public(pkcs1_der: &[u8]) {
    let mut table = lock(&PUBLIC);
    if table
        .get(pkcs1_der)
        .is_some_and(|entry| entry.strong_count() == 0)
    {
        table.remove(pkcs1_der);
    }
}

/// How many distinct public keys are parsed now.
pub fn interned_public_key_count() -> usize {
    lock(&PUBLIC)
        .values()
        .filter(|entry| entry.strong_count() > 0)
        .count()
}

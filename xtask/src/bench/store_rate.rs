//! Item 10: idempotency-keyed POST records per second in bunq-store (SQLite,
//! `synchronous=FULL`, the gateway's default), the way the gateway's `idempotent.rs`
//! uses them: per key, `begin_idempotent` (a new key: `Send`), `finish_idempotent` with
//! a payment-sized answer, and the read back a caller's retry makes
//! (`begin_idempotent` again: `Replay` of that answer, checked). Many callers at once,
//! as under load: [`TASKS`] tasks, each key its own.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bunq_store::{
    IdempotencyBegin, IdempotencyScope, MasterKey, Store, StoreOptions, StoredAnswer,
    request_fingerprint,
};
use serde_json::json;

use super::report::{Report, Verdict};

/// Concurrent callers: as many as item 3's wrk connections.
const TASKS: usize = 64;

/// The goal, keys per second.
const GOAL: f64 = 5_000.0;

/// Keys written, finished and read back per second over `span`, in a fresh database
/// at `db`.
pub async fn measure(
    report: &mut Report,
    db: &Path,
    key: MasterKey,
    span: Duration,
) -> Result<(), String> {
    let _ = std::fs::remove_file(db);
    // The default options: `Durability::Full`, i.e. `synchronous=FULL`.
    let store = Store::open_with(db, key, StoreOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (store, done) = (store.clone(), done.clone());
        tasks.spawn(async move {
            let mut i = 0u64;
            while started.elapsed() < span {
                one_key(&store, t, i).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| e.to_string())??;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let _ = store.close().await;
    report.row(
        "10",
        format!("idempotency keys begun, finished and read back ({TASKS} tasks, SQLite FULL)"),
        format!("{rate:.0}/s"),
        format!(">= {GOAL:.0}/s"),
        Verdict::of(rate >= GOAL),
    );
    report.section(
        "idempotency",
        json!({ "keys_per_second": rate, "tasks": TASKS, "seconds": span.as_secs_f64() }),
    );
    Ok(())
}

/// One key's life: begin (new), finish, read back (replayed, compared).
async fn one_key(store: &Store, task: usize, i: u64) -> Result<(), String> {
    let key = format!("bench-key-{task}-{i}");
    let scope = IdempotencyScope {
        caller: "bench-caller",
        user_ref: "bench-user",
        key: &key,
    };
    let body = format!(r#"{{"amount":{{"value":"0.01","currency":"EUR"}},"description":"{key}"}}"#);
    let fingerprint = request_fingerprint(
        "POST",
        "/user/1/monetary-account/2/payment",
        body.as_bytes(),
    );
    let retention = Duration::from_secs(24 * 3600);
    let request_id = format!("bench-{task}-{i}");
    match store
        .begin_idempotent(scope, fingerprint, &request_id, retention)
        .await
        .map_err(|e| e.to_string())?
    {
        IdempotencyBegin::Send { .. } => {}
        other => return Err(format!("{key}: a new key answered {other:?}")),
    }
    let answer = StoredAnswer {
        status: 200,
        content_type: Some("application/json".into()),
        body: format!(r#"{{"Response":[{{"Id":{{"id":{i}}}}}]}}"#).into_bytes(),
    };
    store
        .finish_idempotent(scope, &answer)
        .await
        .map_err(|e| e.to_string())?;
    match store
        .begin_idempotent(scope, fingerprint, "unused", retention)
        .await
        .map_err(|e| e.to_string())?
    {
        IdempotencyBegin::Replay(replayed) if replayed == answer => Ok(()),
        other => Err(format!("{key}: read back {other:?}")),
    }
}

//! An acknowledged write survives SIGKILL: a child process writes connected users in a
//! loop and prints each acknowledged one; the parent kills it mid-stream and checks
//! every acknowledged write is in the reopened database (a SQLite file, or a PostgreSQL
//! schema).
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
mod common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bunq_store::{Durability, MasterKey, Store, StoreLocation, StoreOptions, UserStatus};
use common::TestDb;
use secrecy::{ExposeSecret as _, SecretString};

const CHILD_DB: &str = "BUNQ_STORE_DURABILITY_CHILD_DB";
const CHILD_KEY: &str = "BUNQ_STORE_DURABILITY_CHILD_KEY";
const CHILD_MODE: &str = "BUNQ_STORE_DURABILITY_CHILD_MODE";
/// How many acknowledgements the parent waits for before it kills the child.
const ACKS_BEFORE_KILL: usize = 150;
/// The child stops on its own after this many writes or this long, in case the parent
/// died without killing it.
const CHILD_MAX_WRITES: u64 = 100_000;
const CHILD_MAX_TIME: Duration = Duration::from_secs(60);

fn token(i: u64) -> String {
    format!("token-{i}")
}

/// The writer half: does nothing unless the parent started this binary as its child.
#[test]
fn durability_child_writer() {
    let (Ok(db), Ok(key), Ok(mode)) = (
        std::env::var(CHILD_DB),
        std::env::var(CHILD_KEY),
        std::env::var(CHILD_MODE),
    ) else {
        return;
    };
    let durability = if mode == "full" {
        Durability::Full
    } else {
        Durability::ProcessCrash
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let key = MasterKey::from_base64(&key).unwrap();
        let options = StoreOptions::default().durability(durability);
        let location = StoreLocation::parse(&db).unwrap();
        let store = Store::open_location(&location, key, options).await.unwrap();
        let started = Instant::now();
        for i in 0..CHILD_MAX_WRITES {
            if started.elapsed() > CHILD_MAX_TIME {
                break;
            }
            let user = format!("user-{i}");
            store
                .put_access_token(&user, &SecretString::from(token(i)))
                .await
                .unwrap();
            store.mark_connected(&user, i).await.unwrap();
            // Only now is the write acknowledged.
            println!("ACK {i}");
        }
    });
}

fn killed_writer_loses_no_acknowledged_write(db: &TestDb, mode: &str) {
    let key = MasterKey::generate().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, db.location())
        .env(CHILD_KEY, key.to_base64().expose_secret())
        .env(CHILD_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.strip_prefix("ACK ") {
                if tx.send(i.trim().parse::<u64>().unwrap()).is_err() {
                    break;
                }
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked = Vec::new();
    while acked.len() < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(i) => acked.push(i),
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "child stopped acknowledging after {} writes: {e}",
                    acked.len()
                );
            }
        }
    }
    // SIGKILL on unix: no destructors, no checkpoint, mid-stream of writes.
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    // Lines already in the pipe were acknowledged too.
    acked.extend(rx.try_iter());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = db.open(&key).await;
        store.integrity_check().await.unwrap();
        for &i in &acked {
            let user = format!("user-{i}");
            let record = store
                .user(&user)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged write {i} lost ({mode})"));
            assert_eq!(record.status, UserStatus::Connected);
            assert_eq!(record.bunq_user_id, Some(i));
            assert_eq!(
                store
                    .access_token(&user)
                    .await
                    .unwrap()
                    .unwrap()
                    .expose_secret(),
                &token(i)
            );
        }
        let max = acked.iter().copied().max().unwrap();
        assert!(store.count_users().await.unwrap() > max);
    });
}

#[cfg(unix)]
#[test]
fn killed_writer_loses_no_acknowledged_write_with_full_sync() {
    killed_writer_loses_no_acknowledged_write(&TestDb::sqlite(), "full");
}

#[cfg(unix)]
#[test]
fn killed_writer_loses_no_acknowledged_write_with_normal_sync() {
    killed_writer_loses_no_acknowledged_write(&TestDb::sqlite(), "normal");
}

/// On PostgreSQL the killed process is only the client: a commit the server
/// acknowledged (`synchronous_commit = on`) is there, whatever happens to the gateway.
#[cfg(unix)]
#[test]
fn killed_writer_loses_no_acknowledged_write_on_postgres() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = runtime.block_on(TestDb::postgres()) else {
        return;
    };
    killed_writer_loses_no_acknowledged_write(&db, "full");
}

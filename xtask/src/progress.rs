//! Step-by-step progress lines with timings, and failures that say what to do.

use std::fmt::Display;
use std::time::Instant;

/// A failed step: which step, what went wrong, and what the person running it can do.
#[derive(Debug, thiserror::Error)]
#[error("step \"{step}\" failed: {detail}\n  what to do: {hint}")]
pub struct StepError {
    /// The step's name.
    pub step: String,
    /// The cause, with bunq's error text and response id where there is one.
    pub detail: String,
    /// The advice.
    pub hint: String,
}

/// Prints numbered steps as they start and finish.
pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self {
            total,
            done: 0,
            started: Instant::now(),
        }
    }

    /// Runs one step, printing its name, its outcome line and its duration.
    pub async fn step<T, E: Display>(
        &mut self,
        name: &str,
        hint: &str,
        work: impl Future<Output = Result<(T, String), E>>,
    ) -> Result<T, StepError> {
        self.done += 1;
        let width = self.total.to_string().len();
        println!("[{:>width$}/{}] {name} ...", self.done, self.total);
        let start = Instant::now();
        match work.await {
            Ok((value, outcome)) => {
                println!(
                    "{:>w$}  ok: {outcome} ({} ms)",
                    "",
                    start.elapsed().as_millis(),
                    w = 2 * width + 1
                );
                Ok(value)
            }
            Err(e) => Err(StepError {
                step: name.to_owned(),
                detail: e.to_string(),
                hint: hint.to_owned(),
            }),
        }
    }

    /// Time since the first step started.
    pub fn elapsed_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }
}

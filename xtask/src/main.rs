//! Developer chores, run as `cargo xtask <command>` (rust-analyzer's xtask pattern: no
//! shell scripts, nothing to install but cargo).
//!
//! - `sandbox-setup`: onboard against bunq's sandbox (or a bunq-fake) and write a gateway config.
//! - `demo`: the whole flow against a local fake bunq, start to finish.
//! - `bench`: the performance comparisons of `docs/PERFORMANCE.md`.
//! - `fuzz`: every cargo-fuzz target of `fuzz/` for N seconds.
//! - `soak`: the gateway and the fake bunq under load and faults for N minutes, then
//!   the invariants.

mod bench;
mod demo;
mod fake_process;
mod fuzz;
mod gateway_process;
mod progress;
mod sandbox;
mod sandbox_psd2;
mod soak;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer chores for the bunq gateway workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Onboard against bunq's sandbox: user, API key, context, money, OAuth client, gateway config.
    SandboxSetup(Box<sandbox::SandboxArgs>),
    /// Run the whole flow against a local fake bunq and shut down cleanly.
    Demo(demo::DemoArgs),
    /// Measure signing, the gateway against nginx, sessions, the store and the footprint.
    Bench(bench::BenchArgs),
    /// Run every cargo-fuzz target (fuzz/) for --seconds each, on the committed seeds.
    Fuzz(fuzz::FuzzArgs),
    /// The gateway and the fake bunq under mixed load and faults (SIGKILLs included) for
    /// --minutes, then the invariants as a table; non-zero exit if one fails.
    Soak(soak::SoakArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::SandboxSetup(args) => sandbox::run(&args).await.map(|_| ()),
        Task::Demo(args) => demo::run(&args).await,
        Task::Bench(args) => bench::run(&args).await,
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Soak(args) => soak::run(&args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

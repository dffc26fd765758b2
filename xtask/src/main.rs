//! Developer chores, run as `cargo xtask <command>` (rust-analyzer's xtask pattern: no
//! shell scripts, nothing to install but cargo).
//!
//! - `sandbox-setup`: onboard against bunq's sandbox (or a bunq-fake) and write a gateway config.
//! - `demo`: the whole flow against a local fake bunq, start to finish.
//! - `bench`: the performance comparisons of `docs/PERFORMANCE.md`.
//! - `fuzz`: every cargo-fuzz target of `fuzz/` for N seconds.

mod bench;
mod demo;
mod fuzz;
mod gateway_process;
mod progress;
mod sandbox;

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
    SandboxSetup(sandbox::SandboxArgs),
    /// Run the whole flow against a local fake bunq and shut down cleanly.
    Demo(demo::DemoArgs),
    /// Measure signing, the gateway against nginx, sessions, the store and the footprint.
    Bench(bench::BenchArgs),
    /// Run every cargo-fuzz target (fuzz/) for --seconds each, on the committed seeds.
    Fuzz(fuzz::FuzzArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::SandboxSetup(args) => sandbox::run(&args).await.map(|_| ()),
        Task::Demo(args) => demo::run(&args).await,
        Task::Bench(args) => bench::run(&args).await,
        Task::Fuzz(args) => fuzz::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

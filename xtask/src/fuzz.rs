//! `cargo xtask fuzz`: runs every cargo-fuzz target of `fuzz/` for a while, each on its
//! committed seeds (`fuzz/seeds/<target>`, read only) and a working corpus
//! (`fuzz/corpus/<target>`, git-ignored, kept between runs).
//!
//! libFuzzer needs nightly compiler flags. With `--toolchain stable` (the default when no
//! nightly is installed) the stable compiler is asked to accept them with
//! `RUSTC_BOOTSTRAP=1`, which is enough for `-Zsanitizer=address` on x86_64 Linux.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::progress::StepError;

/// The targets, in `fuzz/Cargo.toml`'s order.
pub const TARGETS: &[&str] = &[
    "callback_query",
    "config_toml",
    "bunq_envelope",
    "signing_keys",
    "proxy_path",
    "callback_body",
    "webhook",
];

/// `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only these targets (repeatable); all by default.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// `stable` (with RUSTC_BOOTSTRAP=1) or `nightly`.
    #[arg(long, default_value = "stable")]
    toolchain: String,
}

fn fail(step: &str, detail: impl Into<String>, hint: &str) -> StepError {
    StepError {
        step: step.to_owned(),
        detail: detail.into(),
        hint: hint.to_owned(),
    }
}

fn workspace_root() -> PathBuf {
    // xtask's manifest is <root>/xtask/Cargo.toml.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs each target for `--seconds`; the first crash stops the run with its artifact.
pub fn run(args: &FuzzArgs) -> Result<(), StepError> {
    let root = workspace_root();
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    if let Some(unknown) = targets.iter().find(|t| !TARGETS.contains(t)) {
        return Err(fail(
            "fuzz",
            format!("unknown target {unknown:?}"),
            &format!("one of {}", TARGETS.join(", ")),
        ));
    }
    let version = Command::new("cargo").args(["fuzz", "--version"]).output();
    if !version.is_ok_and(|o| o.status.success()) {
        return Err(fail(
            "fuzz",
            "cargo fuzz is not installed",
            "cargo install cargo-fuzz --locked",
        ));
    }
    for target in targets {
        let corpus = root.join("fuzz/corpus").join(target);
        let seeds = root.join("fuzz/seeds").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| {
            fail(
                target,
                format!("cannot create {}: {e}", corpus.display()),
                "",
            )
        })?;
        println!("fuzz {target}: {} s", args.seconds);
        let mut command = Command::new("cargo");
        if args.toolchain != "stable" {
            command.arg(format!("+{}", args.toolchain));
        } else {
            command.env("RUSTC_BOOTSTRAP", "1");
        }
        let status = command
            .current_dir(&root)
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            // Inputs stay small: the parsers' limits are far below this.
            .arg("-max_len=65536")
            .arg("-print_final_stats=1")
            .status()
            .map_err(|e| fail(target, format!("cannot run cargo fuzz: {e}"), ""))?;
        if !status.success() {
            return Err(fail(
                target,
                format!("cargo fuzz run {target} failed ({status})"),
                &format!(
                    "a crash input is in fuzz/artifacts/{target}/: reproduce with \
                     `cargo fuzz run {target} <file>`, then add it as a regression test in the crate"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list above, `fuzz/Cargo.toml`'s binaries and the committed seeds agree, so no
    /// target is left out of the CI pass or runs without seeds.
    #[test]
    fn targets_match_the_fuzz_manifest_and_have_seeds() {
        let root = workspace_root();
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).expect("manifest");
        let table: toml::Table = manifest.parse().expect("TOML");
        let bins: Vec<String> = table["bin"]
            .as_array()
            .expect("[[bin]]")
            .iter()
            .map(|b| b["name"].as_str().expect("name").to_owned())
            .collect();
        assert_eq!(bins, TARGETS);
        for target in TARGETS {
            let seeds = std::fs::read_dir(root.join("fuzz/seeds").join(target))
                .expect("seeds dir")
                .count();
            assert!(seeds > 0, "{target} has no seeds");
        }
    }
}

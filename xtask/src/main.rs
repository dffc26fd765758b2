//! Developer chores, run as `cargo xtask <command>`: `sandbox-setup`, `demo`, `bench`.

fn main() {
    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "demo" | "sandbox-setup" | "bench" => {
            eprintln!("cargo xtask {command}: not yet available");
            std::process::exit(2);
        }
        _ => {
            eprintln!("usage: cargo xtask <demo|sandbox-setup|bench>");
            std::process::exit(2);
        }
    }
}

//! bunq-gateway: connects end users' bunq accounts over OAuth and calls bunq for them.
//!
//! (Skeleton: the binary arrives with issue 7.)

fn main() {
    eprintln!("bunq-gateway: not yet available");
    std::process::exit(2);
}

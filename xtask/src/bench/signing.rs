//! Item 1: our RSA-2048 sign and verify rates beside `openssl speed rsa2048`, measured in
//! the same run on the same machine (one core each), in rounds that take turns: the
//! ratios are taken within a round and the verdict is on their median.

use std::process::Command;
use std::time::{Duration, Instant};

use bunq_signing::PrivateKey;

use super::report::median;

/// Rates in operations per second: each the median of the rounds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SigningRates {
    /// OpenSSL's sign/s.
    pub openssl_sign: f64,
    /// OpenSSL's verify/s.
    pub openssl_verify: f64,
    /// Our `PrivateKey::sign_body` per second (uncached: a non-empty body).
    pub ours_sign: f64,
    /// Our `PublicKey::verify_body` per second.
    pub ours_verify: f64,
    /// Median of the rounds' ours ÷ OpenSSL sign ratios.
    pub sign_ratio: f64,
    /// Median of the rounds' ours ÷ OpenSSL verify ratios.
    pub verify_ratio: f64,
    /// CPU time of one of our signatures, in microseconds (for item 2's reasoning).
    pub ours_sign_us: f64,
    /// CPU time of one of our verifications, in microseconds (for item 9).
    pub ours_verify_us: f64,
    /// OpenSSL's sign/s with its AVX-512 IFMA code path switched off, on CPUs that have
    /// it: the like-for-like figure for ring, which has no such path (one run).
    pub openssl_sign_without_ifma: Option<f64>,
    /// Every round, in the order run.
    pub rounds: Vec<SigningRound>,
}

/// One round: OpenSSL and ours, one after the other.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SigningRound {
    /// OpenSSL's sign/s.
    pub openssl_sign: f64,
    /// OpenSSL's verify/s.
    pub openssl_verify: f64,
    /// Our sign/s.
    pub ours_sign: f64,
    /// Our verify/s.
    pub ours_verify: f64,
}

impl SigningRound {
    /// Ours ÷ OpenSSL, signing.
    pub fn sign_ratio(&self) -> f64 {
        self.ours_sign / self.openssl_sign
    }

    /// Ours ÷ OpenSSL, verifying.
    pub fn verify_ratio(&self) -> f64 {
        self.ours_verify / self.openssl_verify
    }
}

/// A representative request body: a small JSON payment.
const BODY: &[u8] = br#"{"amount":{"value":"12.50","currency":"EUR"},"counterparty_alias":{"type":"EMAIL","value":"sugardaddy@bunq.com"},"description":"bench"}"#;

/// `rounds` rounds of `openssl speed -seconds N rsa2048` and our sign and verify loops
/// for N s each; OpenSSL goes first in odd rounds, ours in even ones.
pub fn measure(seconds: u64, rounds: u32) -> Result<SigningRates, String> {
    let key = PrivateKey::generate().map_err(|e| e.to_string())?;
    let public = key.public_key();
    let signature = key.sign_body(BODY);
    let budget = Duration::from_secs(seconds);
    let ours = || -> Result<(f64, f64), String> {
        let sign = rate(budget, || {
            std::hint::black_box(key.sign_body(std::hint::black_box(BODY)));
            Ok(())
        })?;
        let verify = rate(budget, || {
            public
                .verify_body(std::hint::black_box(BODY), signature.as_str())
                .map_err(|e| e.to_string())
        })?;
        Ok((sign, verify))
    };
    let mut measured = Vec::new();
    for round in 1..=rounds.max(1) {
        println!("  round {round}/{rounds}: openssl speed and ours, {seconds} s each ...");
        let ((openssl_sign, openssl_verify), (ours_sign, ours_verify)) = if round % 2 == 1 {
            let openssl = openssl_speed(seconds, None)?;
            (openssl, ours()?)
        } else {
            let ours = ours()?;
            (openssl_speed(seconds, None)?, ours)
        };
        measured.push(SigningRound {
            openssl_sign,
            openssl_verify,
            ours_sign,
            ours_verify,
        });
    }
    let has_ifma =
        std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" avx512ifma"));
    // OPENSSL_ia32cap's second word is CPUID leaf 7; EBX bit 21 is AVX512IFMA.
    let openssl_sign_without_ifma = if has_ifma {
        openssl_speed(seconds, Some(":~0x200000"))
            .ok()
            .map(|(s, _)| s)
    } else {
        None
    };
    let of = |f: fn(&SigningRound) -> f64| median(measured.iter().map(f));
    let ours_sign = of(|r| r.ours_sign);
    let ours_verify = of(|r| r.ours_verify);
    Ok(SigningRates {
        openssl_sign: of(|r| r.openssl_sign),
        openssl_verify: of(|r| r.openssl_verify),
        ours_sign,
        ours_verify,
        sign_ratio: of(SigningRound::sign_ratio),
        verify_ratio: of(SigningRound::verify_ratio),
        ours_sign_us: 1e6 / ours_sign,
        ours_verify_us: 1e6 / ours_verify,
        openssl_sign_without_ifma,
        rounds: measured,
    })
}

/// Operations per second of `op` in a tight loop for `budget`.
fn rate(budget: Duration, mut op: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let started = Instant::now();
    let mut n = 0u64;
    // Checking the clock costs ~25 ns against a ~20 us verify: negligible.
    while started.elapsed() < budget {
        op()?;
        n += 1;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn openssl_speed(seconds: u64, ia32cap: Option<&str>) -> Result<(f64, f64), String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["speed", "-seconds", &seconds.to_string(), "rsa2048"]);
    if let Some(cap) = ia32cap {
        cmd.env("OPENSSL_ia32cap", cap);
    }
    let output = cmd
        .output()
        .map_err(|e| format!("running `openssl speed`: {e} (is openssl installed?)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("`openssl speed` exited with {}", output.status));
    }
    parse_openssl_speed(&stdout)
        .ok_or_else(|| format!("no `rsa 2048 bits` line in openssl's output:\n{stdout}"))
}

/// Finds sign/s and verify/s in `openssl speed rsa2048`'s summary line. OpenSSL 3.0
/// prints `rsa 2048 bits 0.000620s 0.000018s 1613.5 55512.6`; 3.2+ adds encrypt and
/// decrypt columns after them. Either way sign/s and verify/s are the first two plain
/// numbers (the time columns end in `s`).
pub fn parse_openssl_speed(output: &str) -> Option<(f64, f64)> {
    let line = output.lines().find(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.len() > 3 && words[0] == "rsa" && words[1] == "2048" && words[2] == "bits"
    })?;
    let mut numbers = line
        .split_whitespace()
        .skip(3)
        .filter_map(|w| w.parse::<f64>().ok());
    Some((numbers.next()?, numbers.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_3_0_summary() {
        let out = "Doing 2048 bits private rsa's for 3s: 4840 2048 bits private RSA's in 3.00s\n\
                   version: 3.0.17\n                  sign    verify    sign/s verify/s\n\
                   rsa 2048 bits 0.000620s 0.000018s   1613.3  55512.6\n";
        assert_eq!(parse_openssl_speed(out), Some((1613.3, 55512.6)));
    }

    #[test]
    fn parses_openssl_3_2_summary_with_encrypt_columns() {
        let out = "                   sign    verify    encrypt   decrypt   sign/s verify/s  encr./s  decr./s\n\
                   rsa  2048 bits 0.000535s 0.000016s 0.000017s 0.000531s   1869.3  62162.8  59055.1   1883.4\n";
        assert_eq!(parse_openssl_speed(out), Some((1869.3, 62162.8)));
    }

    #[test]
    fn refuses_output_without_summary() {
        assert_eq!(parse_openssl_speed("Doing 2048 bits private rsa's\n"), None);
    }
}

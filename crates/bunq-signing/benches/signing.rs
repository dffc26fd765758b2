//! Sign and verify rates, to compare with `openssl speed -seconds 3 rsa2048` on the same
//! machine (`cargo xtask bench` runs both and reports the ratio).
#![allow(missing_docs)]

use bunq_signing::PrivateKey;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn signing(c: &mut Criterion) {
    let key = PrivateKey::generate().expect("key generation");
    let public = key.public_key();
    let body = br#"{"amount":{"value":"12.50","currency":"EUR"},"description":"bench"}"#;
    let signature = key.sign_body(body);

    let mut group = c.benchmark_group("rsa2048");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| {
        b.iter(|| key.sign_body(std::hint::black_box(body)))
    });
    group.bench_function("verify", |b| {
        b.iter(|| public.verify_body(std::hint::black_box(body), signature.as_str()))
    });
    group.bench_function("sign_empty_body_cached", |b| {
        b.iter(|| key.sign_body(std::hint::black_box(b"")))
    });
    // A signature by a key the bounded cache of parsed keys has let go: parse + sign.
    // Two keys alternate in a cache of one, so every signature misses.
    let other = PrivateKey::generate().expect("key generation");
    bunq_signing::set_parsed_key_capacity(1);
    let mut turn = false;
    group.bench_function("sign_after_eviction", |b| {
        b.iter(|| {
            turn = !turn;
            let key = if turn { &key } else { &other };
            key.sign_body(std::hint::black_box(body))
        })
    });
    bunq_signing::set_parsed_key_capacity(bunq_signing::DEFAULT_PARSED_KEY_CAPACITY);
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);

//! The memory bounds of parsed keys: private keys beyond the cache's capacity are parsed
//! again when they sign (with the same signatures), and one public key is parsed once
//! however many holders read it. One test, alone in its process: the cache and the
//! table are process-wide, so counts are only exact with nothing else running.

use bunq_signing::{
    PrivateKey, PublicKey, interned_public_key_count, parsed_key_count, set_parsed_key_capacity,
};
use secrecy::ExposeSecret as _;

#[test]
fn parsed_keys_stay_bounded_and_sign_the_same_after_eviction() {
    let first = PrivateKey::generate().unwrap();
    let second = PrivateKey::generate().unwrap();
    let third = PrivateKey::generate().unwrap();
    let before = [b"one".as_slice(), b"two", b"three"]
        .map(|body| [&first, &second, &third].map(|k| k.sign_body(body)));
    assert_eq!(parsed_key_count(), 3);

    // Room for one: signing with each key in turn parses it again, and signs the same.
    set_parsed_key_capacity(1);
    assert_eq!(parsed_key_count(), 1);
    for (body, signatures) in [b"one".as_slice(), b"two", b"three"].iter().zip(&before) {
        for (key, signature) in [&first, &second, &third].iter().zip(signatures) {
            assert_eq!(&key.sign_body(body), signature);
            assert!(
                key.public_key()
                    .verify_body(body, signature.as_str())
                    .is_ok()
            );
            assert_eq!(parsed_key_count(), 1);
        }
    }

    // A key read again from its PEM is another key in the cache, with the same output.
    set_parsed_key_capacity(8);
    let again = PrivateKey::from_pem(first.to_pkcs8_pem().expose_secret()).unwrap();
    assert_eq!(again.sign_body(b"one"), before[0][0]);
    assert_eq!(parsed_key_count(), 2, "`again` and the last key to sign");

    // Dropping a key drops its parse.
    drop(again);
    drop(third);
    assert_eq!(parsed_key_count(), 0, "third signed last, and is gone");
    assert_eq!(first.sign_body(b"four"), first.sign_body(b"four"));
    assert_eq!(parsed_key_count(), 1);

    // Public keys: one parse per key, however many times it is read; gone with its
    // last holder.
    // (A fresh key: `second.public_key()` above already holds a parse of its own key.)
    let fourth = PrivateKey::generate().unwrap();
    let signature = fourth.sign_body(b"one");
    let pem = fourth.public_key_pem();
    let interned = interned_public_key_count();
    let holders: Vec<PublicKey> = (0..100)
        .map(|_| PublicKey::from_pem(&pem).unwrap())
        .collect();
    assert_eq!(interned_public_key_count(), interned + 1);
    assert!(holders[99].verify_body(b"one", signature.as_str()).is_ok());
    let pkcs1 = PublicKey::from_pem(&holders[0].to_pkcs1_pem()).unwrap();
    assert_eq!(
        interned_public_key_count(),
        interned + 1,
        "PKCS#1 PEM of the same key"
    );
    drop(holders);
    drop(pkcs1);
    assert_eq!(interned_public_key_count(), interned);
    let _ = fourth.public_key();
    assert_eq!(interned_public_key_count(), interned + 1);
    drop(fourth);
    assert_eq!(interned_public_key_count(), interned);
}

//! `POST /payment-service-provider-credential`: how a licensed PSD2 provider (AISP/PISP)
//! gets its credential, by its certificate instead of an API key.
//!
//! Checked as bunq checks them (each refusal a signed 400): the certificate and its chain
//! parse, the chain links the certificate to a self-signed root and every certificate is
//! valid now, the certificate's key is RSA, and `client_public_key_signature` is the
//! certificate key's signature of this installation's public key (as sent to
//! `POST /installation`), `"\n"`, and the installation token. The answer's
//! `CredentialPasswordIp.token_value` then plays the provider's API key at
//! device-server and session-server, whose user is a `UserPaymentServiceProvider`.
//! One provider per certificate: registering again with it gives a new credential for
//! the same provider (its OAuth client included).

use std::time::SystemTime;

use axum::response::Response;
use bunq_signing::{Certificate, public_key_signature_message, verify_chain};
use serde::Deserialize;
use serde_json::json;

use crate::api::{Call, parse_body};
use crate::server::Shared;
use crate::wire::{self, ApiError};
use crate::world::{User, UserKind, random_token, timestamp};

/// The `error_description` for a `client_public_key_signature` that does not verify.
pub(crate) const BAD_PUBLIC_KEY_SIGNATURE: &str =
    "The client public key signature is not valid for this certificate and installation.";

pub(crate) fn create_credential(
    shared: &Shared,
    installation_token: &str,
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Body {
        client_payment_service_provider_certificate: String,
        client_payment_service_provider_certificate_chain: String,
        client_public_key_signature: String,
    }
    let body: Body = parse_body(call.body)?;
    let certificate = Certificate::from_pem(&body.client_payment_service_provider_certificate)
        .map_err(|e| ApiError::bad_request(format!("The certificate is not valid: {e}")))?;
    let chain =
        Certificate::chain_from_pem(&body.client_payment_service_provider_certificate_chain)
            .map_err(|e| {
                ApiError::bad_request(format!("The certificate chain is not valid: {e}"))
            })?;
    verify_chain(&certificate, &chain, SystemTime::now())
        .map_err(|e| ApiError::bad_request(format!("The certificate chain is not valid: {e}")))?;
    let public_key = certificate
        .public_key()
        .map_err(|e| ApiError::bad_request(format!("The certificate's key is not usable: {e}")))?;

    let mut world = shared.world();
    let installation_key = world
        .installations
        .get(installation_token)
        .map(|i| i.client_key_pem.clone())
        .ok_or_else(ApiError::unauthorised)?;
    let signed = public_key_signature_message(&installation_key, installation_token);
    public_key
        .verify_body(signed.as_bytes(), &body.client_public_key_signature)
        .map_err(|_| ApiError::bad_request(BAD_PUBLIC_KEY_SIGNATURE))?;

    let fingerprint = certificate.sha256_fingerprint();
    let provider = match world.psd2_providers.get(&fingerprint) {
        Some(id) => *id,
        None => {
            let id = world.next_id();
            world.users.insert(
                id,
                User {
                    id,
                    kind: UserKind::PaymentServiceProvider,
                    display_name: certificate.subject(),
                    created: SystemTime::now(),
                    accounts: Vec::new(),
                    oauth_client: None,
                },
            );
            world.psd2_providers.insert(fingerprint, id);
            id
        }
    };
    let token_value = random_token();
    world.api_keys.insert(token_value.clone(), provider);
    let id = world.next_id();
    drop(world);
    let now = timestamp(SystemTime::now());
    Ok(wire::ok(
        shared,
        vec![json!({"CredentialPasswordIp": {
            "id": id,
            "created": now,
            "updated": now,
            "status": "ACTIVE",
            "expiry_time": null,
            "token_value": token_value,
            "permitted_device": null,
        }})],
    ))
}

"""Drives bunq-fake's PSD2 onboarding with bunq's official Python SDK (PyPI `bunq-sdk`).

Usage: psd2.py API_BASE DIR

DIR holds PEM files: certificate.pem, key.pem (the certificate's key), chain.pem,
other_key.pem (a key that is not the certificate's), stranger.pem (a certificate that
did not issue certificate.pem).

`ApiContext.create_for_psd2` runs installation, payment-service-provider-credential,
device-server and session-server with the SDK's own code; then, as the provider, the
OAuth client is registered and listed. Then three refusals: a key that is not the
certificate's, a signature over the wrong bytes, and a broken chain. Prints one JSON
line of what it saw; exits non-zero on any unexpected failure.
"""

import json
import os
import sys
import types

from bunq.sdk.context.api_context import ApiContext
from bunq.sdk.context.bunq_context import BunqContext
from bunq.sdk.exception.api_exception import ApiException
from bunq.sdk.model.generated.endpoint import (
    OauthCallbackUrlApiObject,
    OauthClientApiObject,
)
from bunq.sdk.security import security


def environment(api_base):
    # As in conformance.py: the SDK only reads `uri_base` from its environment type.
    return types.SimpleNamespace(uri_base=api_base.rstrip("/") + "/")


def read(directory, name):
    with open(os.path.join(directory, name)) as f:
        return f.read()


def refusal(api_base, certificate, key, chain):
    """The error text of a create_for_psd2 that bunq-fake must refuse."""
    try:
        ApiContext.create_for_psd2(environment(api_base), certificate, key, [chain], "refused")
    except ApiException as e:
        return {"status": e.response_code, "message": str(e)}
    return None


def main():
    api_base, directory = sys.argv[1:3]
    certificate = read(directory, "certificate.pem")
    key = read(directory, "key.pem")
    chain = read(directory, "chain.pem")
    seen = {}

    context = ApiContext.create_for_psd2(
        environment(api_base), certificate, key, [chain], "bunq-testkit psd2 conformance"
    )
    BunqContext.load_api_context(context)  # a provider has no accounts: the SDK skips them
    seen["user_id"] = context.session_context.user_id
    seen["user_kind"] = type(context.session_context.get_user_reference()).__name__
    seen["api_key_is_token_value"] = len(context.api_key)

    client_id = OauthClientApiObject.create(status="ACTIVE").value
    OauthCallbackUrlApiObject.create(client_id, "http://127.0.0.1:9/psd2-callback")
    clients = OauthClientApiObject.list().value
    seen["oauth_clients_listed"] = len(clients)
    seen["oauth_client_id"] = clients[0].client_id
    seen["callback_urls"] = [c.url for c in clients[0].callback_url]

    # A key that is not the certificate's.
    seen["other_key"] = refusal(api_base, certificate, read(directory, "other_key.pem"), chain)
    # The right key over the wrong bytes (the installation key without the token).
    original = security.generate_signature
    security.generate_signature = lambda text, k: original(text.split("\n-----END")[0], k)
    try:
        seen["wrong_signature"] = refusal(api_base, certificate, key, chain)
    finally:
        security.generate_signature = original
    # A chain that did not issue the certificate.
    seen["broken_chain"] = refusal(api_base, certificate, key, read(directory, "stranger.pem"))

    print(json.dumps(seen))


if __name__ == "__main__":
    main()

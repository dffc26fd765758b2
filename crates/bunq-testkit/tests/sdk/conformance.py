"""Drives bunq-fake with bunq's official Python SDK (PyPI `bunq-sdk`).

Usage: conformance.py API_BASE API_KEY ACCESS_TOKEN CONTROL_URL

The SDK signs every request with its own code and checks every response signature
with its own code (`security.validate_response`); the fake checks the SDK's request
signatures with bunq-signing. Prints one JSON line of what it saw; exits non-zero on
any failure.
"""

import json
import sys
import types

import requests

from bunq.sdk.context.api_context import ApiContext
from bunq.sdk.context.bunq_context import BunqContext
from bunq.sdk.exception.bunq_exception import BunqException
from bunq.sdk.model.generated.endpoint import (
    MonetaryAccountBankApiObject,
    OauthCallbackUrlApiObject,
    OauthClientApiObject,
    SessionApiObject,
)


def environment(api_base):
    # The SDK only reads `uri_base` from its environment type (ApiClient._get_uri_full),
    # so an object with that attribute points it at the fake instead of bunq's sandbox.
    return types.SimpleNamespace(uri_base=api_base.rstrip("/") + "/")


def main():
    api_base, api_key, access_token, control_url = sys.argv[1:5]
    seen = {}

    # API key: installation, device-server, session-server, all done by the SDK.
    context = ApiContext.create(environment(api_base), api_key, "bunq-testkit conformance")
    BunqContext.load_api_context(context)  # lists accounts to find the primary one
    seen["user_id"] = context.session_context.user_id
    seen["user_kind"] = type(context.session_context.get_user_reference()).__name__

    accounts = MonetaryAccountBankApiObject.list().value
    seen["account_ids"] = sorted(a.id_ for a in accounts)
    seen["balances"] = [a.balance.value for a in accounts]
    page = MonetaryAccountBankApiObject.list(params={"count": 1})
    seen["page_size"] = len(page.value)
    seen["has_older_page"] = page.pagination.has_previous_page()

    BunqContext.user_context().refresh_user_context()  # GET /user

    # The SDK really checks our signatures: a tampered one must be refused.
    requests.post(control_url + "/knobs", json={"tamper_next_signatures": 1}, timeout=10)
    try:
        MonetaryAccountBankApiObject.list()
        seen["tampered_signature_refused"] = False
    except BunqException as e:
        seen["tampered_signature_refused"] = "signature" in str(e)

    client_id = OauthClientApiObject.create(status="ACTIVE").value
    OauthCallbackUrlApiObject.create(client_id, "http://127.0.0.1:9/callback")
    client = OauthClientApiObject.get(client_id).value
    seen["oauth_client_id"] = client.client_id
    seen["oauth_secret"] = client.secret
    seen["callback_urls"] = [c.url for c in client.callback_url]
    seen["oauth_clients_listed"] = len(OauthClientApiObject.list().value)

    # ApiContext.close_session() is broken in bunq-sdk 1.28 (it names an unimported
    # `Session`), so delete the session the way it means to: DELETE /session/0.
    SessionApiObject.delete(0)

    # OAuth access token: the session is a UserApiKey acting for the granting user.
    oauth_context = ApiContext.create(environment(api_base), access_token, "bunq-testkit oauth")
    BunqContext.load_api_context(oauth_context)
    seen["oauth_user_kind"] = type(oauth_context.session_context.get_user_reference()).__name__
    seen["oauth_user_id"] = oauth_context.session_context.user_id
    seen["oauth_account_ids"] = sorted(a.id_ for a in MonetaryAccountBankApiObject.list().value)

    print(json.dumps(seen))


if __name__ == "__main__":
    main()

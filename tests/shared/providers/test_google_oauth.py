"""shared.providers.google_oauth: the consent URL (PKCE, offline), the code exchange and the
refresh against the sandbox, and how refusals and outages come out."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from google.auth.exceptions import RefreshError

from shared.providers import ProviderError
from shared.providers.google_oauth import GoogleOAuthClient, refresh_error_code

CLIENT_ID = "corbi-unit.apps.googleusercontent.com"
CLIENT_SECRET = "unit-google-oauth-secret-0001"
REDIRECT = "http://127.0.0.1:9/oauth/google/callback/"


@pytest.fixture
def client(sandbox_url, sandbox_client) -> GoogleOAuthClient:
    sandbox_client.add_account("google_calendar", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    return GoogleOAuthClient(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        auth_uri=sandbox_url + "/o/oauth2/v2/auth",
        token_uri=sandbox_url + "/token",
        revoke_uri=sandbox_url + "/revoke",
        redirect_uri=REDIRECT,
        timeout=5,
    )


def consent(url: str) -> str:
    answer = requests.get(url, allow_redirects=False, timeout=5)
    return parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]


def test_the_consent_url_asks_for_offline_access_with_pkce(client):
    url, verifier = client.authorization_url(state="s-1")

    query = parse_qs(urlsplit(url).query)
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    assert query["code_challenge_method"] == ["S256"] and query["state"] == ["s-1"]
    assert len(verifier) >= 43 and verifier not in url


def test_the_exchange_gives_the_tokens_and_the_granted_scopes(client):
    url, verifier = client.authorization_url(state="s-2")

    tokens = client.exchange(code=consent(url), code_verifier=verifier)

    assert tokens.refresh_token and tokens.access_token.startswith("ya29.")
    assert tokens.expiry > datetime.now(UTC) and tokens.scopes
    refreshed = client.refresh(refresh_token=tokens.refresh_token)
    assert refreshed.access_token != tokens.access_token and refreshed.refresh_token is None


def test_a_wrong_verifier_is_a_credentials_error_naming_invalid_grant(client, assert_secret_free):
    url, _ = client.authorization_url(state="s-3")
    code = consent(url)

    with pytest.raises(ProviderError) as caught:
        client.exchange(code=code, code_verifier="x" * 64)

    assert caught.value.kind == "credentials" and caught.value.code == "invalid_grant"
    assert_secret_free(caught.value, code)


def test_an_unreachable_token_endpoint_is_transient(client):
    down = GoogleOAuthClient(**{**client.__dict__, "token_uri": "http://127.0.0.1:9/token"})
    with pytest.raises(ProviderError) as caught:
        down.exchange(code="4/0abc", code_verifier="v" * 64)
    assert caught.value.kind == "transient"
    assert down.revoke("1//anything") is False


def test_a_revoked_refresh_token_raises_invalid_grant(client):
    url, verifier = client.authorization_url(state="s-4")
    tokens = client.exchange(code=consent(url), code_verifier=verifier)
    assert client.revoke(tokens.refresh_token) is True

    with pytest.raises(RefreshError) as caught:
        client.refresh(refresh_token=tokens.refresh_token)

    assert refresh_error_code(caught.value) == "invalid_grant" and not caught.value.retryable

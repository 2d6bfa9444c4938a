"""shared.providers.instagram_oauth: both code-exchange answer shapes, the error shapes of the
OAuth and Graph endpoints, and the long-lived token against the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from shared.providers import ProviderError
from shared.providers.instagram_oauth import InstagramOAuthClient, _mapped, short_token

APP_ID = "990011223366"
APP_SECRET = "unit-instagram-app-secret-0001"
IG_ID = "17841400000000666"


@pytest.fixture
def client(sandbox_url, sandbox_client) -> InstagramOAuthClient:
    sandbox_client.add_account("instagram", app_id=APP_ID, app_secret=APP_SECRET, ig_id=IG_ID)
    return InstagramOAuthClient(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        authorize_url=sandbox_url + "/oauth/authorize",
        token_url=sandbox_url + "/oauth/access_token",
        graph_host=sandbox_url,
        graph_base=sandbox_url + "/v23.0",
        redirect_uri="http://127.0.0.1:9/oauth/instagram/callback/",
        timeout=5,
    )


@pytest.mark.parametrize(
    "body",
    [
        {"data": [{"access_token": "IGAAshort", "user_id": "1784", "permissions": "x"}]},
        {"access_token": "IGAAshort", "user_id": 17841405793187218, "permissions": "x"},
    ],
    ids=["business-login-data-list", "flat-reference-shape"],
)
def test_both_code_exchange_shapes_are_read(body):
    assert short_token(body) == "IGAAshort"


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (
            400,
            {"error_type": "OAuthException", "code": 400, "error_message": "used code"},
            "credentials",
        ),
        (
            400,
            {"error": {"message": "expired", "type": "OAuthException", "code": 190}},
            "credentials",
        ),
        (500, {"error": {"message": "oops", "type": "OAuthException", "code": 2}}, "transient"),
        (
            400,
            {"error": {"message": "bad", "type": "GraphMethodException", "code": 100}},
            "permanent",
        ),
    ],
)
def test_refusals_map_by_code(status, body, kind):
    assert _mapped(status, body, "the code").kind == kind


def test_code_to_long_lived_token_to_account(client):
    answer = requests.get(client.authorization_url(state="s"), allow_redirects=False, timeout=5)
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]

    token = client.long_lived(client.exchange(code=code))

    assert token.expiry > datetime.now(UTC) + timedelta(days=59)
    assert client.account(token.access_token)[0] == IG_ID
    assert client.revoke(token.access_token) is True
    with pytest.raises(ProviderError) as caught:
        client.refresh(token.access_token)
    assert caught.value.kind == "credentials" and caught.value.code == "190"

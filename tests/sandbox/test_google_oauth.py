"""The sandbox's Google OAuth endpoints: consent (and deny), the code exchange with PKCE and
either client authentication, refresh of issued tokens, revocation and the token clock."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

CLIENT_ID = "corbi-oauth.apps.googleusercontent.com"
CLIENT_SECRET = "sandbox-oauth-client-secret"
REDIRECT = "http://127.0.0.1:9/oauth/google/callback/"
VERIFIER = "v" * 64
BASIC = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()


def challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


@pytest.fixture
def client(sandbox, sandbox_client):
    sandbox_client.add_account(
        "google_calendar",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        email="ana@sandbox.test",
    )
    return sandbox_client


def authorize(sandbox, **overrides) -> requests.Response:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "https://www.googleapis.com/auth/calendar",
        "state": "st-1",
        "access_type": "offline",
        "code_challenge": challenge(VERIFIER),
        "code_challenge_method": "S256",
        **overrides,
    }
    return requests.get(
        f"{sandbox.url}/o/oauth2/v2/auth?{urlencode(params)}", allow_redirects=False, timeout=5
    )


def code_of(response: requests.Response) -> str:
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]


def exchange(sandbox, code: str, *, verifier: str | None = VERIFIER, basic: bool = True, **form):
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **form}
    if verifier is not None:
        body["code_verifier"] = verifier
    headers = {"Authorization": BASIC} if basic else {}
    if not basic:
        body.update(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    return requests.post(f"{sandbox.url}/token", data=body, headers=headers, timeout=5)


def test_consent_redirects_with_a_code_and_the_state(sandbox, client):
    location = urlsplit(authorize(sandbox).headers["Location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    assert query["state"] == ["st-1"] and query["code"][0].startswith("4/0")


def test_deny_mode_redirects_with_access_denied(sandbox, client):
    client.configure(google_oauth_consent="deny")
    query = parse_qs(urlsplit(authorize(sandbox).headers["Location"]).query)
    assert query == {"error": ["access_denied"], "state": ["st-1"]}


def test_an_unknown_client_gets_an_error_page_not_a_redirect(sandbox, client):
    response = authorize(sandbox, client_id="nobody")
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("basic", [True, False], ids=["basic-header", "form-fields"])
def test_the_code_exchange_gives_tokens_that_work_and_refresh(sandbox, client, basic):
    tokens = exchange(sandbox, code_of(authorize(sandbox)), basic=basic).json()

    assert tokens["refresh_token"].startswith("1//") and tokens["expires_in"] == 3599
    me = requests.get(
        f"{sandbox.url}/calendar/v3/users/me/calendarList/primary",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=5,
    )
    assert me.status_code == 200
    refreshed = requests.post(
        f"{sandbox.url}/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
              "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=5,
    )  # fmt: skip
    assert (
        refreshed.status_code == 200 and refreshed.json()["access_token"] != tokens["access_token"]
    )


def test_a_code_is_single_use(sandbox, client):
    code = code_of(authorize(sandbox))
    assert exchange(sandbox, code).status_code == 200
    again = exchange(sandbox, code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("verifier", "description"),
    [(None, "Missing code verifier."), ("w" * 64, "Invalid code verifier.")],
)
def test_pkce_is_checked(sandbox, client, verifier, description):
    answer = exchange(sandbox, code_of(authorize(sandbox)), verifier=verifier)
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_grant", "error_description": description}


def test_the_redirect_uri_must_match(sandbox, client):
    answer = exchange(
        sandbox, code_of(authorize(sandbox)), redirect_uri="http://127.0.0.1:9/other/"
    )
    assert answer.status_code == 400 and answer.json()["error"] == "redirect_uri_mismatch"


def test_no_refresh_token_without_offline_access_or_when_configured_off(sandbox, client):
    online = exchange(sandbox, code_of(authorize(sandbox, access_type="online"))).json()
    client.configure(google_oauth_refresh_token=False)
    offline = exchange(sandbox, code_of(authorize(sandbox))).json()
    assert "refresh_token" not in online and "refresh_token" not in offline


def test_revoking_the_refresh_token_stops_it_and_its_access_tokens(sandbox, client):
    tokens = exchange(sandbox, code_of(authorize(sandbox))).json()

    revoked = requests.post(
        f"{sandbox.url}/revoke", data={"token": tokens["refresh_token"]}, timeout=5
    )

    assert revoked.status_code == 200
    me = requests.get(
        f"{sandbox.url}/calendar/v3/users/me/calendarList/primary",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=5,
    )
    assert me.status_code == 401
    again = requests.post(
        f"{sandbox.url}/revoke", data={"token": tokens["refresh_token"]}, timeout=5
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_token"


def test_the_token_clock_can_be_shortened_and_expired(sandbox, client):
    client.configure(google_token_ttl_seconds=600)
    tokens = exchange(sandbox, code_of(authorize(sandbox))).json()
    assert tokens["expires_in"] == 600
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    url = f"{sandbox.url}/calendar/v3/users/me/calendarList/primary"
    assert requests.get(url, headers=headers, timeout=5).status_code == 200

    assert client.google_expire_tokens() >= 1

    assert requests.get(url, headers=headers, timeout=5).status_code == 401
    assert client.google_revoke_all() == 1

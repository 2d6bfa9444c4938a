"""The sandbox's Instagram Login endpoints: consent (and deny), code → short-lived →
long-lived token, ig_refresh_token with Meta's age rule, and the permission delete."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

APP_ID = "990011223355"
APP_SECRET = "sandbox-instagram-app-secret"
IG_ID = "17841400000000555"
REDIRECT = "http://127.0.0.1:9/oauth/instagram/callback/"


@pytest.fixture
def client(sandbox, sandbox_client):
    sandbox_client.add_account("instagram", app_id=APP_ID, app_secret=APP_SECRET, ig_id=IG_ID)
    return sandbox_client


def authorize(sandbox) -> requests.Response:
    params = {
        "client_id": APP_ID,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "instagram_business_basic,instagram_business_manage_messages",
        "state": "st-9",
    }
    return requests.get(
        f"{sandbox.url}/oauth/authorize?{urlencode(params)}", allow_redirects=False, timeout=5
    )


def short_token(sandbox) -> str:
    location = authorize(sandbox).headers["Location"]
    assert location.endswith("#_")  # as Instagram does: the browser drops the fragment
    code = parse_qs(urlsplit(location).query)["code"][0]
    answer = requests.post(
        f"{sandbox.url}/oauth/access_token",
        data={"client_id": APP_ID, "client_secret": APP_SECRET, "grant_type": "authorization_code",
              "redirect_uri": REDIRECT, "code": code},
        timeout=5,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    [item] = answer.json()["data"]
    assert item["user_id"] == IG_ID
    return item["access_token"]


def long_lived(sandbox, short: str) -> dict:
    params = {"grant_type": "ig_exchange_token", "client_secret": APP_SECRET, "access_token": short}
    return requests.get(f"{sandbox.url}/access_token", params=params, timeout=5).json()


def me(sandbox, token: str) -> requests.Response:
    return requests.get(
        f"{sandbox.url}/v23.0/me",
        params={"fields": "user_id,username"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )


def test_a_long_lived_token_works_on_the_graph_api(sandbox, client):
    token = long_lived(sandbox, short_token(sandbox))

    assert token["expires_in"] == 5_184_000 and token["token_type"] == "bearer"
    assert me(sandbox, token["access_token"]).json()["user_id"] == IG_ID


def test_deny_mode_redirects_with_the_error(sandbox, client):
    client.configure(instagram_oauth_consent="deny")
    query = parse_qs(urlsplit(authorize(sandbox).headers["Location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-9"]


def test_a_code_is_single_use_and_answers_the_oauth_error_shape(sandbox, client):
    code = parse_qs(urlsplit(authorize(sandbox).headers["Location"]).query)["code"][0]
    form = {"client_id": APP_ID, "client_secret": APP_SECRET, "grant_type": "authorization_code",
            "redirect_uri": REDIRECT, "code": code}  # fmt: skip
    assert requests.post(f"{sandbox.url}/oauth/access_token", data=form, timeout=5).ok
    again = requests.post(f"{sandbox.url}/oauth/access_token", data=form, timeout=5)
    assert again.status_code == 400 and again.json()["error_type"] == "OAuthException"


def test_refresh_follows_the_age_rule_and_replaces_the_token(sandbox, client):
    token = long_lived(sandbox, short_token(sandbox))["access_token"]
    params = {"grant_type": "ig_refresh_token", "access_token": token}
    too_young = requests.get(f"{sandbox.url}/refresh_access_token", params=params, timeout=5)
    assert too_young.status_code == 400
    client.configure(instagram_refresh_min_age_seconds=0)

    renewed = requests.get(f"{sandbox.url}/refresh_access_token", params=params, timeout=5).json()

    assert renewed["access_token"] != token and renewed["expires_in"] == 5_184_000
    assert me(sandbox, renewed["access_token"]).status_code == 200
    assert me(sandbox, token).json()["error"]["code"] == 190


def test_the_permission_delete_revokes_every_token_of_the_account(sandbox, client):
    token = long_lived(sandbox, short_token(sandbox))["access_token"]

    deleted = requests.delete(
        f"{sandbox.url}/v23.0/me/permissions",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )

    assert deleted.json() == {"success": True}
    assert me(sandbox, token).json()["error"]["code"] == 190

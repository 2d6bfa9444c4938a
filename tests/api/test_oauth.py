"""api.oauth: "Connect with Google / Instagram" end to end through the sandbox, with a real HTTP
client following redirects (start → consent → callback), and every way it must fail cleanly."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.utils import timezone

from shared.crypto import decrypt_token
from shared.events.models import Event
from shared.models import AuditEvent, Integration, OAuthState
from tests.factories import (
    OAUTH_CLIENTS,
    assert_error_envelope,
    assert_no_canary,
    oauth_settings,
    register_oauth_accounts,
)

pytestmark = pytest.mark.django_db(transaction=True)

START = "/api/integrations/{provider}/oauth/start/"


@pytest.fixture
def oauth(settings, live_server, sandbox, sandbox_client, cast, caplog):
    """The OAuth clients on the sandbox, callbacks on the live server; returns its URL."""
    oauth_settings(settings, sandbox.url, live_server.url)
    register_oauth_accounts(sandbox_client)
    caplog.set_level(logging.DEBUG)
    return live_server.url


def browser(member) -> requests.Session:
    """A browser of `member`: API calls carry the token and X-Org-ID; cookies are kept."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update(
        {"Authorization": f"Token {member.token}", "X-Org-ID": str(member.org.pk)}
    )
    return session


def start(session: requests.Session, base: str, provider: str = "google_calendar", **body):
    response = session.post(base + START.format(provider=provider), json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["authorization_url"]


def follow(session: requests.Session, url: str) -> requests.Response:
    """The browser opens the consent URL and follows every redirect to the end."""
    return session.get(url, timeout=20, allow_redirects=True)


def refused(response: requests.Response, status: int = 400) -> dict:
    """The error envelope the callback answered with (no OAUTH_SETTINGS_URL set)."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "error" and body["ok"] is False and body["message"]
    return body


def issued_secrets(sandbox_client) -> list[str]:
    """Every code, token and verifier that crossed the sandbox (for leak greps)."""
    found: list[str] = []
    for record in sandbox_client.requests():
        body = record["body"] if isinstance(record["body"], dict) else {}
        params = record["query_params"] or {}
        for source in (body, params):
            for name in ("code", "code_verifier", "refresh_token", "access_token", "token"):
                if isinstance(source.get(name), str) and len(source[name]) >= 16:
                    found.append(source[name])
    return found


def assert_nothing_leaked(sandbox_client, *texts: str) -> None:
    secrets = issued_secrets(sandbox_client)
    for row in Integration.objects.exclude(token_encrypted=""):
        secrets.append(decrypt_token(row.token_encrypted))
        if row.access_token_encrypted:
            secrets.append(decrypt_token(row.access_token_encrypted))
    assert secrets, "nothing to look for: the leak check would be vacuous"
    secrets += [OAUTH_CLIENTS["google_calendar"]["client_secret"]]
    secrets += [OAUTH_CLIENTS["instagram"]["app_secret"]]
    canaries = {f"secret{i}": value for i, value in enumerate(secrets)}
    for text in texts:
        assert_no_canary(text, canaries)


def everything_stored_outside_ciphertext() -> str:
    events = list(Event.objects.values("type", "data"))
    audits = list(AuditEvent.objects.values("action", "data", "token_fingerprint"))
    states = list(OAuthState.objects.values("state_digest", "browser_digest", "extra"))
    return json.dumps([events, audits, states], default=str)


# --- Google ------------------------------------------------------------------------------------


def test_google_connects_through_the_sandbox_and_stores_the_tokens_encrypted(
    oauth, cast, sandbox_client, caplog
):
    session = browser(cast["admin"])
    url = start(session, oauth, calendar_id="primary")
    query = parse_qs(urlsplit(url).query)
    assert query["access_type"] == ["offline"] and query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [f"{oauth}/oauth/google/callback/"]

    final = follow(session, url)

    assert final.status_code == 200, final.text
    assert final.json()["ok"] is True and "connected" in final.json()["message"]
    integration = Integration.objects.get(
        organization=cast["admin"].org, provider="google_calendar"
    )
    assert integration.auth_method == "oauth" and integration.is_active
    assert integration.extra["calendar_id"] == "primary"
    refresh = decrypt_token(integration.token_encrypted)
    assert refresh.startswith("1//")
    assert decrypt_token(integration.access_token_encrypted).startswith("ya29.")
    assert integration.access_token_expires_at > timezone.now() + timedelta(minutes=50)
    [exchange] = sandbox_client.token_calls("authorization_code")
    assert len(exchange["body"]["code_verifier"]) >= 43  # PKCE verifier survived the redirect
    assert exchange["headers"]["Authorization"].startswith("Basic ")  # client in a Basic header
    shown = session.get(f"{oauth}/api/integrations/google_calendar/", timeout=10)
    assert shown.json()["status"] == "connected" and shown.json()["auth_method"] == "oauth"
    audit = AuditEvent.objects.get(action="integration.connected", provider="google_calendar")
    assert audit.data["method"] == "oauth" and audit.actor_id == cast["admin"].user.pk
    assert_nothing_leaked(
        sandbox_client, final.text, shown.text, caplog.text, everything_stored_outside_ciphertext()
    )


def test_a_used_state_cannot_be_used_again(oauth, cast, sandbox_client):
    session = browser(cast["admin"])
    final = follow(session, start(session, oauth))
    assert final.status_code == 200
    callback = final.url

    again = session.get(callback, timeout=10)

    body = refused(again)
    assert body["code"] == "state_used" and "already used" in body["message"]
    assert len(sandbox_client.token_calls("authorization_code")) == 1


def test_a_state_started_by_another_org_or_user_is_refused(oauth, cast, sandbox_client):
    mine, theirs = browser(cast["admin"]), browser(cast["outsider"])
    start(mine, oauth)  # acme's admin has a flow of their own in this browser
    their_url = start(theirs, oauth)

    final = follow(mine, their_url)  # globex's consent link opened in acme's admin's browser

    body = refused(final)
    assert body["code"] == "state_mismatch"
    assert not sandbox_client.token_calls("authorization_code")
    assert not Integration.objects.filter(provider="google_calendar").exists()
    # The state was not spent: globex's admin can still finish in their own browser.
    assert follow(theirs, their_url).status_code == 200
    connected = Integration.objects.get(provider="google_calendar")
    assert connected.organization == cast["outsider"].org


def test_a_browser_without_the_binding_cookie_is_refused(oauth, cast):
    session = browser(cast["admin"])
    url = start(session, oauth)
    session.cookies.clear()

    body = refused(follow(session, url))

    assert body["code"] == "state_mismatch"


def test_a_pkce_mismatch_is_refused_by_the_token_endpoint(oauth, cast, sandbox_client):
    session = browser(cast["admin"])
    url = start(session, oauth)
    from shared.crypto import encrypt_token

    OAuthState.objects.update(verifier_encrypted=encrypt_token("x" * 64))

    body = refused(follow(session, url))

    assert body["code"] == "code_rejected"
    [exchange] = sandbox_client.token_calls("authorization_code")
    assert exchange["outcome"] == "pkce_mismatch"
    assert not Integration.objects.filter(provider="google_calendar").exists()


def test_denied_consent_ends_with_a_readable_message(oauth, cast, sandbox_client):
    sandbox_client.configure(google_oauth_consent="deny")
    session = browser(cast["admin"])

    body = refused(follow(session, start(session, oauth)))

    assert body["code"] == "consent_denied" and "not granted" in body["message"]
    assert not sandbox_client.token_calls("authorization_code")


def test_an_expired_state_is_refused(oauth, cast, sandbox_client):
    session = browser(cast["admin"])
    url = start(session, oauth)
    OAuthState.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    body = refused(follow(session, url))

    assert body["code"] == "state_expired" and "expired" in body["message"]
    assert not sandbox_client.token_calls("authorization_code")


def test_no_refresh_token_ends_with_a_readable_message(oauth, cast, sandbox_client):
    sandbox_client.configure(google_oauth_refresh_token=False)
    session = browser(cast["admin"])

    body = refused(follow(session, start(session, oauth)))

    assert body["code"] == "no_refresh_token" and "myaccount.google.com" in body["message"]
    assert not Integration.objects.filter(provider="google_calendar").exists()


def test_the_callback_redirects_to_the_settings_url_when_set(oauth, cast, settings, sandbox):
    settings.OAUTH_SETTINGS_URL = f"{sandbox.url}/_sandbox/health"
    session = browser(cast["admin"])

    final = follow(session, start(session, oauth))

    assert final.status_code == 200
    query = parse_qs(urlsplit(final.url).query)
    assert query["provider"] == ["google_calendar"] and query["result"] == ["connected"]
    sandbox_client_denied = session.get(final.history[-1].url, timeout=10, allow_redirects=False)
    location = parse_qs(urlsplit(sandbox_client_denied.headers["Location"]).query)
    assert location["result"] == ["error"] and location["error"] == ["state_used"]
    assert location["message"][0].startswith("This connection link was already used")


def test_an_admin_who_lost_the_role_cannot_finish(oauth, cast):
    from shared.models import Membership

    session = browser(cast["admin"])
    url = start(session, oauth)
    Membership.objects.filter(user=cast["admin"].user).update(role="member")

    body = refused(follow(session, url))

    assert body["code"] == "admin_required"


# --- Instagram ---------------------------------------------------------------------------------


def test_instagram_connects_with_a_long_lived_token_and_its_account_id(
    oauth, cast, sandbox_client, caplog
):
    session = browser(cast["admin"])
    url = start(session, oauth, "instagram")
    assert "instagram_business_basic" in parse_qs(urlsplit(url).query)["scope"][0]

    final = follow(session, url)

    assert final.status_code == 200, final.text
    integration = Integration.objects.get(organization=cast["admin"].org, provider="instagram")
    assert integration.auth_method == "oauth"
    assert integration.extra["instagram_scoped_id"] == OAUTH_CLIENTS["instagram"]["ig_id"]
    assert integration.token_expires_at > timezone.now() + timedelta(days=59)
    paths = [r["path"] for r in sandbox_client.requests("instagram")]
    assert paths == ["/oauth/authorize", "/oauth/access_token", "/access_token", "/v23.0/me"]
    tested = session.post(f"{oauth}/api/integrations/instagram/test/", json={}, timeout=10)
    assert tested.json()["ok"] is True, tested.text
    assert_nothing_leaked(
        sandbox_client, final.text, tested.text, caplog.text, everything_stored_outside_ciphertext()
    )


def test_instagram_denied_consent_ends_with_a_readable_message(oauth, cast, sandbox_client):
    sandbox_client.configure(instagram_oauth_consent="deny")
    session = browser(cast["admin"])

    body = refused(follow(session, start(session, oauth, "instagram")))

    assert body["code"] == "consent_denied"


# --- the start endpoint's refusals -------------------------------------------------------------


def test_a_member_cannot_start(oauth, cast, client_for):
    response = client_for(cast["member"]).post(
        START.format(provider="google_calendar"), {}, format="json"
    )
    assert assert_error_envelope(response, 403)["code"] == "admin_required"
    assert not OAuthState.objects.exists()


def test_a_provider_without_oauth_is_a_400_naming_the_field(oauth, cast, client_for):
    response = client_for(cast["admin"]).post(START.format(provider="telegram"), {}, format="json")
    body = assert_error_envelope(response, 400)
    assert body["code"] == "oauth_not_supported" and "provider" in body["errors"]


def test_unknown_and_bad_fields_are_400s_naming_them(oauth, cast, client_for):
    admin = client_for(cast["admin"])
    response = admin.post(START.format(provider="instagram"), {"calendar_id": "x"}, format="json")
    body = assert_error_envelope(response, 400)
    assert body["code"] == "validation_failed" and "calendar_id" in body["errors"]
    response = admin.post(
        START.format(provider="google_calendar"), {"calendar_id": 7}, format="json"
    )
    assert "calendar_id" in assert_error_envelope(response, 400)["errors"]


def test_start_without_the_oauth_client_configured_is_a_503(oauth, cast, client_for, settings):
    settings.GOOGLE_OAUTH_CLIENT_SECRET = ""
    response = client_for(cast["admin"]).post(
        START.format(provider="google_calendar"), {}, format="json"
    )
    body = assert_error_envelope(response, 503)
    assert (
        body["code"] == "oauth_not_configured" and "GOOGLE_OAUTH_CLIENT_SECRET" in body["message"]
    )


def test_a_signed_in_user_other_than_the_starter_is_refused_even_with_the_cookie(
    oauth, cast, client_for
):
    from django.test import Client

    admin = client_for(cast["admin"])
    started = admin.post(START.format(provider="google_calendar"), {}, format="json")
    state = parse_qs(urlsplit(started.json()["authorization_url"]).query)["state"][0]
    browser_cookie = started.cookies["corbi_oauth_browser"].value
    other = Client()
    other.force_login(cast["outsider"].user)  # another org's admin, signed in with a session
    other.cookies["corbi_oauth_browser"] = browser_cookie

    response = other.get("/oauth/google/callback/", {"state": state, "code": "4/0x"})

    assert response.status_code == 400 and response.json()["code"] == "state_mismatch"
    assert OAuthState.objects.get().used_at is None


def test_a_consent_without_calendar_access_is_refused_and_the_token_revoked(
    oauth, cast, sandbox_client
):
    sandbox_client.configure(google_oauth_granted_scope="openid email")
    session = browser(cast["admin"])

    body = refused(follow(session, start(session, oauth)))

    assert body["code"] == "scope_not_granted" and "calendar access" in body["message"]
    assert not Integration.objects.filter(provider="google_calendar").exists()
    [revoke] = [r for r in sandbox_client.requests("google_calendar") if r["path"] == "/revoke"]
    assert revoke["status"] == 200

"""Test data builders, recognisable canary tokens and the API helpers every suite shares."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from shared.models import Membership, Organization, Provider
from shared.services.integrations import integration_connect

# Recognisable canary tokens: any occurrence outside the ciphertext column is a leak.
CANARY = {
    "whatsapp": "cnryTwQx7Zp9Kd3Lm5Vb2Hj8Ws4Ny6Rf1",
    "sendgrid": "SG.cnrySgKq4Wm8Zt2Pv6.Xr5Jn9Lc3Hb7Fd1Ty4Uo8Ie2Wa6Qs0Mk",
    "telegram": "987654321:cnryTgHq3Ln7Bx5Vz9Kd2Mw6Pr4Js8Yf1Ct",
    "instagram": "IGAAcnryIgRt5Wn9Kx3Bv7Lm2Qp6Zd4Hs8Jf",
    "google_calendar": "ya29.cnryGoPx8Lz4Wk6Nm2Rt5Vb9Qd3Hj7Yc1",
}

VALID_EXTRA = {
    "whatsapp": {"account_sid": "AC" + "0123456789abcdef" * 2, "from_whatsapp": "+14155238886"},
    "sendgrid": {"from_email": "noreply@acme.test"},
    "telegram": {},
    "instagram": {"instagram_scoped_id": "17841400000000001"},
    "google_calendar": {},
}


# Message destinations each provider refuses.
BAD_DESTINATIONS = [
    ("whatsapp", "4155550123"),
    ("whatsapp", "+0123456789"),
    ("sendgrid", "not-an-email"),
    ("telegram", "chat 42"),
    ("telegram", "@ab"),
    ("instagram", "ig-user-17841"),
]

# A valid booking body (PUT /api/calendar/bookings/{id}/, booking_upsert's data).
BOOKING = {
    "summary": "Dinner for four",
    "description": "Window table",
    "location": "Acme Bistro",
    "start": "2030-01-01T20:00:00+01:00",
    "end": "2030-01-01T22:00:00+01:00",
    "timezone": "Europe/Madrid",
    "attendees": ["carol@example.test", "dave@example.test"],
}

# Sandbox accounts that accept the canary tokens with VALID_EXTRA (register with add_account).
SANDBOX_ACCOUNTS = {
    "whatsapp": {
        "account_sid": VALID_EXTRA["whatsapp"]["account_sid"],
        "auth_token": CANARY["whatsapp"],
        "senders": ["whatsapp:" + VALID_EXTRA["whatsapp"]["from_whatsapp"]],
        # These tests are about delivery and receipts, not the 24-hour window.
        "session_window_hours": None,
    },
    "sendgrid": {"api_key": CANARY["sendgrid"]},
    "telegram": {"token": CANARY["telegram"]},
    "instagram": {
        "access_token": CANARY["instagram"],
        "ig_id": VALID_EXTRA["instagram"]["instagram_scoped_id"],
    },
    "google_calendar": {"access_token": CANARY["google_calendar"]},
}


def fragments(secret: str, size: int = 8) -> list[str]:
    """Every `size`-character window of `secret` (for leak greps)."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def assert_no_canary(text: str, tokens: dict[str, str] | None = None) -> None:
    """Fail if any canary token, or any 8-char fragment of one, appears in `text`."""
    for provider, token in (tokens or CANARY).items():
        for frag in fragments(token):
            assert frag not in text, f"{provider} token fragment {frag!r} leaked"


@dataclass
class Member:
    user: object
    org: Organization
    role: str
    token: str


def make_member(org_slug: str, username: str, role: str) -> Member:
    org, _ = Organization.objects.get_or_create(slug=org_slug, defaults={"name": org_slug.title()})
    user, _ = get_user_model().objects.get_or_create(username=username)
    Membership.objects.update_or_create(user=user, organization=org, defaults={"role": role})
    token, _ = Token.objects.get_or_create(user=user)
    return Member(user=user, org=org, role=role, token=token.key)


def connect(member: Member, *providers: str, actor: object = None) -> Member:
    """Connect `providers` (all of them by default) for the member's org with the canary tokens."""
    for provider in providers or Provider.values:
        integration_connect(
            organization=member.org,
            provider=provider,
            token=CANARY[provider],
            extra=VALID_EXTRA[provider],
            actor=actor,
        )
    return member


def point_providers_at(settings, url: str) -> None:
    """Every provider base URL (and Google's token endpoint) on the sandbox at `url`."""
    settings.TWILIO_API_BASE = settings.SENDGRID_API_BASE = settings.TELEGRAM_API_BASE = url
    settings.GRAPH_API_BASE = url + "/v23.0"
    settings.GOOGLE_CALENDAR_API_BASE = url + "/calendar/v3/"
    settings.GOOGLE_TOKEN_URI = url + "/token"


def api_client(
    member: Member | None = None, org_id: object = None, auth: str | None = None, **kwargs: object
) -> APIClient:
    """A DRF client sending `Authorization: Token` + `X-Org-ID` for `member` (or only X-Org-ID).

    `auth` replaces the Authorization value; keyword arguments go to APIClient (e.g.
    raise_request_exception=False for a client that answers 500 instead of raising).
    """
    client = APIClient(**kwargs)
    headers = {}
    if member is not None:
        headers["HTTP_AUTHORIZATION"] = auth or f"Token {member.token}"
        headers["HTTP_X_ORG_ID"] = str(org_id if org_id is not None else member.org.pk)
    elif org_id is not None:
        headers["HTTP_X_ORG_ID"] = str(org_id)
    client.credentials(**headers)
    return client


def connect_api(client: APIClient, provider: str, token: str | None = None, extra=None):
    """POST /api/integrations/{provider}/connect/ with the canary token and VALID_EXTRA."""
    body = {
        "token": token or CANARY[provider],
        "extra": VALID_EXTRA[provider] if extra is None else extra,
    }
    return client.post(f"/api/integrations/{provider}/connect/", body, format="json")


def ok_body(response, status: int) -> dict:
    """The JSON body of a response with `status`, which names no canary token."""
    assert response.status_code == status, response.content
    assert_no_canary(response.content.decode())
    return response.json()


def assert_error_envelope(response, status: int) -> dict:
    """The error envelope of a JSON response with `status`: status, ok, message; no canary."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    assert_no_canary(response.content.decode())
    body = response.json()
    assert body["status"] == "error"
    assert body["ok"] is False
    assert isinstance(body["message"], str) and body["message"]
    return body


# "Connect with Google / Instagram" (docs/oauth.md): the deployment's OAuth clients in tests,
# with canary secrets, and the sandbox accounts that consent through them.
OAUTH_CLIENTS = {
    "google_calendar": {
        "client_id": "corbi-test.apps.googleusercontent.com",
        "client_secret": "GOCSPX-cnryGoSq5Lk8Wz3Xv6Nb1Pm4Rt7",
        "email": "ana@sandbox.test",
    },
    "instagram": {
        "app_id": "990011223344",
        "app_secret": "cnryIgApSx4Hd8Kw2Lz6Qv9Bn3Mt7Jr5",
        "ig_id": "17841400000000777",
        "username": "acme.bistro",
    },
}


def oauth_settings(settings, sandbox_url: str, public_url: str) -> None:
    """Providers on the sandbox, the OAuth clients configured, callbacks at `public_url`."""
    point_providers_at(settings, sandbox_url)
    google, instagram = OAUTH_CLIENTS["google_calendar"], OAUTH_CLIENTS["instagram"]
    settings.GOOGLE_OAUTH_CLIENT_ID = google["client_id"]
    settings.GOOGLE_OAUTH_CLIENT_SECRET = google["client_secret"]
    settings.GOOGLE_OAUTH_AUTH_URI = sandbox_url + "/o/oauth2/v2/auth"
    settings.GOOGLE_REVOKE_URI = sandbox_url + "/revoke"
    settings.INSTAGRAM_APP_ID = instagram["app_id"]
    settings.INSTAGRAM_APP_SECRET = instagram["app_secret"]
    settings.INSTAGRAM_OAUTH_AUTHORIZE_URL = sandbox_url + "/oauth/authorize"
    settings.INSTAGRAM_OAUTH_TOKEN_URL = sandbox_url + "/oauth/access_token"
    settings.INSTAGRAM_GRAPH_HOST = sandbox_url
    settings.PUBLIC_BASE_URL = public_url
    settings.OAUTH_SETTINGS_URL = ""


def register_oauth_accounts(sandbox_client) -> None:
    """The sandbox users who consent through the test OAuth clients."""
    sandbox_client.add_account("google_calendar", **OAUTH_CLIENTS["google_calendar"])
    sandbox_client.add_account("instagram", **OAUTH_CLIENTS["instagram"])

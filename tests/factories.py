"""Test data builders and recognisable canary tokens."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from shared.models import Membership, Organization

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


# Sandbox accounts that accept the canary tokens with VALID_EXTRA (register with add_account).
SANDBOX_ACCOUNTS = {
    "whatsapp": {
        "account_sid": VALID_EXTRA["whatsapp"]["account_sid"],
        "auth_token": CANARY["whatsapp"],
        "senders": ["whatsapp:" + VALID_EXTRA["whatsapp"]["from_whatsapp"]],
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

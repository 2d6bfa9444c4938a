"""The "Connect with Google / Instagram" flows: start (a single-use state bound to the
organization, the admin, the browser and the PKCE verifier) and the callback (check the state,
exchange the code, store the tokens encrypted). See docs/oauth.md.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from shared.crypto import TokenDecryptionError, decrypt_token, encrypt_token
from shared.errors import Unavailable, ValidationFailed
from shared.models import Integration, Membership, OAuthState, Organization, Provider, Role
from shared.providers.base import ProviderError
from shared.providers.google_oauth import SCOPES as GOOGLE_SCOPES
from shared.redaction import remember_secret
from shared.services.integrations import integration_oauth_connect
from shared.services.tokens import google_oauth_client, instagram_oauth_client
from shared.validation import validate_extra

logger = logging.getLogger(__name__)

OAUTH_PROVIDERS = (Provider.GOOGLE_CALENDAR.value, Provider.INSTAGRAM.value)
# The path segment of each provider's callback: /oauth/<segment>/callback/.
CALLBACK_SEGMENT = {"google_calendar": "google", "instagram": "instagram"}
PROVIDER_OF_SEGMENT = {segment: slug for slug, segment in CALLBACK_SEGMENT.items()}
# What the start request may set on the integration.
START_FIELDS = {"google_calendar": ("calendar_id",), "instagram": ()}
_BROWSER_NONCE = re.compile(r"[A-Za-z0-9_-]{32,64}")
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


class OAuthNotSupported(ValidationFailed):
    code = "oauth_not_supported"


class OAuthNotConfigured(Unavailable):
    code = "oauth_not_configured"


class OAuthFailure(Exception):
    """A callback that cannot connect: a stable `code` and a sentence for the person."""

    def __init__(self, code: str, message: str, provider: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.provider = provider


@dataclass(frozen=True)
class OAuthStart:
    authorization_url: str
    expires_at: Any
    browser_nonce: str  # goes to the browser as an HttpOnly cookie; only its digest is stored


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_browser_nonce(current: str | None) -> str:
    """The browser's binding nonce: the one its cookie holds when well-formed, else a new one."""
    if current and _BROWSER_NONCE.fullmatch(current):
        return current
    return secrets.token_urlsafe(32)


def _missing_settings(provider: str) -> list[str]:
    names = {
        "google_calendar": ("GOOGLE_OAUTH_CLIENT_ID", "GOOGLE_OAUTH_CLIENT_SECRET"),
        "instagram": ("INSTAGRAM_APP_ID", "INSTAGRAM_APP_SECRET"),
    }[provider]
    return [name for name in (*names, "PUBLIC_BASE_URL") if not getattr(settings, name)]


def _start_extra(provider: str, data: Any) -> dict[str, Any]:
    if data in (None, {}):
        return {}
    if not isinstance(data, dict):
        raise ValidationFailed(
            "The body must be a JSON object.", errors={"body": ["Not an object."]}
        )
    allowed = START_FIELDS[provider]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        hint = ", ".join(allowed) or "nothing for this provider"
        raise ValidationFailed(
            f"{unknown[0]}: not accepted here (accepted: {hint}).",
            errors={key: [f"Not accepted here (accepted: {hint})."] for key in unknown},
        )
    cleaned = validate_extra(provider, data, partial=True)
    return {key: cleaned[key] for key in allowed if key in cleaned}


def oauth_start(
    *,
    organization: Organization,
    user: AbstractBaseUser,
    provider: str,
    data: Any,
    browser_nonce: str | None,
) -> OAuthStart:
    """Begin a connection: a state row bound to (organization, admin, browser, PKCE verifier)
    for OAUTH_STATE_TTL_SECONDS, and the provider's consent URL carrying it."""
    if provider not in OAUTH_PROVIDERS:
        raise OAuthNotSupported(
            f"{provider} has no OAuth connection; paste its token with connect/ instead.",
            errors={"provider": [f"OAuth is available for {', '.join(OAUTH_PROVIDERS)}."]},
        )
    extra = _start_extra(provider, data)
    missing = _missing_settings(provider)
    if missing:
        raise OAuthNotConfigured(
            f"Connecting {provider} with OAuth is not configured on this server; an operator "
            f"must set {', '.join(missing)}.",
            errors={"provider": ["oauth_not_configured"]},
        )
    now = timezone.now()
    OAuthState.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()
    state = secrets.token_urlsafe(32)
    nonce = new_browser_nonce(browser_nonce)
    verifier = ""
    if provider == Provider.GOOGLE_CALENDAR:
        url, verifier = google_oauth_client().authorization_url(state=state)
    else:
        url = instagram_oauth_client().authorization_url(state=state)
    expires_at = now + timedelta(seconds=settings.OAUTH_STATE_TTL_SECONDS)
    OAuthState.objects.create(
        organization=organization,
        user=user,
        provider=provider,
        state_digest=digest(state),
        browser_digest=digest(nonce),
        verifier_encrypted=encrypt_token(verifier) if verifier else "",
        extra=extra,
        expires_at=expires_at,
    )
    return OAuthStart(authorization_url=url, expires_at=expires_at, browser_nonce=nonce)


def _consume(provider: str, params: dict[str, str], nonce: str | None, user: Any) -> OAuthState:
    """The state row of this callback, marked used; raises OAuthFailure."""
    state = params.get("state") or ""
    row = (
        OAuthState.objects.select_related("organization", "user")
        .filter(state_digest=digest(state), provider=provider)
        .first()
        if state
        else None
    )
    if row is None:
        raise OAuthFailure(
            "state_invalid",
            "This connection link is unknown or too old. Start the connection again from Settings.",
        )
    if (
        not nonce
        or digest(nonce) != row.browser_digest
        or (getattr(user, "is_authenticated", False) and user.pk != row.user_id)
    ):
        raise OAuthFailure(
            "state_mismatch",
            "This connection was started by another user or in another browser. Start it "
            "again from Settings, in this browser.",
        )
    now = timezone.now()
    taken = OAuthState.objects.filter(pk=row.pk, used_at__isnull=True, expires_at__gt=now).update(
        used_at=now
    )
    if not taken:
        if (
            row.used_at is not None
            or OAuthState.objects.filter(pk=row.pk, used_at__isnull=False).exists()
        ):
            raise OAuthFailure(
                "state_used",
                "This connection link was already used. Start the connection again from Settings.",
            )
        raise OAuthFailure(
            "state_expired",
            f"The connection took longer than {settings.OAUTH_STATE_TTL_SECONDS // 60} minutes "
            "and expired. Start it again from Settings.",
        )
    if not Membership.objects.filter(
        organization_id=row.organization_id, user_id=row.user_id, role=Role.ADMIN
    ).exists():
        raise OAuthFailure(
            "admin_required",
            "Only an admin of the organization can connect a provider.",
        )
    return row


def _provider_refused(provider: str, params: dict[str, str]) -> OAuthFailure | None:
    error = params.get("error")
    if not error:
        return None
    label = Provider(provider).label
    if error == "access_denied":
        return OAuthFailure(
            "consent_denied",
            f"Access was not granted, so {label} was not connected. Connect again and "
            "allow access to continue.",
        )
    code = error if _ERROR_CODE.fullmatch(error) else "oauth_error"
    return OAuthFailure("oauth_failed", f"{label} refused the connection ({code}).")


def oauth_callback(
    *, provider: str, params: dict[str, str], browser_nonce: str | None, user: Any
) -> Integration:
    """Finish a connection from the provider's redirect (`params`: its query): check the
    state, exchange the code and store the tokens. Raises OAuthFailure with a stable code."""
    code = params.get("code") or ""
    row = _consume(provider, params, browser_nonce, user)
    # An authorization code is a credential: scrubbed from every later log line. Only after the
    # state checks, so anonymous callers cannot grow the process-wide scrub list.
    remember_secret(code)
    refused = _provider_refused(provider, params)
    if refused is not None:
        raise refused
    if not code:
        raise OAuthFailure("code_missing", "The provider sent no authorization code; start again.")
    try:
        if provider == Provider.GOOGLE_CALENDAR:
            return _google_connect(row, code)
        return _instagram_connect(row, code)
    except ProviderError as exc:
        raise _exchange_failure(provider, exc) from None


def _exchange_failure(provider: str, exc: ProviderError) -> OAuthFailure:
    label = Provider(provider).label
    if exc.kind == "transient" or exc.rate_limited:
        return OAuthFailure(
            "provider_unavailable", f"{exc.message}. Nothing was connected; try again."
        )
    if exc.code == "invalid_grant" or exc.credentials_rejected:
        return OAuthFailure(
            "code_rejected",
            f"{label} did not accept the authorization (it was used already, expired, or "
            "the browser's verification did not match). Nothing was connected; start again.",
        )
    return OAuthFailure("oauth_failed", f"{exc.message}. Nothing was connected.")


def _google_connect(row: OAuthState, code: str) -> Integration:
    try:
        verifier = decrypt_token(row.verifier_encrypted)
    except TokenDecryptionError:
        raise OAuthFailure(
            "state_invalid", "This connection link can no longer be read; start again."
        ) from None
    tokens = google_oauth_client().exchange(code=code, code_verifier=verifier)
    remember_secret(tokens.access_token)
    missing = set(GOOGLE_SCOPES) - set(tokens.scopes or GOOGLE_SCOPES)
    if missing:
        google_oauth_client().revoke(tokens.access_token)
        raise OAuthFailure(
            "scope_not_granted",
            "Calendar access was not granted (the box for Google Calendar was left "
            "unticked). Connect again and allow calendar access.",
        )
    if not tokens.refresh_token:
        raise OAuthFailure(
            "no_refresh_token",
            "Google did not give a refresh token, so the calendar could not stay connected. "
            "Remove this app's access at https://myaccount.google.com/permissions and connect "
            "again.",
        )
    return integration_oauth_connect(
        organization=row.organization,
        provider=Provider.GOOGLE_CALENDAR,
        token=tokens.refresh_token,
        extra=row.extra,
        actor=row.user,
        access_token=tokens.access_token,
        access_token_expires_at=tokens.expiry,
    )


def _instagram_connect(row: OAuthState, code: str) -> Integration:
    client = instagram_oauth_client()
    short = client.exchange(code=code)
    remember_secret(short)
    token = client.long_lived(short)
    remember_secret(token.access_token)
    account_id, _username = client.account(token.access_token)
    return integration_oauth_connect(
        organization=row.organization,
        provider=Provider.INSTAGRAM,
        token=token.access_token,
        extra={**row.extra, "instagram_scoped_id": account_id},
        actor=row.user,
        token_expires_at=token.expiry,
    )

"""Token lifecycle: saved access tokens, one locked refresh per integration, needs_reauth, the
beat refresh of tokens about to expire, and revocation at disconnect (docs/oauth.md).

Every refresh goes through `google_access_token_refresh` / `instagram_token_refresh`: they lock
the integration's row, read the token again under the lock and call the provider only when no
other worker has refreshed it meanwhile, so many tasks needing a token at once cost one call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from google.auth.exceptions import RefreshError

from shared.crypto import TokenDecryptionError, decrypt_token, encrypt_token
from shared.events.announce import credentials_rejected
from shared.models import AuthMethod, Integration, Provider
from shared.providers.base import ProviderError
from shared.providers.google_oauth import (
    REFRESH_MARGIN,
    GoogleOAuthClient,
    GoogleTokens,
    refresh_error_code,
)
from shared.providers.instagram_oauth import InstagramOAuthClient
from shared.redaction import remember_secret
from shared.services.audit import audit_event_record

logger = logging.getLogger(__name__)

# Meta refreshes a long-lived token only once it is at least a day old.
INSTAGRAM_MIN_AGE = timedelta(hours=24)
NEEDS_REAUTH_HINT = "connect it again"


def google_oauth_client() -> GoogleOAuthClient:
    """The deployment's Google OAuth client, from settings (its secret is scrubbed from logs)."""
    remember_secret(settings.GOOGLE_OAUTH_CLIENT_SECRET)
    return GoogleOAuthClient(
        client_id=settings.GOOGLE_OAUTH_CLIENT_ID,
        client_secret=settings.GOOGLE_OAUTH_CLIENT_SECRET,
        auth_uri=settings.GOOGLE_OAUTH_AUTH_URI,
        token_uri=settings.GOOGLE_TOKEN_URI,
        revoke_uri=settings.GOOGLE_REVOKE_URI,
        redirect_uri=f"{settings.PUBLIC_BASE_URL}/oauth/google/callback/",
        timeout=settings.PROVIDER_TIMEOUT_SECONDS,
    )


def instagram_oauth_client() -> InstagramOAuthClient:
    """The deployment's Instagram app, from settings (its secret is scrubbed from logs)."""
    remember_secret(settings.INSTAGRAM_APP_SECRET)
    return InstagramOAuthClient(
        app_id=settings.INSTAGRAM_APP_ID,
        app_secret=settings.INSTAGRAM_APP_SECRET,
        authorize_url=settings.INSTAGRAM_OAUTH_AUTHORIZE_URL,
        token_url=settings.INSTAGRAM_OAUTH_TOKEN_URL,
        graph_host=settings.INSTAGRAM_GRAPH_HOST.rstrip("/"),
        graph_base=settings.GRAPH_API_BASE.rstrip("/"),
        redirect_uri=f"{settings.PUBLIC_BASE_URL}/oauth/instagram/callback/",
        timeout=settings.PROVIDER_TIMEOUT_SECONDS,
    )


@dataclass(frozen=True)
class _RefreshMaterial:
    refresh_token: str
    client_id: str = ""  # "" = the deployment's OAuth client
    client_secret: str = ""


def _google_material(integration: Integration, token: str) -> _RefreshMaterial | None:
    """What refreshes this Google integration's access token, None for a pasted access token."""
    if integration.auth_method == AuthMethod.OAUTH:
        return _RefreshMaterial(refresh_token=token)
    if not token.lstrip().startswith("{"):
        return None
    try:
        info = json.loads(token)
    except ValueError:
        return None
    if not isinstance(info, dict) or not all(
        info.get(k) for k in ("refresh_token", "client_id", "client_secret")
    ):
        return None
    return _RefreshMaterial(
        refresh_token=str(info["refresh_token"]),
        client_id=str(info["client_id"]),
        client_secret=str(info["client_secret"]),
    )


def _saved_access_token(integration: Integration) -> tuple[str, datetime] | None:
    """The saved access token and its aware expiry, None when there is none (or it no longer
    decrypts: then a refresh replaces it)."""
    if not integration.access_token_encrypted or integration.access_token_expires_at is None:
        return None
    try:
        return decrypt_token(
            integration.access_token_encrypted
        ), integration.access_token_expires_at
    except TokenDecryptionError:
        return None


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def google_adapter_options(integration: Integration, token: str) -> dict[str, Any]:
    """The adapter options of a Google integration whose token can be refreshed: the saved
    access token and a `refresher` that goes through the locked refresh; {} otherwise."""
    if _google_material(integration, token) is None:
        return {}
    saved = _saved_access_token(integration)
    pk = integration.pk
    material = _google_material(integration, token)

    def refresher(stale: str | None) -> tuple[str, datetime]:
        access, expiry = google_access_token_refresh(
            integration_pk=pk, stale=stale, unsaved=material
        )
        return access, _naive_utc(expiry)

    return {
        "refresher": refresher,
        "access_token": saved[0] if saved else None,
        "access_token_expiry": _naive_utc(saved[1]) if saved else None,
    }


class _NeedsReauth(RefreshError):
    """Refused without calling Google: the integration waits for a person to connect again."""


def _google_refresh(material: _RefreshMaterial) -> GoogleTokens:
    """New tokens from Google for `material` (the deployment's client unless it names its own)."""
    return google_oauth_client().refresh(
        refresh_token=material.refresh_token,
        client_id=material.client_id,
        client_secret=material.client_secret,
    )


def _save_refreshed(row: Integration, tokens: GoogleTokens, now: datetime) -> None:
    """Save a refresh's access token (and a rotated refresh token, for OAuth rows) encrypted."""
    row.access_token_encrypted = encrypt_token(tokens.access_token)
    row.access_token_expires_at = tokens.expiry
    row.token_refreshed_at = now
    fields = ["access_token_encrypted", "access_token_expires_at", "token_refreshed_at"]
    if tokens.refresh_token and row.auth_method == AuthMethod.OAUTH:
        row.token_encrypted = encrypt_token(tokens.refresh_token)
        fields.append("token_encrypted")
    row.save(update_fields=[*fields, "updated_at"])


def google_access_token_refresh(
    *,
    integration_pk: int,
    stale: str | None,
    force: bool = False,
    unsaved: _RefreshMaterial | None = None,
) -> tuple[str, datetime]:
    """A valid access token for the integration (aware expiry): the saved one when another
    worker refreshed it since `stale` was read, else a new one from Google, saved encrypted.

    The row is locked while Google is asked, so concurrent callers wait and then reuse the
    token the first one saved. `force` refreshes even a token that looks valid (beat).
    Raises google-auth's RefreshError; invalid_grant moves the integration to needs_reauth.

    `unsaved` is the caller's own refresh material, used (without saving anything) when this
    connection cannot see the row: it was disconnected meanwhile, or the caller's transaction
    has not committed it yet (a Test Connection's probe thread inside a test's transaction).
    """
    failure: RefreshError | None = None
    with transaction.atomic():
        row = (
            Integration.objects.select_for_update()
            .filter(pk=integration_pk, is_active=True)
            .exclude(token_encrypted="")
            .first()
        )
        if row is None:
            if unsaved is None:
                raise _NeedsReauth(
                    "Google Calendar is not connected any more", {"error": "needs_reauth"}
                )
            tokens = _google_refresh(unsaved)
            return tokens.access_token, tokens.expiry
        if row.needs_reauth_at is not None:
            raise _NeedsReauth(
                f"Google Calendar needs to be connected again ({row.needs_reauth_reason})",
                {"error": "needs_reauth"},
            )
        now = timezone.now()
        saved = _saved_access_token(row)
        if saved and not force and saved[0] != stale and saved[1] - now > REFRESH_MARGIN:
            return saved
        material = _google_material(row, decrypt_token(row.token_encrypted))
        if material is None:
            raise RefreshError("The stored Google token cannot be refreshed")
        try:
            tokens = _google_refresh(material)
        except RefreshError as exc:
            failure = exc
        else:
            _save_refreshed(row, tokens, now)
            return tokens.access_token, tokens.expiry
    code = refresh_error_code(failure)
    if code == "invalid_grant":
        integration_needs_reauth(
            integration_pk=integration_pk,
            reason="Google refused the refresh token (invalid_grant: expired or revoked)",
            code=code,
        )
    elif not failure.retryable:
        logger.error(
            "Google refused to refresh the access token of integration %s (%s).",
            integration_pk,
            code or "no error code",
        )
    raise failure


def instagram_token_refresh(*, integration_pk: int, force: bool = False) -> bool:
    """Renew an Instagram long-lived token that is due (INSTAGRAM_REFRESH_BEFORE_SECONDS
    before its expiry, and at least a day old), once even when asked concurrently. Returns
    whether it was renewed; raises ProviderError. A refused token (code 190) moves the
    integration to needs_reauth."""
    failure: ProviderError | None = None
    with transaction.atomic():
        row = (
            Integration.objects.select_for_update()
            .filter(pk=integration_pk, is_active=True, needs_reauth_at__isnull=True)
            .exclude(token_encrypted="")
            .first()
        )
        if row is None or row.token_expires_at is None:
            return False
        now = timezone.now()
        ahead = timedelta(
            seconds=settings.INSTAGRAM_REFRESH_BEFORE_SECONDS
            + settings.TOKEN_REFRESH_INTERVAL_SECONDS
        )
        if not force and row.token_expires_at - now > ahead:
            return False  # not due, or another worker renewed it meanwhile
        issued = row.token_refreshed_at or row.connected_at
        if issued is not None and now - issued < INSTAGRAM_MIN_AGE and not force:
            return False
        try:
            renewed = instagram_oauth_client().refresh(decrypt_token(row.token_encrypted))
        except ProviderError as exc:
            failure = exc
        else:
            row.token_encrypted = encrypt_token(renewed.access_token)
            row.token_expires_at = renewed.expiry
            row.token_refreshed_at = now
            row.save(
                update_fields=[
                    "token_encrypted",
                    "token_expires_at",
                    "token_refreshed_at",
                    "updated_at",
                ]
            )
            return True
    if failure.credentials_rejected:
        integration_needs_reauth(
            integration_pk=integration_pk,
            reason=f"Instagram refused to renew the access token ({failure.code})",
            code=failure.code or "",
        )
    raise failure


def integration_needs_reauth(*, integration_pk: int, reason: str, code: str = "") -> bool:
    """Move the integration to needs_reauth (sends stop calling the provider), announce
    integration.credentials_rejected and audit it, once; returns whether it changed now."""
    now = timezone.now()
    with transaction.atomic():
        changed = Integration.objects.filter(
            pk=integration_pk, needs_reauth_at__isnull=True, is_active=True
        ).update(
            needs_reauth_at=now,
            needs_reauth_reason=reason[:500],
            credentials_rejected_at=now,
            last_error=f"{reason}; {NEEDS_REAUTH_HINT}"[:500],
            last_error_at=now,
            access_token_encrypted="",
            access_token_expires_at=None,
            updated_at=now,
        )
        if not changed:
            return False
        integration = Integration.objects.select_related("organization").get(pk=integration_pk)
        credentials_rejected(integration, reason=reason, code=code or "needs_reauth")
        audit_event_record(
            organization=integration.organization,
            action="integration.credentials_rejected",
            provider=integration.provider,
            data={"message": reason, "code": code or "", "status": "needs_reauth"},
        )
    logger.warning(
        "Integration %s (%s) needs to be connected again: %s",
        integration_pk,
        integration.provider,
        reason,
    )
    return True


def tokens_refresh_due(now: datetime | None = None) -> dict[str, int]:
    """Beat: refresh every token that expires before the next run (plus REFRESH_MARGIN):
    Google access tokens of integrations that can refresh, Instagram long-lived tokens within
    INSTAGRAM_REFRESH_BEFORE_SECONDS of their expiry. Ids only in logs; never raises."""
    now = now or timezone.now()
    interval = timedelta(seconds=settings.TOKEN_REFRESH_INTERVAL_SECONDS)
    counts = {"google_calendar": 0, "instagram": 0, "failed": 0}
    usable = Integration.objects.filter(is_active=True, needs_reauth_at__isnull=True).exclude(
        token_encrypted=""
    )
    google = usable.filter(provider=Provider.GOOGLE_CALENDAR).exclude(
        access_token_expires_at__gt=now + interval + REFRESH_MARGIN
    )
    for integration in google:
        try:
            token = decrypt_token(integration.token_encrypted)
        except TokenDecryptionError:
            continue
        if _google_material(integration, token) is None:
            continue  # a pasted access token: nothing can renew it
        saved = _saved_access_token(integration)
        try:
            google_access_token_refresh(
                integration_pk=integration.pk, stale=saved[0] if saved else None
            )
        except RefreshError:
            counts["failed"] += 1
        else:
            counts["google_calendar"] += 1
    ahead = timedelta(seconds=settings.INSTAGRAM_REFRESH_BEFORE_SECONDS) + interval
    instagram = usable.filter(provider=Provider.INSTAGRAM, token_expires_at__lte=now + ahead)
    for integration in instagram:
        try:
            renewed = instagram_token_refresh(integration_pk=integration.pk)
        except ProviderError:
            counts["failed"] += 1
        else:
            counts["instagram"] += int(renewed)
    return counts


def integration_token_revoke(integration: Integration, token: str) -> bool | None:
    """Revoke an OAuth-obtained token at the provider, best effort (Google's revoke endpoint,
    Meta's permission delete): True/False as the provider answered, None when not revoked
    (a pasted token belongs to whoever pasted it, and may serve them elsewhere)."""
    if integration.auth_method != AuthMethod.OAUTH or not token:
        return None
    if integration.provider == Provider.GOOGLE_CALENDAR:
        return google_oauth_client().revoke(token)
    if integration.provider == Provider.INSTAGRAM:
        return instagram_oauth_client().revoke(token)
    return None

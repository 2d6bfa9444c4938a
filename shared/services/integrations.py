"""Integration services: connect, disconnect and (with providers) test a provider connection."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connections, transaction
from django.utils import timezone

from shared.crypto import TokenDecryptionError, encrypt_token, token_fingerprint
from shared.errors import NotFound, ValidationFailed
from shared.events.announce import credentials_rejected
from shared.models import AuthMethod, Integration, Organization
from shared.providers.base import OutboundMessage, ProviderError
from shared.providers.registry import SPECS
from shared.services.audit import audit_event_record
from shared.services.connection_slots import TEST_SLOTS
from shared.services.keys import integration_token
from shared.services.providers import integration_adapter
from shared.services.tokens import integration_token_revoke
from shared.validation import validate_extra, validate_token

logger = logging.getLogger(__name__)


def integration_get(*, organization: Organization, provider: str) -> Integration:
    """The organization's integration for `provider`; raises NotFound when there is no row."""
    try:
        return Integration.objects.get(organization=organization, provider=provider)
    except Integration.DoesNotExist:
        raise NotFound(f"{provider} is not connected for this organization.") from None


@transaction.atomic
def integration_connect(
    *,
    organization: Organization,
    provider: str,
    token: Any,
    extra: Any,
    actor: AbstractBaseUser | None = None,
) -> Integration:
    """Create or overwrite the (org, provider) integration with an encrypted token; audits it."""
    token = validate_token(provider, token)
    cleaned = validate_extra(provider, extra)
    now = timezone.now()
    integration, created = Integration.objects.select_for_update().get_or_create(
        organization=organization, provider=provider
    )
    _store_credentials(integration, token, now)
    integration.extra = cleaned
    integration.save()
    audit_event_record(
        organization=organization,
        actor=actor,
        action="integration.connected",
        provider=provider,
        token_fingerprint=token_fingerprint(token),
        data={"created": created},
    )
    return integration


def _store_credentials(
    integration: Integration,
    token: str,
    now: datetime,
    *,
    method: str = AuthMethod.PASTED,
    token_expires_at: datetime | None = None,
    access_token: str = "",
    access_token_expires_at: datetime | None = None,
) -> None:
    """Put a new credential on the row (not saved): encrypted, every status it ends cleared."""
    integration.token_encrypted = encrypt_token(token)
    integration.auth_method = method
    integration.token_expires_at = token_expires_at
    integration.access_token_encrypted = encrypt_token(access_token) if access_token else ""
    integration.access_token_expires_at = access_token_expires_at if access_token else None
    integration.token_refreshed_at = now if access_token else None
    integration.is_active = True
    integration.connected_at = now
    integration.credentials_rejected_at = None
    integration.needs_reauth_at = None
    integration.needs_reauth_reason = ""
    integration.key_unavailable_at = None
    integration.last_error = ""
    integration.last_error_at = None


@transaction.atomic
def integration_oauth_connect(
    *,
    organization: Organization,
    provider: str,
    token: str,
    extra: dict[str, Any],
    actor: AbstractBaseUser | None = None,
    token_expires_at: datetime | None = None,
    access_token: str = "",
    access_token_expires_at: datetime | None = None,
) -> Integration:
    """Create or overwrite the integration with what an OAuth flow gave (Google: the refresh
    token plus the first access token; Instagram: the long-lived token), encrypted; audits it.

    `extra` is validated like a pasted connection's; settings of the existing row that the flow
    does not set (a rate limit, a test destination) are kept."""
    now = timezone.now()
    integration, created = Integration.objects.select_for_update().get_or_create(
        organization=organization, provider=provider
    )
    kept = {} if created else dict(integration.extra)
    cleaned = validate_extra(provider, {**kept, **extra})
    _store_credentials(
        integration,
        token,
        now,
        method=AuthMethod.OAUTH,
        token_expires_at=token_expires_at,
        access_token=access_token,
        access_token_expires_at=access_token_expires_at,
    )
    integration.extra = cleaned
    integration.save()
    audit_event_record(
        organization=organization,
        actor=actor,
        action="integration.connected",
        provider=provider,
        token_fingerprint=token_fingerprint(token),
        data={"created": created, "method": AuthMethod.OAUTH.value},
    )
    return integration


def integration_disconnect(
    *, organization: Organization, provider: str, actor: AbstractBaseUser | None = None
) -> Integration:
    """Soft-disconnect: revoke an OAuth-obtained token at the provider (best effort, bounded by
    PROVIDER_TIMEOUT_SECONDS), then keep the row, mark it inactive and erase every stored
    token; audits it with whether the provider confirmed the revocation."""
    integration = integration_get(organization=organization, provider=provider)
    revoked = None
    if integration.is_active and integration.token_encrypted:
        try:
            revoked = integration_token_revoke(integration, integration_token(integration))
        except TokenDecryptionError:
            revoked = False
    with transaction.atomic():
        integration = Integration.objects.select_for_update().get(pk=integration.pk)
        integration.token_encrypted = ""
        integration.access_token_encrypted = ""
        integration.access_token_expires_at = None
        integration.is_active = False
        integration.save(
            update_fields=[
                "token_encrypted",
                "access_token_encrypted",
                "access_token_expires_at",
                "is_active",
                "updated_at",
            ]
        )
        data = {} if revoked is None else {"revoked_at_provider": revoked}
        audit_event_record(
            organization=organization,
            actor=actor,
            action="integration.disconnected",
            provider=provider,
            data=data,
        )
    return integration


@dataclass
class ConnectionTestResult:
    ok: bool
    message: str
    checks: dict[str, Any] = field(default_factory=dict)
    error_kind: str = ""
    error_code: str = ""


def _test_message(provider: str, to: str) -> OutboundMessage:
    return OutboundMessage(
        to=to,
        subject="Corbi Integrations test message",
        body="This is a test message from Corbi Integrations (Settings → Test Connection).",
        reference=f"connection-test:{provider}",
    )


def integration_test(
    *,
    organization: Organization,
    provider: str,
    actor: AbstractBaseUser | None = None,
    extra_override: Any = None,
) -> tuple[Integration, ConnectionTestResult]:
    """Probe the stored credentials and, when a test destination is known, send a test message.

    The whole test is bounded by TEST_CONNECTION_TIMEOUT_SECONDS of wall-clock time from this
    call; the outcome is written to the integration's status fields and audited as
    `integration.tested`. Raises ConnectionTestBusy when too many tests are running
    (TEST_CONNECTION_MAX_CONCURRENT_PER_ORG / _PER_PROCESS).
    """
    budget = settings.TEST_CONNECTION_TIMEOUT_SECONDS
    deadline = time.monotonic() + budget
    override = _test_override(provider, extra_override)
    integration = integration_get(organization=organization, provider=provider)
    if not integration.is_active or not integration.token_encrypted:
        raise NotFound(f"{provider} is not connected for this organization.")

    try:
        token = integration_token(integration)
    except TokenDecryptionError as exc:
        # An operator problem (a dropped FERNET_KEY), not a provider rejection.
        result = ConnectionTestResult(ok=False, message=str(exc), error_kind="key_unavailable")
    else:
        result = _run_bounded(integration, override, deadline, budget, token)
    now = timezone.now()
    integration.last_tested_at = now
    integration.last_test_ok = result.ok
    integration.last_test_message = result.message[:500]
    if result.ok:
        integration.credentials_rejected_at = None
    elif result.error_kind == "credentials":
        if integration.credentials_rejected_at is None:
            credentials_rejected(integration, reason=result.message, code=result.error_code)
        integration.credentials_rejected_at = now
    integration.save(
        update_fields=[
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "credentials_rejected_at",
            "updated_at",
        ]
    )
    audit_event_record(
        organization=organization,
        actor=actor,
        action="integration.tested",
        provider=provider,
        data={
            "ok": result.ok,
            "message": result.message,
            "error_kind": result.error_kind,
            "error_code": result.error_code,
        },
    )
    return integration, result


def _run_bounded(
    integration: Integration,
    override: dict[str, Any],
    deadline: float,
    budget: float,
    token: str,
) -> ConnectionTestResult:
    """The probe and send in a helper thread holding a test slot until it ends; the caller
    waits only until `deadline`. A probe may make several calls (Google refreshes its token
    first), each with its own socket timeout, hence one hard deadline around them all."""
    slot = TEST_SLOTS.acquire(integration.organization_id, deadline, budget)
    checks: dict[str, Any] = {}
    future: Future[ConnectionTestResult] = Future()

    def run() -> None:
        try:
            future.set_result(
                _probe_and_send(integration, override, deadline, budget, checks, token)
            )
        except BaseException as exc:  # handed to the waiting request, if it still waits
            future.set_exception(exc)
        finally:
            connections.close_all()
            TEST_SLOTS.release(slot)

    try:
        threading.Thread(target=run, name="connection-test", daemon=True).start()
    except BaseException:
        TEST_SLOTS.release(slot)
        raise
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FuturesTimeout:
        return ConnectionTestResult(
            ok=False,
            message=f"{SPECS[integration.provider].vendor} did not answer within {budget:g} s",
            checks=dict(checks),
            error_kind="transient",
        )


def _probe_and_send(
    integration: Integration,
    override: dict[str, Any],
    deadline: float,
    budget: float,
    checks: dict[str, Any],
    token: str,
) -> ConnectionTestResult:
    """The probe and, when a destination is known, the test send (runs in a helper thread)."""
    provider = integration.provider
    try:
        remaining = _time_left(provider, deadline, budget, floor=0.1)
        adapter = integration_adapter(
            integration, timeout=remaining, extra_override=override, token=token
        )
        checks["credentials"] = adapter.check()
        field_name = SPECS[provider].test_destination
        destination = (integration.extra | override).get(field_name) if field_name else None
        if destination:
            remaining = _time_left(provider, deadline, budget, floor=0.5)
            sender = integration_adapter(
                integration, timeout=remaining, extra_override=override, token=token
            )
            message_id = sender.send(_test_message(provider, str(destination)))
            checks["test_message"] = {"to": str(destination), "message_id": message_id}
        return ConnectionTestResult(ok=True, message=_success_text(provider, checks), checks=checks)
    except ProviderError as exc:
        message = exc.message
        if exc.kind == "transient" and time.monotonic() >= deadline - 0.05:
            # The call's socket timeout was what was left of the budget: name the whole budget,
            # as the waiting request does when it gives up first.
            message = f"{SPECS[provider].vendor} did not answer within {budget:g} s"
        return ConnectionTestResult(
            ok=False,
            message=message,
            checks=checks,
            error_kind=exc.kind,
            error_code=exc.code or "",
        )


def _time_left(provider: str, deadline: float, budget: float, *, floor: float) -> float:
    """Seconds left until `deadline`; a transient ProviderError when no more than `floor` are."""
    remaining = deadline - time.monotonic()
    if remaining <= floor:
        raise ProviderError(
            f"{SPECS[provider].vendor} did not answer within {budget:g} s",
            kind="transient",
            provider=provider,
        )
    return remaining


def _test_override(provider: str, extra_override: Any) -> dict[str, Any]:
    if extra_override in (None, {}):
        return {}
    if not isinstance(extra_override, dict):
        raise ValidationFailed(
            "extra must be a JSON object.", errors={"extra": ["Must be an object."]}
        )
    allowed = {SPECS[provider].test_destination} - {None}
    unknown = sorted(set(extra_override) - allowed)
    if unknown:
        hint = ", ".join(sorted(allowed)) or "none for this provider"
        raise ValidationFailed(
            f"extra.{unknown[0]}: only test destinations may be given here ({hint}).",
            errors={f"extra.{key}": [f"Only {hint} may be given for a test."] for key in unknown},
        )
    return validate_extra(provider, extra_override, partial=True)


def _success_text(provider: str, checks: dict[str, Any]) -> str:
    text = f"{SPECS[provider].label}: credentials accepted ({checks['credentials']})"
    if "test_message" in checks:
        text += f"; test message sent to {checks['test_message']['to']}"
    return text + "."

"""Integration services: connect, disconnect and (with providers) test a provider connection."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connections, transaction
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.crypto import TokenDecryptionError, encrypt_token, token_fingerprint
from shared.errors import NotFound, ServiceError, ValidationFailed
from shared.models import Integration, Organization, Provider
from shared.providers.base import OutboundMessage, ProviderError
from shared.providers.registry import PROVIDERS
from shared.services.audit import audit_event_record
from shared.services.keys import integration_token
from shared.services.providers import integration_adapter
from shared.validation import FIELDS, validate_extra, validate_token

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
    integration.token_encrypted = encrypt_token(token)
    integration.extra = cleaned
    integration.is_active = True
    integration.connected_at = now
    integration.credentials_rejected_at = None
    integration.key_unavailable_at = None
    integration.last_error = ""
    integration.last_error_at = None
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


@transaction.atomic
def integration_disconnect(
    *, organization: Organization, provider: str, actor: AbstractBaseUser | None = None
) -> Integration:
    """Soft-disconnect: keep the row, mark it inactive and erase the stored token; audits it."""
    try:
        integration = Integration.objects.select_for_update().get(
            organization=organization, provider=provider
        )
    except Integration.DoesNotExist:
        raise NotFound(f"{provider} is not connected for this organization.") from None
    integration.token_encrypted = ""
    integration.is_active = False
    integration.save(update_fields=["token_encrypted", "is_active", "updated_at"])
    audit_event_record(
        organization=organization,
        actor=actor,
        action="integration.disconnected",
        provider=provider,
    )
    return integration


@dataclass
class ConnectionTestResult:
    ok: bool
    message: str
    checks: dict[str, Any] = field(default_factory=dict)
    error_kind: str = ""
    error_code: str = ""


class ConnectionTestBusy(ServiceError):
    """Too many connection tests are running (for the organization or in this process)."""

    code = "test_connection_busy"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, errors={"provider": [message]})
        self.retry_after = retry_after


# Per-org leases shared by every web process: a sorted set of lease ids scored by their test's
# deadline (Redis server time). A lease whose holder crashed is dropped LEASE_GRACE_FACTOR
# budgets after its deadline, by then its helper thread's socket timeouts have all expired.
_ORG_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local budget, limit, grace = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - grace)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tostring(tonumber(first[2]) - now)}
end
redis.call('ZADD', KEYS[1], now + budget, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil((budget + grace) * 1000))
return {1, '0'}
"""
LEASE_GRACE_FACTOR = 1.0
LEASE_PREFIX = "corbi:connection-test:org:"


@lru_cache(maxsize=4)
def _lease_script(url: str) -> Any:
    client = redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    return client.register_script(_ORG_LEASE)


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


@dataclass
class _Slot:
    """One admitted test: counted in this process (and in Redis per org) until its thread ends."""

    org_id: int
    deadline: float
    redis_url: str
    lease: str | None = None
    released: bool = False


class _TestSlots:
    """This process's running connection tests, by org; a slot is given back only when the
    helper thread really ends, so a thread stuck in a hanging socket keeps counting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: list[_Slot] = []

    def acquire(self, org_id: int, deadline: float, budget: float) -> _Slot:
        """A slot for one test of `org_id`, or ConnectionTestBusy with a Retry-After."""
        per_process = max(1, settings.TEST_CONNECTION_MAX_CONCURRENT_PER_PROCESS)
        per_org = max(1, settings.TEST_CONNECTION_MAX_CONCURRENT_PER_ORG)
        with self._lock:
            now = time.monotonic()
            same_org = [slot for slot in self._running if slot.org_id == org_id]
            for running, limit, whose in (
                (same_org, per_org, "this organization"),
                (self._running, per_process, "this server"),
            ):
                if len(running) >= limit:
                    wait = min(slot.deadline for slot in running) - now
                    raise ConnectionTestBusy(
                        f"{limit} connection tests are already running for {whose}; "
                        f"retry in {_retry_after(wait)} s.",
                        retry_after=_retry_after(wait),
                    )
            slot = _Slot(org_id=org_id, deadline=deadline, redis_url=settings.REDIS_URL)
            self._running.append(slot)
        try:
            slot.lease = _org_lease(slot.redis_url, org_id, budget, per_org)
        except ConnectionTestBusy:
            self.release(slot)
            raise
        return slot

    def release(self, slot: _Slot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._running.remove(slot)
        if slot.lease is not None:
            try:
                _lease_script(slot.redis_url).registered_client.zrem(
                    f"{LEASE_PREFIX}{slot.org_id}", slot.lease
                )
            except redis.RedisError:
                pass  # the lease expires on its own after its deadline plus the grace


def _org_lease(redis_url: str, org_id: int, budget: float, limit: int) -> str | None:
    """A Redis lease for one of the org's `limit` slots across processes; ConnectionTestBusy
    when all are taken. Fails open (None) when Redis is unavailable: the per-process bounds
    (which also bound each org in this process) still hold."""
    lease = uuid.uuid4().hex
    script = _lease_script(redis_url)
    try:
        granted, wait = script(
            keys=[f"{LEASE_PREFIX}{org_id}"],
            args=[lease, budget, limit, budget * LEASE_GRACE_FACTOR],
        )
    except redis.RedisError as error:
        logger.warning(
            "connection-test org limit not shared (Redis unavailable): %s", type(error).__name__
        )
        return None
    if not granted:
        retry = _retry_after(float(wait))
        raise ConnectionTestBusy(
            f"{limit} connection tests are already running for this organization; "
            f"retry in {retry} s.",
            retry_after=retry,
        )
    return lease


TEST_SLOTS = _TestSlots()

# Which extra field holds each provider's Settings-test destination.
TEST_DESTINATION = {
    Provider.WHATSAPP: "to_whatsapp",
    Provider.SENDGRID: "to_email",
    Provider.TELEGRAM: "chat_id",
}


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
            message=f"{PROVIDERS[integration.provider].vendor} did not answer within {budget:g} s",
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
        field_name = TEST_DESTINATION.get(provider)
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
        return ConnectionTestResult(
            ok=False,
            message=exc.message,
            checks=checks,
            error_kind=exc.kind,
            error_code=exc.code or "",
        )


def _time_left(provider: str, deadline: float, budget: float, *, floor: float) -> float:
    """Seconds left until `deadline`; a transient ProviderError when no more than `floor` are."""
    remaining = deadline - time.monotonic()
    if remaining <= floor:
        raise ProviderError(
            f"{PROVIDERS[provider].vendor} did not answer within {budget:g} s",
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
    allowed = set(TEST_DESTINATION.values()) & set(FIELDS[provider])
    unknown = sorted(set(extra_override) - allowed)
    if unknown:
        hint = ", ".join(sorted(allowed)) or "none for this provider"
        raise ValidationFailed(
            f"extra.{unknown[0]}: only test destinations may be given here ({hint}).",
            errors={f"extra.{key}": [f"Only {hint} may be given for a test."] for key in unknown},
        )
    return validate_extra(provider, extra_override, partial=True)


def _success_text(provider: str, checks: dict[str, Any]) -> str:
    text = f"{Provider(provider).label}: credentials accepted ({checks['credentials']})"
    if "test_message" in checks:
        text += f"; test message sent to {checks['test_message']['to']}"
    return text + "."

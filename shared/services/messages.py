"""Outbound messages: create (single, bulk, idempotent), deliver, retry, and sweep the outbox."""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import Case, CharField, Count, DateTimeField, F, Q, Value, When
from django.db.models.functions import Cast
from django.utils import timezone

from shared.crypto import TokenDecryptionError
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import (
    Integration,
    Message,
    MessageAttempt,
    MessageStatus,
    Organization,
    Provider,
)
from shared.providers.base import OutboundMessage, ProviderError
from shared.ratelimit import Limit
from shared.services.audit import audit_event_record
from shared.services.keys import ensure_token_decrypts, integration_token
from shared.services.outbox import (
    DELIVER_MESSAGES,
    publish_groups,
    publish_later,
    publish_on_commit,
)
from shared.services.providers import integration_adapter
from shared.validation import validate_destination

logger = logging.getLogger(__name__)

MESSAGING_PROVIDERS = (Provider.WHATSAPP, Provider.SENDGRID, Provider.TELEGRAM, Provider.INSTAGRAM)
BODY_LIMITS = {
    Provider.WHATSAPP: 1600,
    Provider.SENDGRID: 100_000,
    Provider.TELEGRAM: 4096,
    Provider.INSTAGRAM: 999,
}
MAX_KEY_LENGTH = 128
# A task may run this much before its due time (clock skew between hosts) ...
EARLY_TOLERANCE = timedelta(seconds=0.05)
# ... and may use its booked rate-limit slot at most this late before booking a new one.
SLOT_TOLERANCE = timedelta(seconds=0.1)
# A slot booked at most this far ahead is used at once ...
SEND_NOW = timedelta(seconds=0.005)
# ... and deferred messages whose slots are close together run as one wave (one task at the
# wave's first slot), each at most min(WAVE, a quarter of its limit's spacing) early.
WAVE = timedelta(seconds=0.1)
KEY_UNAVAILABLE_TEXT = (
    "Waiting for the encryption key: the stored token does not decrypt with any configured "
    "FERNET_KEY. An operator must restore the FERNET_KEY that encrypted it; delivery resumes "
    "then."
)


# --- creation --------------------------------------------------------------------------------


def _clean(provider: Any, to: Any, body: Any, subject: Any, html: Any, key: Any) -> dict[str, Any]:
    """One message's fields, validated; raises ValidationFailed with field-level errors."""
    errors: dict[str, list[str]] = {}
    if provider not in MESSAGING_PROVIDERS:
        raise ValidationFailed(
            "provider: must be one of " + ", ".join(MESSAGING_PROVIDERS) + ".",
            errors={"provider": ["Must be one of " + ", ".join(MESSAGING_PROVIDERS) + "."]},
        )
    cleaned: dict[str, Any] = {"provider": provider}
    try:
        cleaned["to"] = validate_destination(provider, to)
    except ValidationFailed as exc:
        errors.update(exc.errors)
    body = body if body is not None else ""
    subject = subject if subject is not None else ""
    html = html if html is not None else ""
    for name, value in (
        ("body", body),
        ("subject", subject),
        ("html", html),
        ("idempotency_key", key),
    ):
        if name != "idempotency_key" and not isinstance(value, str):
            errors[name] = ["Must be a string."]
        elif isinstance(value, str) and "\x00" in value:
            errors[name] = ["Must not contain NUL characters."]
    if not errors:
        if provider == Provider.SENDGRID:
            if not subject.strip():
                errors["subject"] = ["An email needs a subject."]
            elif len(subject) > 998:
                errors["subject"] = ["Must be at most 998 characters."]
            if not body.strip() and not html.strip():
                errors["body"] = ["An email needs a body or html."]
        else:
            if subject or html:
                errors["subject" if subject else "html"] = [f"{provider} messages are text only."]
            if not body.strip():
                errors["body"] = ["This field is required."]
        if len(body) > BODY_LIMITS[provider] or len(html) > BODY_LIMITS[provider]:
            errors["body"] = [f"Must be at most {BODY_LIMITS[provider]} characters for {provider}."]
    if (
        "idempotency_key" not in errors
        and key is not None
        and (not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH)
    ):
        errors["idempotency_key"] = [f"Must be a string of 1 to {MAX_KEY_LENGTH} characters."]
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(f"{first}: {errors[first][0]}", errors=errors)
    cleaned.update(body=body, subject=subject, html=html, idempotency_key=key)
    return cleaned


def _active_integrations(organization: Organization, providers: set[str]) -> dict[str, Integration]:
    if not providers:
        return {}
    found = {
        i.provider: i
        for i in Integration.objects.filter(
            organization=organization, provider__in=providers, is_active=True
        ).exclude(token_encrypted="")
    }
    missing = sorted(providers - set(found))
    if missing:
        raise Conflict(
            f"{missing[0]} is not connected for this organization; connect it before sending.",
            errors={"provider": [f"{p} is not connected or inactive." for p in missing]},
        )
    for provider in sorted(found):
        ensure_token_decrypts(found[provider])
    return found


def message_unpublish(ids: Sequence[int]) -> None:
    """The publish failed: mark the rows so the sweeper publishes them on its next run."""
    Message.objects.filter(pk__in=ids, status=MessageStatus.QUEUED).update(enqueued_at=None)


def message_create(
    *,
    organization: Organization,
    provider: str,
    to: str,
    body: str = "",
    subject: str = "",
    html: str = "",
    idempotency_key: str | None = None,
) -> tuple[Message, bool]:
    """Write one outbound message to the outbox and enqueue it on commit.

    Returns (message, created). The same idempotency key again returns the existing message
    with created=False and enqueues nothing. Raises ValidationFailed or Conflict (not connected).
    """
    results = message_create_bulk(
        organization=organization,
        items=[
            {
                "provider": provider,
                "to": to,
                "body": body,
                "subject": subject,
                "html": html,
                "idempotency_key": idempotency_key,
            }
        ],
        _single=True,
    )
    return results[0]


def message_create_bulk(
    *, organization: Organization, items: Sequence[Mapping[str, Any]], _single: bool = False
) -> list[tuple[Message, bool]]:
    """Validate every item, then write all new messages in one transaction and enqueue them.

    Errors are reported by index (`messages.<i>.<field>`) and nothing is written. Items whose
    idempotency key already exists return the existing message (created=False).
    """
    if not items:
        raise ValidationFailed(
            "messages: at least one message is required.",
            errors={"messages": ["Must not be empty."]},
        )
    if len(items) > settings.BULK_MAX_MESSAGES:
        raise ValidationFailed(
            f"messages: at most {settings.BULK_MAX_MESSAGES} messages per request.",
            errors={"messages": [f"At most {settings.BULK_MAX_MESSAGES} messages per request."]},
        )
    cleaned: list[dict[str, Any]] = []
    errors: dict[str, list[str]] = {}
    seen_keys: dict[str, int] = {}
    for index, item in enumerate(items):
        prefix = "" if _single else f"messages.{index}."
        if not isinstance(item, Mapping):
            errors[f"messages.{index}"] = ["Must be an object."]
            continue
        try:
            row = _clean(
                item.get("provider"),
                item.get("to"),
                item.get("body"),
                item.get("subject"),
                item.get("html"),
                item.get("idempotency_key"),
            )
        except ValidationFailed as exc:
            errors.update({prefix + k: v for k, v in exc.errors.items()})
            continue
        key = row["idempotency_key"]
        if key is not None:
            if key in seen_keys:
                errors[prefix + "idempotency_key"] = [
                    f"Repeats the key of message {seen_keys[key]} in this request."
                ]
                continue
            seen_keys[key] = index
        cleaned.append(row)
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(f"{first}: {errors[first][0]}", errors=errors)

    keys = [row["idempotency_key"] for row in cleaned if row["idempotency_key"] is not None]
    for _ in range(2):  # a concurrent request may insert the same key between read and write
        existing = (
            {
                m.idempotency_key: m
                for m in Message.objects.filter(organization=organization, idempotency_key__in=keys)
            }
            if keys
            else {}
        )
        new_providers = {r["provider"] for r in cleaned if r["idempotency_key"] not in existing}
        integrations = _active_integrations(organization, new_providers)
        try:
            return _insert(organization, cleaned, integrations, existing)
        except IntegrityError:
            continue
    raise Conflict("The idempotency key is being used by a concurrent request; try again.")


@transaction.atomic
def _insert(
    organization: Organization,
    cleaned: list[dict[str, Any]],
    integrations: dict[str, Integration],
    existing: dict[str, Message],
) -> list[tuple[Message, bool]]:
    now = timezone.now()
    new = [
        Message(
            organization=organization,
            integration=integrations[row["provider"]],
            provider=row["provider"],
            to=row["to"],
            body=row["body"],
            subject=row["subject"],
            html=row["html"],
            idempotency_key=row["idempotency_key"],
            next_attempt_at=now,
            enqueued_at=now,
        )
        for row in cleaned
        if row["idempotency_key"] not in existing
    ]
    created = Message.objects.bulk_create(new, batch_size=1000)
    publish_on_commit(DELIVER_MESSAGES, [m.pk for m in created], on_failure=message_unpublish)
    created_iter = iter(created)
    return [
        (existing[row["idempotency_key"]], False)
        if row["idempotency_key"] in existing
        else (next(created_iter), True)
        for row in cleaned
    ]


def message_retry(*, organization: Organization, message_id: int) -> Message:
    """Put a failed message back in the outbox for a fresh round of attempts."""
    with transaction.atomic():
        message = _message_for_update(organization, message_id)
        if message.status != MessageStatus.FAILED:
            raise Conflict(f"Only failed messages can be retried; this one is {message.status}.")
        integration = message.integration
        if not integration.is_active or not integration.token_encrypted:
            raise Conflict(f"{message.provider} is not connected for this organization.")
        ensure_token_decrypts(integration)
        now = timezone.now()
        message.status = MessageStatus.QUEUED
        message.retries = 0
        message.next_attempt_at = now
        message.enqueued_at = now
        message.failed_at = None
        message.last_error = ""
        message.error_kind = ""
        message.error_code = ""
        message.save()
        publish_on_commit(DELIVER_MESSAGES, [message.pk], on_failure=message_unpublish)
    return message


def _message_for_update(organization: Organization, message_id: int) -> Message:
    try:
        return (
            Message.objects.select_for_update(of=("self",))
            .select_related("integration")
            .get(organization=organization, pk=message_id)
        )
    except Message.DoesNotExist:
        raise NotFound("Message not found.") from None


# --- delivery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryOutcome:
    """What happened to one delivery task; `delay` is set when the task must run again later.

    `due_at` is the same moment as a time: publish with it as the ETA, since the seconds of
    `delay` were counted from when the batch began, not from when its follow-ups are published.
    """

    status: str  # sent | failed | deferred | skipped
    delay: float | None = None
    reason: str = ""
    due_at: datetime | None = None


def message_limits(message: Message, integration: Integration) -> list[Limit]:
    """The shared limits a send must fit: per (org, provider), plus per chat for Telegram."""
    extra = integration.extra if isinstance(integration.extra, dict) else {}
    rate = _configured_rate(extra.get("rate_limit_per_second"), message.provider)
    limits = [Limit(key=f"{message.provider}:org:{message.organization_id}", rate=rate)]
    if message.provider == Provider.TELEGRAM:
        chat = hashlib.sha256(message.to.encode()).hexdigest()[:16]
        chat_rate = (
            settings.TELEGRAM_GROUP_RATE
            if message.to.startswith("-")
            else settings.TELEGRAM_CHAT_RATE
        )
        limits.append(Limit(key=f"telegram:chat:{integration.pk}:{chat}", rate=chat_rate))
    return limits


def _configured_rate(value: Any, provider: str) -> float:
    """The integration's own rate when it is a positive finite number, else the provider's
    default: a value stored before validation bounded it must not break or lift the limit."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if value > 0:
            return float(value)
    return float(settings.RATE_LIMITS.get(provider) or 0)


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with jitter for the `retries`-th transient failure."""
    base = settings.DELIVERY_BACKOFF_BASE_SECONDS * (2 ** max(retries - 1, 0))
    return min(settings.DELIVERY_BACKOFF_MAX_SECONDS, base) * random.uniform(0.5, 1.5)


def _schedule(
    message_id: int, delay: float, now: datetime, *, expect: str, **fields: Any
) -> DeliveryOutcome:
    """Put a message back to queued, due in `delay` s; long delays wait in the DB for the sweeper.

    `expect` is the status the row must still have, so a late outcome never overwrites a newer one.
    """
    in_broker = delay <= settings.MAX_COUNTDOWN_SECONDS
    updated = Message.objects.filter(pk=message_id, status=expect).update(
        status=MessageStatus.QUEUED,
        next_attempt_at=now + timedelta(seconds=delay),
        enqueued_at=now if in_broker else None,
        lease_expires_at=None,
        updated_at=now,
        **fields,
    )
    if not updated:
        return DeliveryOutcome("skipped", reason=f"no longer {expect}")
    if not in_broker:
        return DeliveryOutcome("deferred")
    return DeliveryOutcome("deferred", delay=delay, due_at=now + timedelta(seconds=delay))


def message_deliver(*, message_id: int, limiter: Any, metrics: Any) -> DeliveryOutcome:
    """Deliver one queued message; see `message_deliver_batch`."""
    return message_deliver_batch(message_ids=[message_id], limiter=limiter, metrics=metrics)[
        message_id
    ]


@dataclass
class _Sent:
    """One provider call made for a claimed message: its id, or the error."""

    message: Message
    number: int
    started: datetime
    elapsed: float = 0.0
    provider_id: str = ""
    error: ProviderError | None = None
    # Not sent, because it waited for a send thread until its lease ran short ("lease") or its
    # rate-limit slot was more than SLOT_TOLERANCE past ("slot"), or because its start could not
    # be recorded as this claim's ("lost": the row is no longer ours).
    released: str = ""


def message_deliver_batch(
    *,
    message_ids: Sequence[int],
    limiter: Any,
    metrics: Any,
    executor: Executor | None = None,
    send_threads: int = 1,
) -> dict[int, DeliveryOutcome]:
    """Deliver queued messages by id: decrypt, rate-limit, claim, call the provider, record.

    Rows are claimed with one conditional update (queued → sending), so two deliveries of the
    same id cannot both call the provider; a call counts as an attempt once it starts (one
    UPDATE per group of calls starting together). Besides those, the batch costs a fixed number
    of round trips; the calls run on `executor` when given, else one after another
    (`send_threads`: how many calls `executor` runs at once). A message told to wait (rate
    limit, 429, backoff) is published again, due at its time; one waiting longer than
    MAX_COUNTDOWN_SECONDS, or for its FERNET_KEY, is left to the sweeper. Returns each outcome.
    """
    ids = list(dict.fromkeys(int(pk) for pk in message_ids))
    outcomes: dict[int, DeliveryOutcome] = {}
    rows = Message.objects.select_related("integration").in_bulk(ids)
    now = timezone.now()
    clock = time.monotonic()  # `now` on the monotonic clock
    # The lease counts from `now`, so a call may start until the lease minus one whole call.
    start_by = clock + settings.DELIVERY_LEASE_SECONDS - settings.PROVIDER_TIMEOUT_SECONDS
    ready: list[Message] = []
    for pk in ids:
        message = rows.get(pk)
        if message is None or message.status != MessageStatus.QUEUED:
            outcomes[pk] = DeliveryOutcome("skipped", reason="not queued")
        elif message.next_attempt_at and message.next_attempt_at > now + EARLY_TOLERANCE:
            outcomes[pk] = DeliveryOutcome("skipped", reason="not due")
        elif (unusable := _unusable(message)) is not None:
            outcomes[pk] = _fail_unclaimed(message, now, *unusable)
        else:
            ready.append(message)
    tokens = _decrypt_tokens(ready, now, outcomes)
    ready = [m for m in ready if m.integration_id in tokens]
    ready, slot_ends = _take_slots(ready, now, clock, limiter, metrics, outcomes, send_threads)
    # Published before the sends: a slot 20 ms away must not wait for this batch's sends.
    _publish_follow_ups(outcomes)
    published = set(outcomes)
    lease = now + timedelta(seconds=settings.DELIVERY_LEASE_SECONDS)
    claimed = _claim(ready, now, lease)
    for message in ready:
        if message.pk not in claimed:
            outcomes[message.pk] = DeliveryOutcome("skipped", reason="claimed elsewhere")
    deadlines = {pk: (start_by, slot_ends.get(pk, math.inf)) for pk in claimed}
    jobs = [m for m in ready if m.pk in claimed]
    sends = _send_all(jobs, tokens, executor, deadlines, partial(_mark_started, lease=lease))
    outcomes.update(_record_sent(sends, metrics))
    outcomes.update(_requeue_released([s for s in sends if s.released], metrics))
    for sent in sends:
        if sent.error is not None:
            outcomes[sent.message.pk] = _record_error(
                sent.message,
                sent.number,
                sent.started,
                sent.elapsed,
                sent.error,
                metrics,
                limiter=limiter,
            )
    _publish_follow_ups({pk: o for pk, o in outcomes.items() if pk not in published})
    return outcomes


def _requeue_released(released: list[_Sent], metrics: Any) -> dict[int, DeliveryOutcome]:
    """Put claimed messages that were never sent back in the queue, due now (no call started,
    so `attempts` never counted them)."""
    outcomes = {
        s.message.pk: DeliveryOutcome("skipped", reason="claimed elsewhere")
        for s in released
        if s.released == "lost"
    }
    released = [s for s in released if s.released != "lost"]
    if not released:
        return outcomes
    logger.warning(
        "%d message(s) waited for a send thread past their lease (%d) or rate-limit slot (%d) "
        "and were re-queued unsent: the worker has more claimed work than its send threads "
        "(DELIVERY_SEND_THREADS) can start in time.",
        len(released),
        sum(s.released == "lease" for s in released),
        sum(s.released == "slot" for s in released),
    )
    for sent in released:
        if sent.released == "slot":
            metrics.rate_limit_deferred(sent.message.provider, "our_limit")
        outcomes[sent.message.pk] = _schedule(
            sent.message.pk, 0.0, timezone.now(), expect=MessageStatus.SENDING
        )
    return outcomes


def _decrypt_tokens(
    messages: list[Message], now: datetime, outcomes: dict[int, DeliveryOutcome]
) -> dict[int, str]:
    """The decrypted token of each integration of `messages` that decrypts, by integration id
    (once per integration per batch; it never leaves this process). The messages of the others
    are held for the key (`_hold_for_key`), their outcomes added to `outcomes`."""
    tokens: dict[int, str] = {}
    failed: set[int] = set()
    for message in messages:
        pk = message.integration_id
        if pk in tokens or pk in failed:
            continue
        try:
            tokens[pk] = integration_token(message.integration)
        except TokenDecryptionError:
            failed.add(pk)
    outcomes.update(_hold_for_key([m for m in messages if m.integration_id in failed], now))
    return tokens


def _hold_for_key(messages: list[Message], now: datetime) -> dict[int, DeliveryOutcome]:
    """Keep messages whose integration token does not decrypt queued, unclaimed and marked
    key_unavailable: the operator must restore the FERNET_KEY that encrypted it. The sweeper
    re-checks them every SWEEPER_GRACE_SECONDS (never a tight loop) and sends them once it can.
    """
    if not messages:
        return {}
    logger.error(
        "%d message(s) held: the stored token of integration(s) %s does not decrypt with any "
        "FERNET_KEY; restore the FERNET_KEY that encrypted it.",
        len(messages),
        sorted({m.integration_id for m in messages}),
    )
    Message.objects.filter(pk__in=[m.pk for m in messages], status=MessageStatus.QUEUED).update(
        next_attempt_at=now + timedelta(seconds=settings.SWEEPER_GRACE_SECONDS),
        enqueued_at=None,
        rate_slot_at=None,
        last_error=KEY_UNAVAILABLE_TEXT,
        error_kind="key_unavailable",
        error_code="token_undecryptable",
        updated_at=now,
    )
    return {m.pk: DeliveryOutcome("deferred", reason="key_unavailable") for m in messages}


def _unusable(message: Message) -> tuple[str, str] | None:
    """(error text, kind) when the message's integration cannot send at all."""
    integration = message.integration
    if not integration.is_active or not integration.token_encrypted:
        return f"{message.provider} is not connected", "permanent"
    if integration.credentials_rejected_at is not None:
        return (
            f"{integration.get_provider_display()} rejected the credentials; "
            "reconnect the integration",
            "credentials",
        )
    return None


def _take_slots(
    messages: list[Message],
    now: datetime,
    clock: float,
    limiter: Any,
    metrics: Any,
    outcomes: dict[int, DeliveryOutcome],
    send_threads: int,
) -> tuple[list[Message], dict[int, float]]:
    """The messages whose rate-limit slot is now, and for those whose send must not start late
    the monotonic time after which their slot is too old to use; the others are rescheduled to
    their slots.

    A booked slot is used only on time (at most SLOT_TOLERANCE late): a task or a send that
    runs late books a new one, so late sends cannot burst above the limit together. A send
    may start late only when its account's limit is at least as many sends a second as there
    are send threads: every thread starting a late send at once still fits a second's worth.
    Raises redis.RedisError.
    """
    tolerance = SLOT_TOLERANCE.total_seconds()
    limits = {m.pk: message_limits(m, m.integration) for m in messages}

    def strict(pk: int) -> bool:
        its = limits[pk]
        return any(lim.rate and lim.rate > 0 for lim in its) and (
            (its[0].rate or math.inf) < send_threads
        )

    slot_ends: dict[int, float] = {}
    need: list[Message] = []
    for m in messages:
        if m.rate_slot_at is None or now - m.rate_slot_at > SLOT_TOLERANCE:
            need.append(m)
        elif strict(m.pk):
            slot_ends[m.pk] = clock + (m.rate_slot_at - now).total_seconds() + tolerance
    answers = limiter.reserve_many(
        [limits[m.pk] for m in need], max_wait=settings.MAX_COUNTDOWN_SECONDS
    )
    broken = {m.pk: a for m, a in zip(need, answers, strict=True) if isinstance(a, Exception)}
    outcomes.update(_limiter_failed([m for m in need if m.pk in broken], broken, now, metrics))
    waits: dict[int, float] = {}
    for m, delay in zip(need, answers, strict=True):
        if isinstance(delay, Exception):
            continue
        if delay > SEND_NOW.total_seconds():
            waits[m.pk] = delay
        elif strict(m.pk):
            slot_ends[m.pk] = clock + delay + tolerance
    if waits:
        for provider, count in Counter(m.provider for m in messages if m.pk in waits).items():
            metrics.rate_limit_deferred(provider, "our_limit", count)
        early = {pk: _early_allowance(limits[pk]) for pk in waits}
        outcomes.update(_defer(waits, early, now))
    return [m for m in messages if m.pk not in waits and m.pk not in broken], slot_ends


def _limiter_failed(
    messages: list[Message], errors: dict[int, Exception], now: datetime, metrics: Any
) -> dict[int, DeliveryOutcome]:
    """Messages whose own rate-limit check failed (only theirs: the rest of the batch goes on)
    are retried with backoff like a transient error, then failed, each showing why."""
    outcomes: dict[int, DeliveryOutcome] = {}
    for message in messages:
        error = errors[message.pk]
        logger.warning(
            "Rate limit check failed for message %s (%s: %s).",
            message.pk,
            type(error).__name__,
            str(error)[:200],
        )
        text = f"The rate limiter could not check this integration's limit ({type(error).__name__})"
        if message.retries + 1 >= settings.DELIVERY_MAX_RETRIES:
            outcomes[message.pk] = _fail_unclaimed(message, now, text, "transient", "rate_limiter")
            continue
        metrics.retry_scheduled(message.provider, "rate_limiter")
        outcomes[message.pk] = _schedule(
            message.pk,
            backoff_seconds(message.retries + 1),
            now,
            expect=MessageStatus.QUEUED,
            retries=F("retries") + 1,
            last_error=text + "; retrying.",
            error_kind="transient",
            error_code="rate_limiter",
        )
    return outcomes


def _early_allowance(limits: list[Limit]) -> float:
    """How early (s) a deferred send may use its slot, so that it can share a task (a wave).

    A quarter of the limit's spacing, so a send early by this and another late by
    SLOT_TOLERANCE still fit limit + 1 in any second; WAVE once the spacing is shorter than
    WAVE (10/s and up), where the lateness tolerance already allows more. Never early under a
    per-destination limit (Telegram's chat), whose margin to the provider's limit is smaller.
    """
    if len(limits) != 1 or not limits[0].rate or limits[0].rate <= 0:
        return 0.0
    spacing = 1.0 / limits[0].rate
    wave = WAVE.total_seconds()
    return wave if spacing <= wave else spacing / 4


def _defer(
    waits: dict[int, float], early: dict[int, float], now: datetime
) -> dict[int, DeliveryOutcome]:
    """Reschedule still-queued messages to their booked slots (seconds from `now`) in one update.

    Slots close together form one wave, run by one task at the wave's first slot, so a busy
    batch costs a task per wave rather than per message: a message joins a wave that starts at
    most `early[pk]` seconds before its own slot. A slot beyond MAX_COUNTDOWN_SECONDS is not
    booked: the row waits in the DB for the sweeper.
    """
    slot = {pk: now + timedelta(seconds=delay) for pk, delay in waits.items()}
    run_at = dict(slot)
    booked: set[int] = set()
    wave = -math.inf
    for pk, delay in sorted(waits.items(), key=lambda item: item[1]):
        if delay > settings.MAX_COUNTDOWN_SECONDS:
            continue
        if delay - wave > early[pk]:
            wave = delay
        run_at[pk] = now + timedelta(seconds=wave)
        booked.add(pk)

    def per_row(values: dict[int, datetime | None]) -> Cast:
        whens = [When(pk=pk, then=Value(value)) for pk, value in values.items()]
        # Cast: a CASE of only NULLs (no slot booked) would otherwise be typed as text.
        return Cast(Case(*whens, output_field=DateTimeField()), DateTimeField())

    Message.objects.filter(pk__in=list(waits), status=MessageStatus.QUEUED).update(
        next_attempt_at=per_row(run_at),
        rate_slot_at=per_row({pk: slot[pk] if pk in booked else None for pk in waits}),
        enqueued_at=per_row({pk: now if pk in booked else None for pk in waits}),
        lease_expires_at=None,
        updated_at=now,
    )
    return {
        pk: DeliveryOutcome("deferred", delay=(run_at[pk] - now).total_seconds(), due_at=run_at[pk])
        if pk in booked
        else DeliveryOutcome("deferred")
        for pk in waits
    }


def _publish_follow_ups(outcomes: Mapping[int, DeliveryOutcome]) -> None:
    """Publish a task for each deferred message, due at its time (unpublished on failure)."""
    due = {
        pk: o.due_at
        for pk, o in outcomes.items()
        if o.status == "deferred" and o.due_at is not None
    }
    if due and not publish_later(DELIVER_MESSAGES, due):
        message_unpublish(list(due))


def _claim(messages: list[Message], now: datetime, lease: datetime) -> set[int]:
    """Claim the still-queued rows among `messages` (queued → sending, with a lease) in one
    conditional UPDATE ... RETURNING; returns the ids this call claimed. A claim is not an
    attempt: `attempts` counts a call only once it starts (`_mark_started`)."""
    return _update_returning(
        [m.pk for m in messages],
        {"status": MessageStatus.SENDING.value, "lease_expires_at": lease, "updated_at": now},
        clear=("rate_slot_at", "send_started_at"),
        where={"status": MessageStatus.QUEUED.value},
    )


def _mark_started(ids: list[int], *, lease: datetime) -> set[int]:
    """Record that the provider calls of `ids` start now (one UPDATE for the group), only for
    rows still under this batch's claim; returns the ids that may be sent."""
    now = timezone.now()
    return _update_returning(
        ids,
        {"send_started_at": now, "updated_at": now},
        increment="attempts",
        where={"status": MessageStatus.SENDING.value, "lease_expires_at": lease},
    )


def _update_returning(
    ids: list[int],
    values: dict[str, Any],
    *,
    where: dict[str, Any],
    clear: Sequence[str] = (),
    increment: str = "",
) -> set[int]:
    """UPDATE the rows `ids` matching `where` in one statement; returns the ids it changed."""
    if not ids:
        return set()
    connection = connections[Message.objects.db]
    qn = connection.ops.quote_name
    column = {f.name: qn(f.column) for f in Message._meta.concrete_fields}

    def adapt(value: Any) -> Any:
        return (
            connection.ops.adapt_datetimefield_value(value)
            if isinstance(value, datetime)
            else value
        )

    sets = [f"{column[name]} = %s" for name in values] + [f"{column[n]} = NULL" for n in clear]
    if increment:
        sets.append(f"{column[increment]} = {column[increment]} + 1")
    conditions = "".join(f" AND {column[name]} = %s" for name in where)
    marks = ", ".join(["%s"] * len(ids))
    # Only quoted names from the model's own metadata are formatted in; values are parameters.
    sql = (
        f"UPDATE {qn(Message._meta.db_table)} SET {', '.join(sets)} "  # noqa: S608
        f"WHERE {column['id']} IN ({marks}){conditions} RETURNING {column['id']}"
    )
    params = [*map(adapt, values.values()), *ids, *map(adapt, where.values())]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


class _StartGate:
    """Lets a provider call start only once its start is recorded (`mark`), so a crash counts
    as an interruption only for a call that may have reached the provider.

    A send thread asks when it picks its message up; the task thread, which owns the database
    connection, writes every request waiting at that moment in one UPDATE and then lets them
    go. Without an executor (`inline`) each send marks its own start.
    """

    def __init__(self, mark: Callable[[list[int]], set[int]], *, inline: bool) -> None:
        self._mark = mark
        self._inline = inline
        self._requests: queue.SimpleQueue[tuple[int, threading.Event] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._allowed: set[int] = set()
        self._closed = False

    def enter(self, pk: int) -> bool:
        """Send thread: wait until the start of `pk` is recorded; False if it must not start."""
        if self._inline:
            return pk in self._mark([pk])
        event = threading.Event()
        with self._lock:
            if self._closed:
                return False
            self._requests.put((pk, event))
        event.wait()
        with self._lock:
            return pk in self._allowed

    def leave(self) -> None:
        """Send thread: this job is over, sent or not."""
        if not self._inline:
            self._requests.put(None)

    def serve(self, jobs: int) -> None:
        """Task thread: record starts, a group at a time, until `jobs` jobs have left."""
        pending: list[tuple[int, threading.Event]] = []
        left = 0
        try:
            while left < jobs:
                items = [self._requests.get(), *self._drain()]
                left += items.count(None)
                pending = [item for item in items if item is not None]
                if pending:
                    self._release(pending, self._mark([pk for pk, _ in pending]))
                    pending = []
        finally:
            with self._lock:
                self._closed = True
            # The task thread is leaving (an error): no waiting send may start any more.
            self._release([*pending, *(i for i in self._drain() if i is not None)], set())

    def _drain(self) -> list[tuple[int, threading.Event] | None]:
        items = []
        while True:
            try:
                items.append(self._requests.get_nowait())
            except queue.Empty:
                return items

    def _release(self, waiting: list[tuple[int, threading.Event]], allowed: set[int]) -> None:
        with self._lock:
            self._allowed |= allowed
        for _, event in waiting:
            event.set()


def _send_all(
    messages: list[Message],
    tokens: dict[int, str],
    executor: Executor | None,
    deadlines: dict[int, tuple[float, float]],
    mark: Callable[[list[int]], set[int]],
) -> list[_Sent]:
    """Call the provider for every claimed message, concurrently on `executor` when given."""
    inline = executor is None or len(messages) < 2
    gate = _StartGate(mark, inline=inline)
    # A call starts only while a whole call still fits the lease, so the sweeper never hands a
    # message to another worker while this one may still send it, and only while its rate-limit
    # slot is fresh when it must not start late (`deadlines`, see _take_slots).
    jobs = [
        partial(_send_one, m, tokens[m.integration_id], *deadlines[m.pk], gate) for m in messages
    ]
    if inline or executor is None:
        return [job() for job in jobs]
    futures: list[Future[_Sent]] = []
    try:
        futures.extend(executor.submit(job) for job in jobs)
    finally:  # serve the jobs that were submitted, even if a submit failed
        gate.serve(len(futures))
    return [future.result() for future in futures]


def _send_one(
    message: Message, token: str, lease_by: float, slot_by: float, gate: _StartGate
) -> _Sent:
    """One provider call, if it starts by both monotonic deadlines and its start is recorded
    (`gate`); touches no database unless the gate is inline, so it may run on any thread."""
    try:
        return _send_started(message, token, lease_by, slot_by, gate)
    finally:
        gate.leave()


def _send_started(
    message: Message, token: str, lease_by: float, slot_by: float, gate: _StartGate
) -> _Sent:
    sent = _Sent(message=message, number=message.attempts + 1, started=timezone.now())
    now = time.monotonic()
    if now > lease_by:
        sent.released = "lease"
        return sent
    if now > slot_by:
        sent.released = "slot"
        return sent
    if not gate.enter(message.pk):
        sent.released = "lost"
        return sent
    sent.started = timezone.now()
    started = time.monotonic()
    try:
        adapter = integration_adapter(message.integration, token=token)
        sent.provider_id = adapter.send(
            OutboundMessage(
                to=message.to,
                body=message.body,
                subject=message.subject,
                html=message.html,
                reference=f"msg-{message.pk}",
            )
        )
    except ProviderError as exc:
        sent.error = exc
    except Exception as exc:  # a bug: fail this message visibly rather than loop or re-send
        logger.exception("Unexpected error delivering message %s", message.pk)
        sent.error = ProviderError(
            f"Internal error while sending ({type(exc).__name__}); retry the message once fixed",
            kind="permanent",
            provider=message.provider,
            code="internal",
        )
    sent.elapsed = time.monotonic() - started
    return sent


def _attempt_row(
    message: Message,
    number: int,
    started: datetime,
    elapsed: float,
    outcome: str,
    error: ProviderError | None = None,
) -> MessageAttempt:
    return MessageAttempt(
        message_id=message.pk,
        number=number,
        started_at=started,
        duration_ms=int(elapsed * 1000),
        outcome=outcome,
        provider_code=(error.code or "") if error else "",
        error=error.message[:500] if error else "",
    )


def _attempt(
    message: Message,
    number: int,
    started: datetime,
    elapsed: float,
    outcome: str,
    error: ProviderError | None = None,
) -> None:
    _attempt_row(message, number, started, elapsed, outcome, error).save(force_insert=True)


def _record_sent(sends: list[_Sent], metrics: Any) -> dict[int, DeliveryOutcome]:
    """Write every successful send and its attempt row in one transaction."""
    sent = [s for s in sends if s.error is None and not s.released]
    if not sent:
        return {}
    now = timezone.now()
    provider_id: Any = Case(
        *(When(pk=s.message.pk, then=Value(s.provider_id[:128])) for s in sent),
        output_field=CharField(),
    )
    with transaction.atomic():
        updated = Message.objects.filter(
            pk__in=[s.message.pk for s in sent], status=MessageStatus.SENDING
        ).update(
            status=MessageStatus.SENT,
            provider_message_id=provider_id,
            sent_at=now,
            lease_expires_at=None,
            last_error="",
            error_kind="",
            error_code="",
            updated_at=now,
        )
        MessageAttempt.objects.bulk_create(
            [_attempt_row(s.message, s.number, s.started, s.elapsed, "sent") for s in sent]
        )
    if updated < len(sent):
        logger.warning(
            "%d message(s) were sent but their lease had been taken over.", len(sent) - updated
        )
    metrics.sends_finished((s.message.provider, "sent", s.elapsed) for s in sent)
    return {s.message.pk: DeliveryOutcome("sent") for s in sent}


def _record_error(
    message: Message,
    number: int,
    started: datetime,
    elapsed: float,
    error: ProviderError,
    metrics: Any,
    *,
    limiter: Any = None,
) -> DeliveryOutcome:
    now = timezone.now()
    details = {
        "last_error": error.message[:500],
        "error_kind": error.kind,
        "error_code": (error.code or "")[:64],
    }
    sending = MessageStatus.SENDING
    if error.rate_limited:
        metrics.send_finished(message.provider, "rate_limited", elapsed)
        metrics.rate_limit_deferred(message.provider, "provider_429")
        wait = error.retry_after or 1.0
        if limiter is not None:
            # The whole account waits, not only this message: no other send hits it early.
            try:
                limiter.pause(message_limits(message, message.integration), wait)
            except redis.RedisError as exc:
                logger.warning(
                    "Could not pause %s sends (%s).", message.provider, type(exc).__name__
                )
        wait *= random.uniform(1.0, 1.1)
        with transaction.atomic():
            _attempt(message, number, started, elapsed, "rate_limited", error)
            return _schedule(message.pk, wait, now, expect=sending, **details)
    if error.kind == "transient" and message.retries + 1 < settings.DELIVERY_MAX_RETRIES:
        metrics.send_finished(message.provider, "retried", elapsed)
        metrics.retry_scheduled(message.provider, "transient")
        delay = backoff_seconds(message.retries + 1)
        with transaction.atomic():
            _attempt(message, number, started, elapsed, "retry", error)
            return _schedule(
                message.pk, delay, now, expect=sending, retries=F("retries") + 1, **details
            )
    outcome = "credentials_rejected" if error.credentials_rejected else "failed"
    metrics.send_finished(message.provider, outcome, elapsed)
    with transaction.atomic():
        _attempt(message, number, started, elapsed, outcome, error)
        failed = Message.objects.filter(pk=message.pk, status=sending).update(
            status=MessageStatus.FAILED,
            failed_at=now,
            lease_expires_at=None,
            updated_at=now,
            **details,
        )
    if not failed:
        return DeliveryOutcome("skipped", reason="lease taken over")
    if error.credentials_rejected:
        _mark_credentials_rejected(message.integration, error, now)
    _audit_failed(message, error)
    return DeliveryOutcome("failed", reason=error.kind)


def _fail_unclaimed(
    message: Message, now: datetime, text: str, kind: str, code: str = ""
) -> DeliveryOutcome:
    updated = Message.objects.filter(pk=message.pk, status=MessageStatus.QUEUED).update(
        status=MessageStatus.FAILED,
        failed_at=now,
        last_error=text[:500],
        error_kind=kind,
        error_code=code,
        updated_at=now,
    )
    if updated:
        error = ProviderError(text, kind=kind, provider=message.provider, code=code or None)
        _audit_failed(message, error)
    return DeliveryOutcome("failed", reason=kind)


def _mark_credentials_rejected(
    integration: Integration, error: ProviderError, now: datetime
) -> None:
    first = Integration.objects.filter(
        pk=integration.pk, credentials_rejected_at__isnull=True
    ).update(credentials_rejected_at=now, last_error=error.message[:500], last_error_at=now)
    if first:
        audit_event_record(
            organization=integration.organization,
            action="integration.credentials_rejected",
            provider=integration.provider,
            data={"message": error.message, "code": error.code or ""},
        )


def _audit_failed(message: Message, error: ProviderError) -> None:
    audit_event_record(
        organization=message.organization,
        action="message.failed",
        provider=message.provider,
        data={
            "message_id": message.pk,
            "error": error.message,
            "kind": error.kind,
            "code": error.code or "",
        },
    )


# --- sweeping --------------------------------------------------------------------------------


def message_sweep(*, limit: int = 5000) -> list[int]:
    """Re-enqueue what the broker lost: stale queued rows, unpublished rows and expired leases.

    A row in `sending` past its lease was interrupted (a worker killed): it goes back to
    `queued`. When its provider call had started, `attempts` counted it and the gap in its
    attempt numbers shows that it may have been sent twice; a claim whose call never started
    leaves no trace. A row with DELIVERY_MAX_INTERRUPTIONS started calls without an outcome (a
    poison message) fails instead. Ids are published in batches of one integration each, so one
    tenant's messages never share (and never hold up) a task with another's.
    """
    now = timezone.now()
    grace = now - timedelta(seconds=settings.SWEEPER_GRACE_SECONDS)
    due = Q(status=MessageStatus.QUEUED, next_attempt_at__lte=now) & (
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=grace, next_attempt_at__lte=grace)
    )
    expired = Q(status=MessageStatus.SENDING, lease_expires_at__lt=now)
    with transaction.atomic():
        rows = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(due | expired)
            .order_by("next_attempt_at")
            .values_list("pk", "status", "attempts", "integration_id")[:limit]
        )
        recorded: dict[int, int] = {}
        interrupted = [pk for pk, status, _, _ in rows if status == MessageStatus.SENDING]
        if interrupted:
            recorded = dict(
                MessageAttempt.objects.filter(message_id__in=interrupted)
                .values("message_id")
                .annotate(n=Count("id"))
                .values_list("message_id", "n")
            )
        poisoned = [
            pk
            for pk, status, attempts, _ in rows
            if status == MessageStatus.SENDING
            and attempts - recorded.get(pk, 0) >= settings.DELIVERY_MAX_INTERRUPTIONS
        ]
        ids = [pk for pk, _, _, _ in rows if pk not in set(poisoned)]
        if poisoned:
            text = f"Interrupted {settings.DELIVERY_MAX_INTERRUPTIONS} times mid-send; not retried"
            Message.objects.filter(pk__in=poisoned).update(
                status=MessageStatus.FAILED,
                failed_at=now,
                lease_expires_at=None,
                last_error=text,
                error_kind="permanent",
                error_code="interrupted",
                updated_at=now,
            )
        if ids:
            Message.objects.filter(pk__in=ids).update(
                status=MessageStatus.QUEUED,
                enqueued_at=now,
                lease_expires_at=None,
                rate_slot_at=None,
            )
    for message in Message.objects.filter(pk__in=poisoned).select_related("organization"):
        _audit_failed(
            message,
            ProviderError(message.last_error, kind="permanent", provider=message.provider),
        )
    _publish_per_integration({pk: integration for pk, _, _, integration in rows}, ids)
    return ids


def _publish_per_integration(integration_of: Mapping[int, int], ids: list[int]) -> None:
    """Publish `ids` in batches of one integration each (unpublished on failure)."""
    groups: dict[int, list[int]] = {}
    for pk in ids:
        groups.setdefault(integration_of[pk], []).append(pk)
    if ids and not publish_groups(DELIVER_MESSAGES, list(groups.values())):
        message_unpublish(ids)


def outbox_stats() -> dict[str, float]:
    """Queue depth and the age in seconds of the oldest queued message (for metrics)."""
    pending = Message.objects.filter(status__in=[MessageStatus.QUEUED, MessageStatus.SENDING])
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    return {
        "queued": pending.filter(status=MessageStatus.QUEUED).count(),
        "sending": pending.filter(status=MessageStatus.SENDING).count(),
        "oldest_age": (timezone.now() - oldest).total_seconds() if oldest else 0.0,
    }


def send_message(
    org: Organization | int,
    provider: str,
    to: str,
    body: str = "",
    *,
    subject: str = "",
    html: str = "",
    idempotency_key: str | None = None,
) -> Message:
    """Product-code entry point: exactly what POST /api/messages/ does; returns the message row."""
    organization = org if isinstance(org, Organization) else Organization.objects.get(pk=org)
    message, _ = message_create(
        organization=organization,
        provider=provider,
        to=to,
        body=body,
        subject=subject,
        html=html,
        idempotency_key=idempotency_key,
    )
    return message

"""Recording what a send did: attempt rows, sent, failed and re-queued rows, audit of failures."""

from __future__ import annotations

import logging
import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from shared.delivery.scheduling import backoff_seconds, message_limits
from shared.delivery.types import (
    AttemptOutcome,
    DeferralScope,
    DeliveryMetrics,
    DeliveryOutcome,
    OutcomeStatus,
    Release,
    RetryReason,
    SendRecord,
    SendResult,
    SlotLimiter,
)
from shared.events.announce import credentials_rejected, messages_changed
from shared.models import Integration, Message, MessageAttempt, MessageStatus
from shared.providers.base import ProviderError
from shared.services.audit import audit_event_record
from shared.suppressions import from_failure

logger = logging.getLogger(__name__)


def _attempt_row(sent: SendRecord, outcome: AttemptOutcome) -> MessageAttempt:
    error = sent.error
    return MessageAttempt(
        message_id=sent.message.pk,
        number=sent.number,
        started_at=sent.started,
        duration_ms=int(sent.elapsed * 1000),
        outcome=outcome,
        provider_code=(error.code or "") if error else "",
        error=error.message[:500] if error else "",
    )


def record_sent(sends: list[SendRecord], metrics: DeliveryMetrics) -> dict[int, DeliveryOutcome]:
    """Write every successful send and its attempt row in one transaction."""
    sent = [s for s in sends if s.error is None and not s.released]
    if not sent:
        return {}
    now = timezone.now()
    with transaction.atomic():
        mine = _mark_sent(sent, now)
        MessageAttempt.objects.bulk_create([_attempt_row(s, AttemptOutcome.SENT) for s in sent])
        messages_changed(_now_sent(sent, mine, now), MessageStatus.SENDING)
    if len(mine) < len(sent):
        logger.warning(
            "%d message(s) were sent but their lease had been taken over.", len(sent) - len(mine)
        )
    metrics.sends_finished((s.message.provider, SendResult.SENT, s.elapsed) for s in sent)
    return {s.message.pk: DeliveryOutcome(OutcomeStatus.SENT) for s in sent}


def _mark_sent(sent: list[SendRecord], now: datetime) -> set[int]:
    """sending → sent for the rows of `sent` still sending, each with its provider id, in one
    UPDATE ... RETURNING (PostgreSQL and SQLite); returns the ids it changed.

    The same single statement the ORM's `Case(When(pk=…))` made, written out: the ORM built,
    resolved and compiled a lookup per row, the costliest Python of a batch."""
    connection = connections[Message.objects.db]
    qn = connection.ops.quote_name
    column = {f.name: qn(f.column) for f in Message._meta.concrete_fields}
    at = connection.ops.adapt_datetimefield_value(now)
    cases = " ".join(["WHEN %s THEN %s"] * len(sent))
    marks = ", ".join(["%s"] * len(sent))
    # Only quoted names from the model's own metadata are formatted in; values are parameters.
    sql = (
        f"UPDATE {qn(Message._meta.db_table)} SET {column['status']} = %s, "  # noqa: S608
        f"{column['provider_message_id']} = CASE {column['id']} {cases} END, "
        f"{column['sent_at']} = %s, {column['lease_expires_at']} = NULL, "
        f"{column['last_error']} = '', {column['error_kind']} = '', {column['error_code']} = '', "
        f"{column['updated_at']} = %s "
        f"WHERE {column['id']} IN ({marks}) AND {column['status']} = %s "
        f"RETURNING {column['id']}"
    )
    params: list[Any] = [MessageStatus.SENT.value]
    for record in sent:
        params += [record.message.pk, record.provider_id[:255]]
    params += [at, at, *(record.message.pk for record in sent), MessageStatus.SENDING.value]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def _now_sent(sent: list[SendRecord], mine: set[int], now: datetime) -> list[Message]:
    """The messages this batch just marked sent (`mine`: a taken-over lease leaves some out)."""
    sent = [s for s in sent if s.message.pk in mine]
    for record in sent:
        record.message.status = MessageStatus.SENT
        record.message.provider_message_id = record.provider_id[:255]
        record.message.sent_at = now
    return [s.message for s in sent]


def release_unsent(
    released: list[SendRecord], metrics: DeliveryMetrics
) -> dict[int, DeliveryOutcome]:
    """Put claimed messages that were never sent back in the queue, due now; a start recorded
    for one that then went stale (`counted`) is taken back, so `attempts` counts calls only."""
    outcomes = {
        s.message.pk: DeliveryOutcome(OutcomeStatus.SKIPPED, reason="claimed elsewhere")
        for s in released
        if s.released is Release.LOST
    }
    released = [s for s in released if s.released is not Release.LOST]
    if not released:
        return outcomes
    broken = [s for s in released if s.released is Release.LIMITER]
    if broken:
        outcomes.update(_limiter_unanswered(broken, metrics))
        released = [s for s in released if s.released is not Release.LIMITER]
    requeued = [s for s in released if not s.deferred]  # the gate deferred these already
    late = Counter(s.message.provider for s in requeued if s.released is Release.SLOT)
    for provider, count in late.items():  # one metrics round trip per provider, not per message
        metrics.rate_limit_deferred(provider, DeferralScope.OUR_LIMIT, count)
    if requeued:
        logger.warning(
            "%d message(s) waited for a send thread past their lease (%d) or rate-limit slot "
            "(%d) and were re-queued unsent: the worker has more claimed work than its send "
            "threads (DELIVERY_SEND_THREADS) can start in time.",
            len(requeued),
            sum(s.released is Release.LEASE for s in requeued),
            sum(s.released is Release.SLOT for s in requeued),
        )
    for sent in requeued:
        undo = {"attempts": F("attempts") - 1, "send_started_at": None} if sent.counted else {}
        if sent.slot_at is not None:
            undo["rate_slot_at"] = sent.slot_at
        outcomes[sent.message.pk] = requeue(
            sent.message.pk, 0.0, timezone.now(), expect=MessageStatus.SENDING, **undo
        )
    return outcomes


def _limiter_unanswered(
    broken: list[SendRecord], metrics: DeliveryMetrics
) -> dict[int, DeliveryOutcome]:
    """Claimed messages whose limit the start gate could not check: a key Redis refused counts
    as a retry of that message (`limiter_failed`); Redis not answering at all does not (the
    message waits a backoff step and tries again)."""
    now = timezone.now()
    errors = {s.message.pk: s.limiter_error or RuntimeError("limiter") for s in broken}
    outcomes = limiter_failed(
        [s.message for s in broken if not s.outage],
        errors,
        now,
        metrics,
        expect=MessageStatus.SENDING,
    )
    down = [s for s in broken if s.outage]
    for sent in down:
        outcomes[sent.message.pk] = requeue(
            sent.message.pk,
            settings.DELIVERY_BACKOFF_BASE_SECONDS,
            now,
            expect=MessageStatus.SENDING,
        )
    if down:
        logger.warning(
            "The rate limiter (Redis) did not answer: %d message(s) wait %.0f s unsent.",
            len(down),
            settings.DELIVERY_BACKOFF_BASE_SECONDS,
        )
    return outcomes


def record_error(
    message: Message,
    number: int,
    started: datetime,
    elapsed: float,
    error: ProviderError,
    metrics: DeliveryMetrics,
    *,
    limiter: SlotLimiter | None = None,
) -> DeliveryOutcome:
    """Record a failed provider call: the provider said wait (429), a transient error with
    retries left (backoff), or a final failure. A late outcome never overwrites a newer one."""
    now = timezone.now()
    details = {
        "last_error": error.message[:500],
        "error_kind": error.kind,
        "error_code": (error.code or "")[:64],
    }
    sent = SendRecord(message=message, number=number, started=started, elapsed=elapsed, error=error)
    if error.rate_limited:
        metrics.send_finished(message.provider, SendResult.RATE_LIMITED, elapsed)
        metrics.rate_limit_deferred(message.provider, DeferralScope.PROVIDER_429)
        wait = _pause_account(message, error.retry_after or 1.0, limiter)
        with transaction.atomic():
            _attempt_row(sent, AttemptOutcome.RATE_LIMITED).save(force_insert=True)
            return requeue(message.pk, wait, now, expect=MessageStatus.SENDING, **details)
    if error.kind == "transient" and message.retries + 1 < settings.DELIVERY_MAX_RETRIES:
        metrics.send_finished(message.provider, SendResult.RETRIED, elapsed)
        metrics.retry_scheduled(message.provider, RetryReason.TRANSIENT)
        delay = backoff_seconds(message.retries + 1)
        with transaction.atomic():
            _attempt_row(sent, AttemptOutcome.RETRY).save(force_insert=True)
            return requeue(
                message.pk,
                delay,
                now,
                expect=MessageStatus.SENDING,
                retries=F("retries") + 1,
                **details,
            )
    return _record_failure(sent, error, metrics, now, details)


def _pause_account(message: Message, wait: float, limiter: SlotLimiter | None) -> float:
    """Pause the account for `wait` s; returns the message's own wait, jittered."""
    if limiter is not None:
        # The whole account waits, not only this message: no other send hits it early.
        try:
            limiter.pause(message_limits(message, message.integration), wait)
        except redis.RedisError as exc:
            logger.warning("Could not pause %s sends (%s).", message.provider, type(exc).__name__)
    return wait * random.uniform(1.0, 1.1)


def _record_failure(
    sent: SendRecord,
    error: ProviderError,
    metrics: DeliveryMetrics,
    now: datetime,
    details: dict[str, str],
) -> DeliveryOutcome:
    message = sent.message
    rejected = error.credentials_rejected
    result = SendResult.CREDENTIALS_REJECTED if rejected else SendResult.FAILED
    metrics.send_finished(message.provider, result, sent.elapsed)
    outcome = AttemptOutcome.CREDENTIALS_REJECTED if rejected else AttemptOutcome.FAILED
    with transaction.atomic():
        _attempt_row(sent, outcome).save(force_insert=True)
        failed = Message.objects.filter(pk=message.pk, status=MessageStatus.SENDING).update(
            status=MessageStatus.FAILED,
            failed_at=now,
            lease_expires_at=None,
            updated_at=now,
            **details,
        )
        if failed:
            _announce_failed(message, MessageStatus.SENDING, now, details)
            from_failure(message, error)  # blocked by the user, opted out (never raises)
    if not failed:
        return DeliveryOutcome(OutcomeStatus.SKIPPED, reason="lease taken over")
    if rejected:
        _mark_credentials_rejected(message.integration, error, now)
    audit_failed(message, error)
    return DeliveryOutcome(OutcomeStatus.FAILED, reason=error.kind)


def fail_unclaimed(
    message: Message,
    now: datetime,
    text: str,
    kind: str,
    code: str = "",
    *,
    expect: str = MessageStatus.QUEUED,
) -> DeliveryOutcome:
    """Fail a message still in status `expect` (queued, or claimed and never started) that
    cannot be sent at all, audited once."""
    details = {"last_error": text[:500], "error_kind": kind, "error_code": code}
    with transaction.atomic():
        updated = Message.objects.filter(pk=message.pk, status=expect).update(
            status=MessageStatus.FAILED,
            failed_at=now,
            updated_at=now,
            lease_expires_at=None,
            **details,
        )
        if updated:
            _announce_failed(message, expect, now, details)
    if updated:
        error = ProviderError(text, kind=kind, provider=message.provider, code=code or None)
        audit_failed(message, error)
    return DeliveryOutcome(OutcomeStatus.FAILED, reason=kind)


def limiter_failed(
    messages: list[Message],
    errors: dict[int, Exception],
    now: datetime,
    metrics: DeliveryMetrics,
    *,
    expect: str = MessageStatus.QUEUED,
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
            outcomes[message.pk] = fail_unclaimed(
                message, now, text, "transient", "rate_limiter", expect=expect
            )
            continue
        metrics.retry_scheduled(message.provider, RetryReason.RATE_LIMITER)
        outcomes[message.pk] = requeue(
            message.pk,
            backoff_seconds(message.retries + 1),
            now,
            expect=expect,
            retries=F("retries") + 1,
            last_error=text + "; retrying.",
            error_kind="transient",
            error_code="rate_limiter",
        )
    return outcomes


def _mark_credentials_rejected(
    integration: Integration, error: ProviderError, now: datetime
) -> None:
    first = Integration.objects.filter(
        pk=integration.pk, credentials_rejected_at__isnull=True
    ).update(credentials_rejected_at=now, last_error=error.message[:500], last_error_at=now)
    if first:
        credentials_rejected(integration, reason=error.message, code=error.code or "")
        audit_event_record(
            organization=integration.organization,
            action="integration.credentials_rejected",
            provider=integration.provider,
            data={"message": error.message, "code": error.code or ""},
        )


def _announce_failed(message: Message, old: str, now: datetime, details: dict[str, str]) -> None:
    message.status, message.failed_at = MessageStatus.FAILED, now
    for name, value in details.items():
        setattr(message, name, value)
    messages_changed([message], old)


def audit_failed(message: Message, error: ProviderError) -> None:
    """Audit a message's final failure (`message.failed`)."""
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


def requeue(
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
        return DeliveryOutcome(OutcomeStatus.SKIPPED, reason=f"no longer {expect}")
    if not in_broker:
        return DeliveryOutcome(OutcomeStatus.DEFERRED)
    return DeliveryOutcome(
        OutcomeStatus.DEFERRED, delay=delay, due_at=now + timedelta(seconds=delay)
    )

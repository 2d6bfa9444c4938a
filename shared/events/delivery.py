"""Delivering one EventDelivery: claim it, sign, POST, record the answer, schedule the retry.

The row is the truth: a conditional UPDATE claims it (`pending → sending` with a lease), so
two copies of one task cannot both send; a worker killed mid-send leaves a lease that the
sweeper (`shared.events.sweeper`) expires and re-publishes. Delivery is therefore at least
once: receivers dedupe on `webhook-id`.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import requests
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from shared.crypto import TokenDecryptionError
from shared.events.endpoints import endpoint_disable, endpoint_failing
from shared.events.http import post
from shared.events.models import DeliveryStatus, EventDelivery
from shared.events.signing import live_secrets, signature_header
from shared.events.ssrf import UrlNotAllowed, check_url

logger = logging.getLogger(__name__)

GONE = 410
THROTTLED = (429, 503)


class DeliveryMetrics(Protocol):
    def event_delivery_finished(self, outcome: str) -> None: ...


@dataclass(frozen=True)
class Answer:
    """What one attempt came to: a 2xx, or the failure to log (and any Retry-After)."""

    ok: bool
    status_code: int | None = None
    error: str = ""
    response: str = ""
    retry_after: float | None = None


def event_payload(delivery: EventDelivery) -> str:
    """The JSON body: the same bytes on every attempt of this event."""
    event = delivery.event
    body = {
        "id": event.public_id,
        "type": event.type,
        "timestamp": event.created_at.isoformat(),
        "data": event.data,
    }
    return json.dumps(body, separators=(",", ":"), cls=DjangoJSONEncoder)


def event_deliver(*, delivery_pk: int, metrics: DeliveryMetrics | None = None) -> str:
    """Attempt one delivery if it is due and unclaimed; the outcome (`delivered`, `retry`,
    `failed`, `disabled`, or `skipped` when there was nothing to do)."""
    now = timezone.now()
    if not _claim(delivery_pk, now):
        return "skipped"
    delivery = EventDelivery.objects.select_related("event", "endpoint__organization").get(
        pk=delivery_pk
    )
    if delivery.endpoint.disabled_at is not None:
        outcome = _finish(delivery, now, Answer(ok=False, error="The endpoint is disabled."))
    else:
        outcome = _finish(delivery, timezone.now(), attempt(delivery, now))
    if metrics is not None:
        metrics.event_delivery_finished(outcome)
    return outcome


def _claim(pk: int, now: datetime) -> bool:
    lease = now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)
    return bool(
        EventDelivery.objects.filter(
            pk=pk,
            status=DeliveryStatus.PENDING,
            next_attempt_at__lte=now + timedelta(seconds=1),
        ).update(
            status=DeliveryStatus.SENDING,
            lease_expires_at=lease,
            attempts=F("attempts") + 1,
            last_attempt_at=now,
        )
    )


def attempt(delivery: EventDelivery, now: datetime) -> Answer:
    """Sign and POST the event to its endpoint once, re-checking the address first."""
    endpoint = delivery.endpoint
    try:
        target = check_url(endpoint.url)
        secrets = live_secrets(endpoint, now)
    except UrlNotAllowed as refused:
        return Answer(ok=False, error=f"Not sent: {refused}")
    except TokenDecryptionError:
        return Answer(ok=False, error="Not sent: the signing secret does not decrypt.")
    body = event_payload(delivery)
    msg_id = delivery.event.public_id
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature_header(secrets, msg_id, now, body),
        "content-type": "application/json",
        "user-agent": "Corbi-Webhooks/1",
    }
    try:
        answer = post(
            target,
            body.encode(),
            headers,
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            verify=settings.WEBHOOK_CA_BUNDLE or True,
        )
    except requests.RequestException as exc:
        return Answer(ok=False, error=f"Not delivered: {type(exc).__name__}.")
    return _judge(answer.status_code, answer.headers, answer.body)


def _judge(code: int, headers: dict[str, str], body: str) -> Answer:
    if 200 <= code < 300:
        return Answer(ok=True, status_code=code, response=body)
    if 300 <= code < 400:
        error = f"HTTP {code}: redirects are not followed."
    else:
        error = f"HTTP {code}."
    retry_after = _retry_after(headers.get("retry-after")) if code in THROTTLED else None
    return Answer(ok=False, status_code=code, error=error, response=body, retry_after=retry_after)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta form; an HTTP date is ignored), capped at a day."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    if seconds is None or seconds != seconds or seconds < 0:
        return None
    return min(seconds, 86_400.0)


def _finish(delivery: EventDelivery, now: datetime, answer: Answer) -> str:
    """Record the attempt on the row (only while this claim holds it) and its endpoint."""
    fields = {
        "last_status_code": answer.status_code,
        "last_error": answer.error[:500],
        "last_response": answer.response,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if answer.ok:
        fields.update(status=DeliveryStatus.DELIVERED, delivered_at=now)
        outcome = "delivered"
    elif answer.status_code == GONE or delivery.endpoint.disabled_at is not None:
        fields.update(status=DeliveryStatus.FAILED)
        outcome = "disabled"
    else:
        outcome, more = _retry_or_fail(delivery, now, answer)
        fields.update(more)
    with transaction.atomic():
        held = EventDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING)
        if not held.update(**fields):
            return "skipped"  # the lease expired and the sweeper handed it on
        _endpoint_outcome(delivery, now, answer)
    if fields.get("status") == DeliveryStatus.PENDING and fields.get("enqueued_at"):
        _publish_retry(delivery.pk, fields["next_attempt_at"] - now)
    return outcome


def _retry_or_fail(
    delivery: EventDelivery, now: datetime, answer: Answer
) -> tuple[str, dict[str, object]]:
    schedule = settings.WEBHOOK_RETRY_SCHEDULE_SECONDS
    if delivery.attempts > len(schedule):
        return "failed", {"status": DeliveryStatus.FAILED}
    if answer.retry_after is not None:
        delay = answer.retry_after
    else:
        delay = schedule[delivery.attempts - 1] * random.uniform(0.9, 1.1)
    due = now + timedelta(seconds=delay)
    in_broker = delay <= settings.MAX_COUNTDOWN_SECONDS
    return "retry", {
        "status": DeliveryStatus.PENDING,
        "next_attempt_at": due,
        "enqueued_at": now if in_broker else None,
    }


def _endpoint_outcome(delivery: EventDelivery, now: datetime, answer: Answer) -> None:
    endpoint = delivery.endpoint
    if answer.ok:
        if endpoint.failing_since is not None:
            type(endpoint).objects.filter(pk=endpoint.pk).update(failing_since=None)
    elif answer.status_code == GONE:
        endpoint_disable(endpoint, "The endpoint answered 410 Gone.", now=now)
    elif endpoint.disabled_at is None:
        endpoint_failing(endpoint, now=now)


def _publish_retry(pk: int, delay: timedelta) -> None:
    from shared.events import DELIVER_EVENT, deliveries_unpublish
    from shared.services.outbox import publish

    def _go() -> None:
        if not publish(DELIVER_EVENT, [pk], countdown=max(0.0, delay.total_seconds())):
            deliveries_unpublish([pk])

    transaction.on_commit(_go)

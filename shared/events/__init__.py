"""Events out: what product code and the delivery/receipt code call to tell the org's endpoints.

    from shared.events import emit, emit_many
    from shared.events.types import MESSAGE_DELIVERED, message_event_data

    with transaction.atomic():
        ...  # change the message
        emit(message.organization_id, MESSAGE_DELIVERED, message_event_data(message))

`emit(organization_id, event_type, data)` and `emit_many(organization_id, [(type, data), ...])`
are called inside the caller's transaction. Each costs one indexed SELECT of the
organization's enabled endpoints (`webhook_endpoint_enabled`); when none subscribes to the
types, nothing is written and nothing is published. Otherwise it inserts the Event rows and one
EventDelivery per subscribed endpoint (two INSERTs in all), and publishes one
`workers.tasks.deliver_event` task per delivery when the transaction commits; if that publish
fails the rows are marked unpublished and `shared.events.sweeper.event_sweep` publishes them.
Nothing is sent inside the caller's request or transaction.

`data` is the resource (ids, statuses, provider, error code and reason): JSON-serialisable
(datetimes and decimals allowed) and never a token or secret. An unknown event type raises
ValueError (a programming error). See docs/events.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from shared.events.models import Event, EventDelivery, WebhookEndpoint
from shared.events.types import EVENT_TYPES

__all__ = ["DELIVER_EVENT", "emit", "emit_many", "publish_deliveries_on_commit"]

DELIVER_EVENT = "workers.tasks.deliver_event"


def emit(organization_id: int, event_type: str, data: dict[str, Any]) -> None:
    """Queue one event for every enabled endpoint of the organization subscribed to its type."""
    emit_many(organization_id, [(event_type, data)])


def emit_many(organization_id: int, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Queue several events of one organization with one SELECT (and two INSERTs if any
    endpoint subscribes); see the module docstring."""
    unknown = sorted({kind for kind, _ in events} - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"unknown event type(s): {', '.join(unknown)}")
    if not events:
        return
    endpoints = list(
        WebhookEndpoint.objects.filter(
            organization_id=organization_id, disabled_at__isnull=True
        ).values_list("pk", "events")
    )
    if not endpoints:
        return
    wanted = [
        (kind, data, [pk for pk, types in endpoints if not types or kind in types])
        for kind, data in events
    ]
    wanted = [item for item in wanted if item[2]]
    if not wanted:
        return
    now = timezone.now()
    rows = Event.objects.bulk_create(
        [
            Event(organization_id=organization_id, type=kind, data=data, created_at=now)
            for kind, data, _ in wanted
        ]
    )
    deliveries = EventDelivery.objects.bulk_create(
        [
            EventDelivery(event=row, endpoint_id=pk, next_attempt_at=now, enqueued_at=now)
            for row, (_, _, targets) in zip(rows, wanted, strict=True)
            for pk in targets
        ]
    )
    publish_deliveries_on_commit([d.pk for d in deliveries])


def publish_deliveries_on_commit(ids: Sequence[int]) -> None:
    """Publish one deliver_event task per delivery id after the transaction commits; when the
    broker fails, mark them unpublished for the sweeper (as outbox.publish_on_commit does)."""
    ids = list(ids)

    def _go() -> None:
        from shared.services.outbox import publish

        if not publish(DELIVER_EVENT, ids, fan_out=False):
            deliveries_unpublish(ids)

    transaction.on_commit(_go)


def deliveries_unpublish(ids: Sequence[int]) -> None:
    """The publish failed: the sweeper publishes these deliveries on its next run."""
    EventDelivery.objects.filter(pk__in=ids, status="pending").update(enqueued_at=None)

"""Claims and leases on message rows; rows put back unclaimed: to their slots or held for the key."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import Case, DateTimeField, Value, When
from django.db.models.functions import Cast
from django.utils import timezone

from shared.crypto import TokenDecryptionError
from shared.delivery.scheduling import Clock, is_due
from shared.delivery.types import DeliveryOutcome, OutcomeStatus
from shared.models import Message, MessageStatus
from shared.services.keys import integration_token

logger = logging.getLogger(__name__)

KEY_UNAVAILABLE_TEXT = (
    "Waiting for the encryption key: the stored token does not decrypt with any configured "
    "FERNET_KEY. An operator must restore the FERNET_KEY that encrypted it; delivery resumes "
    "then."
)
KEY_HELD = DeliveryOutcome(OutcomeStatus.DEFERRED, reason="key_unavailable")


def key_hold_fields(now: datetime) -> dict[str, Any]:
    """The fields of a row held for its FERNET_KEY (messages and bookings alike): unpublished,
    due again in SWEEPER_GRACE_SECONDS (the sweeper re-checks it, never a tight loop), and
    showing why."""
    return {
        "next_attempt_at": now + timedelta(seconds=settings.SWEEPER_GRACE_SECONDS),
        "enqueued_at": None,
        "last_error": KEY_UNAVAILABLE_TEXT,
    }


@dataclass(frozen=True)
class Lease:
    """A batch's claim: the `lease_expires_at` it writes, and the monotonic time until which a
    provider call may start (the lease minus one whole call, PROVIDER_TIMEOUT_SECONDS)."""

    expires_at: datetime
    start_by: float

    @classmethod
    def starting(cls, clock: Clock) -> Lease:
        """The lease of a claim made at `clock`."""
        return cls(
            expires_at=clock.now + timedelta(seconds=settings.DELIVERY_LEASE_SECONDS),
            start_by=clock.mono
            + settings.DELIVERY_LEASE_SECONDS
            - settings.PROVIDER_TIMEOUT_SECONDS,
        )


def unusable(message: Message) -> tuple[str, str] | None:
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


def decrypt_tokens(messages: list[Message]) -> tuple[dict[int, str], list[Message]]:
    """The decrypted token of each integration of `messages` that decrypts, by integration id
    (once per integration per batch; it never leaves this process), and the messages of the
    integrations whose token does not."""
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
    return tokens, [m for m in messages if m.integration_id in failed]


def hold_for_key(messages: list[Message], now: datetime) -> dict[int, DeliveryOutcome]:
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
    hold = key_hold_fields(now)
    Message.objects.filter(pk__in=[m.pk for m in messages], status=MessageStatus.QUEUED).update(
        next_attempt_at=hold["next_attempt_at"],
        enqueued_at=hold["enqueued_at"],
        rate_slot_at=None,
        last_error=hold["last_error"],
        error_kind="key_unavailable",
        error_code="token_undecryptable",
        updated_at=now,
    )
    return {m.pk: KEY_HELD for m in messages}


def promote_due(rows: dict[int, Message], now: datetime) -> None:
    """Turn the `scheduled` rows among `rows` that are due into `queued` (one conditional
    UPDATE, only when there are any), in place: a task published with the send time as its
    ETA finds them scheduled. A row cancelled meanwhile stays cancelled."""
    due = [
        pk
        for pk, m in rows.items()
        if m.status == MessageStatus.SCHEDULED and is_due(m.next_attempt_at, now)
    ]
    promoted = _update_returning(
        due,
        {"status": MessageStatus.QUEUED.value, "enqueued_at": now, "updated_at": now},
        where={"status": MessageStatus.SCHEDULED.value},
    )
    for pk in promoted:
        rows[pk].status = MessageStatus.QUEUED


def claim(messages: list[Message], now: datetime, lease: datetime) -> set[int]:
    """Claim the still-queued rows among `messages` (queued → sending, with a lease) in one
    conditional UPDATE ... RETURNING; returns the ids this call claimed. A claim is not an
    attempt: `attempts` counts a call only once it starts (`mark_started`)."""
    return _update_returning(
        [m.pk for m in messages],
        {"status": MessageStatus.SENDING.value, "lease_expires_at": lease, "updated_at": now},
        clear=("rate_slot_at", "send_started_at"),
        where={"status": MessageStatus.QUEUED.value},
    )


def mark_started(ids: list[int], *, lease: datetime) -> set[int]:
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


def defer_to_slots(
    waits: dict[int, float],
    run_in: dict[int, float | None],
    now: datetime,
    *,
    expect: str = MessageStatus.QUEUED,
) -> dict[int, DeliveryOutcome]:
    """Reschedule messages still in status `expect` (queued, or claimed and never started) to
    their booked slots (`waits`: seconds from `now`) in one update, each run by the task of its
    wave (`run_in`, see `plan_waves`); a row whose slot was not booked (`run_in` None) waits in
    the DB for the sweeper."""
    slot = {pk: now + timedelta(seconds=delay) for pk, delay in waits.items()}
    run_at = {
        pk: slot[pk] if run_in[pk] is None else now + timedelta(seconds=run_in[pk]) for pk in waits
    }
    booked = {pk for pk in waits if run_in[pk] is not None}

    def per_row(values: dict[int, datetime | None]) -> Cast:
        whens = [When(pk=pk, then=Value(value)) for pk, value in values.items()]
        # Cast: a CASE of only NULLs (no slot booked) would otherwise be typed as text.
        return Cast(Case(*whens, output_field=DateTimeField()), DateTimeField())

    # A row that moved on meanwhile is left alone; the task published for it finds it not queued.
    Message.objects.filter(pk__in=list(waits), status=expect).update(
        status=MessageStatus.QUEUED,
        next_attempt_at=per_row(run_at),
        rate_slot_at=per_row({pk: slot[pk] if pk in booked else None for pk in waits}),
        enqueued_at=per_row({pk: now if pk in booked else None for pk in waits}),
        lease_expires_at=None,
        updated_at=now,
    )
    return {
        pk: DeliveryOutcome(
            OutcomeStatus.DEFERRED, delay=(run_at[pk] - now).total_seconds(), due_at=run_at[pk]
        )
        if pk in booked
        else DeliveryOutcome(OutcomeStatus.DEFERRED)
        for pk in waits
    }

"""One delivery batch: load, schedule, claim, send, record, and publish what must run later."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import datetime
from functools import partial
from typing import NamedTuple

from django.conf import settings
from redis.exceptions import RedisError

from shared.delivery.claims import (
    Lease,
    claim,
    decrypt_tokens,
    defer_to_slots,
    hold_for_key,
    mark_started,
    promote_due,
    unusable,
)
from shared.delivery.follow_ups import publish_follow_ups
from shared.delivery.recording import (
    fail_unclaimed,
    record_error,
    record_sent,
    release_unsent,
)
from shared.delivery.scheduling import (
    SLOT_TOLERANCE,
    Clock,
    SlotVerdict,
    is_due,
    message_limits,
    plan_waves,
    slot_decision,
)
from shared.delivery.sending import (
    BOOK_AT_START,
    Defer,
    LimiterUnavailable,
    Rebook,
    send_all,
)
from shared.delivery.types import (
    DeferralScope,
    DeliveryMetrics,
    DeliveryOutcome,
    OutcomeStatus,
    SendRecord,
    SlotLimiter,
)
from shared.models import Message, MessageStatus
from shared.ratelimit import Limit
from shared.services.outbox import DELIVER_MESSAGES, message_unpublish
from shared.suppressions import SUPPRESSED, SUPPRESSED_TEXT, suppressed


def message_deliver(
    *, message_id: int, limiter: SlotLimiter, metrics: DeliveryMetrics
) -> DeliveryOutcome:
    """Deliver one queued message; see `message_deliver_batch`."""
    return message_deliver_batch(message_ids=[message_id], limiter=limiter, metrics=metrics)[
        message_id
    ]


def message_deliver_batch(
    *,
    message_ids: Sequence[int],
    limiter: SlotLimiter,
    metrics: DeliveryMetrics,
    executor: Executor | None = None,
) -> dict[int, DeliveryOutcome]:
    """Deliver queued messages by id: decrypt, rate-limit, claim, call the provider, record.

    Rows are claimed with one conditional update (queued → sending), so two deliveries of the
    same id cannot both call the provider; a call counts as an attempt once it starts (one
    UPDATE per group of calls starting together, after a fresh rate-limit slot for any that
    start past theirs). Besides those, the batch costs a fixed number of round trips; the calls
    run on `executor` when given, else one after another. A message told to wait (rate
    limit, 429, backoff) is published again, due at its time; one waiting longer than
    MAX_COUNTDOWN_SECONDS, or for its FERNET_KEY, is left to the sweeper; one whose limit the
    limiter could not check waits a backoff step. Returns each outcome. Raises
    redis.RedisError when the metrics store is unreachable.
    """
    ids = list(dict.fromkeys(int(pk) for pk in message_ids))
    rows = Message.objects.select_related("integration").in_bulk(ids)
    clock = Clock.read()
    promote_due(rows, clock.now)
    ready, outcomes = _due(ids, rows, clock.now)
    ready = _unsuppressed(ready, outcomes, clock.now)
    tokens, undecryptable = decrypt_tokens(ready)
    outcomes.update(hold_for_key(undecryptable, clock.now))
    ready = [m for m in ready if m.integration_id in tokens]
    slots = _take_slots(ready, clock, metrics)
    outcomes.update(slots.outcomes)
    # Published before the sends: a slot 20 ms away must not wait for this batch's sends.
    publish_follow_ups(DELIVER_MESSAGES, outcomes, on_failure=message_unpublish)
    published = set(outcomes)
    rebook = partial(_rebook, limiter, slots.limits)
    deferred: dict[int, DeliveryOutcome] = {}
    defer = partial(_defer_at_gate, {m.pk: m.provider for m in slots.ready}, metrics, deferred)
    sends, skipped = _claim_and_send(
        slots.ready, tokens, clock, slots.send_by, executor, rebook, defer
    )
    outcomes.update(deferred)
    published.update(deferred)
    outcomes.update(skipped)
    outcomes.update(record_sent(sends, metrics))
    outcomes.update(release_unsent([s for s in sends if s.released], metrics))
    for sent in sends:
        if sent.error is not None:
            outcomes[sent.message.pk] = record_error(
                sent.message,
                sent.number,
                sent.started,
                sent.elapsed,
                sent.error,
                metrics,
                limiter=limiter,
            )
    later = {pk: o for pk, o in outcomes.items() if pk not in published}
    publish_follow_ups(DELIVER_MESSAGES, later, on_failure=message_unpublish)
    return outcomes


def _due(
    ids: list[int], rows: dict[int, Message], now: datetime
) -> tuple[list[Message], dict[int, DeliveryOutcome]]:
    """The queued, due messages among `ids` whose integration can send, and the others'
    outcomes (those that cannot send at all are failed)."""
    ready: list[Message] = []
    outcomes: dict[int, DeliveryOutcome] = {}
    for pk in ids:
        message = rows.get(pk)
        if message is None or message.status != MessageStatus.QUEUED:
            outcomes[pk] = DeliveryOutcome(OutcomeStatus.SKIPPED, reason="not queued")
        elif not is_due(message.next_attempt_at, now):
            outcomes[pk] = DeliveryOutcome(OutcomeStatus.SKIPPED, reason="not due")
        elif (cannot := unusable(message)) is not None:
            outcomes[pk] = fail_unclaimed(message, now, *cannot)
        else:
            ready.append(message)
    return ready, outcomes


def _unsuppressed(
    ready: list[Message], outcomes: dict[int, DeliveryOutcome], now: datetime
) -> list[Message]:
    """`ready` without the messages to suppressed recipients (one query for the batch), which
    fail with error_code `suppressed` before any provider call; their outcomes go to `outcomes`."""
    blocked = suppressed(ready)
    for message in ready:
        if message.pk in blocked:
            outcomes[message.pk] = fail_unclaimed(
                message, now, SUPPRESSED_TEXT, "permanent", SUPPRESSED
            )
    return [m for m in ready if m.pk not in blocked]


class _Slots(NamedTuple):
    """The messages whose slot is now, the monotonic time by which each must start (inf: no
    bound), each message's limits, and the outcomes of the others."""

    ready: list[Message]
    send_by: dict[int, float]
    limits: dict[int, list[Limit]]
    outcomes: dict[int, DeliveryOutcome]


def _take_slots(messages: list[Message], clock: Clock, metrics: DeliveryMetrics) -> _Slots:
    """Split `messages` by the slots booked on their rows (see `slot_decision`): a fresh one is
    used; one still ahead (the task ran early) is waited for; every other message books its
    slot at the start gate, when a send thread is about to call the provider (`_rebook`)."""
    limits = {m.pk: message_limits(m, m.integration) for m in messages}
    send_by: dict[int, float] = {}
    waits: dict[int, float] = {}
    for m in messages:
        booked = slot_decision(limits[m.pk], clock, booked_at=m.rate_slot_at)
        if booked.verdict is SlotVerdict.WAIT:  # a task run early keeps its booked slot
            waits[m.pk] = booked.wait
        elif booked.verdict is SlotVerdict.SEND:
            send_by[m.pk] = booked.send_by
        elif m.rate_slot_at is None:
            send_by[m.pk] = BOOK_AT_START
        else:  # a stale slot (the task ran late): already past, so the gate books again
            stale = (clock.now - m.rate_slot_at).total_seconds()
            send_by[m.pk] = clock.mono - stale + SLOT_TOLERANCE.total_seconds()
    outcomes: dict[int, DeliveryOutcome] = {}
    if waits:
        for provider, count in Counter(m.provider for m in messages if m.pk in waits).items():
            metrics.rate_limit_deferred(provider, DeferralScope.OUR_LIMIT, count)
        run_in = plan_waves(waits, settings.MAX_COUNTDOWN_SECONDS)
        outcomes.update(defer_to_slots(waits, run_in, clock.now))
    ready = [m for m in messages if m.pk not in waits]
    return _Slots(ready, send_by, limits, outcomes)


def _rebook(
    limiter: SlotLimiter, limits: dict[int, list[Limit]], late: dict[int, float | None]
) -> dict[int, float | Exception]:
    """Slots for the sends starting now without a fresh one (the start gate; `late`: seconds
    since each one's stale slot, given back where nothing was booked after it, or None): the
    seconds until each, or the error that kept it from being booked."""
    pks = list(late)
    try:
        answers = limiter.reserve_many(
            [limits[pk] for pk in pks],
            max_wait=settings.MAX_COUNTDOWN_SECONDS,
            booked_ago=[late[pk] for pk in pks],
        )
    except RedisError as exc:
        return dict.fromkeys(pks, LimiterUnavailable(type(exc).__name__))
    return dict(zip(pks, answers, strict=True))


def _defer_at_gate(
    providers: dict[int, str],
    metrics: DeliveryMetrics,
    outcomes: dict[int, DeliveryOutcome],
    waits: dict[int, float],
    booked: datetime,
) -> None:
    """Task thread, at the start gate: defer claimed messages whose slot, just booked, is later
    (`waits`: seconds from `booked`, when the limiter answered, so no wave runs before a slot
    the limiter booked) to it in waves, and publish their tasks at once."""
    run_in = plan_waves(waits, settings.MAX_COUNTDOWN_SECONDS)
    later = defer_to_slots(waits, run_in, booked, expect=MessageStatus.SENDING)
    for provider, count in Counter(providers[pk] for pk in waits).items():
        metrics.rate_limit_deferred(provider, DeferralScope.OUR_LIMIT, count)
    publish_follow_ups(DELIVER_MESSAGES, later, on_failure=message_unpublish)
    outcomes.update(later)


def _claim_and_send(
    ready: list[Message],
    tokens: dict[int, str],
    clock: Clock,
    send_by: dict[int, float],
    executor: Executor | None,
    rebook: Rebook,
    defer: Defer,
) -> tuple[list[SendRecord], dict[int, DeliveryOutcome]]:
    """Claim `ready` under one lease and call the provider for each row claimed; returns the
    sends and the outcomes of the rows claimed elsewhere."""
    lease = Lease.starting(clock)
    claimed = claim(ready, clock.now, lease.expires_at)
    skipped = {
        m.pk: DeliveryOutcome(OutcomeStatus.SKIPPED, reason="claimed elsewhere")
        for m in ready
        if m.pk not in claimed
    }
    deadlines = {pk: (lease.start_by, send_by[pk]) for pk in claimed}
    jobs = [m for m in ready if m.pk in claimed]
    mark = partial(mark_started, lease=lease.expires_at)
    return send_all(jobs, tokens, executor, deadlines, mark, rebook, defer), skipped

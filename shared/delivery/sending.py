"""The provider calls of a batch, on the send threads, each started only once it is recorded."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.utils import timezone

from shared.delivery.scheduling import SEND_NOW, SLOT_TOLERANCE
from shared.delivery.types import Release, SendRecord
from shared.models import Message, Provider
from shared.providers.base import Attachment, OutboundMessage, ProviderError
from shared.receipts.urls import status_callback_url
from shared.services.messages import attachment_contents
from shared.services.providers import integration_adapter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admission:
    """The start gate's answer: start (by `slot_by`, monotonic), or why not. A send refused
    for its rate-limit slot carries the seconds until the slot booked for it (`wait`); one whose
    limit could not be checked carries the error (`outage`: Redis did not answer at all)."""

    start: bool
    slot_by: float = math.inf
    released: Release | None = None
    wait: float | None = None
    error: Exception | None = None
    outage: bool = False
    deferred: bool = False  # SLOT: already deferred to that slot by the gate's `defer`


# A send that has no slot yet and books it at the start gate (`slot_by` for StartGate.enter).
BOOK_AT_START = -math.inf


class LimiterUnavailable(Exception):
    """Redis did not answer the start gate's booking at all (not one key's error)."""


# Slots at the start gate: {pk: seconds since its stale booked slot, or None if it has none} ->
# {pk: seconds until the slot booked for it, or the error that kept it from being booked}.
Rebook = Callable[[dict[int, float | None]], dict[int, float | Exception]]
# Defers claimed messages to the slots booked for them at the gate: {pk: seconds until it,
# counted from the given instant (when the limiter answered)}.
Defer = Callable[[dict[int, float], datetime], None]


class StartGate:
    """Lets a provider call start only once its start is recorded (`mark`), so a crash counts
    as an interruption only for a call that may have reached the provider, and only once its
    rate-limit slot is now: a send books its slot here, when a send thread is about to make the
    call (`rebook`), not when its batch starts, so slots follow the sends the threads can
    really make. A send whose row holds a booked slot uses it up to SLOT_TOLERANCE late; past
    that it books again, giving the stale slot back where nothing was booked after it.

    A send thread asks when it picks its message up; the task thread, which owns the database
    connection, books and writes every request waiting at that moment in one round trip each
    and then lets them go; sends whose slot is later are deferred to it right away (`defer`).
    Without an executor (`inline`) each send asks for itself.
    """

    def __init__(
        self,
        mark: Callable[[list[int]], set[int]],
        *,
        inline: bool,
        rebook: Rebook | None = None,
        defer: Defer | None = None,
    ) -> None:
        self._mark = mark
        self._rebook = rebook
        self._defer = defer
        self._inline = inline
        self._requests: queue.SimpleQueue[tuple[int, float, threading.Event] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._admitted: dict[int, Admission] = {}
        self._closed = False

    def enter(self, pk: int, slot_by: float = math.inf) -> Admission:
        """Send thread: wait until the start of `pk` is recorded, or refused."""
        if self._inline:
            return self._admit([(pk, slot_by)])[pk]
        event = threading.Event()
        with self._lock:
            if self._closed:
                return Admission(False, released=Release.LOST)
            self._requests.put((pk, slot_by, event))
        event.wait()
        with self._lock:
            return self._admitted.get(pk, Admission(False, released=Release.LOST))

    def leave(self) -> None:
        """Send thread: this job is over, sent or not."""
        if not self._inline:
            self._requests.put(None)

    def serve(self, jobs: int) -> None:
        """Task thread: record starts, a group at a time, until `jobs` jobs have left."""
        pending: list[tuple[int, float, threading.Event]] = []
        left = 0
        try:
            while left < jobs:
                items = [self._requests.get(), *self._drain()]
                left += items.count(None)
                pending = [item for item in items if item is not None]
                if pending:
                    self._release(pending, self._admit([(pk, by) for pk, by, _ in pending]))
                    pending = []
        finally:
            with self._lock:
                self._closed = True
            # The task thread is leaving (an error): no waiting send may start any more.
            self._release([*pending, *(i for i in self._drain() if i is not None)], {})

    def _admit(self, requests: list[tuple[int, float]]) -> dict[int, Admission]:
        """Book slots for the requests without a fresh one, then record the starts of those
        whose slot is now."""
        now = time.monotonic()
        tolerance = SLOT_TOLERANCE.total_seconds()
        verdicts: dict[int, Admission] = {}
        late = {
            pk: None if by == BOOK_AT_START else now - (by - tolerance)
            for pk, by in requests
            if now > by
        }
        if late:
            answers = self._rebook(late) if self._rebook is not None else {}
            booked = timezone.now()  # the waits count from the limiter's answer
            for pk in late:
                wait = answers.get(pk, 0.0)
                if isinstance(wait, Exception):
                    outage = isinstance(wait, LimiterUnavailable)
                    verdicts[pk] = Admission(
                        False, released=Release.LIMITER, error=wait, outage=outage
                    )
                elif wait > SEND_NOW.total_seconds():
                    verdicts[pk] = Admission(
                        False, released=Release.SLOT, wait=wait, deferred=self._defer is not None
                    )
            waits = {pk: v.wait for pk, v in verdicts.items() if v.deferred and v.wait is not None}
            if waits and self._defer is not None:
                self._defer(waits, booked)  # at once: a near slot must not wait for the batch
        go = {pk: (by if now <= by else now + tolerance) for pk, by in requests}
        go = {pk: by for pk, by in go.items() if pk not in verdicts}
        allowed = self._mark(list(go)) if go else set()
        for pk, by in go.items():
            verdicts[pk] = (
                Admission(True, slot_by=by)
                if pk in allowed
                else Admission(False, released=Release.LOST)
            )
        return verdicts

    def _drain(self) -> list[tuple[int, float, threading.Event] | None]:
        items = []
        while True:
            try:
                items.append(self._requests.get_nowait())
            except queue.Empty:
                return items

    def _release(
        self, waiting: list[tuple[int, float, threading.Event]], admitted: dict[int, Admission]
    ) -> None:
        with self._lock:
            self._admitted.update(admitted)
        for _, _, event in waiting:
            event.set()


def send_all(
    messages: list[Message],
    tokens: dict[int, str],
    executor: Executor | None,
    deadlines: dict[int, tuple[float, float]],
    mark: Callable[[list[int]], set[int]],
    rebook: Rebook | None = None,
    defer: Defer | None = None,
) -> list[SendRecord]:
    """Call the provider for every claimed message, concurrently on `executor` when given."""
    inline = executor is None or len(messages) < 2
    gate = StartGate(mark, inline=inline, rebook=rebook, defer=defer)
    # A call starts only while a whole call still fits the lease, so the sweeper never hands a
    # message to another worker while this one may still send it, and only on a rate-limit slot
    # that is now: booked on its row and still fresh, or booked at the gate (`deadlines`, see
    # StartGate; BOOK_AT_START for a message with no slot yet).
    jobs = [
        partial(_send_one, m, tokens[m.integration_id], *deadlines[m.pk], gate) for m in messages
    ]
    if inline or executor is None:
        return [job() for job in jobs]
    futures: list[Future[SendRecord]] = []
    try:
        futures.extend(executor.submit(job) for job in jobs)
    finally:  # serve the jobs that were submitted, even if a submit failed
        gate.serve(len(futures))
    return [future.result() for future in futures]


def _send_one(
    message: Message, token: str, lease_by: float, slot_by: float, gate: StartGate
) -> SendRecord:
    """One provider call, if it starts by both monotonic deadlines and its start is recorded
    (`gate`); touches no database unless the gate is inline, so it may run on any thread."""
    try:
        return _send_started(message, token, lease_by, slot_by, gate)
    finally:
        gate.leave()


def _outbound(message: Message) -> OutboundMessage:
    """What the adapter sends; WhatsApp sends name their own status callback (receipts).
    Attachment contents are decrypted here, on the send thread, for this call only."""
    whatsapp = message.provider == Provider.WHATSAPP
    attachments = ()
    if message.attachments:
        contents = attachment_contents(message)
        attachments = tuple(
            Attachment(
                filename=info["filename"],
                content=content,
                type=info["type"],
                disposition=info["disposition"],
                content_id=info["content_id"],
            )
            for info, content in zip(message.attachments, contents, strict=True)
        )
    return OutboundMessage(
        to=message.to,
        body=message.body,
        subject=message.subject,
        html=message.html,
        reference=f"msg-{message.pk}",
        status_callback=status_callback_url(message.integration, message.pk) if whatsapp else "",
        template=message.template,
        media_urls=tuple(message.media_urls),
        attachments=attachments,
        parse_mode=message.parse_mode or "",
        tag=message.tag or "",
    )


def _send_started(
    message: Message, token: str, lease_by: float, slot_by: float, gate: StartGate
) -> SendRecord:
    sent = SendRecord(message=message, number=message.attempts + 1, started=timezone.now())
    if time.monotonic() > lease_by:
        sent.released = Release.LEASE
        return sent
    # The client and the request are built before the gate, so an admitted call goes out at
    # once: the slot it was given is used within the gate's own round trips, not after dozens
    # of threads have each built a client under one GIL.
    failure: ProviderError | None = None
    try:
        adapter = integration_adapter(message.integration, token=token)
        outbound = _outbound(message)
    except ProviderError as exc:
        failure = exc
    except Exception as exc:  # a bug: fail this message visibly rather than loop or re-send
        failure = _internal(message, exc)
    admission = gate.enter(message.pk, slot_by)
    if not admission.start:
        sent.released, sent.wait = admission.released, admission.wait
        sent.limiter_error, sent.outage = admission.error, admission.outage
        sent.deferred = admission.deferred
        return sent
    started = time.monotonic()
    if failure is not None:
        sent.error = failure
        return sent
    # Recording the start took time: a slot (or lease) that went stale meanwhile is not used,
    # or late sends would bunch up with the next on-time ones.
    if started > lease_by or started > admission.slot_by:
        sent.released = Release.LEASE if started > lease_by else Release.SLOT
        sent.counted = True
        # The slot it holds (booked at the gate, or on its row): handed back to the row, so its
        # next run gives it back to the limiter rather than waiting behind it.
        ago = started - (admission.slot_by - SLOT_TOLERANCE.total_seconds())
        sent.slot_at = timezone.now() - timedelta(seconds=ago)
        return sent
    try:
        sent.started = timezone.now()
        sent.provider_id = adapter.send(outbound)
    except ProviderError as exc:
        sent.error = exc
    except Exception as exc:  # a bug: fail this message visibly rather than loop or re-send
        sent.error = _internal(message, exc)
    sent.elapsed = time.monotonic() - started
    return sent


def _internal(message: Message, exc: Exception) -> ProviderError:
    """A bug while sending `message`: logged with its traceback, and a permanent failure."""
    logger.exception("Unexpected error delivering message %s", message.pk)
    return ProviderError(
        f"Internal error while sending ({type(exc).__name__}); retry the message once fixed",
        kind="permanent",
        provider=message.provider,
        code="internal",
    )

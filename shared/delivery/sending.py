"""The provider calls of a batch, on the send threads, each started only once it is recorded."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial

from django.utils import timezone

from shared.delivery.types import Release, SendRecord
from shared.models import Message, Provider
from shared.providers.base import Attachment, OutboundMessage, ProviderError
from shared.receipts.urls import status_callback_url
from shared.services.messages import attachment_contents
from shared.services.providers import integration_adapter

logger = logging.getLogger(__name__)


class StartGate:
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


def send_all(
    messages: list[Message],
    tokens: dict[int, str],
    executor: Executor | None,
    deadlines: dict[int, tuple[float, float]],
    mark: Callable[[list[int]], set[int]],
) -> list[SendRecord]:
    """Call the provider for every claimed message, concurrently on `executor` when given."""
    inline = executor is None or len(messages) < 2
    gate = StartGate(mark, inline=inline)
    # A call starts only while a whole call still fits the lease, so the sweeper never hands a
    # message to another worker while this one may still send it, and only while its rate-limit
    # slot is fresh when it must not start late (`deadlines`, see scheduling.slot_decision).
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
    now = time.monotonic()
    if now > lease_by:
        sent.released = Release.LEASE
        return sent
    if now > slot_by:
        sent.released = Release.SLOT
        return sent
    if not gate.enter(message.pk):
        sent.released = Release.LOST
        return sent
    started = time.monotonic()
    try:
        adapter = integration_adapter(message.integration, token=token)
        outbound = _outbound(message)
        # Recording the start and building the client took time: a slot (or lease) that went
        # stale meanwhile is not used, or late sends would bunch up with the next on-time ones.
        now = time.monotonic()
        if now > lease_by or now > slot_by:
            sent.released, sent.counted = (Release.LEASE if now > lease_by else Release.SLOT), True
            return sent
        sent.started, started = timezone.now(), now
        sent.provider_id = adapter.send(outbound)
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

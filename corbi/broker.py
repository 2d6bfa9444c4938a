"""kombu's Redis transport, made to survive a broker outage with unacknowledged tasks in hand."""

from __future__ import annotations

import logging
import threading
from typing import Any

from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)

# Delivery tags whose restore failed because Redis was unreachable, per broker: the messages
# are still in that Redis's `unacked` hash (if it kept its data), so the next channel that
# reaches the broker puts them back on their queues. Process-wide, because a reconnect builds
# a new kombu Connection, Transport and Channel.
_unrestored: dict[str, list[str]] = {}
_unrestored_lock = threading.Lock()


class QoS(kombu_redis.QoS):
    """Restores unacked messages when a channel closes; when Redis is down, keeps their tags
    for the next channel instead of raising out of the close (and dropping them)."""

    def restore_unacked(self, client: Any = None) -> None:
        tags = list(self._delivered)
        try:
            super().restore_unacked(client)
        except self.channel.connection_errors as exc:
            self._delivered.clear()
            with _unrestored_lock:
                _unrestored.setdefault(self.channel.broker_key, []).extend(tags)
            logger.warning(
                "Broker unreachable (%s): %d unacknowledged task(s) will be restored on reconnect.",
                type(exc).__name__,
                len(tags),
            )


class Channel(kombu_redis.Channel):
    """A Redis channel that keeps its connection parameters for its whole life.

    Celery handles a lost connection with kombu's `Connection.collect()`, then `close()`. In
    collect(), closing the consumer's channel fails on the dead socket (its pending BRPOP read),
    the transport's close_connection() stops at the next channel whose close fails (the pidbox
    channel deleting its auto-delete queue), and the transport is detached (`client = None`).
    close() closes the consumer's channel again: its unacked-message restore rebuilds the pool
    it just dropped, and kombu's `_connparams` reads `self.connection.client.hostname`: an
    AttributeError, not a connection error, so Celery stops the worker. Parameters captured
    while attached make that restore (and late acks of running tasks) reach Redis, or fail
    with the connection errors Celery handles.
    """

    QoS = QoS
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu builds a new redis.Redis (and its ~170-entry response-callback table) for
        every publish on its shared pool; this reuses one per pool. A redis.Redis on a pool is
        thread-safe and holds no connection of its own, and a new pool (kombu drops it on a
        disconnect) gets a new client."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client(asynchronous=False)
        return client

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # connects: Redis answered a PING
        attached = super()._connparams
        self._params = {mode: attached(asynchronous=mode) for mode in (False, True)}
        self._restore_left_behind()

    @property
    def broker_key(self) -> str:
        params = self._params[False]
        where = params.get("path") or f"{params.get('host')}:{params.get('port')}"
        return f"{where}/{params['db']}/{self.global_keyprefix}"

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        saved = getattr(self, "_params", None)
        if saved is None:  # still in __init__: the transport is attached
            return super()._connparams(asynchronous=asynchronous)
        return dict(saved[asynchronous])

    def _restore_left_behind(self) -> None:
        """Put back on their queues the tasks a channel of this process could not restore."""
        with _unrestored_lock:
            tags = _unrestored.pop(self.broker_key, [])
        if not tags:
            return
        done = 0
        try:
            with self.conn_or_acquire() as client:
                held = sum(p is not None for p in client.hmget(self.unacked_key, tags))
                for tag in tags:
                    self.qos.restore_by_tag(tag, client=client)
                    done += 1
        except self.connection_errors as exc:
            # Not raised: this channel is registered with the poller already; its next read
            # fails the same way and the consumer reconnects, and the next channel goes on.
            with _unrestored_lock:
                _unrestored.setdefault(self.broker_key, []).extend(tags[done:])
            logger.warning(
                "Broker unreachable again (%s) while restoring %d task(s); retried on reconnect.",
                type(exc).__name__,
                len(tags) - done,
            )
            return
        logger.info(
            "Restored %d of %d task(s) left unacknowledged by a lost connection (the broker had "
            "lost the others; the outbox sweeper publishes those again).",
            held,
            len(tags),
        )


class Transport(kombu_redis.Transport):
    """Selected by CELERY_BROKER_TRANSPORT for redis:// broker URLs."""

    Channel = Channel

"""A bare Celery app: one task that only POSTs a Telegram sendMessage to the sandbox.

Same worker configuration as corbi apart from the task body: broker, JSON serialization,
acks_late, reject-on-worker-lost, task events on (worker_send_task_events) and no task-sent
event (task_send_sent_event=False); pool, concurrency and prefetch come from the same CLI
flags. Configured from the environment:
REDIS_URL, PROVIDER_SANDBOX_URL, BENCH_TELEGRAM_TOKEN.
"""

from __future__ import annotations

import os
import threading

import redis
import requests
from celery import Celery
from celery.signals import worker_ready

BARE_QUEUE = "bench-bare"
DONE_KEY = "bench:bare:done"
READY_KEY = "bench:bare:ready"

app = Celery("bench_bare")
app.conf.update(
    broker_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13"),
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_default_queue=BARE_QUEUE,
    # The same worker events as corbi's settings: task events on, no task-sent event.
    worker_send_task_events=True,
    task_send_sent_event=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
# The scaling rows of the edge section raise kombu's Redis pool (10 connections by default):
# with a gevent pool of 64+ greenlets, late acks otherwise fail with "Too many connections".
if os.environ.get("BENCH_BARE_MAX_CONNECTIONS"):
    app.conf.broker_transport_options = {
        "max_connections": int(os.environ["BENCH_BARE_MAX_CONNECTIONS"])
    }

_local = threading.local()


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.trust_env = False
    return session


def _redis() -> redis.Redis:
    client = getattr(_local, "redis", None)
    if client is None:
        client = _local.redis = redis.Redis.from_url(app.conf.broker_url)
    return client


@app.task(name="bench.bare.send", ignore_result=True)
def send(chat_id: int) -> None:
    base = os.environ["PROVIDER_SANDBOX_URL"].rstrip("/")
    token = os.environ["BENCH_TELEGRAM_TOKEN"]
    response = _session().post(
        f"{base}/bot{token}/sendMessage", json={"chat_id": chat_id, "text": "bench"}, timeout=10
    )
    _redis().incr(DONE_KEY if response.ok else DONE_KEY + ":failed")


@worker_ready.connect
def _ready(sender: object = None, **kwargs: object) -> None:
    redis.Redis.from_url(app.conf.broker_url).sadd(READY_KEY, str(getattr(sender, "hostname", "")))

"""The phases after the main run: Redis outages under live workers, and the crash count."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections import Counter
from pathlib import Path

import redis

from bench.chaos.config import (
    CRASH_ENV,
    CRASH_LATENCY_MS,
    CRASH_ORG,
    LOG_DIR,
    OUTAGE_SECONDS,
    PROVIDERS,
    SEND_PATH,
    TOKEN_CHARS,
    log,
    rand,
)
from bench.chaos.stack import Stack
from bench.chaos.workload import Events, connect, create_admin, message_item
from devtools.commands import http_session
from devtools.procs import wait_for
from sandbox.testing import SandboxClient


def post_items(stack: Stack, org: dict, items: list[dict]) -> None:
    session = http_session()
    for i in range(0, len(items), 1000):
        r = session.post(
            stack.web + "/api/messages/bulk/",
            json={"messages": items[i : i + 1000]},
            headers=org["headers"],
            timeout=60,
        )
        if r.status_code != 202:
            raise RuntimeError(f"bulk -> {r.status_code}: {r.text[:300]}")


def phase_rows(tag: str):
    from shared.models import Message

    return Message.objects.filter(body__startswith=f"{tag} o")


def wait_terminal(stack: Stack, tag: str, timeout: float) -> float | None:
    """Seconds until every message of `tag` is sent or failed; None if `timeout` passed first
    or no worker is left alive to send them."""
    from shared.models import MessageStatus

    start = time.monotonic()
    pending = phase_rows(tag).filter(status__in=[MessageStatus.QUEUED, MessageStatus.SENDING])

    def settled() -> bool:
        return not pending.exists() or not stack.any_worker_alive()

    try:
        wait_for(settled, timeout, f"{tag} messages terminal", interval=0.5)
    except RuntimeError:
        return None
    return None if pending.exists() else time.monotonic() - start


def sandbox_calls(stack: Stack, tag: str, since: float = 0.0) -> tuple[Counter, Counter, int]:
    """Per marker of `tag`: send requests the sandbox recorded, and those it answered 2xx;
    plus how many of them are still in progress (recorded after `since`)."""
    pattern = re.compile(rf"{re.escape(tag)} o\d+-m\d+")
    sandbox = SandboxClient(stack.sandbox_url)
    calls, accepted, pending = Counter(), Counter(), 0
    for provider in PROVIDERS:
        for r in sandbox.requests(provider):
            if not r["path"].endswith(SEND_PATH[provider]):
                continue
            match = pattern.search(json.dumps(r.get("body")))
            if not match:
                continue
            calls[match.group(0)] += 1
            status = r.get("status")
            accepted[match.group(0)] += int(status is not None and 200 <= status < 300)
            pending += int(r.get("outcome") == "pending" and r["time"] > since)
    return calls, accepted, pending


def phase_stats(stack: Stack, tag: str) -> Counter:
    """Each message of a phase, from our rows and the sandbox's own record of the calls."""
    from django.db.models import Count

    from shared.models import MessageAttempt

    calls, accepted, _ = sandbox_calls(stack, tag)
    rows = list(phase_rows(tag).values("id", "body", "status", "attempts", "error_code"))
    recorded = dict(
        MessageAttempt.objects.filter(message_id__in=[m["id"] for m in rows])
        .values("message_id")
        .annotate(n=Count("id"))
        .values_list("message_id", "n")
    )
    stats = Counter(messages=len(rows))
    for m in rows:
        marker = re.search(rf"{re.escape(tag)} o\d+-m\d+", m["body"]).group(0)
        stats[m["status"]] += 1
        if m["status"] not in ("sent", "failed") or (
            m["status"] == "sent" and not accepted[marker]
        ):
            stats["lost"] += 1
        stats["duplicates"] += max(0, accepted[marker] - 1)
        interrupted = m["status"] == "failed" and m["error_code"] == "interrupted"
        stats["failed_interrupted"] += int(interrupted)
        stats["failed_without_call"] += int(interrupted and not calls[marker])
        if m["attempts"] > recorded.get(m["id"], 0) and not calls[marker]:
            stats["interrupted_without_call"] += 1
    return stats


def log_offsets() -> dict[Path, int]:
    return {path: path.stat().st_size for path in LOG_DIR.glob("worker-*.log")}


def restored_since(offsets: dict[Path, int]) -> tuple[int, int, int]:
    """From the workers' corbi.broker log lines: unacked tasks they held when the connection
    dropped, and of those, how many they put back on their queues on reconnecting."""
    dropped = restored = tried = 0
    for path in LOG_DIR.glob("worker-*.log"):
        with path.open("rb") as f:
            f.seek(offsets.get(path, 0))
            text = f.read().decode(errors="replace")
        dropped += sum(int(n) for n in re.findall(r"\): (\d+) unacknowledged task", text))
        for done, tags in re.findall(r"Restored (\d+) of (\d+) task", text):
            restored, tried = restored + int(done), tried + int(tags)
    return dropped, restored, tried


def held_tasks(stack: Stack, tag: str) -> dict[str, int]:
    """Once the workers hold 20+ new unacked tasks: those, and the phase's deferred and
    sending rows."""
    from django.utils import timezone

    from shared.models import MessageStatus

    broker = redis.Redis.from_url(stack.redis_url)
    before = broker.hlen("unacked")  # a kill -9 of the main run leaves its tags there
    wait_for(lambda: broker.hlen("unacked") >= before + 20, 30, "workers holding tasks", 0.1)
    rows = phase_rows(tag)
    held = {
        "unacked": broker.hlen("unacked") - before,
        "deferred": rows.filter(
            status=MessageStatus.QUEUED, next_attempt_at__gt=timezone.now()
        ).count(),
        "sending": rows.filter(status=MessageStatus.SENDING).count(),
    }
    broker.close()
    return held


def same_workers(stack: Stack, pids: dict[str, int]) -> bool:
    """Whether every worker of `pids` still runs as the same process."""
    return all(
        name in stack.workers
        and stack.workers[name].pid == pid
        and stack.workers[name].poll() is None
        for name, pid in pids.items()
    )


def outage_phase(
    stack: Stack, orgs: list[dict], keep_data: bool, quick: bool, events: Events
) -> dict:
    """Redis stops for OUTAGE_SECONDS while the workers hold prefetched and deferred tasks, and
    comes back with its data (SHUTDOWN SAVE) or empty (kill -9). The harness restarts nothing."""
    tag = "outage-kept" if keep_data else "outage-empty"
    base, per_org = (50_000 if keep_data else 60_000), (100 if quick else 300)
    pids = {name: proc.pid for name, proc in stack.workers.items()}
    exits_before = len(stack.unexpected_exits)
    offsets = log_offsets()
    # slow sends keep the worker threads busy, so later tasks wait prefetched behind them
    SandboxClient(stack.sandbox_url).fault("sendgrid", mode="latency", latency_ms=2000, seconds=10)
    for k, org in enumerate(orgs[:2]):
        first = base + k * per_org
        items = [
            message_item(first + i, org["index"], PROVIDERS[i % len(PROVIDERS)], tag)
            for i in range(per_org)
        ]
        post_items(stack, org, items)
    held = held_tasks(stack, tag)
    stopped = time.time()
    stack.stop_redis(keep_data=keep_data)
    time.sleep(OUTAGE_SECONDS)  # the outage itself
    stack.start_redis()
    up = time.time()
    how = "with its data" if keep_data else "empty"
    events.append(
        (stopped, f"redis down, back {how}", f"{up - stopped:.1f} s; workers held "
         f"{held['unacked']} unacked tasks; no worker restarted by the harness")
    )  # fmt: skip
    drain = wait_terminal(stack, tag, 180 if quick else 300)
    log(f"outage phase ({how}): {'all terminal' if drain is not None else 'DEADLINE'}")
    return {
        "how": how,
        "down": up - stopped,
        "held": held,
        "drain": drain,
        "stats": phase_stats(stack, tag),
        "restored": restored_since(offsets),
        "same_pids": same_workers(stack, pids),
        "exits": len(stack.unexpected_exits) - exits_before,
    }


def crash_org(stack: Stack) -> dict:
    """An org of its own with SendGrid at 1,000/s, so its whole batch is claimed at once."""
    _, headers = create_admin("chaos-crash", "chaos-crash-admin")
    token = f"SG.{rand(22)}.{rand(43, TOKEN_CHARS)}"
    SandboxClient(stack.sandbox_url).add_account(provider="sendgrid", api_key=token)
    extra = {"from_email": "noreply@crash.chaos.test", "rate_limit_per_second": 1000}
    connect(stack, headers, "sendgrid", token, extra)
    return {"index": CRASH_ORG, "headers": headers, "tokens": {"sendgrid": token}}


def ready_for_kill(stack: Stack, tag: str, after: float, hit: frozenset[int]) -> int:
    """Provider calls of the batch in flight, once the rows the last kill interrupted have been
    claimed again (their lease expired, the sweeper re-published them): each kill then hits the
    same messages again. 0 while not ready."""
    from shared.models import MessageStatus

    calls = sandbox_calls(stack, tag, after)[2]
    if not calls or not hit:
        return calls
    lease = dt.timedelta(seconds=int(CRASH_ENV["DELIVERY_LEASE_SECONDS"]))
    since = dt.datetime.fromtimestamp(after, dt.UTC)
    reclaimed = phase_rows(tag).filter(
        pk__in=hit, status=MessageStatus.SENDING, lease_expires_at__gt=since + lease
    )
    return calls if reclaimed.exists() else 0


def crash_phase(stack: Stack, quick: bool, events: Events) -> dict:
    """3 kill -9s in a row of the only worker, each while its batch waits on a slow provider:
    counts the messages failed as interrupted that never reached the provider."""
    from shared.models import MessageStatus

    tag, count = "crash", (150 if quick else 300)
    org = crash_org(stack)
    for name in sorted(stack.workers):
        stack.stop_worker(name)
    stack.start_worker("solo", CRASH_ENV)
    sandbox = SandboxClient(stack.sandbox_url)
    sandbox.fault("sendgrid", mode="latency", latency_ms=CRASH_LATENCY_MS, seconds=600)
    items = [message_item(70_000 + i, CRASH_ORG, "sendgrid", tag) for i in range(count)]
    post_items(stack, org, items)
    kills: list[dict] = []
    since, hit = 0.0, frozenset()
    for _ in range(3):
        in_flight = wait_for(
            lambda after=since, ids=hit: ready_for_kill(stack, tag, after, ids),
            90,
            "a re-claim",
            interval=0.2,
        )
        rows = phase_rows(tag).filter(status=MessageStatus.SENDING)
        hit, since = frozenset(rows.values_list("pk", flat=True)), time.time()
        proc = stack.kill_worker("solo", env=CRASH_ENV)
        kills.append({"sending": len(hit), "calls": in_flight})
        events.append(
            (since, "kill -9 (crash phase)", f"solo pid {proc.pid}; {len(hit)} rows in sending, "
             f"{in_flight} provider calls in flight")
        )  # fmt: skip
    sandbox.clear_faults()
    drain = wait_terminal(stack, tag, 180 if quick else 300)
    log(f"crash phase: {'all terminal' if drain is not None else 'DEADLINE'}")
    return {"org": org, "kills": kills, "drain": drain, "stats": phase_stats(stack, tag)}


def run_phases(stack: Stack, orgs: list[dict], quick: bool, events: Events) -> dict:
    """The outage phases (with live workers only) and the crash phase; a phase that cannot run
    is reported as not run, which fails the run."""
    phases: dict = {"outage": [], "not_run": []}
    for keep_data in (True, False):
        name = f"Redis outage, back {'with its data' if keep_data else 'empty'}"
        if not stack.any_worker_alive():
            phases["not_run"].append(f"{name}: no worker left alive")
            continue
        log(f"phase: {name}")
        try:
            phases["outage"].append(outage_phase(stack, orgs, keep_data, quick, events))
        except RuntimeError as exc:
            phases["not_run"].append(f"{name}: {exc}")
    log("phase: 3 kill -9s of the only worker")
    try:
        phases["crash"] = crash_phase(stack, quick, events)
    except RuntimeError as exc:
        phases["not_run"].append(f"crash count: {exc}")
    return phases

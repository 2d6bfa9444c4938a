"""The scheduled-send sweep: time per `message_sweep` over a growing backlog of future
`scheduled` messages, through the partial index message_scheduled_due vs the same sweep with
that index dropped (a scan), in a Postgres database of its own (corbi_bench_sched)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import Any

import redis

from bench.common import PG, recreate_database
from bench.pipeline.config import SCHED_DB_NAME
from devtools.procs import manage

INDEX = "message_scheduled_due"
TABLE = "shared_message"
BACKLOGS = (0, 10_000, 100_000)  # future scheduled rows (not due)
DUES = (0, 100, 1_000)  # scheduled rows due when the sweep runs
REPEAT = 15  # measured sweeps per cell and way, after one warm-up sweep
ORGS = 3  # organizations, each with a telegram and a sendgrid integration
SPREAD = timedelta(days=30)  # the future rows' send_at: from an hour ahead to 30 days ahead


@contextmanager
def own_database(env: dict[str, str]) -> Iterator[None]:
    """This process's default connection on SCHED_DB_NAME (dropped, created, migrated) for the
    block, then back on the database it had (the other sections' corbi_bench)."""
    from django.db import connections

    connections.close_all()
    recreate_database(SCHED_DB_NAME)
    result = manage(
        "migrate",
        "--noinput",
        "-v",
        "0",
        env={**env, "DATABASE_URL": f"{PG}/{SCHED_DB_NAME}"},
        timeout=180,
    )
    if result.returncode:
        raise RuntimeError("migrate failed: " + result.stderr[-2000:])
    settings_dict = connections["default"].settings_dict
    before = settings_dict["NAME"]
    settings_dict["NAME"] = SCHED_DB_NAME
    try:
        yield
    finally:
        connections.close_all()
        settings_dict["NAME"] = before


def execute(sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


class Backlog:
    """The rows: ORGS organizations with two integrations each, one template message, and
    INSERT ... SELECT over generate_series for the bulk (setup, not measured)."""

    def __init__(self) -> None:
        from shared.models import Integration, Message, MessageStatus, Organization

        self.pairs: list[tuple[int, int, str]] = []  # (organization, integration, provider)
        for i in range(ORGS):
            org = Organization.objects.create(name=f"sched {i}", slug=f"sched-{i}")
            for provider in ("telegram", "sendgrid"):
                integration = Integration.objects.create(
                    organization=org, provider=provider, is_active=True
                )
                self.pairs.append((org.pk, integration.pk, provider))
        org_id, integration_id, provider = self.pairs[0]
        self.template = Message.objects.create(
            organization_id=org_id,
            integration_id=integration_id,
            provider=provider,
            to="template",
            body="scheduled",
            status=MessageStatus.CANCELLED,  # outside both partial indexes
        ).pk
        self.future = 0
        self.columns = [f.column for f in Message._meta.concrete_fields if f.column != "id"]

    def insert(self, n: int, first: datetime, step: timedelta, tag: str) -> list[int]:
        """n scheduled rows copied from the template, the i-th due at first + i * step (spread
        over the integrations), `enqueued_at` NULL (no ETA task: beyond MAX_COUNTDOWN)."""
        if n <= 0:
            return []
        k = len(self.pairs)
        override: dict[str, tuple[str, list[Any]]] = {
            "organization_id": (f"(%s::bigint[])[g %% {k} + 1]", [[p[0] for p in self.pairs]]),
            "integration_id": (f"(%s::bigint[])[g %% {k} + 1]", [[p[1] for p in self.pairs]]),
            "provider": (f"(%s::text[])[g %% {k} + 1]", [[p[2] for p in self.pairs]]),
            "to": ("%s || g", [f"{tag}-"]),
            "status": ("'scheduled'", []),
            "next_attempt_at": ("%s + g * %s", [first, step]),
            "send_at": ("%s + g * %s", [first, step]),
            "enqueued_at": ("NULL", []),
        }
        params = [v for c in self.columns for v in override.get(c, ("", []))[1]]
        select = ", ".join(override[c][0] if c in override else f't."{c}"' for c in self.columns)
        names = ", ".join(f'"{c}"' for c in self.columns)
        rows = execute(
            f'INSERT INTO "{TABLE}" ({names}) SELECT {select} '
            f'FROM "{TABLE}" t, generate_series(0, %s) g WHERE t.id = %s RETURNING id',
            [*params, n - 1, self.template],
        )
        return [pk for (pk,) in rows]

    def grow_to(self, future: int) -> None:
        """Top the future backlog up to `future` rows, due from an hour to SPREAD ahead."""
        from django.utils import timezone

        add = future - self.future
        if add > 0:
            self.insert(add, timezone.now() + timedelta(hours=1), SPREAD / add, f"f{future}")
            self.future = future


def vacuum_analyze() -> None:
    execute(f'VACUUM ANALYZE "{TABLE}"')


def plan_nodes(sql: str) -> str:
    """The scan nodes on shared_message of EXPLAIN `sql` (inside a rolled-back transaction)."""
    from django.db import transaction

    with transaction.atomic():
        ((plan,),) = execute("EXPLAIN (FORMAT JSON) " + sql)
        transaction.set_rollback(True)
    found: list[str] = []

    def indexes(node: dict[str, Any]) -> list[str]:
        own = [node["Index Name"]] if "Index Name" in node else []
        return own + [name for child in node.get("Plans", []) for name in indexes(child)]

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == TABLE:  # a Bitmap Heap Scan names its index below
            names = indexes(node)
            found.append(
                f"{node['Node Type']} on {', '.join(names)}" if names else node["Node Type"]
            )
            return
        for child in node.get("Plans", []):
            walk(child)

    walk((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
    return ", ".join(found) or "no scan of shared_message"


def scheduled_query() -> str:
    """The SQL `_due_scheduled` runs now (captured; its transaction rolled back)."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from shared.delivery.sweeper import _due_scheduled

    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        _due_scheduled(timezone.now(), 5000)
        transaction.set_rollback(True)
    return next(q["sql"] for q in captured.captured_queries if "'scheduled'" in q["sql"])


def timed_sweeps(due_ids: list[int], broker: redis.Redis, repeat: int) -> list[float]:
    """ms of each of `repeat` real `message_sweep` calls (after one warm-up), each finding the
    `due_ids` due; between sweeps the rows go back to scheduled and the broker is emptied. No
    VACUUM in between: the first query after one reloads the table's statistics, which the
    sweeper, run every few seconds between autovacuums, seldom pays (the probe that showed it:
    1.7 ms per empty sweep at 100,000 rows, 3.1 ms right after each VACUUM ANALYZE)."""
    from django.db.models import F

    from shared.delivery.sweeper import message_sweep
    from shared.models import Message, MessageStatus

    times: list[float] = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        ids = message_sweep()
        elapsed = (time.perf_counter() - t0) * 1000
        if sorted(ids) != sorted(due_ids):
            raise RuntimeError(f"the sweep published {len(ids)} ids, {len(due_ids)} were due")
        if i:
            times.append(elapsed)
        Message.objects.filter(pk__in=due_ids).update(
            status=MessageStatus.SCHEDULED, enqueued_at=None, next_attempt_at=F("send_at")
        )
        broker.flushdb()
    return times


@contextmanager
def index_dropped() -> Iterator[None]:
    """message_scheduled_due dropped for the block, then created again as it was."""
    ((definition,),) = execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [INDEX])
    execute(f'DROP INDEX "{INDEX}"')
    try:
        yield
    finally:
        execute(definition)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * len(ordered) + 0.5) - 1)]


def measure(
    broker: redis.Redis,
    backlogs: Sequence[int] = BACKLOGS,
    dues: Sequence[int] = DUES,
    repeat: int = REPEAT,
) -> list[dict[str, Any]]:
    """One row per (future backlog, due): median and p95 ms per sweep and the plan's scan
    node of the scheduled query, with the index and with it dropped."""
    from django.utils import timezone

    from shared.models import Message

    backlog = Backlog()
    rows: list[dict[str, Any]] = []
    for future in backlogs:
        backlog.grow_to(future)
        for due in dues:
            now = timezone.now()
            due_ids = backlog.insert(due, now - timedelta(minutes=10), timedelta(0), f"d{due}")
            row: dict[str, Any] = {"future": future, "due": due}
            for way in ("index", "scan"):
                with index_dropped() if way == "scan" else nullcontext():
                    vacuum_analyze()  # each way starts on a clean table
                    row[f"{way}_plan"] = plan_nodes(scheduled_query())
                    row[way] = timed_sweeps(due_ids, broker, repeat)
            rows.append(row)
            Message.objects.filter(pk__in=due_ids).delete()
    return rows


def ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| due rows | future rows | index: median ms | p95 | scan: median ms | p95 "
        "| scan / index | plan with the index | plan with it dropped |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["due"], r["future"])):
        index, scan = statistics.median(r["index"]), statistics.median(r["scan"])
        lines.append(
            f"| {r['due']:,} | {r['future']:,} | {ms(index)} | {ms(p95(r['index']))} "
            f"| {ms(scan)} | {ms(p95(r['scan']))} | {scan / index:.1f}x "
            f"| {r['index_plan']} | {r['scan_plan']} |"
        )
    return lines


def flatness(rows: list[dict[str, Any]]) -> tuple[bool, str]:
    """Whether the indexed sweep's median stays flat from the smallest to the largest backlog
    at every due count (within 1.5x or 1 ms), and the figures that say so."""
    low, high = min(r["future"] for r in rows), max(r["future"] for r in rows)
    flat, parts = True, []
    for due in sorted({r["due"] for r in rows}):
        a = statistics.median(
            next(r for r in rows if (r["due"], r["future"]) == (due, low))["index"]
        )
        b = statistics.median(
            next(r for r in rows if (r["due"], r["future"]) == (due, high))["index"]
        )
        flat = flat and (b <= 1.5 * a or b - a <= 1.0)
        parts.append(f"{due:,} due {ms(a)} → {ms(b)} ms")
    return flat, "; ".join(parts)


def summary(rows: list[dict[str, Any]], due: int) -> str:
    """The issue's one line: the largest backlog at `due` due rows."""
    high, low = max(r["future"] for r in rows), min(r["future"] for r in rows)
    r = next(r for r in rows if (r["due"], r["future"]) == (due, high))
    index, scan = statistics.median(r["index"]), statistics.median(r["scan"])
    flat, detail = flatness(rows)
    shape = "flat" if flat else "NOT flat"
    return (
        f"**Scheduled sweep, {high:,} future messages ({due:,} due): {ms(index)} ms per sweep "
        f"(index {INDEX}) vs {ms(scan)} ms by scan ({scan / index:.1f}x), {shape} from "
        f"{low:,} to {high:,} future rows** ({detail})."
    )


def section_scheduled(
    env: dict[str, str],
    broker: redis.Redis,
    backlogs: Sequence[int] = BACKLOGS,
    repeat: int = REPEAT,
) -> str:
    """Measure in corbi_bench_sched and return the section's Markdown."""
    t0 = time.monotonic()
    broker.flushdb()
    with own_database(env):
        rows = measure(broker, backlogs, DUES, repeat)
    broker.flushdb()
    took = time.monotonic() - t0
    due = DUES[1] if len(DUES) > 1 else DUES[0]
    return "\n".join(
        [
            summary(rows, due),
            "",
            *table(rows),
            "",
            f"Each cell: {repeat} timed calls of the real `message_sweep()` (after one warm-up), "
            "wall time in this process including its commit and the publish of the due ids to "
            "the Redis broker (no worker consumes them); every call must return exactly the due "
            "rows. Between calls the due rows go back to `scheduled` and the broker db is emptied; "
            "each way starts after `VACUUM ANALYZE` and one warm-up call, with no VACUUM between "
            "calls (right after one, the first query reloads the table's statistics: 3.1 ms "
            "instead of 1.7 ms per empty sweep at 100,000 rows, a cost of the bench's VACUUM, "
            "not of the sweep). Future rows "
            f"are `scheduled`, `enqueued_at` NULL, due from an hour to 30 days ahead over {ORGS} "
            f'organizations with 2 integrations each; due rows were due 10 minutes ago. "Scan" '
            f"is the same sweep with `{INDEX}` dropped (recreated after); the plan columns are "
            "`EXPLAIN` of the scheduled query `_due_scheduled` runs, captured from the code. "
            f"Postgres db `{SCHED_DB_NAME}` of its own; {took:.0f} s with setup.",
        ]
    )

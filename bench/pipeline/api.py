"""(c) API enqueue: the no-op baseline, single messages and bulk requests, with the worker stopped."""

from __future__ import annotations

import threading
import time

from bench.pipeline.stack import Ctx
from devtools.commands import http_session


def load(
    url: str, headers: dict[str, str], bodies: list[dict], clients: int
) -> tuple[float, list[float], int]:
    """POST every body with `clients` threads; (requests/s, latencies in s, non-2xx count)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    chunks = [bodies[i::clients] for i in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def client(mine: list[dict]) -> None:
        session = http_session()
        local: list[float] = []
        bad = 0
        barrier.wait()
        for body in mine:
            t0 = time.perf_counter()
            r = session.post(url, json=body, headers=headers, timeout=60)
            local.append(time.perf_counter() - t0)
            bad += r.status_code >= 300
        with lock:
            latencies.extend(local)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(chunk,)) for chunk in chunks]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return len(bodies) / (time.perf_counter() - started), latencies, errors[0]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def section_api(ctx: Ctx, requests_total: int, bulk_requests: int, clients: int = 16) -> str:
    ctx.fresh()  # no worker runs here: pure enqueue
    warm_bulk = 2
    chats = ctx.chats(requests_total + (bulk_requests + warm_bulk) * 1000)
    single = [{"provider": "telegram", "to": str(c), "body": "bench"} for c in chats]
    rows = [
        "| endpoint | clients | requests | req/s | msg/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    results = {}
    for name, path, bodies in (
        ("POST /bench/noop/ (auth+org, 202)", "/bench/noop/", single[:requests_total]),
        ("POST /api/messages/", "/api/messages/", single[:requests_total]),
    ):
        load(ctx.base + path, ctx.headers(), bodies[: clients * 2], clients)  # warm-up
        rate, lat, bad = load(ctx.base + path, ctx.headers(), bodies, clients)
        results[path] = rate
        rows.append(
            f"| {name} | {clients} | {len(bodies)} | {rate:.0f} | {rate:.0f} | "
            f"{pct(lat, 0.5):.1f} | {pct(lat, 0.99):.1f} | {bad} |"
        )
    rest = single[requests_total:]
    bulk = [{"messages": rest[i * 1000 : (i + 1) * 1000]} for i in range(bulk_requests + warm_bulk)]
    load(ctx.base + "/api/messages/bulk/", ctx.headers(), bulk[:warm_bulk], 2)  # warm-up
    rate, lat, bad = load(ctx.base + "/api/messages/bulk/", ctx.headers(), bulk[warm_bulk:], 2)
    rows.append(
        f"| POST /api/messages/bulk/ (1000/request) | 2 | {bulk_requests} | {rate:.1f} | "
        f"{rate * 1000:.0f} | {pct(lat, 0.5):.1f} | {pct(lat, 0.99):.1f} | {bad} |"
    )
    ratio = results["/api/messages/"] / results["/bench/noop/"]
    rows.append("")
    rows.append(f"Single-message enqueue / no-op baseline: **{ratio:.2f}**")
    rows += ["", *templated_bulk(ctx, bulk_requests)]
    ctx.fresh()
    return "\n".join(rows)


TEMPLATE = {"content_sid": "HX" + "0123456789abcdef" * 2, "variables": {"1": "Ana", "2": "20:00"}}


def templated_bulk(ctx: Ctx, requests: int) -> list[str]:
    """Bulk enqueue of 1,000 WhatsApp messages per request, plain text vs a Content template,
    alternating request by request so both see the same table size and machine state."""
    numbers = [f"+1415555{100 + i % 100:04d}" for i in range(1000)]
    plain = {
        "messages": [{"provider": "whatsapp", "to": n, "body": "Table at 20:00"} for n in numbers]
    }
    templated = {
        "messages": [{"provider": "whatsapp", "to": n, "template": TEMPLATE} for n in numbers]
    }
    url = ctx.base + "/api/messages/bulk/"
    load(url, ctx.headers(), [plain, templated], 1)  # warm-up
    times: dict[str, list[float]] = {"plain": [], "templated": []}
    bad = 0
    for _ in range(max(requests, 3)):
        for name, body in (("plain", plain), ("templated", templated)):
            _, lat, errors = load(url, ctx.headers(), [body], 1)
            times[name] += lat
            bad += errors
    rate = {name: 1000 / (sorted(lat)[len(lat) // 2]) for name, lat in times.items()}
    ratio = rate["templated"] / rate["plain"]
    return [
        "Bulk enqueue, WhatsApp, 1,000 messages per request, one client, alternating:",
        "",
        "| body | requests | median msg/s | p50 ms | max ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {len(lat)} | {rate[name]:.0f} | {pct(lat, 0.5):.0f} | "
            f"{max(lat) * 1000:.0f} |"
            for name, lat in times.items()
        ),
        "",
        f"Templated / plain bulk enqueue: **{ratio:.2f}** (target ≥ 0.90); errors: {bad}",
    ]

"""bench/RESULTS.md: the header (host, command, fairness of the comparison) and the sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess

from bench.pipeline.config import DB_NAME, LATENCY_MS
from devtools.procs import ROOT


def merge(old: str, sections: list[tuple[str, str]], note: str) -> str:
    """`old` (a RESULTS.md) with `sections` replacing those of the same title (or appended),
    each marked with `note`: a run of some sections keeps the others' figures."""
    head, *blocks = old.split("\n## ")
    kept = dict(block.split("\n", 1) for block in blocks)
    for title, body in sections:
        kept[title] = f"\n{body}\n\n{note}\n"
    return "\n## ".join([head, *(f"{title}\n{body}" for title, body in kept.items())])


def write_results(
    sections: list[tuple[str, str]], argv: list[str], runtime: float, partial: bool = False
) -> None:
    out = ROOT / "bench" / "RESULTS.md"
    command = " ".join([".venv/bin/python -m bench.pipeline", *argv])
    if partial and out.exists():
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        note = (
            f"_This section was re-run alone: {when}, `{command}`, {runtime:.0f} s; the other "
            "sections come from the run in the header._"
        )
        out.write_text(merge(out.read_text(), sections, note))
        print(f"updated {len(sections)} section(s) of {out.relative_to(ROOT)}")
        return
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    text = [
        "# Delivery pipeline benchmark",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- `uname -a`: `{uname}`",
        f"- nproc: {os.cpu_count()}; Python {platform.python_version()}",
        f"- command: `{command}`",
        f"- run time: {runtime:.0f} s; sandbox `--latency-ms {LATENCY_MS}`; Postgres db "
        f"`{DB_NAME}`, Redis db 13; gunicorn `-w 2 --threads 4`",
        "",
        "Ratios compare runs on the same machine in the same invocation; absolute figures depend "
        "on the host.",
        "",
        "Fairness: the bare Celery app (`bench/bare.py`) runs with the same worker configuration "
        "as ours apart from the task body — same broker, JSON only, `task_acks_late`, "
        "`task_reject_on_worker_lost`, `worker_send_task_events=True`, "
        "`task_send_sent_event=False`, and the same CLI pool, concurrency, prefetch multiplier, "
        "`--without-mingle --without-gossip`. Its task only POSTs sendMessage to the sandbox "
        "(one keep-alive session per thread) and INCRs a Redis counter, one task per message "
        "published by this script. Ours publishes one fan-out task per bulk request from the API, "
        "which a worker splits into tasks of `DELIVERY_BATCH_SIZE` (25) ids, and makes the provider calls on `--concurrency` threads per worker process "
        "(`DELIVERY_SEND_THREADS` unset), so both make at most the same number of provider "
        "calls at once.",
        "",
    ]
    for title, body in sections:
        text += [f"## {title}", "", body, ""]
    out.write_text("\n".join(text))
    print("\n".join(text))
    print(f"wrote {out.relative_to(ROOT)}")

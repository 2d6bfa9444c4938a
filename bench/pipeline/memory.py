"""Worker memory (RSS) while it delivers a first batch and then many more."""

from __future__ import annotations

import time

from bench.pipeline.config import SCALE_POOL
from bench.pipeline.runs import (
    enqueue_bulk,
    failed_count,
    finished_count,
    last_message_id,
    wait_done,
)
from bench.pipeline.stack import Ctx, start_workers, stop_workers
from bench.procstats import PeakRss


def section_memory(ctx: Ctx, first: int, more: int, procs: int) -> str:
    pool, c, p = SCALE_POOL
    ctx.fresh()
    workers = start_workers(ctx, "full", pool, c, p, procs)
    pids = [w.pid for w in workers]
    mb = 1024 * 1024
    try:
        with PeakRss(pids) as sampler:
            at_start = sampler.sample()
            first_id = last_message_id()
            t0 = time.monotonic()
            enqueue_bulk(ctx, ctx.chats(first))
            _, _, stalled1 = wait_done(finished_count(ctx, first_id), first, 30, 0.2)
            after_first = sampler.sample()
            enqueue_bulk(ctx, ctx.chats(more))
            done2, ended, stalled2 = wait_done(finished_count(ctx, first_id), first + more, 30, 0.2)
            after_all = sampler.sample()
        failed = failed_count(ctx, first_id)
    finally:
        stop_workers(workers)
    rate = done2 / (ended - t0)
    rows = [
        "| worker process | RSS at ready MB | after first "
        f"{first:,} MB | after all {first + more:,} MB | peak MB | growth first→all |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    worst = 0.0
    for i, pid in enumerate(pids):
        growth = (after_all[pid] - after_first[pid]) / after_first[pid] * 100
        worst = max(worst, growth)
        rows.append(
            f"| {i} | {at_start[pid] / mb:.1f} | {after_first[pid] / mb:.1f} "
            f"| {after_all[pid] / mb:.1f} | {sampler.peak[pid] / mb:.1f} | {growth:+.1f} % |"
        )
    notes = []
    if failed:
        notes.append(f"{failed} failed")
    if stalled1 or stalled2:
        notes.append(f"stalled at {done2}/{first + more}")
    rows.append("")
    rows.append(
        f"{procs} worker process(es), `--pool {pool} --concurrency {c} --prefetch-multiplier {p}`;"
        f" {done2:,} messages delivered at {rate:.0f} msg/s overall"
        + (f" ({'; '.join(notes)})" if notes else "")
        + f". Largest growth after the first {first:,}: **{worst:+.1f} %** (target < 10 %): "
        + ("meets it." if worst < 10 else "misses it.")
    )
    return "\n".join(rows)

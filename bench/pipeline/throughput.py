"""Bare Celery vs the pipeline: the pool grid, DELIVERY_BATCH_SIZE, scaling and CPU per message."""

from __future__ import annotations

from bench.common import free_port
from bench.pipeline.config import SCALE_POOL
from bench.pipeline.inprocess import inprocess_cpu
from bench.pipeline.runs import RunResult, run_bare, run_full
from bench.pipeline.stack import Ctx, gunicorn


def section_throughput(ctx: Ctx, n: int, quick: bool) -> str:
    grid = [("threads", 32, 4), ("prefork", 2, 4)]
    if not quick:
        grid = [
            ("threads", 32, 1),
            ("threads", 32, 4),
            ("threads", 64, 1),
            ("threads", 64, 4),
            ("prefork", 2, 4),
        ]
    rows = [
        "| pool | concurrency | prefetch | N | (a) bare msg/s | (b) pipeline msg/s | (b)/(a) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for pool, c, p in grid:
        count = n if pool == "threads" else max(40, n // 10)
        bare = run_bare(ctx, pool, c, p, count)
        full = run_full(ctx, pool, c, p, count)
        row = (
            f"| {pool} | {c} | {p} | {count} | {bare.rate:.0f}{bare.note()} | "
            f"{full.rate:.0f}{full.note()} | {full.rate / bare.rate:.2f} |"
        )
        print(row, flush=True)
        rows.append(row)
    return "\n".join(rows)


def section_batch_sizes(ctx: Ctx, n: int, sizes=(1, 5, 25, 100)) -> str:
    """The pipeline with DELIVERY_BATCH_SIZE varied (the API publishes, so it gets the setting)."""
    pool, c, p = SCALE_POOL
    bare = run_bare(ctx, pool, c, p, n)
    rows = [
        "| DELIVERY_BATCH_SIZE | N | (b) pipeline msg/s | worker CPU ms/msg | (b)/(a) |",
        "|---:|---:|---:|---:|---:|",
    ]
    saved = ctx.base, ctx.env, ctx.gunicorn_pid
    try:
        for size in sizes:
            env = {**saved[1], "DELIVERY_BATCH_SIZE": str(size)}
            with gunicorn(env, free_port()) as (base, pid):
                ctx.base, ctx.env, ctx.gunicorn_pid = base, env, pid
                full = run_full(ctx, pool, c, p, n)
            row = (
                f"| {size} | {n} | {full.rate:.0f}{full.note()} | "
                f"{full.worker_cpu / max(full.done, 1) * 1000:.1f} | {full.rate / bare.rate:.2f} |"
            )
            print(row, flush=True)
            rows.append(row)
    finally:
        ctx.base, ctx.env, ctx.gunicorn_pid = saved
    rows.append("")
    rows.append(
        f"(a) bare Celery in the same run: {bare.rate:.0f} msg/s{bare.note()}, worker CPU "
        f"{bare.worker_cpu / max(bare.done, 1) * 1000:.1f} ms/msg. One worker process, "
        f"`--pool {pool} --concurrency {c} --prefetch-multiplier {p}`. Batch size 1 is one task "
        "per message, the design before batching."
    )
    return "\n".join(rows)


def section_scaling(ctx: Ctx, n: int, procs_list=(1, 2, 4)) -> tuple[str, dict[str, RunResult]]:
    """Full pipeline and bare Celery with 1/2/4 worker processes; returns the 1-process runs."""
    pool, c, p = SCALE_POOL
    rows = [
        "| worker processes | N | (a) bare msg/s | bare vs 1 proc | (b) pipeline msg/s "
        "| pipeline vs 1 proc | (b)/(a) | host CPU busy during (b) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    one: dict[str, RunResult] = {}
    for procs in procs_list:
        bare = run_bare(ctx, pool, c, p, n, procs)
        full = run_full(ctx, pool, c, p, n, procs)
        if procs == procs_list[0]:
            one = {"bare": bare, "full": full}
        busy = full.host_busy / full.host_total * 100 if full.host_total else 0.0
        row = (
            f"| {procs} | {n} | {bare.rate:.0f}{bare.note()} | {bare.rate / one['bare'].rate:.2f} "
            f"| {full.rate:.0f}{full.note()} | {full.rate / one['full'].rate:.2f} "
            f"| {full.rate / bare.rate:.2f} | {busy:.0f} % |"
        )
        print(row, flush=True)
        rows.append(row)
    rows.append("")
    rows.append(
        f"Each process: `--pool {pool} --concurrency {c} --prefetch-multiplier {p}`, its own "
        "`--hostname`. Host CPU busy = all processes on the host (2 cores = 100 %)."
    )
    return "\n".join(rows), one


def cpu_breakdown(run: RunResult) -> str:
    order = ["worker", "postgres", "gunicorn", "redis", "sandbox", "bench"]
    parts = [
        f"{name} {run.cpu.get(name, 0.0) / run.done * 1000:.1f}"
        for name in order
        if run.cpu.get(name)
    ]
    return ", ".join(parts)


def section_cpu(ctx: Ctx, one: dict[str, RunResult], inprocess_n: int) -> str:
    full, bare = one["full"], one["bare"]
    full_ms = full.worker_cpu / full.done * 1000
    bare_ms = bare.worker_cpu / bare.done * 1000
    pool, c, p = SCALE_POOL
    rows = [
        f"| run (1 worker process, {pool} {c}, prefetch {p}) | N | worker CPU s | ms/msg "
        "| host CPU busy | elapsed s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, run in (("(a) bare Celery", bare), ("(b) full pipeline", full)):
        busy = run.host_busy / run.host_total * 100 if run.host_total else 0.0
        rows.append(
            f"| {label} | {run.done} | {run.worker_cpu:.1f} | {run.worker_cpu / run.done * 1000:.1f} "
            f"| {busy:.0f} % | {run.elapsed:.1f} |"
        )
    rows.append("")
    rows.append(
        f"Worker CPU per delivered message, pipeline / bare: **{full_ms:.1f} / {bare_ms:.1f} ms "
        f"= {full_ms / bare_ms:.1f}x**. Window: just before the first enqueue until the last "
        "row is `sent` (worker startup excluded); psutil `cpu_times()` user+system."
    )
    rows.append("")
    rows.append(
        "CPU ms per delivered message by process, same windows (Postgres = all its backends; "
        "gunicorn serves the bulk enqueue; bench = this script polling):"
    )
    rows.append("")
    rows.append(f"- (b) full pipeline: {cpu_breakdown(full)}")
    rows.append(f"- (a) bare Celery: {cpu_breakdown(bare)}")
    rows.append("")
    rows.append(inprocess_cpu(ctx, inprocess_n))
    return "\n".join(rows)

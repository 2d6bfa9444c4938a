"""The report's sections for the outage and crash phases and for unexpected exits."""

from __future__ import annotations

import datetime as dt

from bench.chaos.config import CRASH_ENV, CRASH_LATENCY_MS, OUTAGE_SECONDS
from bench.chaos.stack import Stack

OUTAGE_HEAD = [
    "",
    "## Redis outage with live workers",
    "",
    f"Redis stopped for {OUTAGE_SECONDS:.0f} s while the workers held prefetched and deferred "
    "(ETA) tasks; the harness restarted no worker. Back with its data = SHUTDOWN SAVE and "
    "restart; back empty = kill -9 and restart without a dump (the outbox sweeper "
    "re-publishes).",
    "",
    "| Redis back | down | new unacked tasks in Redis at the stop | rows deferred / sending "
    "at the stop | unacked tasks the workers held at the drop | of those re-queued on "
    "reconnect | messages | sent | failed | lost | duplicates | all terminal after Redis "
    "back | same worker pids | unexpected exits |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
]
CRASH_HEAD = [
    "",
    "## Crash count: 3 kill -9s of the only worker",
    "",
    f"One worker (`{', '.join(f'{k}={v}' for k, v in CRASH_ENV.items())}`), one org at "
    f"1,000/s, SendGrid answering after {CRASH_LATENCY_MS} ms; each kill -9 waits for a "
    "provider call of the batch in flight. A message failed without a provider call = "
    "failed as interrupted (`error_code` interrupted) while the sandbox recorded no "
    "request for it.",
    "",
    "| kills | rows sending / calls in flight per kill | messages | sent | failed | failed "
    "as interrupted | **failed without a provider call** | interrupted attempt counted, "
    "never called (msgs) | lost | duplicates | all terminal after the last kill |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def drained(seconds: float | None) -> str:
    return f"{seconds:.0f} s" if seconds is not None else "DEADLINE"


def outage_lines(outages: list[dict], missed: list[str]) -> list[str]:
    lines = list(OUTAGE_HEAD)
    for phase in outages:
        s, held = phase["stats"], phase["held"]
        dropped, restored, _ = phase["restored"]
        lines.append(
            f"| {phase['how']} | {phase['down']:.1f} s | {held['unacked']} | {held['deferred']} / "
            f"{held['sending']} | {dropped} | {restored} | {s['messages']} | {s['sent']} | "
            f"{s['failed']} | {s['lost']} | {s['duplicates']} | {drained(phase['drain'])} | "
            f"{'yes' if phase['same_pids'] else 'NO'} | {phase['exits']} |"
        )
        if s["lost"] or phase["drain"] is None:
            missed.append(f"Redis outage ({phase['how']}): {s['lost']} lost")
        if phase["exits"] or not phase["same_pids"]:
            missed.append(f"Redis outage ({phase['how']}): a worker exited")
    return lines


def crash_lines(crash: dict, missed: list[str]) -> list[str]:
    s = crash["stats"]
    per_kill = ", ".join(f"{k['sending']}/{k['calls']}" for k in crash["kills"])
    if s["failed_without_call"]:
        missed.append(f"crash count: {s['failed_without_call']} failed without a provider call")
    if s["lost"] or crash["drain"] is None:
        missed.append(f"crash count: {s['lost']} lost")
    return [
        *CRASH_HEAD,
        f"| {len(crash['kills'])} | {per_kill} | {s['messages']} | {s['sent']} | {s['failed']} "
        f"| {s['failed_interrupted']} | **{s['failed_without_call']}** | "
        f"{s['interrupted_without_call']} | {s['lost']} | {s['duplicates']} | "
        f"{drained(crash['drain'])} |",
    ]


def exit_lines(stack: Stack, missed: list[str]) -> list[str]:
    lines = ["", "## Worker and beat exits the harness did not cause", ""]
    starts = ", ".join(f"{name} {n}" for name, n in sorted(stack.worker_starts.items()))
    lines.append(f"- worker starts (the harness's own kill -9 + restart included): {starts}")
    if not stack.unexpected_exits:
        return [*lines, "- none: every exit was the harness's own kill -9 or stop"]
    lines += ["", "| process | pid | exit code | when (UTC) |", "|---|---:|---:|---|"]
    for e in stack.unexpected_exits:
        when = dt.datetime.fromtimestamp(e["time"], dt.UTC).strftime("%H:%M:%S")
        lines.append(f"| {e['name']} | {e['pid']} | {e['rc']} | {when} |")
    missed.append(f"{len(stack.unexpected_exits)} worker/beat process(es) exited unexpectedly")
    return lines


def phase_lines(phases: dict, stack: Stack) -> tuple[list[str], list[str]]:
    """The report's sections for the outage and crash phases and for unexpected exits."""
    missed: list[str] = []
    lines = outage_lines(phases.get("outage", []), missed)
    if phases.get("crash"):
        lines += crash_lines(phases["crash"], missed)
    if phases.get("not_run"):
        lines.append("")
    for reason in phases.get("not_run", []):
        lines.append(f"- NOT RUN: {reason}")
        missed.append(f"phase not run: {reason}")
    lines += exit_lines(stack, missed)
    return lines, missed

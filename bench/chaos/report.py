"""The chaos run's Markdown report, and the targets it missed."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform

from bench.chaos import config
from bench.chaos.config import LATENCY_MS, PROVIDERS, SETTINGS_ENV, sandbox_rate
from bench.chaos.phases_report import phase_lines
from bench.chaos.receipts_report import receipt_section
from bench.chaos.scenario import Chaos
from bench.chaos.stack import Stack
from bench.chaos.workload import Events

FAULT_LABELS = {
    "outage_503": "503 for {:.0f} s",
    "timeout": "timeout for {:.0f} s",
    "throttle_429": "429 retry_after=3 for {:.0f} s",
}
TARGETS_MET = (
    "- all met: 0 lost, duplicates <= in-flight and visible, recovery <= 120 s, never above "
    "the limit; Redis outages: 0 lost, 0 worker exits; crash count: 0 messages failed "
    "without a provider call; 0 unexpected worker or beat exits; receipts: 0 messages in a "
    "wrong status, 0 events lost to the receiver down for 60 s, 0 signature failures"
)


def fmt_t(ts: float, t0: float) -> str:
    return (
        f"{dt.datetime.fromtimestamp(ts, dt.UTC).strftime('%H:%M:%S.%f')[:-3]} (t+{ts - t0:.1f} s)"
    )


def header(args: argparse.Namespace, res: dict, timing: dict) -> list[str]:
    load = os.getloadavg()
    return [
        "# Chaos run",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- uname: {' '.join(platform.uname())}",
        f"- nproc: {os.cpu_count()}; load average at start {timing['load_start']}, at end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- command: `python -m bench.chaos --messages {args.messages} --orgs {args.orgs}"
        f"{' --quick' if args.quick else ''}` (seed {args.seed})",
        f"- settings: {', '.join(f'{k}={v}' for k, v in SETTINGS_ENV.items())}; "
        f"sandbox --latency-ms {LATENCY_MS}; extra.rate_limit_per_second={config.RATE_LIMIT:g} "
        f"on every integration; sandbox accounts throttle at {sandbox_rate()}/s (telegram: 30/s "
        "per bot, 1/s per chat, one chat per message); 2 workers --pool threads --concurrency "
        "32, beat, gunicorn -w 2 --threads 4; own redis-server (no persistence) and Postgres DB "
        "corbi_chaos",
        f"- run time: setup {timing['setup']:.0f} s, enqueue {timing['enqueue']:.0f} s, "
        f"until all terminal {timing['drain']:.0f} s after t0, total {timing['total']:.0f} s"
        + (" — DEADLINE HIT" if res["deadline_hit"] else ""),
        f"- messages: {res['expected']} requested, {res['rows']} rows in the DB, "
        f"{args.orgs} organizations x {len(PROVIDERS)} providers",
    ]


def scenario_log(events: Events, t0_wall: float) -> list[str]:
    lines = ["", "## Scenario log", "", "| when (UTC) | event | detail |", "|---|---|---|"]
    for ts, what, detail in sorted(events, key=lambda e: e[0]):
        lines.append(f"| {fmt_t(ts, t0_wall)} | {what} | {detail} |")
    return lines


def fault_cells(provider: str, info: dict, orgs: int, missed: list[str]) -> tuple[str, str, str]:
    """(recovery, max req/s per account during the fault, all accounts) of a faulted provider."""
    if "fault" not in info:
        return "—", "—", "—"
    if info["recovery"] is None:
        rec = "not recovered"
        missed.append(f"{provider}: not all messages sent by the deadline")
    else:
        rec = f"{info['recovery']:.1f} s ({info['recovery_before']:.1f} s)"
        if info["recovery"] > 120:
            missed.append(f"{provider}: recovery {info['recovery']:.0f} s > 120 s")
    limit = config.RATE_LIMIT
    if info["outage_max_per_account"] > limit + 1:
        missed.append(
            f"{provider}: {info['outage_max_per_account']} requests in 1 s on one account "
            f"during the fault > limit {limit:g} (+1 burst)"
        )
    rate = f"{info['outage_max_per_account']} ({limit:g}/s)"
    return rec, rate, f"{info['outage_max_all']} ({limit * orgs:g}/s)"


def provider_table(
    res: dict, chaos: Chaos, orgs: int, t0_wall: float, missed: list[str]
) -> list[str]:
    scenario = {"sendgrid": "control (kills + Redis restart only)"}
    for provider, fault in chaos.faults.items():
        scenario[provider] = FAULT_LABELS[fault["kind"]].format(fault["seconds"])
    lines = [
        "",
        "## Results per provider",
        "",
        "| provider | scenario | messages | sent | failed | lost | duplicates (msgs) | "
        "visible | send requests | 2xx | attempt rows | recovery after fault end | "
        "max req/s per account during fault (limit) | all accounts | max req/s per account, whole run |"
        " last sent |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for provider in PROVIDERS:
        info = res["providers"][provider]
        s = info["stats"]
        rec, rate, rate_all = fault_cells(provider, info, orgs, missed)
        if info["run_max_per_account"] > config.RATE_LIMIT + 1:
            missed.append(
                f"{provider}: {info['run_max_per_account']} requests in 1 s on one account "
                f"during the run > limit {config.RATE_LIMIT:g} (+1 burst)"
            )
        lines.append(
            f"| {provider} | {scenario[provider]} | {s['messages']} | {s['sent']} | {s['failed']} | "
            f"{s['lost']} | {s['duplicates']} ({s['dup_messages']}) | {s['dup_visible']}/"
            f"{s['dup_messages']} | {s['requests']} | {s['accepted_2xx']} | {s['attempt_rows']} | "
            f"{rec} | {rate} | {rate_all} | {info['run_max_per_account']} | "
            f"t+{info['last_sent'] - t0_wall:.0f} s |"
        )
    t = res["total"]
    lines.append(
        f"| **total** | | {t['messages']} | {t['sent']} | {t['failed']} | {t['lost']} | "
        f"{t['duplicates']} ({t['dup_messages']}) | {t['dup_visible']}/{t['dup_messages']} | "
        f"{t['requests']} | {t['accepted_2xx']} | {t['attempt_rows']} | | | | | |"
    )
    return lines


def notes(res: dict, kills: list[dict], t0_wall: float, leaks: list[str]) -> list[str]:
    t = res["total"]
    bound = sum(k["in_flight"] for k in kills)
    busiest = "; ".join(
        f"{p} at t+{times[0] - t0_wall:.2f} s ("
        + ", ".join(f"+{t - times[0]:.2f}" for t in times)
        + ")"
        for p in PROVIDERS
        if (times := res["providers"][p]["run_max_times"])
    )
    outcomes = "; ".join(
        f"{p}: " + ", ".join(f"{k} {v}" for k, v in sorted(res["providers"][p]["outcomes"].items()))
        for p in PROVIDERS
    )
    return [
        "",
        f"- in-flight bound: {len(kills)} kill -9s with {bound} rows in `sending` in total at the "
        f"moments of the kills (per kill: {', '.join(str(k['in_flight']) for k in kills)}); "
        f"duplicates {t['duplicates']} {'<=' if t['duplicates'] <= bound else '>'} {bound}",
        f"- interrupted attempts (message.attempts minus its MessageAttempt rows, summed): "
        f"{t['interrupted']}",
        f"- lost = not terminal by the deadline ({t['lost_not_terminal']}) + `sent` without a 2xx "
        f"recorded by the sandbox ({t['lost_sent_unrecorded']}); rows missing entirely: "
        f"{res['expected'] - res['rows']}",
        "- recovery = last `sent_at` of the provider's messages minus the fault's end (in "
        "brackets: only messages created before the fault ended); `last sent` shows when each "
        "provider, faulted or not, finished: when they all finish together the backlog (CPU), "
        "not the fault, sets the recovery time",
        "- duplicate = the sandbox answered 2xx to the same marker more than once; visible = "
        "message.attempts > its MessageAttempt rows (an interrupted attempt)",
        "- req/s = most sandbox-recorded send requests (any status) in any sliding 1 s window; "
        "GCRA with burst 1 fits limit+1 into a closed 1 s window, so the check is <= limit + 1",
        "- busiest 1 s window on one account, whole run: " + busiest,
        "- sandbox outcomes: " + outcomes,
        f"- token leak check over var/chaos/*.log: {', '.join(leaks) if leaks else 'none found'}",
    ]


def detail_tables(res: dict) -> list[str]:
    """Failures, messages not terminal at the deadline, and duplicates (50 rows at most)."""
    lines: list[str] = []
    if res["failures"]:
        lines += ["", "### Failures", "", "| provider | kind | last error | count |"]
        lines.append("|---|---|---|---:|")
        for (provider, kind, error), n in res["failures"].most_common():
            lines.append(f"| {provider} | {kind} | {error} | {n} |")
    if res["stuck"]:
        lines += ["", "### Not terminal at the deadline", ""]
        lines.append(
            "| provider | message id | status | attempts | attempt rows | error kind | last error |"
        )
        lines.append("|---|---:|---|---:|---:|---|---|")
        for provider, mid, status, attempts, nrows, kind, error in res["stuck"][:50]:
            lines.append(
                f"| {provider} | {mid} | {status} | {attempts} | {nrows} | {kind} | {error} |"
            )
    dups = [(p, d) for p in PROVIDERS for d in res["providers"][p]["dups"]]
    if dups:
        lines += ["", "### Duplicates", ""]
        lines.append("| provider | message id | marker | 2xx copies | attempts | attempt rows |")
        lines.append("|---|---:|---|---:|---:|---:|")
        for provider, (mid, marker, copies, attempts, nrows) in dups[:50]:
            lines.append(f"| {provider} | {mid} | {marker} | {copies} | {attempts} | {nrows} |")
    return lines


def main_run_missed(res: dict, kills: list[dict], leaks: list[str]) -> list[str]:
    t = res["total"]
    bound = sum(k["in_flight"] for k in kills)
    missed = []
    if t["failed"]:
        missed.append(f"{t['failed']} message(s) failed permanently under transient faults")
    if t["lost"] or res["rows"] != res["expected"]:
        missed.append(f"{t['lost']} lost, {res['expected'] - res['rows']} rows missing")
    if t["duplicates"] > bound:
        missed.append(f"duplicates {t['duplicates']} > in-flight bound {bound}")
    if t["dup_visible"] != t["dup_messages"]:
        missed.append(
            f"{t['dup_messages'] - t['dup_visible']} duplicate(s) not visible in our records"
        )
    if leaks:
        missed.append(f"token leaks in logs: {', '.join(leaks)}")
    return missed


def report(
    args: argparse.Namespace,
    res: dict,
    chaos: Chaos,
    events: Events,
    t0_wall: float,
    timing: dict,
    leaks: list[str],
    phases: dict,
    stack: Stack,
) -> tuple[str, list[str]]:
    missed: list[str] = []
    lines = header(args, res, timing) + scenario_log(events, t0_wall)
    lines += provider_table(res, chaos, args.orgs, t0_wall, missed)
    lines += notes(res, chaos.kills, t0_wall, leaks) + detail_tables(res)
    missed += main_run_missed(res, chaos.kills, leaks)
    more, more_missed = phase_lines(phases, stack)
    lines += more
    missed += more_missed
    if phases.get("receipts"):
        more, more_missed = receipt_section(phases["receipts"])
        lines += more
        missed += more_missed
    lines += ["", "## Targets", ""]
    lines += [f"- MISSED: {m}" for m in missed] or [TARGETS_MET]
    return "\n".join(lines) + "\n", missed


def receipts_report(
    args: argparse.Namespace, phases: dict, events: Events, t0_wall: float, timing: dict
) -> tuple[str, list[str]]:
    """`--receipts-only`: the receipt phase's section alone."""
    load = os.getloadavg()
    lines = [
        "# Chaos run: receipt phase only",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- nproc: {os.cpu_count()}; load average at start {timing['load_start']}, at end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- command: `python -m bench.chaos --receipts-only{' --quick' if args.quick else ''}` "
        f"(setup {timing['setup']:.0f} s, total {timing['total']:.0f} s)",
    ]
    lines += scenario_log(events, t0_wall)
    missed: list[str] = []
    if phases.get("receipts"):
        more, missed = receipt_section(phases["receipts"])
        lines += more
    for reason in phases.get("not_run", []):
        lines.append(f"- NOT RUN: {reason}")
        missed.append(f"phase not run: {reason}")
    lines += ["", "## Targets", ""]
    lines += [f"- MISSED: {m}" for m in missed] or ["- all met"]
    return "\n".join(lines) + "\n", missed

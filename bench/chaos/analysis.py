"""What the main run did, per provider: from our rows and from the sandbox's own record."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from bench.chaos.config import LOG_DIR, MARKER, PROVIDERS, SEND_PATH
from bench.chaos.scenario import Chaos
from bench.chaos.stack import Stack
from sandbox.testing import SandboxClient


def max_in_window(times: list[float], width: float = 1.0) -> int:
    return busiest_window(times, width)[0]


def busiest_window(times: list[float], width: float = 1.0) -> tuple[int, list[float]]:
    """The most requests in any `width`-second window, and their times."""
    times = sorted(times)
    best, at = 0, (0, 0)
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, (j, i + 1)
    return best, times[at[0] : at[1]]


class Recorded:
    """The sandbox's send requests per provider: outcomes, 2xx per marker, times per org."""

    def __init__(self, stack: Stack) -> None:
        sandbox = SandboxClient(stack.sandbox_url)
        self.requests: dict[str, list[dict]] = {
            p: [r for r in sandbox.requests(p) if r["path"].endswith(SEND_PATH[p])]
            for p in PROVIDERS
        }
        self.accepted: dict[str, Counter] = {p: Counter() for p in PROVIDERS}
        self.per_org_times: dict[str, dict[int, list[float]]] = {
            p: defaultdict(list) for p in PROVIDERS
        }
        self.outcomes: dict[str, Counter] = {p: Counter() for p in PROVIDERS}
        for provider, entries in self.requests.items():
            for r in entries:
                self.outcomes[provider][r.get("outcome") or str(r.get("status"))] += 1
                match = MARKER.search(json.dumps(r.get("body")))
                if not match:
                    continue
                self.per_org_times[provider][int(match.group(1))].append(r["time"])
                status = r.get("status")
                if status is not None and 200 <= status < 300:
                    self.accepted[provider][match.group(0)] += 1


def message_rows() -> tuple[list[dict], dict[int, int]]:
    """The main run's messages, and the MessageAttempt rows per message id."""
    from django.db.models import Count

    from shared.models import Message, MessageAttempt

    rows = list(
        Message.objects.filter(body__startswith="chaos o").values(
            "id", "provider", "body", "status", "attempts", "retries", "sent_at", "created_at",
            "error_kind", "last_error",
        )
    )  # fmt: skip
    attempt_rows = dict(
        MessageAttempt.objects.values("message_id")
        .annotate(n=Count("id"))
        .values_list("message_id", "n")
    )
    return rows, attempt_rows


def provider_stats(
    provider: str, mine: list[dict], attempt_rows: dict[int, int], rec: Recorded, result: dict
) -> tuple[Counter, list[tuple], float]:
    """Counts for one provider's messages, its duplicates, and its last `sent_at`."""
    stats = Counter(messages=len(mine))
    dup_details = []
    last_sent = 0.0
    for m in mine:
        marker = MARKER.search(m["body"]).group(0)
        copies = rec.accepted[provider][marker]
        rows_of_m = attempt_rows.get(m["id"], 0)
        status = m["status"]
        if status == "sent":
            stats["sent"] += 1
            last_sent = max(last_sent, m["sent_at"].timestamp())
            if copies == 0:
                stats["lost"] += 1
                stats["lost_sent_unrecorded"] += 1
        elif status == "failed":
            stats["failed"] += 1
            result["failures"][(provider, m["error_kind"], m["last_error"][:90])] += 1
        else:
            stats["lost"] += 1
            stats["lost_not_terminal"] += 1
            result["stuck"].append(
                (provider, m["id"], status, m["attempts"], rows_of_m, m["error_kind"],
                 m["last_error"][:70])
            )  # fmt: skip
        stats["interrupted"] += max(0, m["attempts"] - rows_of_m)
        if copies > 1:
            stats["duplicates"] += copies - 1
            stats["dup_messages"] += 1
            stats["dup_visible"] += int(m["attempts"] > rows_of_m)
            dup_details.append((m["id"], marker, copies, m["attempts"], rows_of_m))
        stats["attempt_rows"] += rows_of_m
    stats["requests"] = len(rec.requests[provider])
    stats["accepted_2xx"] = sum(rec.accepted[provider].values())
    return stats, dup_details, last_sent


def fault_info(fault: dict, mine: list[dict], stats: Counter, info: dict, times: dict) -> None:
    """Recovery after the fault's end, and the request rates during it (into `info`)."""
    done = stats["sent"] + stats["failed"] == stats["messages"] and not stats["lost"]
    info["recovery"] = max(0.0, info["last_sent"] - fault["end"]) if done else None
    # the same, only for messages created before the fault ended (no later backlog)
    before = [
        m["sent_at"].timestamp()
        for m in mine
        if m["created_at"].timestamp() <= fault["end"] and m["sent_at"]
    ]
    info["recovery_before"] = max(0.0, max(before, default=0.0) - fault["end"])
    per_org_max = 0
    all_times = []
    for org_times in times.values():
        during = [t for t in org_times if fault["start"] <= t <= fault["end"]]
        all_times += during
        per_org_max = max(per_org_max, max_in_window(during))
    info["outage_max_per_account"] = per_org_max
    info["outage_max_all"] = max_in_window(all_times)
    info["outage_requests"] = len(all_times)
    info["fault"] = fault


def analyse(stack: Stack, chaos: Chaos, deadline_hit: bool, total: int) -> dict:
    rec = Recorded(stack)
    rows, attempt_rows = message_rows()
    result: dict = {"providers": {}, "total": Counter(), "failures": Counter(), "stuck": []}
    for provider in PROVIDERS:
        mine = [m for m in rows if m["provider"] == provider]
        stats, dups, last_sent = provider_stats(provider, mine, attempt_rows, rec, result)
        info: dict = {
            "stats": stats,
            "dups": dups,
            "outcomes": rec.outcomes[provider],
            "last_sent": last_sent,
        }
        fault = chaos.faults.get(provider)
        if fault:
            fault_info(fault, mine, stats, info, rec.per_org_times[provider])
        # the whole run, any account: is the shared limiter holding?
        info["run_max_per_account"], info["run_max_times"] = max(
            (busiest_window(t) for t in rec.per_org_times[provider].values()), default=(0, [])
        )
        result["providers"][provider] = info
        result["total"].update(stats)
    result["expected"] = total
    result["rows"] = len(rows)
    result["deadline_hit"] = deadline_hit
    return result


def leak_check(orgs: list[dict]) -> list[str]:
    """Token fragments (12 chars) found in any of our logs: each is a product bug."""
    text = "\n".join(p.read_text(errors="replace") for p in LOG_DIR.glob("*.log"))
    leaks = []
    for org in orgs:
        for provider, token in org["tokens"].items():
            secret = token.split(".", 1)[-1] if provider == "sendgrid" else token
            secret = secret.split(":", 1)[-1]
            if any(secret[i : i + 12] in text for i in range(0, len(secret) - 11, 4)):
                leaks.append(f"{provider} token of {org['org']}")
    return leaks

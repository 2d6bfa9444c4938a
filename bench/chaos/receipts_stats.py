"""The receipt phase's figures: final statuses against the expected ones, receipts by outcome,
the sandbox's duplicated and reordered callbacks, and the events the receiver got."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from itertools import pairwise

from bench.chaos.phases import sandbox_calls
from bench.chaos.receiver import EventReceiver
from bench.chaos.stack import Stack
from devtools.commands import http_session
from sandbox.testing import SandboxClient

EVENT_FOR = {
    "sent": "message.sent",
    "delivered": "message.delivered",
    "read": "message.read",
    "undelivered": "message.failed",
    "bounced": "message.failed",
    "failed": "message.failed",
}
# The natural order of each provider's callbacks (lower first); out of order = posted otherwise.
RANK = {
    "queued": 0, "sent": 1, "delivered": 2, "undelivered": 2, "failed": 2, "read": 3,
    "processed": 0, "deferred": 1, "bounce": 2, "dropped": 2, "open": 3, "click": 4,
    "delivery": 2, "message_delivery": 2, "read_receipt": 3, "messaging_seen": 3,
}  # fmt: skip
LABEL = re.compile(r'(\w+)="([^"]*)"')


def rows(org: dict) -> list[dict]:
    from shared.models import Message

    return list(
        Message.objects.filter(organization_id=org["org_id"]).values(
            "id", "idempotency_key", "provider", "status"
        )
    )


def expected_pairs(messages: list[dict], expected: dict[str, str]) -> set[tuple[int, str]]:
    """(message id, event type) every message must announce: message.sent and its final one."""
    pairs = set()
    for m in messages:
        pairs.add((m["id"], "message.sent"))
        pairs.add((m["id"], EVENT_FOR[expected[m["idempotency_key"]]]))
    return pairs


def received_pairs(events: dict[str, dict]) -> set[tuple[int, str]]:
    return {(e["data"].get("message_id"), e["type"]) for e in events.values()}


def emitted_ids(org: dict) -> set[str]:
    from shared.events.models import Event

    return set(
        Event.objects.filter(organization_id=org["org_id"]).values_list("public_id", flat=True)
    )


def converged(org: dict, expected: dict[str, str], receiver: EventReceiver) -> bool:
    """Every message at its expected status, every event emitted and expected received."""
    messages = rows(org)
    if len(messages) < len(expected):
        return False
    if any(m["status"] != expected[m["idempotency_key"]] for m in messages):
        return False
    received, events = receiver.snapshot()
    if not emitted_ids(org) <= set(received):
        return False
    return expected_pairs(messages, expected) <= received_pairs(events)


def status_table(messages: list[dict], expected: dict[str, str]) -> tuple[dict, list[dict]]:
    """{(provider, expected): Counter(messages, wrong, <actual status>...)} and the wrong rows."""
    table: dict[tuple[str, str], Counter] = defaultdict(Counter)
    wrong = []
    for m in messages:
        want = expected[m["idempotency_key"]]
        cell = table[(m["provider"], want)]
        cell["messages"] += 1
        cell[m["status"]] += 1
        if m["status"] != want:
            cell["wrong"] += 1
            wrong.append({**m, "expected": want})
    return dict(table), wrong


def receipt_rows(org: dict, wrong: list[dict]) -> dict:
    """MessageEvent rows per provider by `applied`, receipts kept unmatched, and the stored
    receipts of the wrong messages (for the report)."""
    from shared.models import MessageEvent, UnmatchedReceipt

    by_applied: dict[str, Counter] = defaultdict(Counter)
    events = MessageEvent.objects.filter(organization_id=org["org_id"])
    for provider, applied in events.values_list("provider", "applied"):
        by_applied[provider][{True: "applied", False: "not moved", None: "waiting"}[applied]] += 1
    trail = {
        m["id"]: list(
            events.filter(message_id=m["id"])
            .order_by("received_at")
            .values_list("provider_status", "status", "applied")
        )
        for m in wrong[:20]
    }
    return {
        "by_applied": dict(by_applied),
        "unmatched_left": UnmatchedReceipt.objects.count(),
        "trail": trail,
    }


def other_sends(org: dict, tag: str, stack: Stack) -> dict:
    """Sends the sandbox accepted more than once (a kill -9 between the provider's answer and
    our record of it), and receipts stored on a message that name a provider id other than the
    one the message recorded (the receipts of such an orphaned send), by `applied`."""
    from shared.models import MessageEvent

    _, accepted, _ = sandbox_calls(stack, tag)
    foreign: Counter = Counter()
    events = MessageEvent.objects.filter(organization_id=org["org_id"])
    for raw, recorded, applied in events.values_list(
        "raw", "message__provider_message_id", "applied"
    ):
        pid = raw.get("MessageSid") or raw.get("mid") or str(raw.get("sg_message_id", ""))
        if pid and recorded and pid.split(".")[0] != recorded:
            foreign[{True: "applied", False: "not moved", None: "waiting"}[applied]] += 1
    return {
        "resent": sum(n > 1 for n in accepted.values()),
        "extra_sends": sum(max(0, n - 1) for n in accepted.values()),
        "foreign": foreign,
    }


def metric_receipts(stack: Stack) -> Counter:
    """corbi_receipts_total by (provider, outcome), from GET /metrics."""
    counts: Counter = Counter()
    r = http_session().get(stack.web + "/metrics", timeout=30)
    for line in r.text.splitlines():
        if line.startswith("corbi_receipts_total{"):
            labels = dict(LABEL.findall(line.split("}", 1)[0]))
            key = (labels.get("provider", "?"), labels.get("outcome", "?"))
            counts[key] += int(float(line.rsplit(" ", 1)[1]))
    if not counts:
        counts[("?", f"none in /metrics (HTTP {r.status_code})")] = 0
    return counts


def callback_stats(stack: Stack, since: int) -> dict[str, Counter]:
    """Per provider: webhooks the sandbox scheduled since `since`, duplicates, by outcome, and
    the messages whose webhooks it posted out of their natural order."""
    stats: dict[str, Counter] = defaultdict(Counter)
    posted: dict[tuple[str, str], list] = defaultdict(list)
    for c in SandboxClient(stack.sandbox_url).callbacks(since=since):
        if c.get("kind") == "verification":
            continue
        s = stats[c["provider"]]
        s["webhooks"] += 1
        s["duplicates"] += int(bool(c.get("duplicate")))
        s[f"outcome {c.get('outcome')}"] += 1
        s["retried"] += int(len(c.get("attempts") or []) > 1)
        if not c.get("duplicate"):
            first = (c.get("attempts") or [{}])[0].get("time") or c.get("time") or 0
            ranks = [RANK.get(str(e), 0) for e in c.get("events") or []]
            posted[(c["provider"], c.get("message_id"))].append((first, min(ranks, default=0)))
    for (provider, _), seq in posted.items():
        ranks = [rank for _, rank in sorted(seq)]
        stats[provider]["messages"] += 1
        stats[provider]["out_of_order"] += int(ranks != sorted(ranks))
    return dict(stats)


STATUS_RANK = {"sent": 1, "delivered": 2, "undelivered": 3, "bounced": 3, "read": 4, "failed": 5}


def backwards(org: dict) -> int:
    """Messages whose message.* events, in the order they were emitted, do not move strictly
    forward (a status announced again, or a lower one after a higher one)."""
    from shared.events.models import Event

    seen: dict[int, list[int]] = defaultdict(list)
    events = Event.objects.filter(organization_id=org["org_id"], type__startswith="message.")
    for data in events.order_by("created_at", "pk").values_list("data", flat=True):
        seen[data["message_id"]].append(STATUS_RANK.get(data["status"], 0))
    return sum(any(b <= a for a, b in pairwise(r)) for r in seen.values())


def event_stats(org: dict, messages: list[dict], expected: dict, receiver: EventReceiver) -> dict:
    from shared.events.models import EventDelivery

    received, events = receiver.snapshot()
    emitted = emitted_ids(org)
    deliveries = EventDelivery.objects.filter(event__organization_id=org["org_id"])
    missing = expected_pairs(messages, expected) - received_pairs(events)
    return {
        "emitted": len(emitted),
        "backwards": backwards(org),
        "emitted_by_type": Counter(deliveries.values_list("event__type", flat=True)),
        "received_unique": len(received),
        "lost": len(emitted - set(received)),
        "expected_pairs": len(expected_pairs(messages, expected)),
        "expected_missing": len(missing),
        "missing_examples": sorted(missing, key=str)[:10],
        "duplicates": sum(n - 1 for n in received.values()),
        "posts": receiver.posts,
        "bad_signatures": receiver.bad_signatures,
        "unknown_ids": len(set(received) - emitted),
        "deliveries": Counter(deliveries.values_list("status", flat=True)),
        "retried": deliveries.filter(attempts__gt=1).count(),
        "max_attempts": max(deliveries.values_list("attempts", flat=True), default=0),
    }


def collect(
    stack: Stack, org: dict, tag: str, expected: dict, receiver: EventReceiver, since: int
) -> dict:
    messages = rows(org)
    table, wrong = status_table(messages, expected)
    return {
        "table": table,
        "wrong": wrong,
        "rows": len(messages),
        "receipts": receipt_rows(org, wrong),
        "metrics": metric_receipts(stack),
        "sends": other_sends(org, tag, stack),
        "callbacks": callback_stats(stack, since),
        "events": event_stats(org, messages, expected, receiver),
    }

"""The report's section for the receipt phase, and the targets it missed."""

from __future__ import annotations

from bench.chaos.receipts import RECEIVER_ANSWER_AFTER, RECEIVER_DOWN_SECONDS, SEND_LATENCY_MS

PROVIDERS = ("whatsapp", "sendgrid", "instagram", "telegram")


def head(phase: dict) -> list[str]:
    env = ", ".join(f"{k}={v}" for k, v in phase["env"].items())
    sandbox = ", ".join(f"{k}={v}" for k, v in phase["sandbox_config"].items())
    settled = f"{phase['settled']:.0f} s" if phase["settled"] is not None else "DEADLINE"
    kills = ", ".join(
        f"{k['name']} ({k['sending']} messages / {k['posting']} event deliveries sending)"
        for k in phase["kills"]
    )
    return [
        "",
        "## Receipts in, events out: duplicated and reordered callbacks, kill -9s, receiver down",
        "",
        f"One org, {phase['count']} messages over WhatsApp, SendGrid, Instagram and Telegram to "
        "magic recipients, so each message's final status is known before it is sent. Web and "
        "workers restarted for the phase with PUBLIC_BASE_URL = the chaos web URL, the Meta app "
        "secret and verify token, the SendGrid Event Webhook at the integration's "
        "`receipts_url` (signed with the sandbox's key) and the sandbox's Meta subscription. An "
        "org webhook endpoint points at a receiver in the harness (127.0.0.1) that verifies "
        "every delivery with `standardwebhooks.Webhook(secret).verify` and records event ids.",
        "",
        f"- stack env for the phase: {env} (a short WEBHOOK_RETRY_SCHEDULE_SECONDS, so a 60 s "
        "outage does not wait the product schedule's 5 min for the next attempt)",
        f"- sandbox: {sandbox}; sends answered after {SEND_LATENCY_MS} ms while the posts "
        "last (so kills find messages in `sending`)",
        f"- worker kill -9s (restarted at once): {len(phase['kills'])}: {kills}",
        f"- receiver down (connections refused): {phase['downtime']:.1f} s in total "
        f"(target {RECEIVER_DOWN_SECONDS:.0f} s); while up it records each delivery, then "
        f"answers {RECEIVER_ANSWER_AFTER} s later (so a kill -9 finds deliveries in flight)",
        f"- every message at its expected status and every event received: {settled} after "
        "the first post",
    ]


def status_lines(phase: dict) -> list[str]:
    lines = [
        "",
        "| provider | recipient's expected final status | messages | at that status | "
        "**wrong status** | statuses found |",
        "|---|---|---:|---:|---:|---|",
    ]
    for (provider, want), cell in sorted(phase["table"].items()):
        found = ", ".join(
            f"{k} {v}" for k, v in sorted(cell.items()) if k not in ("messages", "wrong")
        )
        lines.append(
            f"| {provider} | {want} | {cell['messages']} | {cell[want]} | **{cell['wrong']}** "
            f"| {found} |"
        )
    wrong = len(phase["wrong"])
    lines.append(f"| **total** | | {phase['rows']} | {phase['rows'] - wrong} | **{wrong}** | |")
    for m in phase["wrong"][:20]:
        trail = phase["receipts"]["trail"].get(m["id"], [])
        lines.append(
            f"- wrong: message {m['id']} ({m['provider']}) {m['status']}, expected "
            f"{m['expected']}; receipts stored (provider status, ours, applied): {trail}"
        )
    return lines


def receipt_lines(phase: dict) -> list[str]:
    metrics, by_applied = phase["metrics"], phase["receipts"]["by_applied"]
    outcomes = sorted({o for _, o in metrics})
    lines = [
        "",
        "| provider | webhooks the sandbox sent | of those duplicates | messages with webhooks "
        "out of order | webhooks retried by the sandbox | MessageEvent rows (applied / not "
        "moved / waiting) | corbi_receipts_total: " + ", ".join(outcomes) + " |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for provider in PROVIDERS[:3]:
        cb = phase["callbacks"].get(provider, {})
        rows = by_applied.get(provider, {})
        counts = " / ".join(str(rows.get(k, 0)) for k in ("applied", "not moved", "waiting"))
        metric = ", ".join(str(metrics.get((provider, o), 0)) for o in outcomes)
        lines.append(
            f"| {provider} | {cb.get('webhooks', 0)} | {cb.get('duplicates', 0)} | "
            f"{cb.get('out_of_order', 0)}/{cb.get('messages', 0)} | {cb.get('retried', 0)} | "
            f"{counts} | {metric} |"
        )
    outs = {
        p: ", ".join(f"{k[8:]} {v}" for k, v in sorted(c.items()) if k.startswith("outcome "))
        for p, c in phase["callbacks"].items()
    }
    lines.append(f"- sandbox webhook outcomes: {outs}")
    sends = phase["sends"]
    foreign = ", ".join(f"{k} {v}" for k, v in sorted(sends["foreign"].items())) or "none"
    lines.append(
        f"- messages the sandbox accepted more than once (a kill -9 between its answer and our "
        f"record): {sends['resent']} ({sends['extra_sends']} extra sends); receipts stored on a "
        f"message naming another send's provider id: {foreign}"
    )
    lines.append(
        f"- receipts kept unmatched at the end (UnmatchedReceipt rows): "
        f"{phase['receipts']['unmatched_left']}"
    )
    return lines


def event_lines(phase: dict) -> list[str]:
    e = phase["events"]
    types = ", ".join(f"{k} {v}" for k, v in sorted(e["emitted_by_type"].items()))
    states = ", ".join(f"{k} {v}" for k, v in sorted(e["deliveries"].items()))
    lines = [
        "",
        "| events emitted (Event rows) | received (unique ids) | **lost** (emitted, never "
        "received) | expected (message, type) pairs: message.sent + the final status' event | "
        "**expected pairs never received** | duplicates received (at least once) | **signature "
        "failures** | deliveries posted | deliveries retried | most attempts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {e['emitted']} | {e['received_unique']} | **{e['lost']}** | {e['expected_pairs']} | "
        f"**{e['expected_missing']}** | {e['duplicates']} | **{e['bad_signatures']}** | "
        f"{e['posts']} | {e['retried']} | {e['max_attempts']} |",
        "",
        f"- events by type: {types}; EventDelivery rows by status: {states}",
        f"- messages whose events (in emission order) did not move strictly forward: "
        f"**{e['backwards']}**",
    ]
    if e["missing_examples"]:
        lines.append(f"- expected pairs never received (first 10): {e['missing_examples']}")
    if e["unknown_ids"]:
        lines.append(f"- event ids received that are not in the DB: {e['unknown_ids']}")
    return lines


def receipt_missed(phase: dict) -> list[str]:
    e, missed = phase["events"], []
    if phase["wrong"]:
        missed.append(f"receipts: {len(phase['wrong'])} message(s) ended in a wrong status")
    if phase["rows"] != phase["count"]:
        missed.append(f"receipts: {phase['count'] - phase['rows']} message rows missing")
    if e["lost"] or e["expected_missing"]:
        missed.append(
            f"receipts: {e['lost']} event(s) lost, {e['expected_missing']} expected event(s) "
            "never received"
        )
    if e["backwards"]:
        missed.append(f"receipts: {e['backwards']} message(s) announced a status going back")
    if e["bad_signatures"]:
        missed.append(f"receipts: {e['bad_signatures']} signature failure(s) at the receiver")
    if phase["downtime"] < RECEIVER_DOWN_SECONDS - 1:
        missed.append(f"receipts: the receiver was down {phase['downtime']:.0f} s only")
    if phase["settled"] is None:
        missed.append("receipts: not settled by the deadline")
    return missed


def receipt_section(phase: dict) -> tuple[list[str], list[str]]:
    lines = head(phase) + status_lines(phase) + receipt_lines(phase) + event_lines(phase)
    return lines, receipt_missed(phase)

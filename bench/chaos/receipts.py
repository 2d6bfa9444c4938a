"""The receipt phase: signed provider callbacks come back duplicated and out of order while
workers are kill -9ed, and the org's webhook receiver is down for RECEIVER_DOWN_SECONDS.

Every message goes to a magic recipient, so its final status is known before it is sent.
"""

from __future__ import annotations

import secrets
import time

from bench.chaos.config import LOG_DIR, log, rand
from bench.chaos.phases import phase_rows, post_items
from bench.chaos.receipts_stats import collect, converged
from bench.chaos.receiver import EventReceiver
from bench.chaos.stack import Stack
from bench.chaos.workload import Events, create_admin
from devtools import commands
from devtools.commands import http_session
from devtools.procs import wait_for
from sandbox.testing import SandboxClient

TAG = "receipts"
ORG = 98  # the marker's org number of the receipt phase's organization
RECEIVER_DOWN_SECONDS = 60.0
SEND_LATENCY_MS = 1500  # the sandbox's answer time for sends during the paced posts
RECEIVER_ANSWER_AFTER = 0.5  # seconds the receiver takes to answer a delivery it recorded
RATE = 8.0  # extra.rate_limit_per_second of the phase's integrations
# A short event-out retry schedule, and a shorter delivery lease so a kill -9 mid-POST is
# re-sent within the phase.
RECEIPT_ENV = {
    "WEBHOOK_RETRY_SCHEDULE_SECONDS": "2,4,8,15,30,30,30,30,30",
    "WEBHOOK_TIMEOUT_SECONDS": "5",
    "WEBHOOK_LEASE_SECONDS": "20",
    "WEBHOOK_ALLOW_HTTP": "true",
    "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
}
SANDBOX_CONFIG = {
    "callback_order": "shuffled",
    "callback_duplicate_rate": 0.3,
    "callback_delay_ms": [20, 400],
}
# (provider, recipient ({n}: the message number), expected final status, weight)
CASES = [
    ("whatsapp", "+1415{n:07d}", "delivered", 3),
    ("whatsapp", "+15005550005", "read", 2),
    ("whatsapp", "+15005550007", "read", 1),  # sent/delivered/read posted reversed
    ("whatsapp", "+15005550008", "read", 1),  # every callback twice
    ("whatsapp", "+15005550003", "undelivered", 1),  # failed 63016, no sent callback
    ("whatsapp", "+15005550004", "undelivered", 1),  # sent, undelivered 63018
    ("sendgrid", "user{n}@example.test", "delivered", 2),
    ("sendgrid", "engaged@sandbox.test", "read", 2),  # processed, delivered, open, click
    ("sendgrid", "bounce@sandbox.test", "bounced", 1),
    ("sendgrid", "dropped@sandbox.test", "undelivered", 1),
    ("sendgrid", "reordered@sandbox.test", "read", 1),  # batches posted in reverse
    ("sendgrid", "duplicate@sandbox.test", "delivered", 1),  # every batch twice
    ("sendgrid", "deferred@sandbox.test", "delivered", 1),
    ("instagram", "{n:09d}", "read", 3),  # delivery, then messaging_seen
    ("instagram", "1001", "delivered", 2),  # delivery only
    ("instagram", "1002", "read", 1),  # seen first, then delivery
    ("instagram", "1003", "read", 1),  # both twice
    ("telegram", "{n}", "sent", 2),  # no receipts: sent is final
]
CYCLE = [(p, to, final) for p, to, final, weight in CASES for _ in range(weight)]


def plan(count: int) -> list[tuple[dict, str]]:
    """`count` bulk items, each with the status its receipts must end at."""
    out = []
    for n in range(count):
        provider, to, final = CYCLE[n % len(CYCLE)]
        number = 800_000_000 + n if provider == "instagram" else 3_000_000 + n
        item = {
            "provider": provider,
            "to": to.format(n=number),
            "body": f"{TAG} o{ORG:02d}-m{n:05d} your appointment is confirmed",
            "idempotency_key": f"{TAG}-{n}",
            # The magic bounce/dropped addresses repeat: after their first bounce they would be
            # suppressed (and fail `suppressed`, by design); this phase is about receipts.
            "transactional": True,
            "ignore_suppression": True,
        }
        if provider == "sendgrid":
            item["subject"] = "receipts"
        out.append((item, final))
    return out


# wiring ----------------------------------------------------------------------------------
def restart_web(stack: Stack) -> None:
    """gunicorn again on the same port, with the stack's (new) env."""
    port = int(stack.web.rsplit(":", 1)[1])
    old = stack.procs.get("gunicorn")
    if old is not None:
        stack.procs.stop(old)
    argv = commands.gunicorn(port, "--timeout", "60", "--log-level", "warning")
    proc = stack.procs.start("gunicorn", argv, stack.env)

    def answers() -> bool:
        return commands.http_status(stack.web + "/health/", timeout=3) is not None

    stack.procs.wait_ready(proc, answers, 60, "gunicorn (receipts env)", interval=0.2)


def restart_workers(stack: Stack) -> None:
    """Every worker stopped; w1 and w2 started on the receipt env, both ready."""
    from shared.metrics import Metrics

    for name in sorted(stack.workers):
        stack.stop_worker(name)
    started = time.monotonic()
    for name in ("w1", "w2"):
        stack.start_worker(name)
    metrics = Metrics.from_url(stack.redis_url)
    wait_for(
        lambda: (
            {"w1@chaos", "w2@chaos"} <= set(metrics.workers_seen_within(time.monotonic() - started))
        ),
        90,
        "both workers ready (receipts env)",
        interval=0.5,
    )


def rewire(stack: Stack) -> dict[str, str]:
    """PUBLIC_BASE_URL, the Meta app and the short retry schedule in the env of web and
    workers (both restarted); returns the Meta secrets."""
    meta = {"META_APP_SECRET": rand(40), "META_WEBHOOK_VERIFY_TOKEN": rand(24)}
    stack.env.update(RECEIPT_ENV, PUBLIC_BASE_URL=stack.web, **meta)
    restart_web(stack)
    restart_workers(stack)
    return meta


def connect_org(stack: Stack, meta: dict[str, str]) -> dict:
    """The phase's org: four integrations, sandbox accounts, the SendGrid Event Webhook at the
    integration's receipts_url and the sandbox's Meta subscription."""
    member, headers = create_admin("chaos-receipts", "chaos-receipts-admin")
    sandbox = SandboxClient(stack.sandbox_url)
    sid, ig_id = "AC" + secrets.token_hex(16), f"178415{secrets.randbelow(10**11):011d}"
    tokens = {
        "whatsapp": secrets.token_hex(16),
        "sendgrid": f"SG.{rand(22)}.{rand(43)}",
        "telegram": f"7199{ORG}:AA{rand(33)}",
        "instagram": "IGAA" + rand(60),
    }
    sandbox.add_accounts([
        {"provider": "whatsapp", "account_sid": sid, "auth_token": tokens["whatsapp"],
         "senders": ["whatsapp:+14155238886"], "session_window_hours": None},
        {"provider": "sendgrid", "api_key": tokens["sendgrid"]},
        {"provider": "telegram", "token": tokens["telegram"], "bot_username": "receipts_bot"},
        {"provider": "instagram", "access_token": tokens["instagram"], "ig_id": ig_id},
    ])  # fmt: skip
    extras = {
        "whatsapp": {"account_sid": sid, "from_whatsapp": "+14155238886"},
        "sendgrid": {
            "from_email": "noreply@receipts.chaos.test",
            "event_webhook_public_key": sandbox.sendgrid_public_key(),
        },
        "telegram": {},
        "instagram": {"instagram_scoped_id": ig_id},
    }
    session = http_session()
    for provider, extra in extras.items():
        r = session.post(
            f"{stack.web}/api/integrations/{provider}/connect/",
            json={"token": tokens[provider], "extra": {**extra, "rate_limit_per_second": RATE}},
            headers=headers,
            timeout=30,
        )
        if r.status_code >= 300:
            raise RuntimeError(f"connect {provider} -> {r.status_code}: {r.text[:300]}")
        if provider == "sendgrid":
            sandbox.sendgrid_event_webhook(
                tokens[provider], r.json()["integration"]["receipts_url"]
            )
    sandbox.instagram_webhook(
        f"{stack.web}/webhooks/instagram/",
        meta["META_WEBHOOK_VERIFY_TOKEN"],
        meta["META_APP_SECRET"],
    )
    return {"index": ORG, "headers": headers, "tokens": tokens, "org_id": member["org_id"]}


def add_endpoint(stack: Stack, org: dict, receiver: EventReceiver) -> None:
    r = http_session().post(
        f"{stack.web}/api/webhook-endpoints/",
        json={"url": receiver.url, "description": "chaos receipt phase"},
        headers=org["headers"],
        timeout=30,
    )
    if r.status_code != 201:
        raise RuntimeError(f"webhook endpoint -> {r.status_code}: {r.text[:300]}")
    receiver.secret = r.json()["secret"]


# the timeline ----------------------------------------------------------------------------
def timeline(
    stack: Stack,
    org: dict,
    items: list[dict],
    receiver: EventReceiver,
    pace: float,
    events: Events,
) -> tuple[list[dict], list]:
    """(time, action) pairs: paced bulk posts, the receiver's outage, kill -9s while sends are
    in flight and one while the retried deliveries flood back in."""
    chunks = max(1, int(pace / 3))
    size = -(-len(items) // chunks)
    actions: list = []
    for k in range(chunks):
        part = items[k * size : (k + 1) * size]
        actions.append((k * pace / chunks, lambda p=part: post_items(stack, org, p)))
    kills: list[dict] = []

    def kill(name: str) -> None:
        from shared.events.models import EventDelivery
        from shared.models import MessageStatus

        sending = phase_rows(TAG).filter(status=MessageStatus.SENDING).count()
        posting = EventDelivery.objects.filter(
            event__organization_id=org["org_id"], status="sending"
        ).count()
        proc = stack.kill_worker(name)
        kills.append(
            {"time": time.time(), "name": name, "pid": proc.pid, "sending": sending,
             "posting": posting}
        )  # fmt: skip
        events.append((time.time(), "kill -9 (receipt phase)", f"{name} pid {proc.pid}; "
                       f"{sending} messages sending, {posting} event deliveries sending"))  # fmt: skip

    def down() -> None:
        receiver.go_down()
        events.append((time.time(), "receiver down", "connections refused"))

    def up() -> None:
        receiver.come_back()
        events.append((time.time(), "receiver back", f"after {receiver.downtime():.1f} s"))

    back = pace * 0.2 + RECEIVER_DOWN_SECONDS
    actions += [(pace * 0.2, down), (back, up)]
    moments = ((pace * 0.3, "w1"), (pace * 0.6, "w2"), (pace * 0.9, "w1"), (back + 1.5, "w2"))
    actions += [(at, lambda n=n: kill(n)) for at, n in moments]
    return kills, sorted(actions, key=lambda a: a[0])


def run_timeline(actions: list) -> None:
    start = time.monotonic()
    for at, action in actions:
        time.sleep(max(0.0, start + at - time.monotonic()))
        action()


def receipt_phase(stack: Stack, quick: bool, events: Events, count: int | None = None) -> dict:
    """Wire receipts, send, kill, take the receiver down, wait for the expected end state."""
    count = count or (120 if quick else 400)
    pace = 20.0 if quick else 45.0
    meta = rewire(stack)
    sandbox = SandboxClient(stack.sandbox_url)
    sandbox.clear_faults()
    sandbox.configure(**SANDBOX_CONFIG)
    for provider in ("whatsapp", "sendgrid", "telegram", "instagram"):
        # slow sends: a kill -9 finds messages in `sending` (re-sent after their lease)
        sandbox.fault(provider, mode="latency", latency_ms=SEND_LATENCY_MS, seconds=pace + 5)
    since = max((c["seq"] for c in sandbox.callbacks()), default=0)
    org = connect_org(stack, meta)
    receiver = EventReceiver(answer_after=RECEIVER_ANSWER_AFTER)
    receiver.start()
    add_endpoint(stack, org, receiver)
    planned = plan(count)
    log(f"receipt phase: {count} messages over {pace:.0f} s, receiver {receiver.url}")
    started = time.time()
    kills, actions = timeline(stack, org, [i for i, _ in planned], receiver, pace, events)
    run_timeline(actions)
    expected = {item["idempotency_key"]: final for item, final in planned}
    deadline = 240.0 if quick else 360.0
    try:
        wait_for(lambda: converged(org, expected, receiver), deadline, "receipts settled", 2.0)
        settled = time.time() - started
    except RuntimeError:
        settled = None
    time.sleep(3)  # late duplicates
    log(f"receipt phase: {'settled' if settled else 'DEADLINE'}; logs in {LOG_DIR}")
    figures = collect(stack, org, TAG, expected, receiver, since)
    return {
        **figures,
        "count": count,
        "kills": kills,
        "settled": settled,
        "downtime": receiver.downtime(),
        "outages": receiver.outages,
        "env": RECEIPT_ENV,
        "sandbox_config": SANDBOX_CONFIG,
    }

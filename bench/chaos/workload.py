"""The chaos run's organizations (canary tokens, sandbox accounts) and its paced bulk enqueuer."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from io import StringIO

import requests

from bench.chaos import config
from bench.chaos.config import PROVIDERS, TOKEN_CHARS, rand, sandbox_rate
from bench.chaos.stack import Stack
from devtools.commands import http_session
from sandbox.testing import SandboxClient

Events = list[tuple[float, str, str]]


def create_admin(org: str, username: str) -> tuple[dict, dict[str, str]]:
    """create_member as admin of a new org: (its JSON, the API headers of its token)."""
    from django.core.management import call_command

    out = StringIO()
    call_command("create_member", org=org, username=username, role="admin", stdout=out)
    member = json.loads(out.getvalue())
    headers = {"Authorization": f"Token {member['token']}", "X-Org-ID": str(member["org_id"])}
    return member, headers


def connect(stack: Stack, headers: dict[str, str], provider: str, token: str, extra: dict) -> None:
    r = http_session().post(
        f"{stack.web}/api/integrations/{provider}/connect/",
        json={"token": token, "extra": extra},
        headers=headers,
        timeout=30,
    )
    if r.status_code >= 300:
        raise RuntimeError(f"connect {provider} -> {r.status_code}: {r.text[:300]}")


def org_credentials(i: int) -> tuple[dict[str, str], dict[str, dict], list[dict]]:
    """Distinct canary tokens of org i, its integrations' extra, and its sandbox accounts."""
    sid = "AC" + secrets.token_hex(16)
    ig_id = f"178414{secrets.randbelow(10**11):011d}"
    tokens = {
        "whatsapp": secrets.token_hex(16),
        "sendgrid": f"SG.{rand(22)}.{rand(43, TOKEN_CHARS)}",
        "telegram": f"{7_100_000 + i}:AA{rand(33, TOKEN_CHARS)}",
        "instagram": "IGAA" + rand(60),
    }
    extras = {
        "whatsapp": {"account_sid": sid, "from_whatsapp": "+14155238886"},
        "sendgrid": {"from_email": f"noreply@org{i:02d}.chaos.test"},
        "telegram": {},
        "instagram": {"instagram_scoped_id": ig_id},
    }
    throttled = {"rate_per_second": sandbox_rate()}
    accounts = [
        {"provider": "whatsapp", "account_sid": sid, "auth_token": tokens["whatsapp"],
         "senders": ["whatsapp:+14155238886"], "session_window_hours": None, **throttled},
        {"provider": "sendgrid", "api_key": tokens["sendgrid"], **throttled},
        {"provider": "telegram", "token": tokens["telegram"], "bot_username": f"chaos{i}_bot"},
        {"provider": "instagram", "access_token": tokens["instagram"], "ig_id": ig_id,
         **throttled},
    ]  # fmt: skip
    return tokens, extras, accounts


def make_orgs(stack: Stack, count: int) -> list[dict]:
    """create_member per org (admin), then connect the four providers over REST with distinct
    canary tokens registered as sandbox accounts."""
    orgs, accounts = [], []
    for i in range(count):
        member, headers = create_admin(f"chaos-org-{i:02d}", f"chaos-admin-{i:02d}")
        tokens, extras, mine = org_credentials(i)
        accounts += mine
        for provider in PROVIDERS:
            extra = {**extras[provider], "rate_limit_per_second": config.RATE_LIMIT}
            connect(stack, headers, provider, tokens[provider], extra)
        orgs.append({"index": i, "headers": headers, "tokens": tokens, **member})
    sandbox = SandboxClient(stack.sandbox_url)
    for account in accounts:
        sandbox.add_account(**account)
    return orgs


def message_item(n: int, org: int, provider: str, tag: str = "chaos") -> dict:
    marker = f"{tag} o{org:02d}-m{n:05d}"
    item = {
        "provider": provider,
        "body": f"{marker} your appointment is confirmed",
        "idempotency_key": f"{tag}-{n}",
    }
    item["to"] = {
        "whatsapp": f"+1415{2_000_000 + n:07d}",
        "sendgrid": f"user{n}@example.test",
        "telegram": str(10_000_000 + n),  # one chat per message: our per-chat limit is 0.9/s
        "instagram": str(900_000_000 + n),
    }[provider]
    if provider == "sendgrid":
        item["subject"] = "chaos"
    return item


class Enqueuer(threading.Thread):
    """Posts every org's share of the messages through /api/messages/bulk/, paced over `pace` s.

    Each message has an idempotency key, so a bulk request that failed (Redis down, web busy) is
    simply posted again."""

    def __init__(
        self, stack: Stack, orgs: list[dict], total: int, pace: float, events: Events
    ) -> None:
        super().__init__(daemon=True)
        self.stack, self.orgs, self.pace, self.events = stack, orgs, pace, events
        per_org: dict[int, list[dict]] = defaultdict(list)
        for n in range(total):
            org = n % len(orgs)
            provider = PROVIDERS[(n // len(orgs)) % len(PROVIDERS)]
            per_org[org].append(message_item(n, org, provider))
        self.per_org = per_org
        self.ticks = max(1, int(pace / 3))
        self.errors: Counter = Counter()
        self.posted = 0
        self.done = threading.Event()
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def post(self, org: dict, items: list[dict]) -> None:
        session = http_session()
        for _try in range(30):
            if self.stop.is_set():  # shutting down: the pool threads must not outlive main()
                return
            try:
                r = session.post(
                    self.stack.web + "/api/messages/bulk/",
                    json={"messages": items},
                    headers=org["headers"],
                    timeout=60,
                )
                if r.status_code == 202:
                    self.posted += len(items)
                    return
                self.errors[f"HTTP {r.status_code}"] += 1
            except requests.RequestException as exc:
                self.errors[type(exc).__name__] += 1
            time.sleep(1)
        raise RuntimeError("a bulk request kept failing for 30 tries")

    def run(self) -> None:
        try:
            start = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                futures = []
                for tick in range(self.ticks):
                    wait = start + tick * self.pace / self.ticks - time.monotonic()
                    if wait > 0 and self.stop.wait(wait):
                        break
                    for org in self.orgs:
                        mine = self.per_org[org["index"]]
                        size = -(-len(mine) // self.ticks)
                        chunk = mine[tick * size : (tick + 1) * size]
                        for i in range(0, len(chunk), 1000):
                            futures.append(pool.submit(self.post, org, chunk[i : i + 1000]))
                for future in futures:
                    future.result()
            self.events.append((time.time(), "enqueue", f"all {self.posted} messages accepted"))
        except BaseException as exc:  # reported by the main thread
            self.failure = exc
        finally:
            self.done.set()

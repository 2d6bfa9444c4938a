"""Signed provider receipts for the bench org: the integrations, sent messages and the requests
(Twilio status callbacks, SendGrid Event Webhook batches) a provider would POST, and a loader
that posts prepared requests with K clients."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.pipeline.stack import Ctx
from devtools.commands import http_session

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2


@dataclass(frozen=True)
class Req:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Loaded:
    """One load run: wall time, latencies, HTTP statuses and the receivers' outcome counts."""

    requests: int
    elapsed: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 300)


def post_all(reqs: list[Req], clients: int) -> Loaded:
    """POST every prepared request with `clients` threads (one keep-alive session each)."""
    result = Loaded(len(reqs), 0.0)
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(mine: list[Req]) -> None:
        session = http_session()
        lat: list[float] = []
        statuses: Counter[int] = Counter()
        outcomes: Counter[str] = Counter()
        barrier.wait()
        for req in mine:
            t0 = time.perf_counter()
            r = session.post(req.url, data=req.body, headers=req.headers, timeout=60)
            lat.append(time.perf_counter() - t0)
            statuses[r.status_code] += 1
            if r.status_code == 200:
                outcomes.update(r.json().get("outcomes") or {})
        with lock:
            result.latencies.extend(lat)
            result.statuses.update(statuses)
            result.outcomes.update(outcomes)

    threads = [threading.Thread(target=client, args=(reqs[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    result.elapsed = time.perf_counter() - started
    return result


class Receipts:
    """The bench org's WhatsApp and SendGrid integrations and `sent` messages to receipt."""

    def __init__(self, ctx: Ctx) -> None:
        from shared.services.integrations import integration_connect

        self.ctx = ctx
        self.auth_token = secrets.token_hex(16)
        self.key = ec.generate_private_key(ec.SECP256R1())
        public = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.whatsapp = integration_connect(
            organization=ctx.org,
            provider="whatsapp",
            token=self.auth_token,
            extra={"account_sid": ACCOUNT_SID, "from_whatsapp": "+14155238886"},
        )
        self.sendgrid = integration_connect(
            organization=ctx.org,
            provider="sendgrid",
            token="SG.bench." + secrets.token_urlsafe(24),
            extra={
                "from_email": "bench@corbi.test",
                "event_webhook_public_key": base64.b64encode(public).decode(),
            },
        )
        self.batch = 0

    def sent_messages(self, provider: str, n: int) -> list[tuple[int, str, str]]:
        """Insert n `sent` messages of `provider`: (id, provider message id, to)."""
        from django.utils import timezone

        from shared.models import Message, MessageStatus

        self.batch += 1
        integration = self.whatsapp if provider == "whatsapp" else self.sendgrid
        now = timezone.now()
        rows = []
        for i in range(n):
            tag = f"{self.batch:04d}{i:08d}"
            if provider == "whatsapp":
                to, pid = f"+1415{tag[-7:]}", f"SM{tag:0>32}"
            else:
                to, pid = f"r{tag}@corbi.test", f"bench{tag}"
            rows.append(
                Message(
                    organization=self.ctx.org,
                    integration=integration,
                    provider=provider,
                    to=to,
                    body="bench",
                    status=MessageStatus.SENT,
                    provider_message_id=pid,
                    sent_at=now,
                )
            )
        made = Message.objects.bulk_create(rows, batch_size=1000)
        return [(m.pk, m.provider_message_id, m.to) for m in made]

    def twilio(self, messages: list[tuple[int, str, str]], status: str) -> list[Req]:
        """One signed status callback per message, as Twilio posts them."""
        from twilio.request_validator import RequestValidator

        from shared.receipts.urls import status_callback_url

        validator = RequestValidator(self.auth_token)
        reqs = []
        for pk, sid, to in messages:
            url = status_callback_url(self.whatsapp, pk)
            params = {
                "MessageSid": sid,
                "MessageStatus": status,
                "AccountSid": ACCOUNT_SID,
                "To": "whatsapp:" + to,
                "ChannelPrefix": "whatsapp",
                "ApiVersion": "2010-04-01",
            }
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": validator.compute_signature(url, params),
            }
            reqs.append(Req(url, urlencode(params).encode(), headers))
        return reqs

    def sendgrid_bodies(self, messages: list[tuple[int, str, str]], per: int) -> list[bytes]:
        """Event Webhook batches of `per` `delivered` events (one per message)."""
        stamp = int(time.time())
        events = [
            {
                "email": to,
                "timestamp": stamp,
                "event": "delivered",
                "sg_event_id": f"bench-{pk}-delivered",
                "sg_message_id": f"{pid}.filter0001.1.0",
                "corbi_reference": f"msg-{pk}",
                "response": "250 OK",
            }
            for pk, pid, to in messages
        ]
        return [json.dumps(events[i : i + per]).encode() for i in range(0, len(events), per)]

    def sendgrid_signed(self, bodies: list[bytes]) -> list[Req]:
        """Each body signed now (ECDSA P-256 over timestamp + body), as SendGrid posts it."""
        from shared.receipts.urls import receipts_url

        url = receipts_url(self.sendgrid) or ""
        stamp = str(int(time.time()))
        reqs = []
        for body in bodies:
            signature = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
            headers = {
                "Content-Type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            }
            reqs.append(Req(url, body, headers))
        return reqs

"""Provider signatures computed by hand (no provider SDK): Twilio's HMAC-SHA1 over the URL and
the sorted form fields, SendGrid's ECDSA P-256 over timestamp + body with a key pair this run
generates, and Meta's hex HMAC-SHA256 of the body with the app secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.security.config import extra_for
from bench.security.harness import Run


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def sendgrid_signature(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def meta_signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@dataclass
class Receivers:
    """What signing needs: the webhook keys, secrets and a few real messages of secorg."""

    twilio_key: str
    twilio_other_key: str  # otherorg's WhatsApp integration
    sendgrid_key: str
    sendgrid_private: ec.EllipticCurvePrivateKey
    auth_token: str
    app_secret: str
    verify_token: str
    messages: dict[str, tuple[int, str]] = field(default_factory=dict)  # provider: (id, sid)

    def twilio_path(self, m: str | None, key: str | None = None) -> str:
        query = f"?m={m}" if m is not None else ""
        return f"/webhooks/twilio/{key or self.twilio_key}/status/{query}"

    def sendgrid_path(self, key: str | None = None) -> str:
        return f"/webhooks/sendgrid/{key or self.sendgrid_key}/events/"

    def signed_twilio(self, run: Run, path: str, params: dict[str, str], token: str = "") -> tuple:
        body = urlencode(params).encode()
        signature = twilio_signature(token or self.auth_token, run.base + path, params)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return body, {**headers, "X-Twilio-Signature": signature}

    def signed_sendgrid(self, body: bytes, at: float | None = None, key=None) -> dict[str, str]:
        stamp = str(int(time.time() if at is None else at))
        return {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "X-Twilio-Email-Event-Webhook-Signature": sendgrid_signature(
                key or self.sendgrid_private, stamp, body
            ),
        }

    def signed_meta(self, body: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": meta_signature(self.app_secret, body),
        }


def webhook_key(run: Run, org: str, provider: str) -> str:
    with run.db() as conn:
        return conn.execute(
            "SELECT i.webhook_key FROM shared_integration i JOIN shared_organization o "
            "ON o.id = i.organization_id WHERE o.slug = %s AND i.provider = %s",
            (org, provider),
        ).fetchone()[0]


def prepare(run: Run) -> Receivers:
    """SendGrid reconnected with this run's verification key; one sent message per provider."""
    private = ec.generate_private_key(ec.SECP256R1())
    extra = {**extra_for("sendgrid"), "event_webhook_public_key": public_key_b64(private)}
    body = {"token": run.tokens["sendgrid_rotated"], "extra": extra}
    response = run.api("POST", "/api/integrations/sendgrid/connect/", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"sendgrid connect with a key: {response.status_code} {response.text}")
    found = Receivers(
        twilio_key=webhook_key(run, "secorg", "whatsapp"),
        twilio_other_key=webhook_key(run, "otherorg", "whatsapp"),
        sendgrid_key=webhook_key(run, "secorg", "sendgrid"),
        sendgrid_private=private,
        auth_token=run.tokens["whatsapp"],
        app_secret=run.tokens["meta_app_secret"],
        verify_token=run.tokens["meta_verify_token"],
    )
    to = {"whatsapp": "+14155550100", "sendgrid": "ops@secorg.test", "instagram": "1234567890"}
    ids = {p: run.send_one("admin", p, dest, f"receipt {p}") for p, dest in to.items()}
    run.wait_done(list(ids.values()), 60)
    with run.db() as conn:
        for provider, message_id in ids.items():
            sid = conn.execute(
                "SELECT provider_message_id FROM shared_message WHERE id = %s", (message_id,)
            ).fetchone()[0]
            found.messages[provider] = (message_id, sid or "")
    return found


def sendgrid_batch(message_id: int, sid: str, *names: str, stamp: int | None = None) -> bytes:
    events = [
        {
            "email": "ops@secorg.test",
            "timestamp": int(time.time()) if stamp is None else stamp,
            "event": name,
            "sg_event_id": f"sec-{message_id}-{name}",
            "sg_message_id": f"{sid}.filter0001",
            "corbi_reference": f"msg-{message_id}",
        }
        for name in names
    ]
    return (json.dumps(events) + "\r\n").encode()


def meta_body(
    account: str, field_name: str, part: object, sender: object = None, stamp: object = None
) -> bytes:
    item = {
        "sender": {"id": "1234567890"} if sender is None else sender,
        "timestamp": int(time.time() * 1000) if stamp is None else stamp,
        field_name: part,
    }
    body = {"object": "instagram", "entry": [{"id": account, "messaging": [item]}]}
    return json.dumps(body).encode()

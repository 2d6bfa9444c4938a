"""Unsigned and mis-signed requests to the receipt receivers, from a seeded generator: random
and malformed bodies, missing/garbage/foreign signatures, huge bodies, odd content types and
methods, unknown keys, non-ASCII in `m`, deep JSON. None of them may be answered 2xx or 5xx."""

from __future__ import annotations

import base64
import json
import random
import time
from urllib.parse import quote, urlencode

from cryptography.hazmat.primitives.asymmetric import ec

from bench.security.signing import Receivers, meta_signature, sendgrid_signature, twilio_signature

SEED = 4242
PER_RECEIVER = 300
HUGE = 3 * 1024 * 1024  # over WEBHOOK_MAX_BODY_BYTES (2 MiB)
# (receiver, method, path, body, headers)
Case = tuple[str, str, str, bytes, dict[str, str | bytes]]
METHODS = ("GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")
CONTENT_TYPES: tuple[str | bytes | None, ...] = (
    "application/x-www-form-urlencoded",
    "application/json",
    "text/plain",
    "multipart/form-data",
    "multipart/form-data; boundary=zz",
    "application/x-www-form-urlencoded; charset=utf-16",
    "application/xml",
    None,
    b"\xe9/\xff",
)
TEXTS = ("", "delivered", "read", "\x00", "é", "\ud7ff", "٣", "\uff33", "a" * 5000, "%00", "null")


def garbage_key(rng: random.Random, other_keys: list[str]) -> str:
    return rng.choice(
        [
            "".join(rng.choices("0123456789abcdef", k=64)),
            "%00",
            "%C3%A9" * 10,
            "A" * 300,
            "..%2F..%2Fadmin",
            quote("ключ"),
            *other_keys,
        ]
    )


def random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(6 if depth < 4 else 3)
    if kind == 0:
        return rng.choice(TEXTS)
    if kind == 1:
        return rng.choice([0, -1, 10**20, 1.5, True, None])
    if kind == 2:
        return rng.choice(["event", "entry", "delivered", "open", "mid"])
    if kind == 3:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["event", "entry", "id", "messaging", "mids", "read", "sg_event_id", "corbi_reference"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_body(rng: random.Random, n: int, fields: dict[str, str]) -> bytes:
    """A body for case n: every 100th is huge, the rest vary."""
    if n % 100 == 7:
        return b"x" * HUGE
    kind = rng.randrange(7)
    if kind == 0:
        return urlencode({k: rng.choice([v, *TEXTS]) for k, v in fields.items()}).encode()
    if kind == 1:
        return json.dumps(random_json(rng)).encode()
    if kind == 2:
        depth = rng.choice([100, 5000])
        return b'{"entry":' * depth + b"1" + b"}" * depth
    if kind == 3:
        return rng.randbytes(rng.randrange(1, 400))
    if kind == 4:
        return b"&".join(b"f%d=1" % i for i in range(rng.choice([10, 2000])))
    if kind == 5:
        return b""
    return json.dumps([fields]).encode() + rng.choice([b"", b"\xff", b"]"])


def content_type(rng: random.Random) -> dict[str, str | bytes]:
    value = rng.choice(CONTENT_TYPES)
    return {} if value is None else {"Content-Type": value}


def bad_signatures(rng: random.Random, signed: str) -> str | bytes | None:
    """Missing, empty, garbage, Latin-1 bytes, or a real-looking signature of something else."""
    return rng.choice(
        [
            None,
            "",
            base64.b64encode(rng.randbytes(20)).decode(),
            b"\xe9\xff\xfe" + rng.randbytes(5).hex().encode(),
            "A" * 10_000,
            signed,
            signed.upper(),
            signed + "=",
        ]
    )


def twilio_cases(rng: random.Random, run, r: Receivers) -> list[Case]:
    mid, sid = r.messages["whatsapp"]
    fields = {"MessageSid": sid, "MessageStatus": "read", "ErrorCode": "63016"}
    cases = []
    for n in range(PER_RECEIVER):
        m = rng.choice([str(mid), "%D9%A1", "-1", "1e3", "9" * 40, "", "%00", f"{mid}&m=1", None])
        key = r.twilio_key if rng.random() < 0.7 else garbage_key(rng, [r.sendgrid_key])
        path = r.twilio_path(m, key)
        # A real HMAC-SHA1, but over another URL, with the wrong token, or of other fields.
        wrong = rng.choice(["url", "token", "fields"])
        signed = twilio_signature(
            r.auth_token if wrong != "token" else "cnry-wrong-token",
            run.base + (path if wrong != "url" else r.twilio_path(str(mid + 7))),
            fields if wrong != "fields" else {"MessageStatus": "delivered"},
        )
        headers = content_type(rng)
        signature = bad_signatures(rng, signed)
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        method = "POST" if rng.random() < 0.85 else rng.choice(METHODS)
        cases.append(("twilio", method, path, random_body(rng, n, fields), headers))
    return cases


def sendgrid_headers(rng: random.Random, r: Receivers, body: bytes) -> dict[str, str | bytes]:
    now = int(time.time())
    stamp = rng.choice(
        [str(now), str(now - 3600), str(now + 3600), "\uff11\uff17", "-5", "9" * 30, "", b"\xe9"]
    )
    other = ec.generate_private_key(ec.SECP256R1()) if rng.random() < 0.3 else None
    text = stamp if isinstance(stamp, str) else "0"
    base = sendgrid_signature(other or r.sendgrid_private, text, body + b" " * (other is None))
    headers: dict[str, str | bytes] = {}
    signature = bad_signatures(rng, base)
    if signature is not None:
        headers["X-Twilio-Email-Event-Webhook-Signature"] = signature
    if rng.random() < 0.9:
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = stamp
    return headers


def sendgrid_cases(rng: random.Random, r: Receivers) -> list[Case]:
    mid, sid = r.messages["sendgrid"]
    fields = {"event": "delivered", "sg_message_id": sid, "corbi_reference": f"msg-{mid}"}
    cases = []
    for n in range(PER_RECEIVER):
        key = r.sendgrid_key if rng.random() < 0.7 else garbage_key(rng, [r.twilio_key])
        body = random_body(rng, n, fields)
        headers = {**content_type(rng), **sendgrid_headers(rng, r, body)}
        method = "POST" if rng.random() < 0.85 else rng.choice(METHODS)
        cases.append(("sendgrid", method, r.sendgrid_path(key), body, headers))
    return cases


def meta_cases(rng: random.Random, r: Receivers) -> list[Case]:
    _, mid = r.messages["instagram"]
    fields = {"object": "instagram", "mid": mid}
    cases: list[Case] = []
    for n in range(PER_RECEIVER):
        if rng.random() < 0.15:  # the handshake, never with our verify token
            token = rng.choice(["", "x", "cnry-not-our-token", "%E9", "%00"])
            mode = rng.choice(["subscribe", "", "SUBSCRIBE", "%00"])
            query = f"hub.mode={mode}&hub.verify_token={token}&hub.challenge={rng.random()}"
            cases.append(("instagram", "GET", "/webhooks/instagram/?" + query, b"", {}))
            continue
        body = random_body(rng, n, fields)
        wrong_secret = rng.random() < 0.5
        signed = meta_signature(
            "cnry-wrong-secret" if wrong_secret else r.app_secret, body + b"x" * (not wrong_secret)
        )
        signature = rng.choice([bad_signatures(rng, signed), "sha1=" + signed[7:], "sha256="])
        if isinstance(signature, bytes):
            signature = b"sha256=" + signature
        headers = content_type(rng)
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        method = "POST" if rng.random() < 0.9 else rng.choice(METHODS[1:])
        cases.append(("instagram", method, "/webhooks/instagram/", body, headers))
    return cases


def fuzz_cases(run, r: Receivers) -> list[Case]:
    rng = random.Random(SEED)
    return [*twilio_cases(rng, run, r), *sendgrid_cases(rng, r), *meta_cases(rng, r)]

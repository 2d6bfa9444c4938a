"""Validly signed receipts: applied, duplicate, unknown message, signed-but-malformed, and the
replays and mis-signings that must be 403 (a captured SendGrid batch with a stale timestamp)."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric import ec

from bench.security.config import IG_ID
from bench.security.signing import Receivers, meta_body, sendgrid_batch

# (receiver, label, method, path, body, headers, expected statuses)
Signed = tuple[str, str, str, str, bytes, dict, set[int]]


def twilio_cases(run, r: Receivers) -> list[Signed]:
    mid, sid = r.messages["whatsapp"]
    read = {"MessageSid": sid, "MessageStatus": "read", "AccountSid": "AC", "To": "whatsapp:+1"}
    path = r.twilio_path(str(mid))
    body, headers = r.signed_twilio(run, path, read)
    other_path = r.twilio_path(str(mid + 1))
    _, other_url_headers = r.signed_twilio(run, other_path, read)
    arabic = r.twilio_path("%D9%A1")
    nul = dict(read, MessageSid="SM\x00x")
    unknown = r.twilio_path("999999999")
    unknown_params = dict(read, MessageSid="SM" + "0" * 32)
    missing = {"MessageStatus": "read"}
    other = r.twilio_path(str(mid), r.twilio_other_key)
    return [
        ("twilio", "read receipt for a sent message", "POST", path, body, headers, {200}),
        ("twilio", "the same callback again (duplicate)", "POST", path, body, headers, {200}),
        (
            "twilio",
            "signed for another m, sent to this one",
            "POST",
            path,
            body,
            other_url_headers,
            {403},
        ),
        (
            "twilio",
            "Arabic-Indic digit in m",
            "POST",
            arabic,
            *r.signed_twilio(run, arabic, read),
            {400},
        ),
        ("twilio", "NUL in MessageSid", "POST", path, *r.signed_twilio(run, path, nul), {200, 400}),
        (
            "twilio",
            "unknown message id",
            "POST",
            unknown,
            *r.signed_twilio(run, unknown, unknown_params),
            {200},
        ),
        ("twilio", "no MessageSid", "POST", path, *r.signed_twilio(run, path, missing), {400}),
        (
            "twilio",
            "signed with our token, sent to another org's key",
            "POST",
            other,
            *r.signed_twilio(run, other, read),
            {403},
        ),
    ]


def sendgrid_cases(r: Receivers) -> list[Signed]:
    mid, sid = r.messages["sendgrid"]
    batch = sendgrid_batch(mid, sid, "delivered", "open")
    now = time.time()
    stranger = ec.generate_private_key(ec.SECP256R1())
    obj = b'{"event":"open"}'
    huge_stamp = sendgrid_batch(mid, sid, "processed", stamp=10**17)
    nul = sendgrid_batch(mid, sid + "\x00", "delivered")
    captured = r.signed_sendgrid(batch, now)
    table = [
        ("delivered + open batch", batch, captured, {200}),
        ("the captured batch replayed as is (duplicate)", batch, captured, {200}),
        ("the captured batch, timestamp 1 h old", batch, r.signed_sendgrid(batch, now - 3600)),
        ("the captured batch, timestamp 601 s old", batch, r.signed_sendgrid(batch, now - 601)),
        ("the captured batch, timestamp 1 h ahead", batch, r.signed_sendgrid(batch, now + 3600)),
        ("captured headers, body changed", batch + b" ", captured),
        ("signed by another key pair", batch, r.signed_sendgrid(batch, now, stranger)),
        ("signed object instead of a list", obj, r.signed_sendgrid(obj), {400}),
        ("event timestamp 10^17", huge_stamp, r.signed_sendgrid(huge_stamp), {200, 400}),
        ("NUL in sg_message_id", nul, r.signed_sendgrid(nul), {200, 400}),
    ]
    path = r.sendgrid_path()
    return [
        ("sendgrid", row[0], "POST", path, row[1], row[2], row[3] if len(row) > 3 else {403})
        for row in table
    ]


def meta_cases(r: Receivers) -> list[Signed]:
    _, mid = r.messages["instagram"]
    delivered = meta_body(IG_ID, "delivery", {"mids": [mid]})
    read = meta_body(IG_ID, "read", {"mid": mid})
    odd = {
        "unknown account": (meta_body("1", "read", {"mid": mid}), {200}),
        "sender is a string": (meta_body(IG_ID, "read", {"mid": mid}, sender="x"), {200, 400}),
        "timestamp 10^20": (meta_body(IG_ID, "read", {"mid": mid}, stamp=10**20), {200, 400}),
        "watermark 10^20": (meta_body(IG_ID, "read", {"watermark": 10**20}), {200, 400}),
        "mids is a number": (meta_body(IG_ID, "delivery", {"mids": 5}), {200, 400}),
        "NUL in a mid": (meta_body(IG_ID, "delivery", {"mids": ["m\x00"]}), {200, 400}),
        "not an object": (b"[1, 2]", {400}),
    }
    verify = f"/webhooks/instagram/?hub.mode=subscribe&hub.verify_token={r.verify_token}"
    path = "/webhooks/instagram/"
    cases: list[Signed] = [
        (
            "instagram",
            "delivery of a sent message",
            "POST",
            path,
            delivered,
            r.signed_meta(delivered),
            {200},
        ),
        ("instagram", "read of a sent message", "POST", path, read, r.signed_meta(read), {200}),
        ("instagram", "the read again (duplicate)", "POST", path, read, r.signed_meta(read), {200}),
        (
            "instagram",
            "signed, then the body changed",
            "POST",
            path,
            read + b" ",
            r.signed_meta(read),
            {403},
        ),
        (
            "instagram",
            "handshake with our verify token",
            "GET",
            verify + "&hub.challenge=c1",
            b"",
            {},
            {200},
        ),
        (
            "instagram",
            "handshake with our token, bad challenge",
            "GET",
            verify + "&hub.challenge=%3Cscript%3E",
            b"",
            {},
            {400},
        ),
    ]
    for label, (body, expected) in odd.items():
        cases.append(("instagram", label, "POST", path, body, r.signed_meta(body), expected))
    return cases


def signed_cases(run, r: Receivers) -> list[Signed]:
    return [*twilio_cases(run, r), *sendgrid_cases(r), *meta_cases(r)]

"""Malformed requests for `make security`: deep nesting, NUL and lone surrogates, non-ASCII
digits, Latin-1 header bytes. Each case is (name, method, path, body, headers)."""

from __future__ import annotations

import http.client
import json

from bench.security.harness import Run

Case = tuple[str, str, str, bytes, dict[str, str | bytes]]
ARABIC_INDIC_NUMBER = "+" + "".join(chr(0x0660 + int(d)) for d in "14155550100")
FULL_WIDTH_NUMBER = "+" + "".join(chr(0xFF10 + int(d)) for d in "14155550100")
CONNECT = "/api/integrations/sendgrid/connect/"
WHEN = {"start": "2030-01-01T20:00:00Z", "end": "2030-01-01T21:00:00Z"}


def _json(value: object) -> bytes:
    # ensure_ascii: NUL and lone surrogates travel as \u0000 / \ud800 JSON escapes.
    return json.dumps(value).encode()


def _message(**fields: object) -> bytes:
    return _json({"provider": "whatsapp", "to": "+14155550100", "body": "hi", **fields})


def depth_cases(auth: dict[str, str | bytes]) -> list[Case]:
    js = {**auth, "Content-Type": "application/json"}
    deep_list = b"[" * 100_000 + b"]" * 100_000
    deep_obj = b'{"a":' * 5000 + b"1" + b"}" * 5000
    connect = b'{"token":"SG.cnry.x","extra":' + deep_obj + b"}"
    return [
        ("100,000 nested [ (message)", "POST", "/api/messages/", deep_list, js),
        ("100,000 nested [ (bulk)", "POST", "/api/messages/bulk/", deep_list, js),
        ("5,000 nested objects (connect extra)", "POST", CONNECT, connect, js),
        ("5,000 nested objects (message)", "POST", "/api/messages/", deep_obj, js),
    ]


def text_cases(auth: dict[str, str | bytes]) -> list[Case]:
    js = {**auth, "Content-Type": "application/json"}

    def connect(value: str) -> bytes:
        return _json({"token": "SG.cnry.x", "extra": {"from_email": value}})

    def booking(**fields: str) -> bytes:
        return _json({"summary": "x", **WHEN, **fields})

    bookings = "/api/calendar/bookings/"
    return [
        ("NUL in an extra value", "POST", CONNECT, connect("a\x00@x.test"), js),
        ("lone surrogate in an extra value", "POST", CONNECT, connect("\ud800@x.test"), js),
        ("NUL in a booking field", "PUT", bookings + "sec-nul/", booking(summary="a\x00"), js),
        (
            "lone surrogate in a booking field",
            "PUT",
            bookings + "sec-sur/",
            booking(summary="a\ud800b", location="\udfff"),
            js,
        ),
        ("NUL in a message body", "POST", "/api/messages/", _message(body="a\x00"), js),
    ]


def digit_cases(auth: dict[str, str | bytes]) -> list[Case]:
    js = {**auth, "Content-Type": "application/json"}
    post, get = ("POST", "/api/messages/"), ("GET", "/api/integrations/")
    return [
        ("Arabic-Indic digits in to", *post, _message(to=ARABIC_INDIC_NUMBER), js),
        ("full-width digits in to", *post, _message(to=FULL_WIDTH_NUMBER), js),
        ("integer to", *post, _message(to=14155550100), js),
        ("integer body", *post, _message(body=12345), js),
        ("Arabic-Indic X-Org-ID", *get, b"", {**auth, "X-Org-ID": "\u0661".encode()}),
        ("full-width X-Org-ID", *get, b"", {**auth, "X-Org-ID": "\uff11".encode()}),
        ("Latin-1 bytes ¹²³ in X-Org-ID", *get, b"", {**auth, "X-Org-ID": b"\xb9\xb2\xb3"}),
    ]


def malformed_cases(run: Run) -> list[Case]:
    """Depth, NUL bytes and lone surrogates, non-ASCII digits, Latin-1 header bytes."""
    auth: dict[str, str | bytes] = dict(run.headers("outsider"))
    return [*depth_cases(auth), *text_cases(auth), *digit_cases(auth)]


def malformed_input(run: Run) -> None:
    server_errors, accepted, shown = 0, 0, []
    for name, method, path, body, headers in malformed_cases(run):
        try:
            status, text = run.raw_request(method, path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            status, text = 599, f"no answer: {type(exc).__name__}"
        server_errors += status >= 500
        accepted += status < 400
        shown.append(f"{name}: {status}")
        if status >= 500 or status < 400:
            run.findings.append(f"malformed input '{name}': {status} {text[:200]!r}")
    run.rows.append(
        (
            "malformed input: 5xx answers",
            f"{server_errors} of {len(shown)}",
            "0",
            not server_errors,
        )
    )
    run.rows.append(
        (
            "malformed input: accepted (2xx/3xx) instead of a 4xx",
            f"{accepted} ({'; '.join(shown)})",
            "0",
            not accepted,
        )
    )

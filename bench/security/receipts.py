"""The receipt receivers (/webhooks/, outside the OpenAPI schema): the seeded fuzz of unsigned
and mis-signed requests, then the validly signed set. Counts by status per receiver."""

from __future__ import annotations

import http.client
import time

from bench.security.fuzz import fuzz_cases
from bench.security.harness import Run
from bench.security.signed import signed_cases
from bench.security.signing import Receivers, prepare


def state(run: Run) -> tuple[int, int, str]:
    """(MessageEvent rows, kept unmatched receipts, digest of every message's id:status)."""
    with run.db() as conn:
        events = conn.execute("SELECT count(*) FROM shared_messageevent").fetchone()[0]
        kept = conn.execute("SELECT count(*) FROM shared_unmatchedreceipt").fetchone()[0]
        digest = conn.execute(
            "SELECT md5(coalesce(string_agg(id || ':' || status, ',' ORDER BY id), '')) "
            "FROM shared_message"
        ).fetchone()[0]
    return events, kept, digest


def quiet_state(run: Run, timeout: float = 40.0) -> tuple[int, int, str]:
    """The state once the sandbox's own status callbacks have stopped changing it (3 s)."""
    deadline = time.monotonic() + timeout
    last, since = state(run), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = state(run)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 3:
            break
    return last


def wire(value: str | bytes) -> str | bytes:
    """A header value as sent: Latin-1 text as is, anything else as its UTF-8 bytes."""
    if isinstance(value, str) and not value.isascii():
        return value.encode()
    return value


def send(run: Run, method: str, path: str, body: bytes, headers: dict) -> int:
    try:
        sent = {name: wire(value) for name, value in headers.items()}
        status, _ = run.raw_request(method, path, body, sent)
    except (OSError, http.client.HTTPException):
        status = 0  # the server closed the connection before reading a huge body
    return status


def tally(counts: dict[str, dict[int, int]], receiver: str, status: int) -> None:
    per = counts.setdefault(receiver, {})
    per[status] = per.get(status, 0) + 1


def shown(counts: dict[str, dict[int, int]]) -> str:
    return "; ".join(
        f"{receiver}: " + ", ".join(f"{c}: {n}" for c, n in sorted(per.items()))
        for receiver, per in counts.items()
    )


def unsigned_fuzz(run: Run, r: Receivers) -> None:
    before = quiet_state(run)
    counts: dict[str, dict[int, int]] = {}
    errors = accepted = 0
    cases = fuzz_cases(run, r)
    for receiver, method, path, body, headers in cases:
        status = send(run, method, path, body, headers)
        tally(counts, receiver, status)
        if status >= 500 or 200 <= status < 400:
            errors += status >= 500
            accepted += status < 500
            shown_headers = {k: v for k, v in headers.items() if k != "Content-Length"}
            run.findings.append(
                f"unsigned {receiver}: {status} on {method} {path[:120]} "
                f"headers={str(shown_headers)[:200]} body={body[:120]!r}"
            )
    after = state(run)
    changes = [
        f"{n}: {b} → {a}"
        for n, b, a in zip(("events", "kept", "statuses"), before, after, strict=True)
        if a != b
    ]
    run.rows += [
        (
            "receivers fuzz: unsigned/mis-signed requests (seeded)",
            f"{len(cases)} ({shown(counts)}; 0 = connection closed on a huge body)",
            "≥ 900",
            len(cases) >= 900,
        ),
        ("receivers fuzz: 5xx answers", str(errors), "0", errors == 0),
        ("receivers fuzz: 2xx/3xx without a valid signature", str(accepted), "0", accepted == 0),
        (
            "receivers fuzz: state changes (MessageEvent rows, kept receipts, message statuses)",
            "; ".join(changes) or "0",
            "0",
            not changes,
        ),
    ]


def signed_set(run: Run, r: Receivers) -> None:
    counts: dict[str, dict[int, int]] = {}
    wrong, lines = 0, []
    for receiver, label, method, path, body, headers, expected in signed_cases(run, r):
        status = send(run, method, path, body, headers)
        tally(counts, receiver, status)
        ok = status in expected
        wrong += not ok
        lines.append(
            [
                receiver,
                label,
                "/".join(map(str, sorted(expected))),
                str(status),
                "yes" if ok else "**NO**",
            ]
        )
        if not ok:
            run.findings.append(f"signed {receiver} '{label}': {status} (expected {expected})")
    run.tables.append(("Signed receipts", ["receiver", "case", "expected", "got", "ok"], lines))
    with run.db() as conn:
        moved = dict(
            conn.execute(
                "SELECT provider, status FROM shared_message WHERE id = ANY(%s)",
                ([m for m, _ in r.messages.values()],),
            ).fetchall()
        )
    read = all(moved.get(p) == "read" for p in ("whatsapp", "sendgrid", "instagram"))
    run.rows += [
        (
            "signed receipts: answers as expected (see the Signed receipts table; stale or "
            "re-timed SendGrid replays 403)",
            f"{len(lines) - wrong} of {len(lines)} ({shown(counts)})",
            "all",
            wrong == 0,
        ),
        ("signed receipts: the three messages read afterwards", str(moved), "all read", read),
    ]


def receivers_step(run: Run) -> None:
    r = prepare(run)
    unsigned_fuzz(run, r)
    signed_set(run, r)

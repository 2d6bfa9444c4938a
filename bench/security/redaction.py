"""Tenant redaction (org B's "tokens" are ordinary words in org A's lines) and encoded echoes."""

from __future__ import annotations

import base64
import json

from bench.security.canaries import rand
from bench.security.config import ECHO_BODIES, GOOGLE_JSON_KEYS, PROVIDERS, extra_for
from bench.security.harness import Run
from devtools.procs import wait_for


def tenant_tokens(run: Run) -> dict[str, str]:
    """What org B connects as "tokens": an event name, org A's org_id JSON, a Google JSON."""
    google = {
        "type": "authorized_user",
        "client_id": "1234567890-cnry.apps.googleusercontent.com",
        "client_secret": "GOCSPX-" + rand(28),
        "refresh_token": "1//0g" + rand(60),
    }
    org_a = run.people["admin"]["org_id"]
    return {
        "whatsapp": "message.failed",
        "instagram": f'"org_id": {org_a}',
        "google_calendar": json.dumps(google),
    }


def tenant_b_decrypts(run: Run) -> None:
    """Org B connects, tests (web decrypts) and sends (worker decrypts) its "tokens"."""
    for provider, token in tenant_tokens(run).items():
        body = {"token": token, "extra": extra_for(provider)}
        response = run.api("POST", f"/api/integrations/{provider}/connect/", "outsider", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"tenant B connect {provider}: {response.status_code}")
        run.api("POST", f"/api/integrations/{provider}/test/", "outsider")
    ids = [
        run.send_one("outsider", "whatsapp", "+14155550100", "tenant B"),
        run.send_one("outsider", "instagram", "1234567890", "tenant B"),
    ]
    booking = {
        "summary": "tenant B",
        "start": "2030-01-01T20:00:00Z",
        "end": "2030-01-01T21:00:00Z",
    }
    run.api("PUT", "/api/calendar/bookings/tenant-b/", "outsider", json=booking)
    run.wait_done(ids, 60)
    wait_for(lambda: booking_settled(run, "tenant-b"), 60, "tenant B's booking sync", interval=0.2)


def booking_settled(run: Run, booking_id: str) -> bool:
    with run.db() as conn:
        row = conn.execute(
            "SELECT status FROM shared_booking WHERE booking_id = %s", (booking_id,)
        ).fetchone()
    return row is not None and row[0] in ("synced", "failed")


def tenant_redaction(run: Run) -> None:
    """Org A's log and audit lines still show the words org B connected as tokens."""
    tenant_b_decrypts(run)
    org_a = run.people["admin"]["org_id"]
    text = "message.failed: the JSON lacks client_id, client_secret and refresh_token"
    run.sandbox.client.fault(
        "sendgrid", status=400, count=1, body={"errors": [{"message": text, "field": None}]}
    )
    failed = run.send_one("admin", "sendgrid", "ops@secorg.test", "tenant A")
    run.wait_done([failed], 60)
    body = {"token": run.tokens["telegram"], "extra": extra_for("telegram")}
    run.api("POST", "/api/integrations/telegram/connect/", json=body)
    expected = ["message.failed", f'"org_id": {org_a}', *GOOGLE_JSON_KEYS]
    lines = [
        line
        for line in run.procs.log_text().splitlines()
        if '"org": "secorg"' in line
        and (f'"message_id": {failed}' in line or '"provider": "telegram"' in line)
    ]
    audit_failed = [line for line in lines if f'"message_id": {failed}' in line]
    missing = sum(word not in "\n".join(lines) for word in expected[:2])
    missing += sum(word not in "\n".join(audit_failed) for word in expected[2:])
    censored = sum("[REDACTED]" in line for line in lines)
    ok = bool(audit_failed) and not missing and not censored
    run.rows.append(
        (
            'tenant redaction: org B connects `message.failed`, `"org_id": <A>` and a '
            "Google JSON; org A's audit/log lines",
            f"{len(lines)} lines checked, {missing} expected words missing, "
            f"{censored} lines with [REDACTED]",
            "lines found, 0 missing, 0 censored",
            ok,
        )
    )


def encoded_echoes(run: Run) -> None:
    """Every provider answers one send and one Test Connection with an error body that
    echoes the request's credentials percent- and base64-encoded; the sweep then counts."""
    client = run.sandbox.client
    since = max((r["seq"] for r in client.requests()), default=0)
    destinations = {
        "whatsapp": "+14155550100",
        "sendgrid": "ops@secorg.test",
        "telegram": "4242",
        "instagram": "1234567890",
    }
    ids = []
    for provider, to in destinations.items():
        client.fault(provider, status=400, count=1, body=ECHO_BODIES[provider])
        ids.append(run.send_one("admin", provider, to, "echo"))
        run.wait_done(ids[-1:], 60)
    for provider in PROVIDERS:
        path = "/calendar/v3/" if provider == "google_calendar" else None
        client.fault(provider, status=400, count=1, body=ECHO_BODIES[provider], path=path)
        run.api("POST", f"/api/integrations/{provider}/test/")
    client.clear_faults()
    echoed = sum(
        1 for r in client.requests(since=since) if str(r.get("outcome")).startswith("fault:")
    )
    with run.db() as conn:
        marked = conn.execute(
            "SELECT count(*) FROM shared_message WHERE id = ANY(%s) "
            "AND last_error ILIKE '%%redacted%%'",
            (ids,),
        ).fetchone()[0]
    run.rows.append(
        (
            "encoded-echo canaries: error bodies echoing the credentials percent- and "
            "base64-encoded (fragments are counted by the sweep)",
            f"{echoed} echoes answered (4 sends + 5 tests); "
            f"{marked}/{len(ids)} failed messages show a redaction mark",
            "9 echoes, 4 marked",
            echoed >= 9 and marked == len(ids),
        )
    )


def attachment_canary(run: Run) -> None:
    """An email attachment made of a canary, sent through the pipeline: its text and its base64
    join the sweep like a token (only the encrypted column and the provider may hold it)."""
    text = "cnry" + rand(40)  # random only: a word in it (e.g. "attachment") is in every answer
    content = base64.b64encode(text.encode()).decode()
    run.tokens["attachment"] = text
    run.tokens["attachment_base64"] = content
    item = {
        "provider": "sendgrid",
        "to": "ops@secorg.test",
        "subject": "Your receipt",
        "body": "See attached.",
        "attachments": [{"filename": "receipt.txt", "content": content}],
    }
    response = run.api("POST", "/api/messages/", json=item)
    message_id = response.json().get("message_id") if response.status_code == 202 else None
    counts = run.wait_done([message_id], 60) if message_id else {}
    delivered = any(
        content in str(r.get("body", "")) for r in run.sandbox.client.requests("sendgrid")
    )
    run.rows.append(
        (
            "attachment canary: a SendGrid attachment reaches the provider, then the sweep "
            "looks for its text and base64 everywhere else",
            f"HTTP {response.status_code}, {counts or 'not queued'}, at the provider: {delivered}",
            "202, sent, True",
            response.status_code == 202 and counts.get("sent") == 1 and delivered,
        )
    )

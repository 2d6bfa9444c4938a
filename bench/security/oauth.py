"""The OAuth flows on the live stack: "Connect with Google / Instagram" through the sandbox with
a browser-like client, the refusals (another organization's state, a reused state, denied
consent), a worker refresh after the sandbox expires the access tokens, and disconnect's
revocation. Every code, verifier and token that crossed the sandbox joins the canary sweep."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:  # the harness builds its environment with oauth_env()
    from bench.security.harness import Run

GOOGLE_CLIENT_ID = "corbi-security.apps.googleusercontent.com"
INSTAGRAM_APP_ID = "880011223344"
IG_OAUTH_ID = "17841400000000999"
SECRET_FIELDS = ("code", "code_verifier", "refresh_token", "access_token", "client_secret", "token")


def oauth_env(run: Run) -> dict[str, str]:
    """The OAuth client settings of the stack (its secrets are canaries of the sweep)."""
    return {
        "GOOGLE_OAUTH_CLIENT_ID": GOOGLE_CLIENT_ID,
        "GOOGLE_OAUTH_CLIENT_SECRET": run.tokens["google_oauth_client_secret"],
        "INSTAGRAM_APP_ID": INSTAGRAM_APP_ID,
        "INSTAGRAM_APP_SECRET": run.tokens["instagram_app_secret"],
    }


def oauth_accounts(tokens: dict[str, str]) -> list[dict]:
    """The sandbox users who consent through the stack's OAuth clients."""
    return [
        {
            "provider": "google_calendar",
            "client_id": GOOGLE_CLIENT_ID,
            "client_secret": tokens["google_oauth_client_secret"],
            "email": "sec@sandbox.test",
        },
        {
            "provider": "instagram",
            "app_id": INSTAGRAM_APP_ID,
            "app_secret": tokens["instagram_app_secret"],
            "ig_id": IG_OAUTH_ID,
        },
    ]


def browser(run: Run, who: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.headers.update(run.headers(who))
    return session


def keep(run: Run, response: requests.Response) -> None:
    """Our answers join the sweep (the sandbox's own redirect legitimately carries the code)."""
    for answer in [*response.history, response]:
        if answer.url.startswith(run.base):
            run.responses.append(f"{dict(answer.headers)}\n{answer.text}")


def start(run: Run, session: requests.Session, provider: str) -> str:
    response = session.post(
        f"{run.base}/api/integrations/{provider}/oauth/start/", json={}, timeout=30
    )
    run.responses.append(f"{dict(response.headers)}\n{response.text}")
    if response.status_code != 200:
        raise RuntimeError(f"oauth start {provider}: {response.status_code} {response.text}")
    return response.json()["authorization_url"]


def outcome(run: Run, session: requests.Session, url: str) -> tuple[int, str]:
    response = session.get(url, timeout=30)
    keep(run, response)
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, str(body.get("code") or body.get("status") or "")


def capture_secrets(run: Run, since: int) -> int:
    """Every code, verifier and token in the sandbox's request log since `since` (bodies,
    queries and bearer headers) becomes a canary of the sweep; returns how many."""
    found = 0
    for record in run.sandbox.client.requests(since=since):
        sources = [record["body"] if isinstance(record["body"], dict) else {}]
        sources.append(record["query_params"] or {})
        values = [s.get(name) for s in sources for name in SECRET_FIELDS]
        scheme, _, bearer = (record["headers"].get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer":
            values.append(bearer)
        for value in values:
            if isinstance(value, str) and len(value) >= 16 and value not in run.tokens.values():
                run.tokens[f"oauth {record['path']} {found}"] = value
                found += 1
    return found


def oauth_flow(run: Run) -> None:
    client = run.sandbox.client
    client.add_accounts(oauth_accounts(run.tokens))
    since = max((r["seq"] for r in client.requests()), default=0)
    admin, outsider = browser(run, "admin"), browser(run, "outsider")
    checks: list[tuple[str, str, str]] = []  # (measure, value, target)

    url = start(run, admin, "google_calendar")
    checks.append(
        ("another organization's state", outcome(run, outsider, url)[1], "state_mismatch")
    )
    status, code = outcome(run, admin, url)
    checks.append(("Google connect through the sandbox", f"{status} {code}", "200 ok"))
    checks.append(("a reused state", outcome(run, admin, url)[1], "state_used"))
    client.configure(google_oauth_consent="deny")
    checks.append(("denied consent", outcome(run, admin, start(run, admin, "google_calendar"))[1],
                   "consent_denied"))  # fmt: skip
    client.configure(google_oauth_consent="allow")
    status, code = outcome(run, admin, start(run, admin, "instagram"))
    checks.append(("Instagram connect through the sandbox", f"{status} {code}", "200 ok"))

    # Bookings through the worker, then again after Google's clock expired every access token.
    for i in range(3):
        body = {"summary": "Sec", "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T11:00:00Z"}
        run.api("PUT", f"/api/calendar/bookings/oauth-{i}/", json=body)
    client.google_expire_tokens()
    for i in range(3, 6):
        body = {"summary": "Sec", "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T11:00:00Z"}
        run.api("PUT", f"/api/calendar/bookings/oauth-{i}/", json=body)
    deadline = time.monotonic() + 60
    synced = 0
    while time.monotonic() < deadline:
        with run.db() as conn:
            synced = conn.execute(
                "SELECT count(*) FROM shared_booking WHERE booking_id LIKE 'oauth-%%' "
                "AND status = 'synced'"
            ).fetchone()[0]
        if synced == 6:
            break
        time.sleep(0.5)
    checks.append(("bookings synced with OAuth tokens (one expiry mid-way)", str(synced), "6"))
    refreshes = len(client.token_calls(since=since))
    checks.append(("Google token refresh calls for 6 syncs", str(refreshes), "1"))

    response = run.api("DELETE", "/api/integrations/instagram/")
    revoked = [r for r in client.requests("instagram", since=since) if r["method"] == "DELETE"]
    checks.append(("disconnect revokes at Meta (permission delete)",
                   f"{response.status_code}, {len(revoked)} DELETE", "200, 1 DELETE"))  # fmt: skip
    captured = capture_secrets(run, since)
    checks.append(("OAuth codes, verifiers and tokens added to the sweep", str(captured), "≥ 6"))
    for measure, value, target in checks:
        ok = value == target or (target.startswith("≥") and value.isdigit() and int(value) >= 6)
        run.rows.append((f"OAuth: {measure}", value, target, ok))

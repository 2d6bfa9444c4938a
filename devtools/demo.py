"""The demo organization: its sandbox accounts, the `make run` banner, and `make demo`'s run
over the REST API (connect and test the five integrations, one message through each messaging
provider and one booking, then the outcome)."""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

import requests

# Development-only credentials the sandbox accepts; they are not secrets of any real account.
DEMO_ACCOUNTS = {
    "whatsapp": {
        "token": "demo0twilio0auth0token0000000001",
        "account": {
            "provider": "whatsapp",
            "account_sid": "AC" + "de" * 16,
            "auth_token": "demo0twilio0auth0token0000000001",
            "senders": ["whatsapp:+14155238886"],
        },
        "extra": {
            "account_sid": "AC" + "de" * 16,
            "from_whatsapp": "+14155238886",
            "to_whatsapp": "+14155550100",
        },
        "to": "+14155550100",
    },
    "sendgrid": {
        "token": "SG.demoSendgridKey01.demoSendgridSecret0000000001",
        "account": {
            "provider": "sendgrid",
            "api_key": "SG.demoSendgridKey01.demoSendgridSecret0000000001",
            "verified_senders": ["noreply@demo.test"],
            "scopes": ["mail.send"],
        },
        "extra": {"from_email": "noreply@demo.test", "to_email": "ops@demo.test"},
        "to": "ops@demo.test",
    },
    "telegram": {
        "token": "123456789:demoTelegramBotToken0000000000000001",
        "account": {
            "provider": "telegram",
            "token": "123456789:demoTelegramBotToken0000000000000001",
            "bot_username": "corbi_demo_bot",
        },
        "extra": {"chat_id": 4242},
        "to": "4242",
    },
    "instagram": {
        "token": "IGAAdemoInstagramAccessToken0000001",
        "account": {
            "provider": "instagram",
            "access_token": "IGAAdemoInstagramAccessToken0000001",
            "ig_id": "17841400000000001",
            "username": "corbi.demo",
        },
        "extra": {"instagram_scoped_id": "17841400000000001"},
        "to": "1234567890",
    },
    "google_calendar": {
        "token": "ya29.demoGoogleAccessToken0000000001",
        "account": {
            "provider": "google_calendar",
            "access_token": "ya29.demoGoogleAccessToken0000000001",
            # The same sandbox user consents to the demo OAuth client ("Connect with Google").
            "client_id": "corbi-demo.apps.googleusercontent.com",
            "client_secret": "dev-only-google-oauth-secret-0000001",
            "email": "demo.calendar@sandbox.test",
            "calendars": ["primary"],
        },
        "extra": {"calendar_id": "primary"},
        # `make run` connects it through the OAuth flow (connect_with_oauth), not by pasting.
        "oauth": True,
    },
}

# The deployment's OAuth client settings under `make run` (development only; the sandbox's).
DEMO_OAUTH_SETTINGS = {
    "GOOGLE_OAUTH_CLIENT_ID": DEMO_ACCOUNTS["google_calendar"]["account"]["client_id"],
    "GOOGLE_OAUTH_CLIENT_SECRET": DEMO_ACCOUNTS["google_calendar"]["account"]["client_secret"],
}


def connect_with_oauth(base: str, admin: dict[str, Any], provider: str = "google_calendar") -> str:
    """ "Connect with Google" as a browser would: start, open the consent URL (the sandbox
    consents at once) and follow the redirects to the callback; returns its message."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update(
        {"Authorization": f"Token {admin['token']}", "X-Org-ID": str(admin["org_id"])}
    )
    started = session.post(
        f"{base}/api/integrations/{provider}/oauth/start/",
        json={"calendar_id": "primary"},
        timeout=15,
    )
    started.raise_for_status()
    finished = session.get(started.json()["authorization_url"], timeout=30)
    return str(finished.json().get("message") or finished.status_code)


def provider_commands(base: str, headers: str) -> list[str]:
    """Ready-to-paste connect and test commands for every demo integration."""
    lines = []
    json_header = "-H 'Content-Type: application/json'"
    for provider, spec in DEMO_ACCOUNTS.items():
        body = json.dumps({"token": spec["token"], "extra": spec["extra"]})
        url = f"{base}/api/integrations/{provider}"
        lines += [
            f"  # {provider}",
            f"  curl -s {headers} {json_header} -d {shlex.quote(body)} {url}/connect/",
            f"  curl -s -X POST {headers} {url}/test/",
        ]
    return lines


def print_banner(
    base: str,
    admin: dict,
    member: dict,
    sandbox_port: int,
    flower_port: int,
    redis_url: str,
    flower_auth: str,
) -> None:
    h = f"-H 'Authorization: Token {admin['token']}' -H 'X-Org-ID: {admin['org_id']}'"
    wa = DEMO_ACCOUNTS["whatsapp"]
    send_body = json.dumps({"provider": "whatsapp", "to": wa["to"], "body": "Hello from Corbi"})
    lines = [
        "",
        "Corbi Integrations is running:",
        f"  API         {base}/api/integrations/",
        f"  API docs    {base}/api/docs/",
        f"  Health      {base}/health/",
        f"  Metrics     {base}/metrics",
        f"  Admin       {base}/admin/",
        f"  Flower      http://127.0.0.1:{flower_port}/  (basic auth {flower_auth})",
        f"  Sandbox     http://127.0.0.1:{sandbox_port}/_sandbox/requests",
        f"  Redis       {redis_url}",
        "",
        f"Demo organization 'demo' (X-Org-ID: {admin['org_id']})",
        f"  admin  {admin['username']:<12} token {admin['token']}",
        f"  member {member['username']:<12} token {member['token']}",
        "",
        "Google Calendar is already connected through the OAuth flow (the sandbox consented).",
        "Connect it again with OAuth: open the authorization_url this answers in a browser",
        "(or in the same cookie-keeping client), and the callback stores the tokens:",
        f"  curl -s -c /tmp/corbi-oauth {h} -H 'Content-Type: application/json' "
        f'-d \'{{"calendar_id": "primary"}}\' {base}/api/integrations/google_calendar/oauth/start/',
        "",
        "Or paste a token: connect and test each provider (sandbox demo credentials filled in):",
        *provider_commands(base, h),
        "",
        "List the integrations, then send a message once WhatsApp is connected:",
        f"  curl -s {h} {base}/api/integrations/",
        f"  curl -s {h} -H 'Content-Type: application/json' -d {shlex.quote(send_body)} {base}/api/messages/",
        "",
        "Connect all five and send one message through each in one go: make demo",
        "Stop with Ctrl-C.",
        "",
    ]
    print("\n".join(lines), flush=True)


def run_demo(
    base: str, admin: dict[str, Any], accounts: dict[str, dict[str, Any]], timeout: float = 60.0
) -> int:
    """Return 0 when every message is sent and the booking synced, 1 otherwise."""
    session = requests.Session()
    session.headers.update(
        {"Authorization": f"Token {admin['token']}", "X-Org-ID": str(admin["org_id"])}
    )
    api = f"{base}/api"
    connect_and_test(session, api, accounts)
    print("\nSending one message through each provider:")
    ids = send_one_each(session, api, accounts)
    booking = {
        "summary": "Corbi demo booking",
        "start": "2030-01-01T10:00:00Z",
        "end": "2030-01-01T11:00:00Z",
        "attendees": ["guest@demo.test"],
    }
    session.put(
        f"{api}/calendar/bookings/demo-booking-1/", json=booking, timeout=15
    ).raise_for_status()
    final, booking_state = wait_outcome(session, api, ids, timeout)
    return print_outcome(final, booking_state)


def connect_and_test(
    session: requests.Session, api: str, accounts: dict[str, dict[str, Any]]
) -> None:
    print("\nConnecting and testing the demo integrations:")
    for provider, spec in accounts.items():
        if spec.get("oauth"):  # connected through the OAuth flow when the stack started
            connected = "oauth"
        else:
            connected = session.post(
                f"{api}/integrations/{provider}/connect/",
                json={"token": spec["token"], "extra": spec["extra"]},
                timeout=15,
            ).status_code
        tested = session.post(f"{api}/integrations/{provider}/test/", json={}, timeout=30).json()
        print(f"  {provider:<16} connect {connected}  test ok={tested['ok']}  {tested['message']}")


def send_one_each(
    session: requests.Session, api: str, accounts: dict[str, dict[str, Any]]
) -> dict[str, int]:
    """One message through each account that has a destination; their ids by provider."""
    ids: dict[str, int] = {}
    for provider, spec in accounts.items():
        if "to" not in spec:
            continue
        body = {
            "provider": provider,
            "to": spec["to"],
            "body": f"Hello from the Corbi demo via {provider}",
            "idempotency_key": f"demo-{provider}-{int(time.time())}",
        }
        if provider == "sendgrid":
            body["subject"] = "Corbi demo"
        response = session.post(f"{api}/messages/", json=body, timeout=15)
        response.raise_for_status()
        ids[provider] = response.json()["message_id"]
    return ids


# Where each demo message's story ends: Telegram has no receipts, the others report delivery.
FINAL = {"telegram": ("sent",), "default": ("delivered", "read")}
FAILED = ("failed", "undelivered", "bounced")


def _settled(provider: str, status: str) -> bool:
    return status in FAILED or status in FINAL.get(provider, FINAL["default"])


def wait_outcome(
    session: requests.Session, api: str, ids: dict[str, int], timeout: float
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The messages and the booking once all are settled, or as they are at `timeout`."""
    deadline = time.monotonic() + timeout
    final: dict[str, dict[str, Any]] = {}
    booking_state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        final = {
            p: session.get(f"{api}/messages/{pk}/", timeout=15).json() for p, pk in ids.items()
        }
        booking_state = session.get(f"{api}/calendar/bookings/demo-booking-1/", timeout=15).json()
        if all(_settled(p, m["status"]) for p, m in final.items()) and booking_state["status"] in (
            "synced",
            "failed",
        ):
            break
        time.sleep(0.5)
    return final, booking_state


def wire_receipts(base: str, admin: dict[str, Any], sandbox: str, env: dict[str, str]) -> None:
    """Point the sandbox's receipts at this stack: SendGrid's Event Webhook (connecting the
    demo SendGrid integration with the sandbox's verification key) and the Meta webhook.
    WhatsApp needs no receiver setup (every send names its own callback under PUBLIC_BASE_URL),
    but its demo recipient writes to the sender first, as a customer would, so that the free-form
    demo messages fall inside WhatsApp's 24-hour customer-service window."""
    session = requests.Session()
    session.headers.update(
        {"Authorization": f"Token {admin['token']}", "X-Org-ID": str(admin["org_id"])}
    )
    key = session.get(f"{sandbox}/_sandbox/sendgrid/event-webhook/public-key", timeout=10)
    spec = DEMO_ACCOUNTS["sendgrid"]
    spec["extra"]["event_webhook_public_key"] = key.json()["public_key"]
    connected = session.post(
        f"{base}/api/integrations/sendgrid/connect/",
        json={"token": spec["token"], "extra": spec["extra"]},
        timeout=15,
    )
    connected.raise_for_status()
    url = connected.json()["integration"]["receipts_url"]
    session.post(
        f"{sandbox}/_sandbox/sendgrid/event-webhook",
        json={"api_key": spec["token"], "url": url},
        timeout=10,
    ).raise_for_status()
    wa = DEMO_ACCOUNTS["whatsapp"]
    session.post(
        f"{sandbox}/_sandbox/whatsapp/inbound",
        json={
            "account_sid": wa["account"]["account_sid"],
            "from": "whatsapp:" + wa["to"],
            "to": wa["account"]["senders"][0],
        },
        timeout=10,
    ).raise_for_status()
    session.post(
        f"{sandbox}/_sandbox/instagram/webhook",
        json={
            "callback_url": f"{env['PUBLIC_BASE_URL']}/webhooks/instagram/",
            "verify_token": env["META_WEBHOOK_VERIFY_TOKEN"],
            "app_secret": env["META_APP_SECRET"],
        },
        timeout=15,
    ).raise_for_status()


def print_outcome(final: dict[str, dict[str, Any]], booking_state: dict[str, Any]) -> int:
    for provider, message in final.items():
        print(
            f"  {provider:<16} message {message['id']}: {message['status']} provider id {message['provider_message_id'] or '-'} {message['last_error']}"
        )
    print(
        f"  {'google_calendar':<16} booking demo-booking-1: {booking_state.get('status')} event {booking_state.get('event_id')}"
    )
    ok = (
        all(_settled(p, m["status"]) and m["status"] not in FAILED for p, m in final.items())
        and booking_state.get("status") == "synced"
    )
    print(
        "\nDemo "
        + (
            "succeeded: every message was delivered (Telegram: sent, its final status)."
            if ok
            else "did not deliver everything; see above."
        )
    )
    return 0 if ok else 1

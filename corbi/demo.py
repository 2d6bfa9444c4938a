"""`make demo`: over the running stack's REST API, connect the five demo integrations, test them,
send one message through each messaging provider and sync one booking, then print the outcome."""

from __future__ import annotations

import time
from typing import Any

import requests


def run_demo(
    base: str, admin: dict[str, Any], accounts: dict[str, dict[str, Any]], timeout: float = 60.0
) -> int:
    """Return 0 when every message is sent and the booking synced, 1 otherwise."""
    session = requests.Session()
    session.headers.update(
        {"Authorization": f"Token {admin['token']}", "X-Org-ID": str(admin["org_id"])}
    )
    api = f"{base}/api"

    print("\nConnecting and testing the demo integrations:")
    for provider, spec in accounts.items():
        connected = session.post(
            f"{api}/integrations/{provider}/connect/",
            json={"token": spec["token"], "extra": spec["extra"]},
            timeout=15,
        )
        tested = session.post(f"{api}/integrations/{provider}/test/", json={}, timeout=30).json()
        print(
            f"  {provider:<16} connect {connected.status_code}  test ok={tested['ok']}  {tested['message']}"
        )

    print("\nSending one message through each provider:")
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
    booking = {
        "summary": "Corbi demo booking",
        "start": "2030-01-01T10:00:00Z",
        "end": "2030-01-01T11:00:00Z",
        "attendees": ["guest@demo.test"],
    }
    session.put(
        f"{api}/calendar/bookings/demo-booking-1/", json=booking, timeout=15
    ).raise_for_status()

    deadline = time.monotonic() + timeout
    final: dict[str, dict[str, Any]] = {}
    booking_state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        final = {
            p: session.get(f"{api}/messages/{pk}/", timeout=15).json() for p, pk in ids.items()
        }
        booking_state = session.get(f"{api}/calendar/bookings/demo-booking-1/", timeout=15).json()
        if all(m["status"] in ("sent", "failed") for m in final.values()) and booking_state[
            "status"
        ] in ("synced", "failed"):
            break
        time.sleep(0.5)
    for provider, message in final.items():
        print(
            f"  {provider:<16} message {message['id']}: {message['status']} provider id {message['provider_message_id'] or '-'} {message['last_error']}"
        )
    print(
        f"  {'google_calendar':<16} booking demo-booking-1: {booking_state.get('status')} event {booking_state.get('event_id')}"
    )
    ok = (
        all(m["status"] == "sent" for m in final.values())
        and booking_state.get("status") == "synced"
    )
    print(
        "\nDemo "
        + (
            "succeeded: everything was delivered."
            if ok
            else "did not deliver everything; see above."
        )
    )
    return 0 if ok else 1

"""Events out during the run: an endpoint on the harness's receiver, its secret rotated once,
then messages and receipts make events flow; every delivery must verify with the secrets the
create and rotate answers showed, and the delivery log is read through the API (so the sweep
sees bodies, headers and the log)."""

from __future__ import annotations

import time

from standardwebhooks import Webhook

from bench.security.endpoints import PREFIX, create_endpoint
from bench.security.harness import Run

PATH = "events-flow"


def events_setup(run: Run) -> None:
    endpoint = create_endpoint(run, "admin", PATH)
    response = run.api("POST", f"{PREFIX}{endpoint}/rotate-secret/", record=False)
    if response.status_code != 200:
        raise RuntimeError(f"rotate: {response.status_code} {response.text[:300]}")
    run.capture_secret(f"{PATH} rotated", response)
    run.flow_endpoint = endpoint


def verified(run: Run) -> tuple[int, int, int, set[str]]:
    """(deliveries, verified with the rotated secret, with the first one, event types)."""
    new, old = run.tokens[f"whsec {PATH} rotated"], run.tokens[f"whsec {PATH}"]
    deliveries = run.receiver.at(PATH)
    by_new = by_old = 0
    types = set()
    for delivery in deliveries:
        for secret, _ in ((new, "new"), (old, "old")):
            try:
                event = Webhook(secret).verify(delivery.body, delivery.headers)
            except Exception:
                continue
            types.add(event["type"])
            by_new += secret == new
            by_old += secret == old
    return len(deliveries), by_new, by_old, types


def events_check(run: Run) -> None:
    deadline = time.monotonic() + 60
    wanted = {"message.sent", "message.delivered", "message.read"}
    while True:
        count, by_new, by_old, types = verified(run)
        if (wanted <= types and by_new == count) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    log = run.api("GET", f"{PREFIX}{run.flow_endpoint}/deliveries/?page_size=100")
    run.api("GET", f"{PREFIX}{run.flow_endpoint}/")
    run.api("GET", PREFIX)
    ok = count > 0 and by_new == count and by_old == count and wanted <= types
    run.rows.append(
        (
            "events out: deliveries to the harness's receiver verify with the secrets shown "
            "once (rotated: both v1 signatures)",
            f"{count} deliveries ({', '.join(sorted(types))}); {by_new} verify with the rotated "
            f"secret, {by_old} with the first; delivery log {log.status_code}; "
            f"{len(run.receiver.deliveries)} deliveries received in all",
            "> 0, all verify, sent/delivered/read seen",
            ok,
        )
    )

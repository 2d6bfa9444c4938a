"""Webhook endpoints (events out): one seeded per organization, who may touch whose, the
schemathesis coverage of /api/webhook-endpoints/ per role, and the SSRF refusals with the
local-target settings off."""

from __future__ import annotations

import json

from bench.security.harness import Run
from devtools.procs import free_port

PREFIX = "/api/webhook-endpoints/"
# Addresses the SSRF rules must refuse, on a web process with WEBHOOK_ALLOW_HTTP,
# WEBHOOK_ALLOW_PRIVATE_TARGETS and the allowlist all off.
SSRF_URLS = (
    "https://127.0.0.1/hook",
    "https://[::1]/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1/hook",
    "https://localhost/hook",
    "https://0x7f000001/hook",
    "https://2130706433/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[fd00:ec2::254]/hook",
    "https://100.64.0.1/hook",
    "https://user:pw@example.com/hook",
    "http://example.com/hook",
)


def code_of(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return "(not JSON)"
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def keep(run: Run, label: str, response) -> None:
    """The answer joins the sweep, or, when it shows a secret (create), the secret is captured."""
    if '"secret"' in response.text and "whsec_" in response.text:
        run.capture_secret(label, response)
    else:
        run.responses.append(f"{dict(response.headers)}\n{response.text}")


def create_endpoint(run: Run, who: str, label: str, events: list[str] | None = None) -> int:
    """A new endpoint on the harness's receiver; its secret is captured as a canary."""
    body = {"url": run.receiver.url(label), "description": label, "events": events or []}
    response = run.api("POST", PREFIX, who, record=False, json=body)
    if response.status_code == 409:  # schemathesis may have filled the organization up
        for endpoint in run.api("GET", PREFIX, who).json():
            run.api("DELETE", f"{PREFIX}{endpoint['id']}/", who)
        response = run.api("POST", PREFIX, who, record=False, json=body)
    if response.status_code != 201:
        raise RuntimeError(f"create endpoint {label}: {response.status_code} {response.text}")
    run.capture_secret(label, response)
    return response.json()["endpoint"]["id"]


def seed_endpoints(run: Run) -> None:
    """One endpoint per organization before schemathesis, so its ids name real rows (as the
    connected integrations do); they only subscribe to a rare event type."""
    for who in ("admin", "outsider"):
        create_endpoint(run, who, f"seed-{who}", ["booking.failed"])


def cross_tenant(run: Run) -> None:
    """The member (403) and the other organization's admin (404) on a real endpoint of secorg."""
    own = create_endpoint(run, "admin", "tenant-check", ["booking.failed"])
    calls = [
        ("GET", f"{PREFIX}{own}/"),
        ("POST", f"{PREFIX}{own}/rotate-secret/"),
        ("GET", f"{PREFIX}{own}/deliveries/"),
        ("POST", f"{PREFIX}{own}/deliveries/1/redeliver/"),
        ("DELETE", f"{PREFIX}{own}/"),
        ("GET", PREFIX),
        ("POST", PREFIX),
    ]
    expected = {"member": {403}, "outsider": {404}}
    wrong, shown = 0, []
    for who, allowed in expected.items():
        for method, path in calls:
            body = {"url": run.receiver.url("x")} if method == "POST" and path == PREFIX else None
            response = run.api(method, path, who, record=False, json=body)
            status = response.status_code
            # The outsider's own list and create are its own organization's: 200/201 are fine.
            ok = status in allowed or (who == "outsider" and path == PREFIX and status < 300)
            keep(run, f"{who}-{method}", response)
            wrong += not ok
            shown.append(f"{who} {method} {path.replace(str(own), '{own}')}: {status}")
            if not ok:
                run.findings.append(f"{who} {method} {path}: {status} {response.text[:200]}")
    still = run.api("GET", f"{PREFIX}{own}/").status_code
    run.rows.append(
        (
            "webhook endpoints across roles: member (403) and another org's admin (404) on a "
            "real secorg endpoint, then the admin still sees it",
            f"{wrong} wrong answers; admin GET afterwards {still} ({'; '.join(shown)})",
            "0 wrong, 200",
            wrong == 0 and still == 200,
        )
    )


def schema_coverage(run: Run) -> None:
    """How many of each schemathesis run's requests went to /api/webhook-endpoints/."""
    cells, missing, member_ok = [], 0, 0
    for st in run.st_runs:
        hits: dict[int, int] = {}
        for status, _, where in st["answers"]:
            if PREFIX in where:
                hits[status] = hits.get(status, 0) + 1
                member_ok += st["label"].startswith("member") and status < 300
        missing += not hits
        shown = ", ".join(f"{c}: {n}" for c, n in sorted(hits.items()))
        cells.append(f"{st['label']} {sum(hits.values())} ({shown})")
    run.rows.append(
        (
            "schemathesis requests to /api/webhook-endpoints/ per run",
            "; ".join(cells) or "schemathesis skipped",
            "every run > 0",
            bool(cells) and missing == 0,
        )
    )
    run.rows.append(
        (
            "webhook endpoints: 2xx answers to a member (admins only)",
            str(member_ok),
            "0",
            not member_ok,
        )
    )


def ssrf_refusals(run: Run) -> None:
    """The addresses above, on the main stack (only the receiver's ip:port allowed) and on a
    second web process with every local-target setting off: all 400 url_not_allowed."""
    port = free_port()
    env = run.env()
    env.update(
        WEBHOOK_ALLOW_HTTP="0",
        WEBHOOK_ALLOW_PRIVATE_TARGETS="0",
        WEBHOOK_PRIVATE_TARGET_ALLOWLIST="",
    )
    run.start_web(run.old_key, name="web-ssrf", port=port, env=env)
    base = f"http://127.0.0.1:{port}"
    urls = [*SSRF_URLS, run.receiver.url("ssrf"), f"http://localhost:{run.receiver.port}/ssrf"]
    rows, bad = [], 0
    try:
        for url in urls:
            cells = [f"`{url}`"]
            for where, stack_base in (("main", run.base), ("off", base)):
                response = run.api("POST", PREFIX, json={"url": url}, base=stack_base, record=False)
                code = code_of(response.text)
                keep(run, f"ssrf {where} {url}", response)
                refused = response.status_code == 400 and code == "url_not_allowed"
                # The main stack allows exactly the receiver's 127.0.0.1:port over http.
                if where == "main" and url == run.receiver.url("ssrf"):
                    refused = response.status_code == 201
                elif where == "main" and str(run.receiver.port) in url:  # localhost: ::1 too?
                    refused = refused or response.status_code == 201
                bad += not refused
                cells.append(f"{response.status_code} {code}")
            rows.append(cells)
    finally:
        run.stop("web-ssrf")
    head = ["url", "main stack (http + receiver ip:port allowed)", "every local setting off"]
    run.tables.append(("SSRF refusals (POST /api/webhook-endpoints/)", head, rows))
    run.rows.append(
        (
            "SSRF: endpoint URLs on loopback, link-local/metadata, private, CGNAT, `localhost`, "
            "integer/hex/mapped forms, credentials, http (see the SSRF table)",
            f"{bad} answers other than 400 url_not_allowed of {2 * len(urls)} "
            "(the receiver's own ip:port on the main stack: 201 expected)",
            "0",
            bad == 0,
        )
    )


def endpoints_step(run: Run) -> None:
    schema_coverage(run)
    cross_tenant(run)
    ssrf_refusals(run)

"""Delivery through a worker, and Fernet key rotation under traffic."""

from __future__ import annotations

import time

from cryptography.fernet import Fernet

from bench.security.config import ROTATION_MESSAGES, extra_for
from bench.security.harness import Run


def delivery_run(run: Run) -> None:
    run.connect_all()
    ids = run.bulk(40, "delivery")
    counts = run.wait_done(ids, 120)
    run.rows.append(("delivery run through a worker (40 messages)", str(counts), "all sent", True))


def restart_with(run: Run, fernet: str) -> None:
    """The worker, then the web server, stopped and started again with FERNET_KEY=fernet."""
    run.stop("worker")
    run.start_worker(fernet)
    run.stop("web")
    run.start_web(fernet)


def decrypt_failures(run: Run, ids: list[int]) -> int:
    with run.db() as conn:
        return conn.execute(
            "SELECT count(*) FROM shared_message WHERE id = ANY(%s) AND status = 'failed' "
            "AND (error_kind = 'credentials' OR last_error ILIKE '%%decrypt%%')",
            (ids,),
        ).fetchone()[0]


def stale_tokens(run: Run, expected: dict[str, str]) -> int:
    """secorg's tokens not under the new key, or not the latest one connected."""
    with run.db() as conn:
        rows = conn.execute(
            "SELECT i.provider, i.token_encrypted FROM shared_integration i "
            "JOIN shared_organization o ON o.id = i.organization_id WHERE o.slug = 'secorg'"
        ).fetchall()
    fernet = Fernet(run.new_key)
    stale = 0
    for provider, ciphertext in rows:
        try:
            token = fernet.decrypt(ciphertext.encode()).decode()
        except Exception:
            stale += 1
            continue
        if token != expected[provider]:
            stale += 1
    return stale


def rotation(run: Run) -> None:
    ids = run.bulk(ROTATION_MESSAGES, "rotation")
    both = f"{run.new_key},{run.old_key}"
    time.sleep(1.0)
    # 1. web and worker learn the new key (it encrypts; the old one still decrypts).
    restart_with(run, both)
    # 2. a connect during the rotation must not be overwritten with a stale token.
    expected = dict(run.tokens)
    body = {"token": run.tokens["sendgrid_rotated"], "extra": extra_for("sendgrid")}
    reconnect = run.api("POST", "/api/integrations/sendgrid/connect/", json=body)
    expected["sendgrid"] = run.tokens["sendgrid_rotated"]
    rotate = run.manage("rotate_fernet_keys", fernet=both)
    # 3. the old key is dropped.
    restart_with(run, run.new_key)
    counts = run.wait_done(ids, 180)
    failed, stale = decrypt_failures(run, ids), stale_tokens(run, expected)
    lost = counts.get("queued", 0) + counts.get("sending", 0) + stale
    run.rows.append(
        (
            f"rotation: {ROTATION_MESSAGES} messages during new,old → rotate → new",
            f"{counts}; rotate said: {rotate.stdout.strip()} (exit {rotate.returncode}); "
            f"reconnect during rotation {reconnect.status_code}",
            "all sent (WhatsApp ones may be delivered/read by the sandbox's callbacks)",
            sum(counts.get(s, 0) for s in ("sent", "delivered", "read")) == ROTATION_MESSAGES,
        )
    )
    run.rows.append(("rotation: decrypt failures", str(failed), "0", failed == 0))
    run.rows.append(
        (
            "rotation: lost updates (undelivered + tokens not under the new key/stale)",
            str(lost),
            "0",
            lost == 0,
        )
    )

"""schemathesis against /api/schema/ as admin, member, anonymous and outsider."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from bench.security.config import EXAMPLES, SCHEMATHESIS
from bench.security.harness import Run

OPTIONS = (
    *("--max-examples", str(EXAMPLES), "--phases", "examples,coverage,fuzzing"),
    *("--checks", "all", "--workers", "2", "--request-timeout", "30", "--seed", "4242"),
    *("--suppress-health-check", "all", "--report", "har,junit"),
)


def command(run: Run, mode: str, report: Path, headers: dict[str, str]) -> list[str]:
    cmd = [SCHEMATHESIS, "run", run.base + "/api/schema/", "--url", run.base, "--mode", mode]
    cmd += [*OPTIONS, "--report-dir", str(report), "--report-har-path", str(report / "har.json")]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    return cmd


def shown_secret(text: str) -> str:
    """The `whsec_` secret of a create/rotate answer, or ""."""
    if "whsec_" not in text:
        return ""
    try:
        secret = json.loads(text).get("secret", "")
    except (ValueError, AttributeError):
        return ""
    return secret if isinstance(secret, str) and secret.startswith("whsec_") else ""


def read_har(run: Run, label: str, har: Path) -> tuple[int, dict[int, int], list[tuple]]:
    """(requests, count per status, (status, body, where) per answer) from the HAR report;
    every answer joins the sweep, every 5xx the findings."""
    statuses: dict[int, int] = {}
    answers: list[tuple[int, str, str]] = []
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    for entry in entries:
        code = entry["response"]["status"]
        statuses[code] = statuses.get(code, 0) + 1
        where = f"{entry['request']['method']} {entry['request']['url']}"
        text = entry["response"].get("content", {}).get("text") or ""
        headers = json.dumps(entry["response"].get("headers", []))
        secret = shown_secret(text)
        if secret:  # a create/rotate answer shows its secret once: keep it as a canary instead
            run.tokens[f"whsec {label} {len(run.tokens)}"] = secret
            text = ""
        run.responses.append(headers + text)
        answers.append((code, text, where))
        if code >= 500:
            run.findings.append(
                f"{label}: {code} on {entry['request']['method']} {entry['request']['url']}"
                f" body={str(entry['request'].get('postData', {}).get('text', ''))[:300]!r}"
            )
    return len(entries), statuses, answers


def schemathesis(run: Run, label: str, headers: dict[str, str], mode: str) -> dict:
    report = run.work / f"st-{label}"
    started = time.monotonic()
    result = subprocess.run(
        command(run, mode, report, headers),
        cwd=run.work,
        capture_output=True,
        text=True,
        timeout=600,
        env=run.env(),
    )
    (run.work / f"st-{label}.out").write_text(result.stdout + result.stderr)
    cases, statuses, answers = read_har(run, label, report / "har.json")
    match = re.search(r"Test cases:\s*(\d+) generated", result.stdout)
    return {
        "label": label,
        "cases": int(match.group(1)) if match else cases,
        "requests": cases,
        "statuses": statuses,
        "answers": answers,
        "server_errors": sum(n for code, n in statuses.items() if code >= 500),
        "schema_violations": len(re.findall(r"Response violates schema", result.stdout)),
        "exit": result.returncode,
        "seconds": time.monotonic() - started,
        "summary": result.stdout[-1500:],
    }


def count_bypasses(run: Run, runs: list[dict]) -> tuple[int, int]:
    """(auth bypasses, 400s for X-Org-ID) among the anonymous and outsider answers."""
    bypasses = others = 0
    for st in runs:
        if st["label"] not in ("anonymous", "outsider"):
            continue
        for status, text, where in st["answers"]:
            if status in (401, 404):
                continue
            # A 400 for a missing/malformed X-Org-ID is decided before any org is looked up.
            if status == 400 and "X-Org-ID" in text:
                others += 1
                run.notes.add(f"{st['label']}: 400 {text[:120]} ({where})")
                continue
            bypasses += 1
            run.findings.append(f"{st['label']} got {status} on {where}: {text[:200]}")
    return bypasses, others


def run_schemathesis(run: Run) -> None:
    admin, member, outsider = (run.headers(w) for w in ("admin", "member", "outsider"))
    org = {"X-Org-ID": str(run.people["admin"]["org_id"])}
    runs = [
        schemathesis(run, "admin-positive", admin, "positive"),
        schemathesis(run, "admin-negative", admin, "negative"),
        schemathesis(run, "member-positive", member, "positive"),
        schemathesis(run, "member-negative", member, "negative"),
        schemathesis(run, "anonymous", org, "all"),
        schemathesis(run, "outsider", {**outsider, **org}, "all"),
    ]
    run.st_runs = runs
    total = sum(r["cases"] for r in runs)
    errors = sum(r["server_errors"] for r in runs)
    violations = sum(r["schema_violations"] for r in runs)
    bypasses, others = count_bypasses(run, runs)
    for st in runs:
        shown = ", ".join(f"{c}: {n}" for c, n in sorted(st["statuses"].items()))
        value = f"{st['cases']} cases, {st['requests']} requests ({shown}), {st['seconds']:.0f} s"
        run.rows.append((f"schemathesis {st['label']}", value, "—", True))
    run.rows.append(("schemathesis generated cases", str(total), "≥ 1000", total >= 1000))
    run.rows.append(("server errors (5xx)", str(errors), "0", errors == 0))
    run.rows.append(("responses violating the schema", str(violations), "0", violations == 0))
    run.rows.append(
        (
            "auth bypasses (anonymous/outsider answered anything but 401/404; "
            "400 for a malformed X-Org-ID counted apart)",
            f"{bypasses} (+ {others} answers 400 for X-Org-ID)",
            "0",
            bypasses == 0,
        )
    )

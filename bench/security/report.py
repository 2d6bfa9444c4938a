"""The security run's Markdown report."""

from __future__ import annotations

import platform
from datetime import UTC, datetime

from bench.security.config import EXAMPLES
from bench.security.harness import Run


def markdown(run: Run) -> str:
    lines = [
        "# Security run",
        "",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- uname: {' '.join(platform.uname())}",
        (
            "- schemathesis: skipped (--quick)"
            if run.quick
            else f"- schemathesis: {EXAMPLES} examples per operation, phases examples, "
            "coverage, fuzzing, checks all"
        ),
        "",
        "| measure | value | target | ok |",
        "|---|---|---|---|",
    ]
    lines += [f"| {m} | {v} | {t} | {'yes' if ok else '**NO**'} |" for m, v, t, ok in run.rows]
    lines += [
        "",
        "## Canary sweep",
        "",
        "| place | bytes scanned | occurrences | encoded occurrences |",
        "|---|---|---|---|",
    ]
    lines += [f"| {p} | {b:,} | {n} | {e} |" for p, b, n, e in run.sweep]
    for title, head, rows in run.tables:
        lines += ["", f"## {title}", "", "| " + " | ".join(head) + " |"]
        lines += ["|" + "---|" * len(head)]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
        ]
    if run.findings:
        lines += ["", "## Server errors found", ""]
        lines += [f"- `{f}`" for f in run.findings[:60]]
    if run.notes:
        lines += ["", "## Answers other than 401/404 to anonymous/outsider (not bypasses)", ""]
        lines += [f"- `{n}`" for n in sorted(run.notes)[:20]]
    if run.deploy_output:
        lines += ["", "## check --deploy output", "", "```", run.deploy_output, "```"]
    return "\n".join(lines) + "\n"

"""`python -m bench.security`: start the stack, run every step, print and write the report."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.security.delivery import delivery_run, rotation
from bench.security.endpoints import endpoints_step, seed_endpoints
from bench.security.events import events_check, events_setup
from bench.security.harness import Run
from bench.security.malformed import malformed_input
from bench.security.oauth import oauth_flow
from bench.security.receipts import receivers_step
from bench.security.redaction import attachment_canary, encoded_echoes, tenant_redaction
from bench.security.report import markdown
from bench.security.schema import run_schemathesis
from bench.security.sweep import canary_sweep, check_deploy
from devtools.procs import ROOT

# In this order; a step that raises is recorded as a failed row and the next one runs.
STEPS: list[Callable[[Run], None]] = [
    run_schemathesis,
    endpoints_step,
    malformed_input,
    delivery_run,
    tenant_redaction,
    encoded_echoes,
    attachment_canary,
    rotation,
    events_setup,
    receivers_step,
    events_check,
    oauth_flow,
    canary_sweep,
    check_deploy,
]


def run_steps(run: Run, steps: list[Callable[[Run], None]]) -> None:
    try:
        run.start_stack()
        run.connect_all()
        run.connect_all("outsider")
        seed_endpoints(run)
        for step in steps:
            try:
                step(run)
            except Exception as exc:  # record it and go on: later steps measure other things
                failure = f"{type(exc).__name__}: {exc}"
                run.rows.append((f"{step.__name__} completed", failure[:300], "no error", False))
    except Exception as exc:
        failed_step = f"{type(exc).__name__}: {exc}"
        run.rows.append(("run completed", failed_step[:300], "no error", False))
    finally:
        run.stop_stack()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.security")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="skip schemathesis and print the report without writing bench/SECURITY.md",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="corbi-security-") as tmp:
        run = Run(Path(tmp))
        run.quick = args.quick
        steps = [s for s in STEPS if not (args.quick and s is run_schemathesis)]
        run_steps(run, steps)
        report = markdown(run)
    print(report)
    if not args.quick:
        (ROOT / "bench" / "SECURITY.md").write_text(report)
    return 0 if all(ok for *_, ok in run.rows) else 1

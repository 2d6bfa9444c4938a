"""Chaos run: real web, workers, beat, Redis and sandbox; kill -9 workers, restart Redis, fault
providers; prove "nothing lost, duplicates bounded and visible".

    .venv/bin/python -m bench.chaos [--messages 5000] [--orgs 20] [--quick]
    .venv/bin/python -m bench.chaos --receipts-only [--quick] [--receipt-messages 120]

Starts (and always stops, by pid) its own Postgres database `corbi_chaos` (dropped and recreated),
its own redis-server on a free loopback port (never 6379), the sandbox, gunicorn, two Celery
workers and beat. The main run kill -9s workers (and restarts them), restarts Redis empty and
faults providers. Then two phases: Redis stopped for 20 s under live workers that hold unacked
tasks, back once with its data and once empty (no worker restarted by the harness); and three
kill -9s in a row of the only worker while its batch waits on a slow provider. Last, the receipt
phase: web and workers restarted with receipts wired (PUBLIC_BASE_URL, SendGrid Event Webhook,
Meta subscription) and a short event-out retry schedule; messages to magic recipients whose
callbacks the sandbox duplicates and reorders, worker kill -9s, and the org's webhook receiver
down for 60 s: 0 wrong final statuses, 0 events lost. A worker or beat
that exits without the harness stopping it is never replaced and fails the run. Logs go to
var/chaos/. Prints a Markdown report and writes it to bench/CHAOS.md; exits 1 when a target is
missed.

Parts: config (constants), stack (the processes), workload (orgs and the enqueuer), scenario
(the main run's timeline), phases (outage and crash), receipts (+ receiver, receipts_stats,
receipts_report), analysis, report, run (main).
"""

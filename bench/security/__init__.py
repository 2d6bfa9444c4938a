"""make security: schemathesis, malformed input, tenant redaction, encoded echoes, a canary sweep.

Also key rotation under traffic, webhook endpoints (roles, SSRF refusals with local targets
off), a seeded fuzz and a signed set against the receipt receivers (/webhooks/), events flowing
to a local receiver, and check --deploy; `--quick` skips schemathesis.

Runs a real stack on loopback (sandbox, gunicorn, a worker, beat, Flower) against its own
database `corbi_security` and Redis db 11, prints a Markdown table, writes bench/SECURITY.md
and exits non-zero when a target is missed.

Parts: config, canaries (token fragments and their counting), harness (the stack, HTTP, DB),
schema (schemathesis), malformed, delivery (and key rotation), redaction (tenants, encoded
echoes), endpoints (webhook endpoints, SSRF), receiver (the local event receiver), signing,
fuzz and signed (receipt requests), receipts (their step), events (events out), sweep (the
canary sweep, check --deploy), report, run (main).
"""

from bench.security.canaries import count_encoded_leaks, count_leaks

__all__ = ["count_encoded_leaks", "count_leaks"]

"""The pipeline benchmark's constants."""

from devtools.procs import ROOT

DB_NAME = "corbi_bench"
REDIS_URL = "redis://127.0.0.1:6379/13"
# The scheduled-sweep section's own database; run alone (`--only sched`) it also has its own
# broker db and starts no stack (sandbox, gunicorn, corbi_bench).
SCHED_DB_NAME = "corbi_bench_sched"
SCHED_REDIS_URL = "redis://127.0.0.1:6379/12"
LATENCY_MS = 100
TELEGRAM_TOKEN = "7000001:benchBENCHbench_token_0123456789abcdef"
WHATSAPP_SID = "AC" + "be" * 16
WHATSAPP_TOKEN = "benchBENCHtwilioAuthToken0123456"
CHAT_BASE = 1_000_000  # far from the sandbox's magic chat ids
LOG_DIR = ROOT / "var" / "bench"
SCALE_POOL = ("threads", 32, 1)  # the shipped defaults: corbi/settings.py
# `--only edge` alone runs the whole stack on a database of its own and a private redis-server
# (db EDGE_REDIS_DB on a free port), so it can run next to another engineer's `make bench`
# (corbi_bench, db 13) and tests: their e2e tests FLUSHALL the shared server, which drops
# queued and ETA tasks and kombu's binding tables (later publishes vanish until a worker
# restarts).
EDGE_DB_NAME = "corbi_bench_edge"
EDGE_REDIS_DB = 10

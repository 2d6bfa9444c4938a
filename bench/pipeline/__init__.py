"""Delivery pipeline benchmark: bare Celery vs the pipeline, API, rate limits, events, receipts.

    .venv/bin/python -m bench.pipeline [--messages N] [--quick] [--only events,receipts,sched]

Starts (and always stops) its own sandbox (--latency-ms 100), gunicorn, Celery workers, a
dedicated Postgres database (corbi_bench, dropped and recreated) and Redis db 13 (flushed).
Prints Markdown tables of ratios and rates and writes them to bench/RESULTS.md. It asserts
nothing about wall time.
Parts: config, stack (processes, the bench org), runs (one throughput run), throughput (grid,
batch sizes, scaling, CPU), inprocess (CPU and queries per delivery), memory, api (enqueue),
ratelimits, events (deliveries/s, send rate with an endpoint) with receiver (the endpoint's
server), receipts with signed (signed receipts through gunicorn), eventsql (statements the
events code adds), scheduled (the scheduled-send sweep over 100,000 future messages, in its
own database corbi_bench_sched; `--only sched` alone starts no stack), report, run (main).
"""

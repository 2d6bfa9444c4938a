"""Settings of the receipt phase's web server and workers: the product settings, plus a short
event-out retry schedule read from WEBHOOK_RETRY_SCHEDULE_SECONDS (comma-separated seconds).

corbi.settings hard-codes that schedule (5 s, 5 min, 30 min, ...): a 60 s receiver outage would
leave deliveries waiting 5 min for their next attempt, longer than a chaos run should wait.
"""

import os

from corbi.settings import *  # noqa: F403

_SCHEDULE = os.environ.get("WEBHOOK_RETRY_SCHEDULE_SECONDS", "")
if _SCHEDULE:
    WEBHOOK_RETRY_SCHEDULE_SECONDS = tuple(float(s) for s in _SCHEDULE.split(","))

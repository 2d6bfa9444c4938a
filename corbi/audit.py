"""The `corbi.audit` logger's JSON line format."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from shared.redaction import redact

AUDIT_LOGGER = "corbi.audit"


class AuditFormatter(logging.Formatter):
    """One JSON object per line: the event fields passed in `extra={"audit": {...}}` plus time."""

    def format(self, record: logging.LogRecord) -> str:
        payload = dict(getattr(record, "audit", None) or {})
        payload.setdefault("event", record.getMessage())
        payload.setdefault("time", datetime.fromtimestamp(record.created, UTC).isoformat())
        return redact(json.dumps(payload, default=str, sort_keys=True))

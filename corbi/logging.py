"""Logging configuration: every handler redacts secrets after formatting, tracebacks included."""

from __future__ import annotations

import logging
import logging.config
import traceback
from typing import Any

from shared.redaction import redact

# Loggers that print secrets or full URLs at low levels (see docs/providers.md): kept at
# WARNING or above whatever LOG_LEVEL says, so the redaction is a second line of defence, not
# the only one.
_NOISY_LOGGERS = {
    "urllib3": "WARNING",
    "httpx": "WARNING",
    "httpcore": "WARNING",
    "python_http_client": "WARNING",
    "twilio.http_client": "WARNING",
    "googleapiclient.discovery": "WARNING",
    "googleapiclient.discovery_cache": "ERROR",
    "google_auth_httplib2": "WARNING",
    # The OAuth code exchange: logs the state, request bodies and token responses at DEBUG.
    "requests_oauthlib": "WARNING",
    "oauthlib": "WARNING",
}


def _sanitize(record: logging.LogRecord) -> None:
    """Render message and traceback now, redacted, so no handler formats the raw values."""
    if getattr(record, "_corbi_redacted", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken %-format must not break logging
        message = f"{record.msg!r} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info))
        record.exc_text = redact(text.rstrip("\n"))
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._corbi_redacted = True


class RedactingFilter(logging.Filter):
    """Handler filter: scrubs the rendered message, exception text and stack of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _sanitize(record)
        return True


class RedactingFormatter(logging.Formatter):
    """Formatter that redacts the final formatted line (covers fields added by the format)."""

    def format(self, record: logging.LogRecord) -> str:
        _sanitize(record)
        return redact(super().format(record))


_base_factory = logging.getLogRecordFactory()


def _redacting_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    _sanitize(record)
    return record


def install_record_factory() -> None:
    """Scrub every record at creation, so even handlers added later (test capture, Celery) get clean text."""
    if logging.getLogRecordFactory() is not _redacting_record_factory:
        logging.setLogRecordFactory(_redacting_record_factory)


def attach_redaction_everywhere() -> None:
    """Add the redacting filter to every handler that exists now (after Celery or others set up theirs)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def logging_dict(level: str = "INFO") -> dict[str, Any]:
    """The dictConfig used by web, worker and beat."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "corbi.logging.RedactingFilter"}},
        "formatters": {
            "plain": {
                "()": "corbi.logging.RedactingFormatter",
                "format": "%(asctime)s %(levelname)s %(name)s %(processName)s: %(message)s",
            },
            "audit": {"()": "corbi.audit.AuditFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["redact"],
            },
            "audit": {
                "class": "logging.StreamHandler",
                "formatter": "audit",
                "filters": ["redact"],
            },
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "corbi.audit": {"handlers": ["audit"], "level": "INFO", "propagate": False},
            **{name: {"level": lvl} for name, lvl in _NOISY_LOGGERS.items()},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    """Apply the logging dict and the redacting record factory."""
    install_record_factory()
    logging.config.dictConfig(logging_dict(level))

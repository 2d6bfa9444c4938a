"""Log handlers never print a secret: tracebacks, records of any logger, every handler at debug."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from corbi.logging import RedactingFilter, RedactingFormatter, install_record_factory
from tests.factories import CANARY, VALID_EXTRA, assert_no_canary


def test_tracebacks_are_redacted_after_formatting():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(RedactingFormatter("%(message)s"))
    logger = logging.getLogger("tests.redaction.traceback")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise RuntimeError(f"boom at http://x/bot{CANARY['telegram']}/sendMessage")
    except RuntimeError:
        logger.exception("send failed for %s", CANARY["sendgrid"])
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "RuntimeError" in text and "Traceback" in text
    assert_no_canary(text)


def test_record_factory_scrubs_records_for_handlers_added_later(caplog):
    install_record_factory()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("some.library").debug(
            "header %s", {"Authorization": f"Bearer {CANARY['instagram']}"}
        )
    assert_no_canary(caplog.text)
    assert_no_canary(" ".join(str(r.msg) for r in caplog.records))


@pytest.mark.django_db
def test_no_canary_in_any_response_or_log_at_debug_on_all_loggers(cast, client_for, caplog):
    loggers = [
        "",
        "django",
        "django.request",
        "django.db.backends",
        "corbi.audit",
        "urllib3",
        "rest_framework",
    ]
    for name in loggers:
        logging.getLogger(name).setLevel(logging.DEBUG)
    bodies = []
    admin = client_for(cast["admin"])
    try:
        with caplog.at_level(logging.DEBUG), CaptureQueriesContext(connection):
            for provider, token in CANARY.items():
                bodies.append(
                    admin.post(
                        f"/api/integrations/{provider}/connect/",
                        {"token": token, "extra": VALID_EXTRA[provider]},
                        format="json",
                    )
                )
                bodies.append(admin.get("/api/integrations/"))
                bodies.append(admin.get(f"/api/integrations/{provider}/"))
                # a rejected connect echoes nothing either
                bodies.append(
                    admin.post(
                        f"/api/integrations/{provider}/connect/",
                        {"token": token, "extra": {"password": token}},
                        format="json",
                    )
                )
                bodies.append(admin.delete(f"/api/integrations/{provider}/"))
            bodies.append(admin.get("/api/audit/"))
    finally:
        for name in loggers:
            logging.getLogger(name).setLevel(logging.NOTSET if name else logging.INFO)
    assert any("INSERT" in r.getMessage() for r in caplog.records), (
        "DB debug logging was not captured"
    )
    assert_no_canary(caplog.text)
    assert_no_canary("\n".join(r.getMessage() for r in caplog.records))
    for response in bodies:
        assert_no_canary(response.content.decode() + json.dumps(dict(response.items())))

"""The one Celery app. Importing it loads (and so validates) the Django settings."""

from __future__ import annotations

import os

import django
from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "corbi.settings")
django.setup()  # fails fast (e.g. FERNET_KEY) before a worker or beat starts consuming

app = Celery("corbi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


@setup_logging.connect
def _use_django_logging(**kwargs: object) -> None:
    """Keep our redacting logging config instead of Celery's own."""
    from django.conf import settings

    from corbi.logging import configure_logging

    configure_logging(settings.LOG_LEVEL)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_celery_handlers(**kwargs: object) -> None:
    from corbi.logging import attach_redaction_everywhere

    attach_redaction_everywhere()

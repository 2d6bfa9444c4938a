"""WSGI entry point (gunicorn corbi.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "corbi.settings")
application = get_wsgi_application()

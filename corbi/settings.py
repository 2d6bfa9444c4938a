"""Django settings for Corbi Integrations: one file, every value from the environment."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import dj_database_url

from corbi.env import (
    env_bool,
    env_float,
    env_floats,
    env_int,
    env_list,
    env_str,
    load_dotenv,
    require_fernet_keys,
)

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env")

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG and env_str("DJANGO_ENV", "development") == "production":
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production.")
    SECRET_KEY = "dev-only-insecure-secret-key-change-me"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Fails the process at import time (web, worker, beat, manage.py) with a message naming the
# setting and never its value.
FERNET_KEYS = require_fernet_keys("FERNET_KEY")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "shared",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "api.middleware.HeadAsGetMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "api.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "corbi.urls"
WSGI_APPLICATION = "corbi.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'corbi.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default has one writer at a time. WAL lets readers run beside it; IMMEDIATE
    # takes the write lock at BEGIN, because a deferred transaction that later writes fails at
    # once with "database is locked" instead of waiting; writers queue up to `timeout` seconds.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        "transaction_mode": "IMMEDIATE",
        "timeout": env_float("SQLITE_BUSY_TIMEOUT_SECONDS", 20.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# Request bodies: the bulk endpoint takes up to 1,000 messages.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 8 * 1024 * 1024)

# Production hardening; each one is switched by the environment, see README "Deployment".
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("TRUST_X_FORWARDED_PROTO", False) else None
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.IsOrgMember"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Bounded size and depth; NUL and unpaired surrogates refused in every key and string.
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "api.schema.OrgAutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Corbi Integrations API",
    "DESCRIPTION": (
        "Connect, test and disconnect outbound providers per organization, and hand over "
        "messages and bookings for delivery. Every operation except the schema and docs "
        "needs `Authorization: Token <key>` and an `X-Org-ID` header."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI from the app's own static files: no CDN, no third-party script on this origin.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ProviderEnum": "shared.models.Provider",
        "MessageCreateProviderEnum": "shared.providers.registry.MESSAGING_SLUGS",
        "SuppressionReasonEnum": "shared.models.SuppressionReason",
        "RoleEnum": "shared.models.Role",
        "MessageStatusEnum": "shared.models.MessageStatus",
        "BookingStatusEnum": "shared.models.BookingStatus",
        "EnvelopeStatusEnum": ["ok", "error"],
        "ErrorCodeEnum": "api.exceptions.ErrorCode",
    },
}

# Providers. PROVIDER_SANDBOX_URL points every provider at the local sandbox at once.
PROVIDER_SANDBOX_URL = env_str("PROVIDER_SANDBOX_URL", "").rstrip("/")
GRAPH_API_VERSION = env_str("GRAPH_API_VERSION", "v23.0")
_sandbox = PROVIDER_SANDBOX_URL
TWILIO_API_BASE = env_str("TWILIO_API_BASE", _sandbox or "https://api.twilio.com")
SENDGRID_API_BASE = env_str("SENDGRID_API_BASE", _sandbox or "https://api.sendgrid.com")
TELEGRAM_API_BASE = env_str("TELEGRAM_API_BASE", _sandbox or "https://api.telegram.org")
GRAPH_API_BASE = env_str(
    "GRAPH_API_BASE", f"{_sandbox or 'https://graph.instagram.com'}/{GRAPH_API_VERSION}"
)
GOOGLE_CALENDAR_API_BASE = env_str(
    "GOOGLE_CALENDAR_API_BASE", f"{_sandbox or 'https://www.googleapis.com'}/calendar/v3/"
)
GOOGLE_TOKEN_URI = env_str(
    "GOOGLE_TOKEN_URI", f"{_sandbox}/token" if _sandbox else "https://oauth2.googleapis.com/token"
)
PROVIDER_TIMEOUT_SECONDS = env_float("PROVIDER_TIMEOUT_SECONDS", 10.0)
# OAuth ("Connect with Google / Instagram", docs/oauth.md): the deployment's own OAuth clients,
# never per organization and never shown. Redirect URIs are built from PUBLIC_BASE_URL.
GOOGLE_OAUTH_CLIENT_ID = env_str("GOOGLE_OAUTH_CLIENT_ID", "")
GOOGLE_OAUTH_CLIENT_SECRET = env_str("GOOGLE_OAUTH_CLIENT_SECRET", "")
GOOGLE_OAUTH_AUTH_URI = env_str(
    "GOOGLE_OAUTH_AUTH_URI",
    f"{_sandbox}/o/oauth2/v2/auth" if _sandbox else "https://accounts.google.com/o/oauth2/v2/auth",
)
GOOGLE_REVOKE_URI = env_str(
    "GOOGLE_REVOKE_URI",
    f"{_sandbox}/revoke" if _sandbox else "https://oauth2.googleapis.com/revoke",
)
INSTAGRAM_APP_ID = env_str("INSTAGRAM_APP_ID", "")
INSTAGRAM_APP_SECRET = env_str("INSTAGRAM_APP_SECRET", "")
INSTAGRAM_OAUTH_AUTHORIZE_URL = env_str(
    "INSTAGRAM_OAUTH_AUTHORIZE_URL",
    f"{_sandbox}/oauth/authorize" if _sandbox else "https://www.instagram.com/oauth/authorize",
)
INSTAGRAM_OAUTH_TOKEN_URL = env_str(
    "INSTAGRAM_OAUTH_TOKEN_URL",
    f"{_sandbox}/oauth/access_token"
    if _sandbox
    else "https://api.instagram.com/oauth/access_token",
)
# graph.instagram.com without a version: /access_token and /refresh_access_token live there.
INSTAGRAM_GRAPH_HOST = env_str("INSTAGRAM_GRAPH_HOST", _sandbox or "https://graph.instagram.com")
# Where the OAuth callback sends the browser back ("?provider=…&result=connected|error&…");
# empty: the callback answers the result itself, as JSON in the API envelope.
OAUTH_SETTINGS_URL = env_str("OAUTH_SETTINGS_URL", "")
OAUTH_STATE_TTL_SECONDS = env_int("OAUTH_STATE_TTL_SECONDS", 600)
# Token lifecycle: beat refreshes tokens expiring before its next run (plus a margin), an
# Instagram long-lived token once it has this little left of its 60 days.
TOKEN_REFRESH_INTERVAL_SECONDS = env_float("TOKEN_REFRESH_INTERVAL_SECONDS", 300.0)
INSTAGRAM_REFRESH_BEFORE_SECONDS = env_int("INSTAGRAM_REFRESH_BEFORE_SECONDS", 7 * 86_400)
TEST_CONNECTION_TIMEOUT_SECONDS = env_float("TEST_CONNECTION_TIMEOUT_SECONDS", 10.0)
# Test Connection holds a web thread for up to its timeout: beyond these many running tests
# (helper threads still stuck in a socket count until they end) it answers 429 + Retry-After.
# Keep the per-process bound below gunicorn's --threads. Per org is shared through Redis.
TEST_CONNECTION_MAX_CONCURRENT_PER_PROCESS = env_int(
    "TEST_CONNECTION_MAX_CONCURRENT_PER_PROCESS", 2
)
TEST_CONNECTION_MAX_CONCURRENT_PER_ORG = env_int("TEST_CONNECTION_MAX_CONCURRENT_PER_ORG", 2)

# Celery (the one app lives in corbi/celery.py). Task arguments are ids only; JSON only.
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # kombu's Redis transport with its unacked-task restore made safe across a broker outage
    # (corbi/broker.py); a named transport overrides the URL's scheme, hence only for Redis.
    CELERY_BROKER_TRANSPORT = "corbi.broker:Transport"
if CELERY_BROKER_URL.startswith("rediss://"):
    # kombu infers TLS from the rediss scheme only when no transport is named: say it here.
    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# acks_late alone loses a task whose worker is SIGKILLed: pair it with reject_on_worker_lost.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_DEFAULT_QUEUE = "corbi"
CELERY_WORKER_POOL = env_str("CELERY_WORKER_POOL", "threads")
# Chosen by bench/RESULTS.md: 32 threads with prefetch 1 delivered the most per process; more
# threads only add GIL contention, and 32 keeps Postgres connections per worker modest.
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", 32)
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1)
CELERY_WORKER_SEND_TASK_EVENTS = True
# Celery's Django fixup closes the DB connection around every task unless this is set, which
# costs a Postgres connect per task; workers instead recycle connections the way Django does
# (CONN_MAX_AGE, errors) in workers/tasks.py.
CELERY_DB_REUSE_MAX = 1_000_000
# Flower builds its task view from the worker events; a "sent" event per publish would double
# the cost of every publish (the bulk fan-out publishes thousands).
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 2.0)
# Publishing to a broker that is down fails fast: the DB outbox plus the sweeper deliver later.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Redis redelivers unacked tasks after this; every countdown stays far below it.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
    "socket_timeout": 5,
    "socket_connect_timeout": 2,
}
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}

# Delivery. Delays longer than MAX_COUNTDOWN_SECONDS are kept in the DB and picked up by the
# sweeper, so no countdown ever approaches the visibility timeout.
MAX_COUNTDOWN_SECONDS = env_int("MAX_COUNTDOWN_SECONDS", 300)
DELIVERY_MAX_RETRIES = env_int("DELIVERY_MAX_RETRIES", 8)
DELIVERY_BACKOFF_BASE_SECONDS = env_float("DELIVERY_BACKOFF_BASE_SECONDS", 2.0)
DELIVERY_BACKOFF_MAX_SECONDS = env_float("DELIVERY_BACKOFF_MAX_SECONDS", 600.0)
DELIVERY_LEASE_SECONDS = env_int("DELIVERY_LEASE_SECONDS", 60)
if DELIVERY_LEASE_SECONDS <= PROVIDER_TIMEOUT_SECONDS:
    from django.core.exceptions import ImproperlyConfigured

    # A claimed message starts its provider call only while a whole call still fits its lease.
    raise ImproperlyConfigured("DELIVERY_LEASE_SECONDS must exceed PROVIDER_TIMEOUT_SECONDS.")
# A delivery task takes up to DELIVERY_BATCH_SIZE message ids: one query loads them, one claims
# them, one Redis round trip books their rate-limit slots and one transaction records the sends,
# and the sends themselves run concurrently on DELIVERY_SEND_THREADS threads per worker process
# (0: the worker's --concurrency). Chosen by bench/pipeline.py (see bench/RESULTS.md).
DELIVERY_BATCH_SIZE = env_int("DELIVERY_BATCH_SIZE", 25)
DELIVERY_SEND_THREADS = env_int("DELIVERY_SEND_THREADS", 0)
# A message whose attempts keep dying mid-send (a poison message) fails after this many.
DELIVERY_MAX_INTERRUPTIONS = env_int("DELIVERY_MAX_INTERRUPTIONS", 3)
SWEEPER_INTERVAL_SECONDS = env_float("SWEEPER_INTERVAL_SECONDS", 15.0)
SWEEPER_GRACE_SECONDS = env_int("SWEEPER_GRACE_SECONDS", 60)
BULK_MAX_MESSAGES = 1000
# Scheduled sends: `send_at` at most this far ahead (30 days); one at most
# SCHEDULE_PAST_TOLERANCE_SECONDS in the past means now, further back is refused.
SCHEDULE_MAX_AHEAD_SECONDS = env_int("SCHEDULE_MAX_AHEAD_SECONDS", 30 * 24 * 3600)
SCHEDULE_PAST_TOLERANCE_SECONDS = env_int("SCHEDULE_PAST_TOLERANCE_SECONDS", 60)
# Email attachments per message: at most this many files and bytes (decoded); their base64
# travels in the request, so the total stays under DATA_UPLOAD_MAX_MEMORY_SIZE.
MESSAGE_ATTACHMENTS_MAX_COUNT = env_int("MESSAGE_ATTACHMENTS_MAX_COUNT", 10)
MESSAGE_ATTACHMENTS_MAX_BYTES = env_int("MESSAGE_ATTACHMENTS_MAX_BYTES", 5 * 1024 * 1024)
if MESSAGE_ATTACHMENTS_MAX_BYTES * 4 // 3 + 65_536 > DATA_UPLOAD_MAX_MEMORY_SIZE:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "MESSAGE_ATTACHMENTS_MAX_BYTES, base64-encoded, must fit in DATA_UPLOAD_MAX_MEMORY_SIZE."
    )
# Events out (docs/events.md): signed webhook deliveries to the organization's endpoints.
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0)
WEBHOOK_LEASE_SECONDS = env_int("WEBHOOK_LEASE_SECONDS", 60)
if WEBHOOK_LEASE_SECONDS <= 3 * WEBHOOK_TIMEOUT_SECONDS:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("WEBHOOK_LEASE_SECONDS must exceed 3 x WEBHOOK_TIMEOUT_SECONDS.")
WEBHOOK_SECRET_GRACE_SECONDS = env_int("WEBHOOK_SECRET_GRACE_SECONDS", 86_400)
WEBHOOK_DISABLE_AFTER_SECONDS = env_int("WEBHOOK_DISABLE_AFTER_SECONDS", 5 * 86_400)
WEBHOOK_MAX_ENDPOINTS = env_int("WEBHOOK_MAX_ENDPOINTS", 20)
# Delays after each failed attempt (about three days in all), each with +/-10 % jitter;
# comma-separated seconds in the environment.
WEBHOOK_RETRY_SCHEDULE_SECONDS = env_floats(
    "WEBHOOK_RETRY_SCHEDULE_SECONDS", (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
)
# http:// endpoint URLs (https only otherwise); and endpoints on private, loopback or
# link-local addresses: all of them, or only the listed `ip` / `ip:port` ones.
WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", DEBUG)
WEBHOOK_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
WEBHOOK_PRIVATE_TARGET_ALLOWLIST = env_list("WEBHOOK_PRIVATE_TARGET_ALLOWLIST", [])
# A CA bundle (PEM path) to verify https receivers with instead of the default one.
WEBHOOK_CA_BUNDLE = env_str("WEBHOOK_CA_BUNDLE", "")
# Shared rate limits (messages per second) per (organization, provider): each provider's spec in
# shared/providers/ has a default; RATE_LIMIT_<SLUG> (e.g. RATE_LIMIT_WHATSAPP=40) overrides it,
# and extra.rate_limit_per_second overrides both for one integration. Telegram also limits chats.
_CHAT_RATE_SETTINGS = {"RATE_LIMIT_TELEGRAM_CHAT", "RATE_LIMIT_TELEGRAM_GROUP"}
RATE_LIMITS = {
    name.removeprefix("RATE_LIMIT_").lower(): env_float(name, 0.0)
    for name in sorted(os.environ)
    if name.startswith("RATE_LIMIT_") and name not in _CHAT_RATE_SETTINGS
}
# A margin under Telegram's ~1 msg/s per chat, so network jitter never trips its 429.
TELEGRAM_CHAT_RATE = env_float("RATE_LIMIT_TELEGRAM_CHAT", 0.9)
TELEGRAM_GROUP_RATE = env_float("RATE_LIMIT_TELEGRAM_GROUP", 20.0 / 60.0)
CELERY_BEAT_SCHEDULE = {
    "sweep-outbox": {
        "task": "workers.tasks.sweep_outbox",
        "schedule": SWEEPER_INTERVAL_SECONDS,
        "options": {"expires": SWEEPER_INTERVAL_SECONDS},
    },
    "refresh-tokens": {
        "task": "workers.tasks.refresh_tokens",
        "schedule": TOKEN_REFRESH_INTERVAL_SECONDS,
        "options": {"expires": TOKEN_REFRESH_INTERVAL_SECONDS},
    },
}
# Receipts in (/webhooks/, docs/receipts.md). PUBLIC_BASE_URL is this service as providers
# reach it (scheme, host, port, no trailing slash); Twilio signs the exact callback URL, so it
# must match what the proxy in front receives. Empty: sends ask for no status callback.
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL", "").rstrip("/")
# Meta (Instagram) webhooks belong to the deployment's Meta app, not to one organization.
META_APP_SECRET = env_str("META_APP_SECRET", "")
META_WEBHOOK_VERIFY_TOKEN = env_str("META_WEBHOOK_VERIFY_TOKEN", "")
# A signed SendGrid batch older (or newer) than this is refused as a replay.
SENDGRID_EVENT_MAX_AGE_SECONDS = env_int("SENDGRID_EVENT_MAX_AGE_SECONDS", 600)
# A receipt naming a provider id not recorded yet is matched again for this long, then dropped.
RECEIPT_MATCH_WINDOW_SECONDS = env_int("RECEIPT_MATCH_WINDOW_SECONDS", 300)
WEBHOOK_MAX_BODY_BYTES = env_int("WEBHOOK_MAX_BODY_BYTES", 2 * 1024 * 1024)
WORKER_HEARTBEAT_WINDOW_SECONDS = env_int("WORKER_HEARTBEAT_WINDOW_SECONDS", 60)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING_CONFIG = None
LOGGING: dict = {}
if not os.environ.get("CORBI_SKIP_LOGGING_SETUP"):
    from corbi.logging import configure_logging

    configure_logging(LOG_LEVEL)

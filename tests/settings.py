"""Test settings: real Postgres, a fixed test-only Fernet key, no developer .env."""

import os

os.environ["CORBI_DOTENV"] = "0"
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
# A test-only key; never used outside the test suite.
os.environ.setdefault("FERNET_KEY", "x8bJ4h9pTQ2mD6qWz1yV3nR5sK7uL0aC9eF2gH4iJ6k=")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

from corbi.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Webhook receivers in tests are local http.server instances on 127.0.0.1; the SSRF tests
# switch these off (or allow-list one receiver) to see the refusals.
WEBHOOK_ALLOW_HTTP = True
WEBHOOK_ALLOW_PRIVATE_TARGETS = True

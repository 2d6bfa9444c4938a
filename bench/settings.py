"""Settings for the benchmark's web server: the product settings plus a no-op baseline URL."""

from corbi.settings import *  # noqa: F403

ROOT_URLCONF = "bench.baseline_urls"

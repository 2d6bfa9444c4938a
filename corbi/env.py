"""Environment helpers for settings: typed reads that fail loudly and never echo a secret."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv as _load_dotenv

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def load_dotenv(path: Path) -> None:
    """Read KEY=VALUE pairs from `path` into the environment without overriding what is set."""
    if os.environ.get("CORBI_DOTENV", "1") != "0" and path.exists():
        _load_dotenv(path, override=False)


def env_str(name: str, default: str) -> str:
    """The variable as a stripped string, or `default` when unset."""
    value = os.environ.get(name)
    return default if value is None else value.strip()


def env_bool(name: str, default: bool) -> bool:
    """The variable as a boolean (1/0, true/false, yes/no, on/off)."""
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false, 1/0, yes/no, on/off).")


def env_int(name: str, default: int) -> int:
    """The variable as an integer."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer.") from None


def env_float(name: str, default: float) -> float:
    """The variable as a float."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    """The variable as a comma-separated list."""
    value = os.environ.get(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_floats(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """The variable as comma-separated positive numbers (at least one)."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        numbers = tuple(float(item) for item in value.split(",") if item.strip())
    except ValueError:
        numbers = ()
    if not numbers or any(not n > 0 for n in numbers):
        raise ImproperlyConfigured(f"{name} must be comma-separated positive numbers of seconds.")
    return numbers


def require_fernet_keys(name: str) -> tuple[str, ...]:
    """Comma-separated Fernet keys (first encrypts, all decrypt); raise naming `name`, never a value."""
    raw = os.environ.get(name, "")
    keys = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not keys:
        raise ImproperlyConfigured(
            f"{name} is not set. Set it to a Fernet key (generate one with "
            '`python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"`); several keys may be comma-separated.'
        )
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"{name} key #{position} of {len(keys)} is not a valid Fernet key: it must be "
                "32 bytes encoded as url-safe base64 (44 characters)."
            ) from None
    return keys

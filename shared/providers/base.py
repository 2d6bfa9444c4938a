"""The provider contract: one error type, the outbound message, and the adapter base class."""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests

from shared.redaction import scrub_values

from .spec import ProviderSpec

KINDS = ("permanent", "transient", "rate_limited", "credentials")
REDACTED = "<redacted>"


class ProviderError(Exception):
    """One error type for every provider failure."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        provider: str,
        code: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.provider = provider
        self.code = None if code is None else str(code)
        self.retry_after = None if retry_after is None else float(retry_after)
        self.status = status

    @property
    def permanent(self) -> bool:
        """True when retrying the same call cannot succeed."""
        return self.kind in {"permanent", "credentials"}

    @property
    def credentials_rejected(self) -> bool:
        """True when the stored credentials must be fixed by a person."""
        return self.kind == "credentials"

    @property
    def rate_limited(self) -> bool:
        """True when the provider asked us to wait `retry_after` seconds."""
        return self.kind == "rate_limited"

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.message!r}, kind={self.kind!r}, provider={self.provider!r}, "
            f"code={self.code!r}, retry_after={self.retry_after!r}, status={self.status!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.message, self.kind, self.provider, self.code, self.retry_after, self.status)
        return (_restore_error, fields)


def _restore_error(
    message: str,
    kind: str,
    provider: str,
    code: str | None,
    retry_after: float | None,
    status: int | None,
) -> ProviderError:
    return ProviderError(
        message, kind=kind, provider=provider, code=code, retry_after=retry_after, status=status
    )


@dataclass(frozen=True)
class Attachment:
    """An email attachment; `content` is base64 and never shown by repr (so never logged)."""

    filename: str
    content: str = field(repr=False)
    type: str = "application/octet-stream"
    disposition: str = "attachment"
    content_id: str = ""


@dataclass(frozen=True)
class OutboundMessage:
    """What a worker hands an adapter to deliver: text, or what the provider's spec allows
    instead or beside it (a template, media by URL, attachments, a format, a message tag)."""

    to: str
    body: str
    subject: str = ""
    html: str = ""
    reference: str = ""
    status_callback: str = ""
    template: Mapping[str, Any] | None = None
    media_urls: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    parse_mode: str = ""
    tag: str = ""


_local = threading.local()


class _Session(requests.Session):
    """A requests.Session that reads proxy/CA settings from the environment once per host.

    requests re-scans os.environ (HTTP(S)_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) on every request;
    the environment does not change while a worker runs, so the answer is cached per scheme+host.
    """

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str], dict[str, Any]] = {}

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        if proxies or stream is not None or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        cached = self._environment.get(key)
        if cached is None:
            cached = super().merge_environment_settings(url, {}, None, None, None)
            self._environment[key] = cached
        return {**cached, "proxies": dict(cached["proxies"])}


def shared_session() -> requests.Session:
    """This thread's keep-alive HTTP session, reused by every adapter built on the thread.

    Reusing it saves a TCP (and, against the real APIs, TLS) handshake per send. It carries no
    tenant state: credentials travel per request and cookies are refused.
    """
    session = getattr(_local, "session", None)
    if session is None:
        session = _Session()
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        _local.session = session
    return session


def retry_after_seconds(value: str | None, default: float) -> float:
    """Read a Retry-After header (delta-seconds or HTTP date); `default` when absent or bad."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return default
    return max(0.0, when - time.time())


class ProviderAdapter:
    """Base adapter: holds decrypted credentials and builds sanitized errors.

    Each subclass declares its provider's `spec`; `slug` and `vendor` are read from it.
    """

    spec: ClassVar[ProviderSpec]
    slug: ClassVar[str]
    vendor: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.slug = cls.spec.slug
        cls.vendor = cls.spec.vendor

    def __init__(
        self,
        *,
        token: str,
        extra: Mapping[str, Any],
        base_url: str,
        timeout: float = 10.0,
        **options: Any,
    ) -> None:
        if not token:
            raise ProviderError(
                f"{self.vendor} credentials are missing", kind="credentials", provider=self.slug
            )
        self._token = token
        self.extra = dict(extra)
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.options = options
        self._configure()

    def _configure(self) -> None:
        """Read the adapter's own `extra` fields and build its client; raise ProviderError."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    def check(self) -> str:
        """Probe the credentials read-only; return what was verified, or raise ProviderError."""
        raise NotImplementedError

    def send(self, message: OutboundMessage) -> str:
        """Deliver `message`; return the provider's message id, or raise ProviderError."""
        raise NotImplementedError

    def _secrets(self) -> list[str]:
        return [self._token]

    def _scrub(self, text: str) -> str:
        """`text` without this adapter's secrets: exact, percent-encoded or base64 (any offset,
        so an echoed `Basic base64(user:secret)` header is caught too)."""
        return scrub_values(text, [s for s in self._secrets() if s], REDACTED)

    def _error(
        self,
        message: str,
        *,
        kind: str,
        code: str | int | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> ProviderError:
        return ProviderError(
            self._scrub(message),
            kind=kind,
            provider=self.slug,
            code=None if code is None else str(code),
            retry_after=retry_after,
            status=status,
        )

    def _timeout_error(self) -> ProviderError:
        return self._error(
            f"{self.vendor} did not answer within {self.timeout:g} s", kind="transient"
        )

    def _unreachable_error(self, exc: BaseException) -> ProviderError:
        return self._error(
            f"{self.vendor} could not be reached ({type(exc).__name__})", kind="transient"
        )

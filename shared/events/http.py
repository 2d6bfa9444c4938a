"""One webhook POST to a checked address: pinned IP, Host and TLS name kept, no redirects, no
proxies from the environment, a timeout, and only the first bytes of the answer read."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from shared.events.ssrf import Target

RESPONSE_LOG_BYTES = 4096


@dataclass(frozen=True)
class HttpAnswer:
    status_code: int
    headers: dict[str, str]
    body: str  # the first RESPONSE_LOG_BYTES bytes, decoded leniently


class _PinnedAdapter(HTTPAdapter):
    """Connects to the URL's (already checked) IP while TLS verifies and names `host` (SNI)."""

    def __init__(self, host: str) -> None:
        super().__init__(max_retries=0)
        self._host = host

    def build_connection_pool_key_attributes(self, request, verify, cert=None):  # type: ignore[no-untyped-def]
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        if host_params.get("scheme") == "https":
            pool_kwargs["server_hostname"] = self._host
            pool_kwargs["assert_hostname"] = self._host
        return host_params, pool_kwargs


def _host_header(target: Target) -> str:
    name = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return name if target.port == default else f"{name}:{target.port}"


def post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    verify: bool | str = True,
) -> HttpAnswer:
    """POST `body` to `target.address`; raises requests.RequestException on a network error
    (a 3xx is returned, never followed)."""
    address = f"[{target.address}]" if ":" in target.address else target.address
    url = f"{target.scheme}://{address}:{target.port}{target.path}"
    session = requests.Session()
    session.trust_env = False  # no proxy or netrc from the environment
    session.mount(f"{target.scheme}://", _PinnedAdapter(target.host))
    deadline = time.monotonic() + timeout
    try:
        response = session.post(
            url,
            data=body,
            headers={**headers, "Host": _host_header(target)},
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
            verify=verify,
        )
        with response:
            kept = _read_some(response, deadline)
            return HttpAnswer(
                status_code=response.status_code,
                headers={k.lower(): v for k, v in response.headers.items()},
                body=kept.decode("utf-8", errors="replace"),
            )
    finally:
        session.close()


def _read_some(response: requests.Response, deadline: float) -> bytes:
    """At most RESPONSE_LOG_BYTES of the body, stopping at the deadline (a trickling server)."""
    kept = b""
    try:
        for chunk in response.iter_content(chunk_size=1024):
            kept += chunk
            if len(kept) >= RESPONSE_LOG_BYTES or time.monotonic() > deadline:
                break
    except requests.RequestException:
        pass  # the status is what counts; the body is only for the log
    return kept[:RESPONSE_LOG_BYTES]

"""Test helpers: a control-API client and a context manager that runs `python -m sandbox`."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import requests

_LISTENING = re.compile(r"sandbox listening on (http://\S+)")
_REPO_ROOT = Path(__file__).resolve().parent.parent


class SandboxError(RuntimeError):
    """The sandbox refused a control call or failed to start."""


class SandboxClient:
    """Thin client for the /_sandbox control API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = requests.Session()
        self._http.trust_env = False

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self._http.request(method, self.base_url + path, timeout=10, **kwargs)
        if response.status_code >= 400:
            raise SandboxError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/_sandbox/health").json()

    def add_account(self, provider: str, **fields: Any) -> dict[str, Any]:
        """Register one account; returns it with the sandbox's defaults filled in."""
        return self._call(
            "POST", "/_sandbox/accounts", json={"provider": provider, **fields}
        ).json()

    def add_accounts(self, accounts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._call("POST", "/_sandbox/accounts", json=list(accounts)).json()

    def fault(
        self,
        provider: str,
        *,
        mode: str = "status",
        status: int | None = None,
        count: int | None = None,
        seconds: float | None = None,
        retry_after: float | None = None,
        latency_ms: int | None = None,
        body: Any = None,
        path: str | None = None,
    ) -> str:
        """Install a fault for the provider's next `count` requests (or `seconds`); returns its id."""
        spec = {
            "provider": provider,
            "mode": mode,
            "status": status,
            "count": count,
            "seconds": seconds,
            "retry_after": retry_after,
            "latency_ms": latency_ms,
            "body": body,
            "path": path,
        }
        spec = {k: v for k, v in spec.items() if v is not None}
        return self._call("POST", "/_sandbox/faults", json=spec).json()["id"]

    def clear_faults(self) -> None:
        self._call("DELETE", "/_sandbox/faults")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change runtime settings (rates, latency...); returns the whole config."""
        return self._call("POST", "/_sandbox/config", json=settings).json()

    def reset(self) -> None:
        self._call("POST", "/_sandbox/reset")

    def requests(self, provider: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Recorded provider requests, oldest first."""
        params: dict[str, Any] = {"since": since}
        if provider is not None:
            params["provider"] = provider
        return self._call("GET", "/_sandbox/requests", params=params).json()

    def clear_requests(self) -> None:
        self._call("DELETE", "/_sandbox/requests")

    def callbacks(self, since: int = 0) -> list[dict[str, Any]]:
        """Status callbacks the sandbox sent (or refused to send), oldest first."""
        return self._call("GET", "/_sandbox/callbacks", params={"since": since}).json()

    def close(self) -> None:
        self._http.close()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class SandboxProcess:
    """Runs `python -m sandbox --port 0` for the duration of a `with` block."""

    url: str
    client: SandboxClient

    def __init__(
        self,
        *,
        latency_ms: int = 0,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 20.0,
    ) -> None:
        self.latency_ms = latency_ms
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> SandboxProcess:
        cmd = [sys.executable, "-m", "sandbox", "--port", "0", *self.extra_args]
        if self.latency_ms:
            cmd += ["--latency-ms", str(self.latency_ms)]
        self.process = subprocess.Popen(
            cmd, cwd=_REPO_ROOT, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=_pump, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SandboxError("sandbox did not report it was listening in time")
                try:
                    line = lines.get(timeout=remaining)
                except queue.Empty:
                    continue
                if line is None:
                    raise SandboxError(f"sandbox exited early with code {self.process.wait()}")
                match = _LISTENING.search(line)
                if match:
                    self.url = match.group(1)
                    break
            self.client = SandboxClient(self.url)
            self.client.health()
        except BaseException:
            self._stop()
            raise
        return self

    def _stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __exit__(self, *exc_info: object) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        self._stop()

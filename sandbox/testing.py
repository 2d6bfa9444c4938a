"""Test helpers: a control-API client and a context manager that runs `python -m sandbox`."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from devtools import commands
from devtools.procs import Proc, ProcessExited, Procs, WaitTimeout

_LISTENING = re.compile(r"sandbox listening on (http://\S+)")


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

    def google_expire_tokens(self) -> int:
        """Expire every Google access token issued so far; returns how many."""
        return self._call("POST", "/_sandbox/google/expire_tokens").json()["expired"]

    def google_revoke_all(self) -> int:
        """Revoke every OAuth-issued Google refresh token (the user removed the app's access)."""
        return self._call("POST", "/_sandbox/google/revoke_all").json()["revoked"]

    def token_calls(
        self, grant_type: str = "refresh_token", since: int = 0
    ) -> list[dict[str, Any]]:
        """Recorded POSTs to Google's token endpoint with this grant_type."""
        return [
            r
            for r in self.requests("google_calendar", since=since)
            if r["path"] == "/token"
            and isinstance(r["body"], dict)
            and r["body"].get("grant_type") == grant_type
        ]

    def callbacks(self, provider: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Callbacks and webhooks the sandbox sent (or refused to send), oldest first."""
        params: dict[str, Any] = {"since": since}
        if provider is not None:
            params["provider"] = provider
        return self._call("GET", "/_sandbox/callbacks", params=params).json()

    def replay_callback(self, seq: int) -> dict[str, Any]:
        """Post a recorded webhook again, byte for byte (a duplicate); returns the new entry."""
        return self._call("POST", f"/_sandbox/callbacks/{seq}/replay").json()

    def sendgrid_event_webhook(self, api_key: str, url: str | None) -> dict[str, Any]:
        """Point a SendGrid account's Event Webhook at `url` (None turns it off)."""
        body = {"api_key": api_key, "url": url}
        return self._call("POST", "/_sandbox/sendgrid/event-webhook", json=body).json()

    def sendgrid_public_key(self) -> str:
        """The base64 DER public key that verifies the sandbox's Event Webhook signatures."""
        return self._call("GET", "/_sandbox/sendgrid/event-webhook/public-key").json()["public_key"]

    def instagram_webhook(
        self, callback_url: str, verify_token: str, app_secret: str
    ) -> dict[str, Any]:
        """Subscribe the Instagram webhook (the sandbox runs the hub.challenge handshake first)."""
        body = {
            "callback_url": callback_url,
            "verify_token": verify_token,
            "app_secret": app_secret,
        }
        return self._call("POST", "/_sandbox/instagram/webhook", json=body).json()

    def add_whatsapp_template(
        self, account_sid: str, sid: str, body: str, variables: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Register a Content template (`HX…`) for a WhatsApp account; `variables` are its
        default sample values, one per `{{placeholder}}`."""
        spec = {"account_sid": account_sid, "sid": sid, "body": body, "variables": variables or {}}
        return self._call("POST", "/_sandbox/whatsapp/templates", json=spec).json()

    def whatsapp_inbound(
        self,
        account_sid: str,
        customer: str,
        sender: str | None = None,
        seconds_ago: float = 0,
    ) -> dict[str, Any]:
        """Simulate the customer's (`whatsapp:+…`) inbound message to `sender` (None: every
        sender of the account) `seconds_ago` seconds ago, opening the 24-hour window."""
        spec: dict[str, Any] = {
            "account_sid": account_sid,
            "from": customer,
            "seconds_ago": seconds_ago,
        }
        if sender is not None:
            spec["to"] = sender
        return self._call("POST", "/_sandbox/whatsapp/inbound", json=spec).json()

    def instagram_inbound(
        self, ig_id: str, sender_id: str, seconds_ago: float = 0
    ) -> dict[str, Any]:
        """Simulate an Instagram user's message to the account `seconds_ago` seconds ago."""
        spec = {"ig_id": ig_id, "sender_id": sender_id, "seconds_ago": seconds_ago}
        return self._call("POST", "/_sandbox/instagram/inbound", json=spec).json()

    def close(self) -> None:
        self._http.close()


class SandboxProcess:
    """Runs `python -m sandbox --port 0` for the duration of a `with` block.

    Its stdout is read for the URL it listens on; stderr goes to `log` when given, else it is
    echoed to this process's stderr. `procs` registers it with a caller's process stack.
    """

    url: str
    client: SandboxClient

    def __init__(
        self,
        *,
        latency_ms: int = 0,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 20.0,
        procs: Procs | None = None,
        log: Path | None = None,
    ) -> None:
        self.latency_ms = latency_ms
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.procs = procs or Procs()
        self.log = log
        self.proc: Proc | None = None
        self._found: list[str] = []

    @property
    def process(self) -> Proc | None:
        return self.proc

    def _line(self, line: str) -> None:
        match = _LISTENING.search(line)
        if match and not self._found:
            self._found.append(match.group(1))
        elif not match and self.log is None:
            sys.stderr.write(line)

    def __enter__(self) -> SandboxProcess:
        options = [*self.extra_args]
        if self.latency_ms:
            options += ["--latency-ms", str(self.latency_ms)]
        self.proc = self.procs.start(
            "sandbox", commands.sandbox(0, *options), log=self.log, on_line=self._line
        )
        try:
            self.procs.wait_ready(
                self.proc, lambda: self._found, self.startup_timeout, "the sandbox URL", 0.02
            )
            self.url = self._found[0]
            self.client = SandboxClient(self.url)
            self.client.health()
        except (WaitTimeout, ProcessExited) as exc:
            self._stop()
            raise SandboxError(f"sandbox did not report it was listening: {exc}") from exc
        except BaseException:
            self._stop()
            raise
        return self

    def _stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc, timeout=10)
            self.proc = None

    def __exit__(self, *exc_info: object) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        self._stop()

"""SSRF rules for webhook URLs: checked when an endpoint is saved and again right before each
send, which then connects to the address that was checked (no second DNS lookup to rebind).

A URL is refused unless it is https (or http with WEBHOOK_ALLOW_HTTP), has a host and no
credentials, and every address its host resolves to is public: loopback, private, link-local
(cloud metadata included), CGNAT, multicast, reserved and unspecified addresses are refused,
also inside IPv4-mapped and NAT64 IPv6 forms. WEBHOOK_ALLOW_PRIVATE_TARGETS lets every such
address through (development and tests); WEBHOOK_PRIVATE_TARGET_ALLOWLIST lets only the listed
`ip` or `ip:port` ones through.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Named explicitly although the rules below already cover them (link-local, ULA).
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlNotAllowed(Exception):
    """The URL may not receive webhooks; the message says why (never resolves to a secret)."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`address`) and what to name (`host`, for Host/SNI)."""

    scheme: str
    host: str
    port: int
    address: str
    path: str  # path and query, as given


def blocked_reason(address: IPAddress) -> str:
    """Why `address` may not be a webhook target, or "" when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in NAT64 else None
        )
        if embedded is not None:
            return blocked_reason(embedded)
    checks = (
        (address in METADATA_ADDRESSES, "a cloud metadata address"),
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in CGNAT, "a CGNAT address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "a non-public address"),
    )
    return next((why for hit, why in checks if hit), "")


def _allowlisted(address: IPAddress, port: int) -> bool:
    if settings.WEBHOOK_ALLOW_PRIVATE_TARGETS:
        return True
    shown = f"[{address}]" if address.version == 6 else str(address)
    entries = set(settings.WEBHOOK_PRIVATE_TARGET_ALLOWLIST)
    return str(address) in entries or f"{shown}:{port}" in entries


def parse_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an acceptable URL; raises UrlNotAllowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlNotAllowed("The URL is malformed.") from None
    schemes = ("https", "http") if settings.WEBHOOK_ALLOW_HTTP else ("https",)
    if parts.scheme not in schemes:
        raise UrlNotAllowed(f"The URL must start with {' or '.join(s + '://' for s in schemes)}.")
    if not parts.hostname:
        raise UrlNotAllowed("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("The URL must not carry credentials (user:password@).")
    if parts.fragment:
        raise UrlNotAllowed("The URL must not have a #fragment.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal IP is itself); raises UrlNotAllowed."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UrlNotAllowed(f"The host {host[:100]} does not resolve.") from None
    found = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    if not found:
        raise UrlNotAllowed(f"The host {host[:100]} does not resolve.")
    return sorted(found, key=lambda a: (a.version, int(a)))


def check_url(url: str) -> Target:
    """The checked target of `url`: every address of its host must be allowed (a host with one
    public and one private address is refused), and the first is the one to connect to."""
    scheme, host, port, path = parse_url(url)
    addresses = resolve(host, port)
    for address in addresses:
        why = blocked_reason(address)
        if why and not _allowlisted(address, port):
            raise UrlNotAllowed(f"The host {host[:100]} resolves to {why}, which is not allowed.")
    return Target(scheme=scheme, host=host, port=port, address=str(addresses[0]), path=path)

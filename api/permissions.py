"""Org-scoped permissions resolved from the X-Org-ID header."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from api.exceptions import ErrorCode, MalformedOrgHeader, MissingOrgHeader
from shared.models import Membership

ORG_HEADER = "X-Org-ID"
# ASCII digits only: str.isdigit() and int() also take superscripts, Arabic-Indic or full-width
# digits (and disagree on some), which a Latin-1 header can carry.
_ORG_ID = re.compile(r"[0-9]{1,18}")
TOKEN_SCHEME_HINT = (
    "Send the API key with the Token scheme: `Authorization: Token <key>` "
    "(Bearer and other schemes are not accepted)."
)


def not_authenticated(request: Request) -> exceptions.NotAuthenticated:
    """401 for an anonymous caller, with a hint when the header used another scheme."""
    scheme, _, _ = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme and scheme.lower() != "token":
        return exceptions.NotAuthenticated(
            TOKEN_SCHEME_HINT, code=ErrorCode.AUTH_SCHEME_UNSUPPORTED.value
        )
    return exceptions.NotAuthenticated()


def resolve_membership(request: Request) -> Membership:
    """The caller's membership in the X-Org-ID organization (cached on the request).

    Missing/malformed header → 400; unknown org or not a member → 404 (never which).
    """
    cached = getattr(request, "membership", None)
    if cached is not None:
        return cached
    raw = request.headers.get(ORG_HEADER)
    if raw is None or not raw.strip():
        raise MissingOrgHeader()
    raw = raw.strip()
    if not _ORG_ID.fullmatch(raw) or int(raw) < 1:
        raise MalformedOrgHeader()
    membership = (
        Membership.objects.select_related("organization")
        .filter(user=request.user, organization_id=int(raw))
        .first()
    )
    if membership is None:
        raise exceptions.NotFound("Organization not found.", code=ErrorCode.ORG_NOT_FOUND.value)
    request.membership = membership
    request.org = membership.organization
    return membership


class IsOrgMember(BasePermission):
    """Authenticated, and a member of the organization named by X-Org-ID."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            raise not_authenticated(request)
        resolve_membership(request)
        return True


class IsOrgAdmin(IsOrgMember):
    """An admin of the organization named by X-Org-ID."""

    message = "This action needs the admin role in this organization."
    code = ErrorCode.ADMIN_REQUIRED.value

    def has_permission(self, request: Request, view: Any) -> bool:
        super().has_permission(request, view)
        return request.membership.is_admin

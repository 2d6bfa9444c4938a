"""Org-scoped permissions resolved from the X-Org-ID header."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from api.exceptions import MalformedOrgHeader, MissingOrgHeader
from shared.models import Membership

ORG_HEADER = "X-Org-ID"


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
    if not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
        raise MalformedOrgHeader()
    membership = (
        Membership.objects.select_related("organization")
        .filter(user=request.user, organization_id=int(raw))
        .first()
    )
    if membership is None:
        raise exceptions.NotFound("Organization not found.")
    request.membership = membership
    request.org = membership.organization
    return membership


class IsOrgMember(BasePermission):
    """Authenticated, and a member of the organization named by X-Org-ID."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            raise exceptions.NotAuthenticated()
        resolve_membership(request)
        return True


class IsOrgAdmin(IsOrgMember):
    """An admin of the organization named by X-Org-ID."""

    message = "This action needs the admin role in this organization."

    def has_permission(self, request: Request, view: Any) -> bool:
        super().has_permission(request, view)
        return request.membership.is_admin

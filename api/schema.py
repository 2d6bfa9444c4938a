"""OpenAPI: document the X-Org-ID header on every operation that needs it."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

from api.permissions import ORG_HEADER, IsOrgMember

ORG_PARAMETER = OpenApiParameter(
    name=ORG_HEADER,
    type=OpenApiTypes.INT,
    location=OpenApiParameter.HEADER,
    required=True,
    description="Id of the organization the request acts on; the caller must be a member.",
)


class OrgAutoSchema(AutoSchema):
    """Adds the X-Org-ID header to every operation guarded by an org permission."""

    def get_override_parameters(self) -> list:
        params = list(super().get_override_parameters())
        if any(isinstance(p, IsOrgMember) for p in self.view.get_permissions()):
            params.append(ORG_PARAMETER)
        return params

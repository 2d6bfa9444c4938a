"""OpenAPI: the X-Org-ID header on every operation that needs it, and the error responses."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from api.permissions import ORG_HEADER, IsOrgMember
from api.serializers import ErrorEnvelopeSerializer

ORG_PARAMETER = OpenApiParameter(
    name=ORG_HEADER,
    type=OpenApiTypes.INT,
    location=OpenApiParameter.HEADER,
    required=True,
    description="Id of the organization the request acts on; the caller must be a member.",
)


def error(description: str) -> OpenApiResponse:
    """An error status whose body is the envelope; `description` names its codes."""
    return OpenApiResponse(ErrorEnvelopeSerializer, description=description)


ERRORS = {
    400: error(
        "Invalid request: validation_failed, parse_error, json_too_deep, org_header_missing, "
        "org_header_invalid"
    ),
    401: error(
        "Not authenticated: not_authenticated, auth_scheme_unsupported, authentication_failed"
    ),
    403: error("Admin role required: admin_required, permission_denied"),
    404: error("Not found: not_found, org_not_found"),
}

CONFLICT = {
    409: error("Provider not connected / state conflict: conflict"),
    503: error(
        "token_undecryptable: the stored token does not decrypt with any FERNET_KEY; an "
        "operator must restore the key that encrypted it"
    ),
}

# Creating messages: also an idempotency key already used for a different message.
SEND_CONFLICT = {
    **CONFLICT,
    409: error(
        "Provider not connected, or the idempotency key names a message with other content: "
        "conflict, idempotency_key_reused"
    ),
}

# Cancelling a message: its send has started, or it is already final.
CANCEL_CONFLICT = {
    409: error(
        "The message's send has started (sending or later) or it is already final: "
        "message_not_cancellable"
    ),
}


class OrgAutoSchema(AutoSchema):
    """Adds the X-Org-ID header to every operation guarded by an org permission."""

    def get_override_parameters(self) -> list:
        params = list(super().get_override_parameters())
        if any(isinstance(p, IsOrgMember) for p in self.view.get_permissions()):
            params.append(ORG_PARAMETER)
        return params

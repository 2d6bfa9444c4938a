"""API exceptions with stable codes (kept free of rest_framework.views to avoid import cycles)."""

from rest_framework import exceptions, status


class MissingOrgHeader(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The X-Org-ID header is required: send the id of your organization."
    default_code = "org_header_missing"


class MalformedOrgHeader(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The X-Org-ID header must be a positive integer organization id."
    default_code = "org_header_invalid"


class ConflictError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class JSONTooDeep(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The JSON body is nested too deeply."
    default_code = "json_too_deep"


class RequestBodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "body_too_large"

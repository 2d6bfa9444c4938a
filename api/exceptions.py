"""The API's error codes and its own exceptions (free of rest_framework.views: no import cycle)."""

from __future__ import annotations

from django.db import models
from rest_framework import exceptions, status


class ErrorCode(models.TextChoices):
    """Every `code` an /api/ error envelope can carry; docs/errors.md explains each one."""

    VALIDATION_FAILED = "validation_failed"
    PARSE_ERROR = "parse_error"
    JSON_TOO_DEEP = "json_too_deep"
    ORG_HEADER_MISSING = "org_header_missing"
    ORG_HEADER_INVALID = "org_header_invalid"
    BAD_REQUEST = "bad_request"
    NOT_AUTHENTICATED = "not_authenticated"
    AUTH_SCHEME_UNSUPPORTED = "auth_scheme_unsupported"
    AUTHENTICATION_FAILED = "authentication_failed"
    PERMISSION_DENIED = "permission_denied"
    ADMIN_REQUIRED = "admin_required"
    NOT_FOUND = "not_found"
    ORG_NOT_FOUND = "org_not_found"
    ENDPOINT_NOT_FOUND = "endpoint_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    CONFLICT = "conflict"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    MESSAGE_NOT_CANCELLABLE = "message_not_cancellable"
    BODY_TOO_LARGE = "body_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    TEST_CONNECTION_BUSY = "test_connection_busy"
    SERVER_ERROR = "server_error"
    UNAVAILABLE = "unavailable"
    TOKEN_UNDECRYPTABLE = "token_undecryptable"
    # Provider receipt receivers under /webhooks/ (not /api/; same envelope).
    WEBHOOK_SIGNATURE_INVALID = "webhook_signature_invalid"
    WEBHOOK_MALFORMED = "webhook_malformed"
    # Webhook endpoints (events out, docs/events.md).
    URL_NOT_ALLOWED = "url_not_allowed"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint_disabled"
    WEBHOOK_ENDPOINT_LIMIT = "webhook_endpoint_limit"
    # "Connect with Google / Instagram" (docs/oauth.md): the start endpoint...
    OAUTH_NOT_SUPPORTED = "oauth_not_supported"
    OAUTH_NOT_CONFIGURED = "oauth_not_configured"
    # ... and the callback's result (in OAUTH_SETTINGS_URL's query, or its JSON envelope).
    STATE_INVALID = "state_invalid"
    STATE_MISMATCH = "state_mismatch"
    STATE_USED = "state_used"
    STATE_EXPIRED = "state_expired"
    CONSENT_DENIED = "consent_denied"
    CODE_MISSING = "code_missing"
    CODE_REJECTED = "code_rejected"
    SCOPE_NOT_GRANTED = "scope_not_granted"
    NO_REFRESH_TOKEN = "no_refresh_token"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    OAUTH_FAILED = "oauth_failed"


class MissingOrgHeader(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The X-Org-ID header is required: send the id of your organization."
    default_code = ErrorCode.ORG_HEADER_MISSING.value


class MalformedOrgHeader(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The X-Org-ID header must be a positive integer organization id."
    default_code = ErrorCode.ORG_HEADER_INVALID.value


class JSONTooDeep(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The JSON body is nested too deeply."
    default_code = ErrorCode.JSON_TOO_DEEP.value


class RequestBodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = ErrorCode.BODY_TOO_LARGE.value

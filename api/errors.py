"""The API's one error envelope: {"status": "error", "ok": false, "code", "message", "errors"?}."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from api.exceptions import ErrorCode, RequestBodyTooLarge
from shared.errors import (
    Conflict,
    NotFound,
    ServiceError,
    Unavailable,
    ValidationFailed,
    first_error,
    flatten_errors,
)

_SERVICE_STATUS = {
    ValidationFailed: status.HTTP_400_BAD_REQUEST,
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}

# The code of an error whose own code is not an ErrorCode (DRF's generic "error", a future one).
_STATUS_CODES = {
    status.HTTP_400_BAD_REQUEST: ErrorCode.BAD_REQUEST,
    status.HTTP_401_UNAUTHORIZED: ErrorCode.NOT_AUTHENTICATED,
    status.HTTP_403_FORBIDDEN: ErrorCode.PERMISSION_DENIED,
    status.HTTP_404_NOT_FOUND: ErrorCode.NOT_FOUND,
    status.HTTP_405_METHOD_NOT_ALLOWED: ErrorCode.METHOD_NOT_ALLOWED,
    status.HTTP_406_NOT_ACCEPTABLE: ErrorCode.NOT_ACCEPTABLE,
    status.HTTP_409_CONFLICT: ErrorCode.CONFLICT,
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: ErrorCode.BODY_TOO_LARGE,
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    status.HTTP_503_SERVICE_UNAVAILABLE: ErrorCode.UNAVAILABLE,
}

_GENERIC_MESSAGES = {
    status.HTTP_400_BAD_REQUEST: "The request is invalid.",
    status.HTTP_401_UNAUTHORIZED: "Authentication credentials were not provided or are invalid.",
    status.HTTP_403_FORBIDDEN: "You do not have permission to perform this action.",
    status.HTTP_404_NOT_FOUND: "Not found.",
    status.HTTP_405_METHOD_NOT_ALLOWED: "Method not allowed.",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: (
        "Unsupported media type: send the body as JSON with `Content-Type: application/json`."
    ),
    status.HTTP_500_INTERNAL_SERVER_ERROR: "Internal server error.",
}


def envelope(message: str, errors: dict[str, Any] | None = None, *, code: str) -> dict[str, Any]:
    """The error body every /api/ failure uses; `code` is one of ErrorCode."""
    body: dict[str, Any] = {"status": "error", "ok": False, "code": str(code), "message": message}
    if errors:
        body["errors"] = errors
    return body


def error_code(code: object, http_status: int) -> ErrorCode:
    """`code` when it is an ErrorCode, else the generic code of the HTTP status."""
    if code in ErrorCode.values:
        return ErrorCode(code)
    if http_status in _STATUS_CODES:
        return _STATUS_CODES[http_status]
    return ErrorCode.SERVER_ERROR if http_status >= 500 else ErrorCode.BAD_REQUEST


def _service_error(exc: ServiceError) -> Response:
    http_status = next(
        (code for kind, code in _SERVICE_STATUS.items() if isinstance(exc, kind)),
        status.HTTP_400_BAD_REQUEST,
    )
    body = envelope(exc.message, exc.errors or None, code=error_code(exc.code, http_status))
    return Response(body, status=http_status)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler rendering every error in the envelope."""
    if isinstance(exc, ServiceError):
        return _service_error(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = RequestBodyTooLarge(f"The request body must be at most {limit} bytes.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    errors: dict[str, list[str]] | None = None
    code = error_code(getattr(getattr(exc, "detail", None), "code", None), response.status_code)
    if isinstance(exc, exceptions.ValidationError):
        code = ErrorCode.VALIDATION_FAILED
        errors = flatten_errors(detail)
        message = first_error(errors) if errors else _GENERIC_MESSAGES[400]
    elif isinstance(detail, dict) and "detail" in detail:
        message = str(detail["detail"])
    else:
        message = _GENERIC_MESSAGES.get(response.status_code, "Request failed.")
    if isinstance(exc, exceptions.ParseError):
        message = "Malformed JSON in the request body."
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        message = _GENERIC_MESSAGES[status.HTTP_415_UNSUPPORTED_MEDIA_TYPE]
    response.data = envelope(message, errors, code=code)
    return response


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler404 for URLs that match no route: JSON envelope under /api/, plain JSON elsewhere."""
    body = envelope(f"No endpoint at {request.path}.", code=ErrorCode.ENDPOINT_NOT_FOUND)
    return JsonResponse(body, status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    """handler500: never a stack trace or an HTML page."""
    return JsonResponse(envelope(_GENERIC_MESSAGES[500], code=ErrorCode.SERVER_ERROR), status=500)


def json_bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(envelope(_GENERIC_MESSAGES[400], code=ErrorCode.BAD_REQUEST), status=400)


def json_forbidden(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(
        envelope(_GENERIC_MESSAGES[403], code=ErrorCode.PERMISSION_DENIED), status=403
    )

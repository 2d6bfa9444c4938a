"""HTTP-level traps: HEAD answered like GET everywhere, and no redirect that turns a write into a GET."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.middleware import common

from api.errors import envelope
from api.exceptions import ErrorCode

SAFE_TO_REDIRECT = ("GET", "HEAD")


class HeadAsGetMiddleware:
    """Serve HEAD as GET without a body (RFC 9110 9.3.2), also for views that allow GET only.

    Sits inside WhiteNoise (which answers HEAD for static files itself) and outside everything
    else, so authentication, CSRF and the views all see a GET and answer the same headers.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method != "HEAD":
            return self.get_response(request)
        request.method = "GET"
        try:
            response = self.get_response(request)
        finally:
            request.method = "HEAD"
        if response.streaming:
            response.streaming_content = []
        else:
            if not response.has_header("Content-Length"):
                response["Content-Length"] = str(len(response.content))
            response.content = b""
        return response


class CommonMiddleware(common.CommonMiddleware):
    """Django's CommonMiddleware, except that APPEND_SLASH redirects only GET and HEAD.

    Clients follow a 301 with a GET (`curl -L` turns `POST /api/messages` into a listing) or
    drop the body, so any other method gets a JSON 404 naming the URL with the slash instead.
    """

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if (
            response.status_code == 404
            and request.method not in SAFE_TO_REDIRECT
            and self.should_redirect_with_slash(request)
        ):
            message = (
                f"No endpoint at {request.path}: send {request.method} to {request.path}/ "
                "(with the trailing slash). Only GET is redirected there."
            )
            return JsonResponse(envelope(message, code=ErrorCode.ENDPOINT_NOT_FOUND), status=404)
        return super().process_response(request, response)

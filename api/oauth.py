""" "Connect with Google / Instagram": the start endpoint under /api/ and the browser callback
under /oauth/<provider>/callback/ (docs/oauth.md)."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.errors import envelope
from api.permissions import IsOrgAdmin
from api.schema import ERRORS, error
from api.serializers import EnvelopeSerializer, IntegrationSerializer
from api.views import ok, provider_or_404
from shared.inputs import StrictCharField
from shared.models import Provider
from shared.services.oauth import (
    PROVIDER_OF_SEGMENT,
    OAuthFailure,
    oauth_callback,
    oauth_start,
)

logger = logging.getLogger(__name__)

# The browser binding of a started flow: HttpOnly, sent back only to /oauth/ callbacks.
BROWSER_COOKIE = "corbi_oauth_browser"
COOKIE_PATH = "/oauth/"


class OAuthStartSerializer(serializers.Serializer):
    calendar_id = StrictCharField(
        required=False,
        max_length=1024,
        help_text="Google Calendar only: the calendar to write bookings to (default `primary`).",
    )


class OAuthStartResponseSerializer(EnvelopeSerializer):
    authorization_url = serializers.URLField(
        help_text="Open it in the same browser; the provider sends the browser back to the "
        "callback, which then redirects to OAUTH_SETTINGS_URL."
    )
    expires_at = serializers.DateTimeField(help_text="When the started connection expires.")


class OAuthStartView(APIView):
    permission_classes = [IsOrgAdmin]

    @extend_schema(
        operation_id="integrations_oauth_start",
        request=OAuthStartSerializer,
        responses={
            200: OAuthStartResponseSerializer,
            **ERRORS,
            503: error(
                "OAuth is not configured on this server (`code` oauth_not_configured): an "
                "operator must set the OAuth client settings and PUBLIC_BASE_URL"
            ),
        },
        description=(
            'Start "Connect with Google" (google_calendar) or "Connect with Instagram" '
            "(instagram): answers the provider's consent URL and sets an HttpOnly cookie "
            "binding the flow to this browser. The flow is single-use and expires after "
            "OAUTH_STATE_TTL_SECONDS (10 minutes)."
        ),
    )
    def post(self, request: Request, provider: str) -> Response:
        provider = provider_or_404(provider)
        serializer = OAuthStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        started = oauth_start(
            organization=request.org,
            user=request.user,
            provider=provider,
            data=dict(serializer.validated_data),
            browser_nonce=request.COOKIES.get(BROWSER_COOKIE),
        )
        label = Provider(provider).label
        response = Response(
            ok(
                f"Open authorization_url in this browser to connect {label}.",
                authorization_url=started.authorization_url,
                expires_at=started.expires_at,
            )
        )
        response.set_cookie(
            BROWSER_COOKIE,
            started.browser_nonce,
            max_age=settings.OAUTH_STATE_TTL_SECONDS,
            path=COOKIE_PATH,
            secure=settings.PUBLIC_BASE_URL.startswith("https://"),
            httponly=True,
            samesite="Lax",
        )
        response["Cache-Control"] = "no-store"
        return response


def _finish(provider: str, result: dict[str, str], status: int) -> HttpResponse:
    """Back to OAUTH_SETTINGS_URL with the result in its query, or (no URL set) the result as
    JSON in the API's envelope."""
    if settings.OAUTH_SETTINGS_URL:
        separator = "&" if "?" in settings.OAUTH_SETTINGS_URL else "?"
        return HttpResponseRedirect(
            f"{settings.OAUTH_SETTINGS_URL}{separator}{urlencode({'provider': provider, **result})}"
        )
    if result["result"] == "connected":
        body: dict[str, object] = ok(result["message"], provider=provider)
    else:
        body = envelope(result["message"], code=result["error"])
    return JsonResponse(body, status=status)


@never_cache
@require_GET
def callback(request: HttpRequest, segment: str) -> HttpResponse:
    """The provider's redirect after consent: connect, then send the browser back to Settings
    with `result=connected` or `result=error&error=<code>&message=<sentence>`."""
    provider = PROVIDER_OF_SEGMENT.get(segment)
    if provider is None:
        return JsonResponse(
            envelope(f"No endpoint at {request.path}.", code="endpoint_not_found"), status=404
        )
    try:
        integration = oauth_callback(
            provider=provider,
            params={key: request.GET.get(key, "") for key in ("state", "code", "error")},
            browser_nonce=request.COOKIES.get(BROWSER_COOKIE),
            user=getattr(request, "user", None),
        )
    except OAuthFailure as failure:
        logger.info("OAuth callback for %s refused: %s", provider, failure.code)
        result = {"result": "error", "error": failure.code, "message": failure.message}
        return _finish(provider, result, 400)
    label = Provider(provider).label
    data = IntegrationSerializer(integration).data
    message = f"{label} connected."
    if provider == Provider.INSTAGRAM:
        message = f"{label} connected (account {data['extra'].get('instagram_scoped_id')})."
    return _finish(provider, {"result": "connected", "message": message}, 200)

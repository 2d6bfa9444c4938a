"""Thin DRF views over the services in `shared.services`."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.errors import envelope
from api.exceptions import ErrorCode
from api.permissions import IsOrgAdmin, IsOrgMember
from api.schema import ERRORS, error
from api.serializers import (
    AuditEventSerializer,
    ConnectionTestResponseSerializer,
    ConnectionTestSerializer,
    ConnectResponseSerializer,
    ConnectSerializer,
    EnvelopeSerializer,
    IntegrationSerializer,
)
from shared.models import AuditEvent, Integration, Provider
from shared.services.connection_slots import ConnectionTestBusy
from shared.services.integrations import (
    integration_connect,
    integration_disconnect,
    integration_get,
    integration_test,
)

RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    location=OpenApiParameter.HEADER,
    description="Seconds to wait before trying again.",
    response=[429],
)


def ok(message: str, **fields: object) -> dict[str, object]:
    """The success envelope."""
    return {"status": "ok", "ok": True, "message": message, **fields}


def provider_or_404(provider: str) -> str:
    """The provider slug, or 404 listing the valid ones."""
    if provider not in Provider.values:
        raise exceptions.NotFound(
            f"Unknown provider '{provider[:40]}'. Valid providers: {', '.join(Provider.values)}."
        )
    return provider


class IntegrationListView(APIView):
    permission_classes = [IsOrgMember]

    @extend_schema(
        operation_id="integrations_list",
        responses={200: IntegrationSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        integrations = Integration.objects.filter(organization=request.org)
        return Response(IntegrationSerializer(integrations, many=True).data)


class IntegrationDetailView(APIView):
    def get_permissions(self) -> list:
        return [IsOrgAdmin()] if self.request.method == "DELETE" else [IsOrgMember()]

    @extend_schema(
        operation_id="integrations_retrieve",
        responses={200: IntegrationSerializer, **ERRORS},
    )
    def get(self, request: Request, provider: str) -> Response:
        integration = integration_get(organization=request.org, provider=provider_or_404(provider))
        return Response(IntegrationSerializer(integration).data)

    @extend_schema(
        operation_id="integrations_disconnect",
        responses={200: EnvelopeSerializer, **ERRORS},
    )
    def delete(self, request: Request, provider: str) -> Response:
        integration_disconnect(
            organization=request.org, provider=provider_or_404(provider), actor=request.user
        )
        return Response(ok("Disconnected"))


class IntegrationConnectView(APIView):
    permission_classes = [IsOrgAdmin]

    @extend_schema(
        operation_id="integrations_connect",
        request=ConnectSerializer,
        responses={200: ConnectResponseSerializer, **ERRORS},
    )
    def post(self, request: Request, provider: str) -> Response:
        provider = provider_or_404(provider)
        serializer = ConnectSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        integration = integration_connect(
            organization=request.org,
            provider=provider,
            token=serializer.validated_data["token"],
            extra=serializer.validated_data.get("extra") or {},
            actor=request.user,
        )
        label = Provider(provider).label
        return Response(
            ok(f"{label} connected.", integration=IntegrationSerializer(integration).data),
            status=status.HTTP_200_OK,
        )


class IntegrationTestView(APIView):
    permission_classes = [IsOrgAdmin]

    @extend_schema(
        operation_id="integrations_test",
        request=ConnectionTestSerializer,
        responses={
            200: ConnectionTestResponseSerializer,
            **ERRORS,
            429: error(
                "Too many connection tests running for this organization or on this server; "
                "`code` is test_connection_busy and the Retry-After header (also `retry_after`) "
                "says when to try again"
            ),
        },
        parameters=[RETRY_AFTER],
        description=(
            "Probe the stored credentials and, when a test destination is known (to_whatsapp, "
            "to_email or chat_id in extra, or given here for this call only), send a test "
            "message. Answers 200 either way; `ok` says whether the test passed. The whole "
            "test takes at most TEST_CONNECTION_TIMEOUT_SECONDS."
        ),
    )
    def post(self, request: Request, provider: str) -> Response:
        provider = provider_or_404(provider)
        serializer = ConnectionTestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            integration, result = integration_test(
                organization=request.org,
                provider=provider,
                actor=request.user,
                extra_override=serializer.validated_data.get("extra"),
            )
        except ConnectionTestBusy as busy:
            body = envelope(busy.message, busy.errors, code=ErrorCode.TEST_CONNECTION_BUSY)
            body["retry_after"] = busy.retry_after
            return Response(
                body,
                status=status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": str(busy.retry_after)},
            )
        return Response(
            {
                "status": "ok" if result.ok else "error",
                "ok": result.ok,
                "message": result.message,
                "checks": result.checks,
                "integration": IntegrationSerializer(integration).data,
            }
        )


class AuditListView(generics.ListAPIView):
    permission_classes = [IsOrgAdmin]
    serializer_class = AuditEventSerializer

    def get_queryset(self):
        org = getattr(self.request, "org", None)
        if org is None:  # schema generation
            return AuditEvent.objects.none()
        return AuditEvent.objects.filter(organization=org).select_related("actor")

    @extend_schema(
        operation_id="audit_list", responses={200: AuditEventSerializer(many=True), **ERRORS}
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

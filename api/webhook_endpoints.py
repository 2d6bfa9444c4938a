"""Webhook endpoints of the organization (admins only): create, list, show, delete, rotate the
signing secret, the delivery log and redelivering one delivery. A secret is in the answer of
create and rotate only."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.permissions import IsOrgAdmin
from api.schema import ERRORS, error
from api.serializers import EnvelopeSerializer
from api.views import ok
from shared.events.endpoints import (
    delivery_redeliver,
    endpoint_create,
    endpoint_delete,
    endpoint_get,
    endpoint_rotate_secret,
)
from shared.events.inputs import EndpointCreateSerializer
from shared.events.models import EventDelivery, WebhookEndpoint

NO_STORE = {"Cache-Control": "no-store"}
CONFLICTS = {
    409: error(
        "webhook_endpoint_limit (too many endpoints), webhook_endpoint_disabled (redeliver to "
        "a disabled endpoint), conflict (the delivery is being sent right now)"
    )
}


class WebhookEndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "events",
            "created_at",
            "updated_at",
            "failing_since",
            "disabled_at",
            "disabled_reason",
            "previous_secret_expires_at",
        ]
        read_only_fields = fields


class EndpointSecretSerializer(EnvelopeSerializer):
    endpoint = WebhookEndpointSerializer()
    secret = serializers.CharField(help_text="whsec_… signing secret; shown in this answer only.")


class EventDeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.CharField(source="event.public_id")
    event_type = serializers.CharField(source="event.type")

    class Meta:
        model = EventDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "last_attempt_at",
            "last_status_code",
            "last_error",
            "last_response",
            "next_attempt_at",
            "delivered_at",
            "created_at",
        ]
        read_only_fields = fields


class RedeliveredSerializer(EnvelopeSerializer):
    delivery = EventDeliverySerializer()


def _with_secret(message: str, endpoint: WebhookEndpoint, secret: str) -> dict[str, object]:
    return ok(message, endpoint=WebhookEndpointSerializer(endpoint).data, secret=secret)


class WebhookEndpointListView(APIView):
    permission_classes = [IsOrgAdmin]

    @extend_schema(
        operation_id="webhook_endpoints_list",
        responses={200: WebhookEndpointSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        endpoints = WebhookEndpoint.objects.filter(organization=request.org)
        return Response(WebhookEndpointSerializer(endpoints, many=True).data)

    @extend_schema(
        operation_id="webhook_endpoints_create",
        request=EndpointCreateSerializer,
        responses={201: EndpointSecretSerializer, **ERRORS, **CONFLICTS},
        description=(
            "Create an endpoint. The answer carries its signing secret, which is never shown "
            "again. 400 url_not_allowed when the URL is not https or resolves to a private, "
            "loopback, link-local or other non-public address."
        ),
    )
    def post(self, request: Request) -> Response:
        endpoint, secret = endpoint_create(
            organization=request.org, data=request.data, actor=request.user
        )
        body = _with_secret(
            "Webhook endpoint created. Store the secret now: it is not shown again.",
            endpoint,
            secret,
        )
        return Response(body, status=status.HTTP_201_CREATED, headers=NO_STORE)


class WebhookEndpointDetailView(APIView):
    permission_classes = [IsOrgAdmin]

    @extend_schema(
        operation_id="webhook_endpoints_retrieve",
        responses={200: WebhookEndpointSerializer, **ERRORS},
    )
    def get(self, request: Request, endpoint_id: int) -> Response:
        endpoint = endpoint_get(organization=request.org, endpoint_id=endpoint_id)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhook_endpoints_delete",
        responses={200: EnvelopeSerializer, **ERRORS},
    )
    def delete(self, request: Request, endpoint_id: int) -> Response:
        endpoint_delete(organization=request.org, endpoint_id=endpoint_id, actor=request.user)
        return Response(ok("Webhook endpoint deleted."))


class WebhookEndpointRotateView(APIView):
    permission_classes = [IsOrgAdmin]

    @extend_schema(
        operation_id="webhook_endpoints_rotate_secret",
        request=None,
        responses={200: EndpointSecretSerializer, **ERRORS},
        description=(
            "A new signing secret, shown once. The previous secret keeps signing too (a second "
            "v1 signature) for WEBHOOK_SECRET_GRACE_SECONDS."
        ),
    )
    def post(self, request: Request, endpoint_id: int) -> Response:
        endpoint, secret = endpoint_rotate_secret(
            organization=request.org, endpoint_id=endpoint_id, actor=request.user
        )
        body = _with_secret(
            "Secret rotated. Store the new secret now: it is not shown again.", endpoint, secret
        )
        return Response(body, headers=NO_STORE)


class EventDeliveryListView(generics.ListAPIView):
    permission_classes = [IsOrgAdmin]
    serializer_class = EventDeliverySerializer

    def get_queryset(self):
        org = getattr(self.request, "org", None)
        if org is None:  # schema generation
            return EventDelivery.objects.none()
        endpoint = endpoint_get(organization=org, endpoint_id=self.kwargs["endpoint_id"])
        return EventDelivery.objects.filter(endpoint=endpoint).select_related("event")

    @extend_schema(
        operation_id="webhook_deliveries_list",
        responses={200: EventDeliverySerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)


class EventRedeliverView(APIView):
    permission_classes = [IsOrgAdmin]

    @extend_schema(
        operation_id="webhook_deliveries_redeliver",
        request=None,
        responses={202: RedeliveredSerializer, **ERRORS, **CONFLICTS},
    )
    def post(self, request: Request, endpoint_id: int, delivery_id: int) -> Response:
        delivery = delivery_redeliver(
            organization=request.org, endpoint_id=endpoint_id, delivery_id=delivery_id
        )
        delivery = EventDelivery.objects.select_related("event").get(pk=delivery.pk)
        body = ok("Delivery queued.", delivery=EventDeliverySerializer(delivery).data)
        return Response(body, status=status.HTTP_202_ACCEPTED)

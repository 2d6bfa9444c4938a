"""The organization's suppression list: members read it, admins add and remove entries."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.permissions import IsOrgAdmin, IsOrgMember
from api.schema import ERRORS
from api.serializers import EnvelopeSerializer
from api.views import ok
from shared.errors import ValidationFailed
from shared.models import Suppression
from shared.providers.registry import MESSAGING_SLUGS
from shared.services.suppressions import (
    SuppressionCreateSerializer,
    suppression_add,
    suppression_delete,
    suppression_list,
)


class SuppressionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Suppression
        fields = ["id", "provider", "recipient", "reason", "source", "created_at"]
        read_only_fields = fields


class SuppressionCreatedSerializer(EnvelopeSerializer):
    suppression = SuppressionSerializer()


class SuppressionListView(generics.ListAPIView):
    serializer_class = SuppressionSerializer

    def get_permissions(self) -> list:
        return [IsOrgAdmin()] if self.request.method == "POST" else [IsOrgMember()]

    def get_queryset(self):
        org = getattr(self.request, "org", None)
        if org is None:  # schema generation
            return Suppression.objects.none()
        provider = self.request.query_params.get("provider")
        if provider is not None and provider not in MESSAGING_SLUGS:
            choices = ", ".join(MESSAGING_SLUGS)
            raise ValidationFailed(
                f"provider: must be one of {choices}.",
                errors={"provider": [f"Must be one of {choices}."]},
            )
        return suppression_list(organization=org, provider=provider)

    @extend_schema(
        operation_id="suppressions_list",
        parameters=[OpenApiParameter("provider", OpenApiTypes.STR, enum=list(MESSAGING_SLUGS))],
        responses={200: SuppressionSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="suppressions_create",
        request=SuppressionCreateSerializer,
        responses={
            201: SuppressionCreatedSerializer,
            200: SuppressionCreatedSerializer,
            **ERRORS,
        },
        description=(
            "Suppress a recipient for one provider (admins). The recipient is checked and "
            "normalized like a message's `to`; 200 with the existing entry when it is there."
        ),
    )
    def post(self, request: Request) -> Response:
        entry, created = suppression_add(
            organization=request.org, data=request.data, actor=request.user
        )
        text = "Recipient suppressed." if created else "The recipient was already suppressed."
        return Response(
            ok(text, suppression=SuppressionSerializer(entry).data),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class SuppressionDetailView(APIView):
    permission_classes = [IsOrgAdmin]

    @extend_schema(
        operation_id="suppressions_delete",
        responses={200: EnvelopeSerializer, **ERRORS},
    )
    def delete(self, request: Request, suppression_id: int) -> Response:
        suppression_delete(
            organization=request.org, suppression_id=suppression_id, actor=request.user
        )
        return Response(ok("Suppression removed; sends to this recipient resume."))

"""Views for outbound messages and calendar bookings."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.permissions import IsOrgAdmin, IsOrgMember
from api.schema import CANCEL_CONFLICT, CONFLICT, ERRORS, SEND_CONFLICT
from api.serializers import (
    BookingSerializer,
    BulkResponseSerializer,
    MessageCreatedSerializer,
    MessageDetailSerializer,
    MessageSerializer,
    message_data,
)
from api.views import ok
from shared.errors import NotFound, ValidationFailed
from shared.inputs import BookingRequestSerializer, MessageBulkSerializer, MessageCreateSerializer
from shared.models import Message, MessageStatus, Provider
from shared.services.bookings import booking_cancel, booking_get, booking_upsert
from shared.services.messages import (
    message_cancel,
    message_create,
    message_create_bulk,
    message_retry,
)

SEND_EXAMPLES = [
    OpenApiExample(
        "WhatsApp template",
        request_only=True,
        value={
            "provider": "whatsapp",
            "to": "+14155550100",
            "template": {
                "content_sid": "HX0123456789abcdef0123456789abcdef",
                "variables": {"1": "Ana", "2": "10:30"},
            },
        },
    ),
    OpenApiExample(
        "SendGrid dynamic template with an attachment",
        request_only=True,
        value={
            "provider": "sendgrid",
            "to": "ana@example.com",
            "template": {
                "id": "d-0123456789abcdef0123456789abcdef",
                "data": {"name": "Ana", "total": "42.00 EUR"},
            },
            "attachments": [
                {"filename": "receipt.pdf", "content": "JVBERi0xLjQK", "type": "application/pdf"}
            ],
            "transactional": True,
        },
    ),
    OpenApiExample(
        "Telegram photo with a MarkdownV2 caption",
        request_only=True,
        value={
            "provider": "telegram",
            "to": "123456789",
            "body": "*Your ticket* for 12\\.03",
            "parse_mode": "MarkdownV2",
            "media_urls": ["https://cdn.example.com/tickets/123.jpg"],
        },
    ),
    OpenApiExample(
        "Instagram reply by a person, outside the 24-hour window",
        request_only=True,
        value={
            "provider": "instagram",
            "to": "17841400000000001",
            "body": "Hi Ana, …",
            "tag": "HUMAN_AGENT",
        },
    ),
    OpenApiExample(
        "Scheduled reminder",
        request_only=True,
        value={
            "provider": "whatsapp",
            "to": "+14155550100",
            "template": {
                "content_sid": "HX0123456789abcdef0123456789abcdef",
                "variables": {"1": "Ana"},
            },
            "send_at": "2030-01-01T09:00:00+01:00",
            "idempotency_key": "reminder-booking-42",
        },
    ),
]


class MessageListCreateView(generics.ListAPIView):
    permission_classes = [IsOrgMember]
    serializer_class = MessageSerializer

    def get_queryset(self):
        org = getattr(self.request, "org", None)
        if org is None:
            return Message.objects.none()
        queryset = Message.objects.filter(organization=org)
        for name, choices in (("status", MessageStatus.values), ("provider", Provider.values)):
            value = self.request.query_params.get(name)
            if value is None:
                continue
            if value not in choices:
                raise ValidationFailed(
                    f"{name}: must be one of {', '.join(choices)}.",
                    errors={name: [f"Must be one of {', '.join(choices)}."]},
                )
            queryset = queryset.filter(**{name: value})
        return queryset

    @extend_schema(
        operation_id="messages_list",
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=MessageStatus.values),
            OpenApiParameter("provider", OpenApiTypes.STR, enum=Provider.values),
        ],
        responses={200: MessageSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="messages_create",
        request=MessageCreateSerializer,
        examples=SEND_EXAMPLES,
        responses={
            202: MessageCreatedSerializer,
            200: MessageCreatedSerializer,
            **ERRORS,
            **SEND_CONFLICT,
        },
    )
    def post(self, request: Request) -> Response:
        message, created = message_create(organization=request.org, data=request.data)
        if not created:
            text = "A message with this idempotency key already exists."
        elif message.status == MessageStatus.SCHEDULED:
            text = "Message scheduled."
        else:
            text = "Message queued."
        return Response(
            ok(text, message_id=message.pk, data=message_data(message)),
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        )


class MessageBulkView(APIView):
    permission_classes = [IsOrgMember]

    @extend_schema(
        operation_id="messages_bulk_create",
        request=MessageBulkSerializer,
        responses={202: BulkResponseSerializer, **ERRORS, **SEND_CONFLICT},
    )
    def post(self, request: Request) -> Response:
        results = message_create_bulk(organization=request.org, data=request.data)
        created = sum(1 for _, new in results if new)
        return Response(
            ok(
                f"{created} message(s) queued.",
                created=created,
                existing=len(results) - created,
                messages=[{"id": m.pk, "status": m.status, "created": new} for m, new in results],
            ),
            status=status.HTTP_202_ACCEPTED,
        )


class MessageDetailView(APIView):
    permission_classes = [IsOrgMember]

    @extend_schema(
        operation_id="messages_retrieve", responses={200: MessageDetailSerializer, **ERRORS}
    )
    def get(self, request: Request, message_id: int) -> Response:
        message = (
            Message.objects.filter(organization=request.org, pk=message_id)
            .prefetch_related("attempt_set", "events")
            .first()
        )
        if message is None:
            raise NotFound("Message not found.")
        return Response(MessageDetailSerializer(message).data)


class MessageRetryView(APIView):
    permission_classes = [IsOrgAdmin]

    @extend_schema(
        operation_id="messages_retry",
        request=None,
        responses={202: MessageCreatedSerializer, **ERRORS, **CONFLICT},
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = message_retry(organization=request.org, message_id=message_id)
        return Response(
            ok("Message queued again.", message_id=message.pk, data=message_data(message)),
            status=status.HTTP_202_ACCEPTED,
        )


class MessageCancelView(APIView):
    """Cancel a scheduled or queued message before its send starts; members may, as they send."""

    permission_classes = [IsOrgMember]

    @extend_schema(
        operation_id="messages_cancel",
        request=None,
        responses={200: MessageCreatedSerializer, **ERRORS, **CANCEL_CONFLICT},
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = message_cancel(organization=request.org, message_id=message_id)
        return Response(ok("Message cancelled.", message_id=message.pk, data=message_data(message)))


class BookingView(APIView):
    permission_classes = [IsOrgMember]

    @extend_schema(operation_id="bookings_retrieve", responses={200: BookingSerializer, **ERRORS})
    def get(self, request: Request, booking_id: str) -> Response:
        return Response(
            BookingSerializer(booking_get(organization=request.org, booking_id=booking_id)).data
        )

    @extend_schema(
        operation_id="bookings_upsert",
        request=BookingRequestSerializer,
        responses={202: BookingSerializer, **ERRORS, **CONFLICT},
    )
    def put(self, request: Request, booking_id: str) -> Response:
        booking = booking_upsert(organization=request.org, booking_id=booking_id, data=request.data)
        return Response(BookingSerializer(booking).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="bookings_cancel", responses={202: BookingSerializer, **ERRORS, **CONFLICT}
    )
    def delete(self, request: Request, booking_id: str) -> Response:
        booking = booking_cancel(organization=request.org, booking_id=booking_id)
        return Response(BookingSerializer(booking).data, status=status.HTTP_202_ACCEPTED)

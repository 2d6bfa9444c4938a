"""The one validation source for message and booking input: the services run these serializers
(the API passes request bodies straight through), and the API schema is generated from them.

fields: the strict JSON fields and `validated`; content: what a message carries beyond text;
messages: single and bulk messages; bookings: bookings.
"""

from shared.inputs.bookings import MAX_ATTENDEES, BookingRequestSerializer, LocalDateTimeField
from shared.inputs.content import (
    MAX_MEDIA_URLS,
    MESSAGE_TAGS,
    PARSE_MODES,
    TEMPLATE_SCHEMA,
    AttachmentSerializer,
    Base64Field,
    TemplateField,
    decoded_size,
)
from shared.inputs.fields import (
    AwareDateTimeField,
    OptionalText,
    StrictBooleanField,
    StrictCharField,
    validated,
)
from shared.inputs.messages import (
    SEND_AT_IN_THE_PAST,
    MessageBulkSerializer,
    MessageCreateSerializer,
    check_send_at,
    send_at_too_old,
)

__all__ = [
    "MAX_ATTENDEES",
    "MAX_MEDIA_URLS",
    "MESSAGE_TAGS",
    "PARSE_MODES",
    "SEND_AT_IN_THE_PAST",
    "TEMPLATE_SCHEMA",
    "AttachmentSerializer",
    "AwareDateTimeField",
    "Base64Field",
    "BookingRequestSerializer",
    "LocalDateTimeField",
    "MessageBulkSerializer",
    "MessageCreateSerializer",
    "OptionalText",
    "StrictBooleanField",
    "StrictCharField",
    "TemplateField",
    "check_send_at",
    "decoded_size",
    "send_at_too_old",
    "validated",
]

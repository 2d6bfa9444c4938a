"""The one validation source for message and booking input: the services run these serializers
(the API passes request bodies straight through), and the API schema is generated from them."""

from __future__ import annotations

import base64
import binascii
import copy
import mimetypes
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.validators import ProhibitNullCharactersValidator
from django.db.models import Model
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from shared.errors import ValidationFailed
from shared.models import Booking, Message
from shared.providers import fields
from shared.providers.registry import MESSAGING_SLUGS, SPECS
from shared.providers.spec import FieldProblem


def _column(model: type[Model], name: str) -> int:
    """The column's max_length: the model declares each text limit once."""
    return model._meta.get_field(name).max_length


MAX_ATTENDEES = 50
_SLOW_VALIDATORS = (ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator)
_SURROGATE = re.compile("[\ud800-\udfff]")
_DATETIME_HELP = "Must be an ISO 8601 date-time such as 2030-01-01T10:00:00+01:00."


class StrictCharField(serializers.CharField):
    """A CharField that takes JSON strings only (DRF's turns 42 into "42"), and refuses NUL and
    lone surrogates with one C-speed search instead of DRF's per-character Python loop."""

    default_error_messages = {
        "invalid": "Must be a string.",
        "null_characters": "Null characters are not allowed.",
        "surrogates": "Surrogate characters are not allowed.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, _SLOW_VALIDATORS)]

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        if "\x00" in data:
            self.fail("null_characters")
        if _SURROGATE.search(data):
            self.fail("surrogates")
        return super().to_internal_value(data)


class OptionalText(StrictCharField):
    """Optional free text: absent, null and "" all mean empty; kept exactly as sent."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(required=False, allow_blank=True, allow_null=True, default="", **kwargs)

    def validate_empty_values(self, data: object) -> tuple[bool, object]:
        if data is None:
            return True, ""
        return super().validate_empty_values(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only (DRF's also takes "yes", 1, "on", …)."""

    def to_internal_value(self, data: object) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """`data` checked by `serializer_class`; raise ValidationFailed with flat field paths."""
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise ValidationFailed.from_detail(serializer.errors)
    return dict(serializer.validated_data)


@extend_schema_field(
    {"type": "string", "format": "date-time", "example": "2030-01-01T09:00:00+01:00"}
)
class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time that must carry its offset (a naive one is refused), kept in UTC."""

    default_error_messages = {
        "invalid": _DATETIME_HELP,
        "naive": "Must include a UTC offset, such as 2030-01-01T10:00:00+01:00 or ...Z.",
    }

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            self.fail("naive")
        try:
            return value.astimezone(ZoneInfo("UTC"))
        except OverflowError:  # year 1 or 9999 shifted past the calendar by its offset
            self.fail("invalid")


_MIME_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_BAD_FILENAME = re.compile(r"[\x00-\x1f\x7f/\\]")
_CONTENT_ID = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~@]{1,255}")
PARSE_MODES = tuple(
    dict.fromkeys(m for s in SPECS.values() if s.messages for m in s.messages.parse_modes)
)
MESSAGE_TAGS = tuple(
    dict.fromkeys(t for s in SPECS.values() if s.messages for t in s.messages.tags)
)
# The list's bound in the schema; each provider's own limit (its spec) is checked after it.
MAX_MEDIA_URLS = 10


@extend_schema_field(
    {
        "type": "string",
        "format": "byte",
        "description": "The file, base64-encoded (standard alphabet, padded). Never logged and "
        "never returned; stored encrypted until the message is sent.",
        "example": "JVBERi0xLjQK",
    }
)
class Base64Field(StrictCharField):
    """Base64 (RFC 4648, padded, no line breaks); the value is never put in an error message."""

    default_error_messages = {"base64": "Must be base64 (A-Z, a-z, 0-9, +, / and = padding)."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: object) -> str:
        value = super().to_internal_value(data)
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            self.fail("base64")
        return value


def decoded_size(content: str) -> int:
    """Bytes that valid, padded base64 `content` decodes to (without decoding it again)."""
    return len(content) // 4 * 3 - content[-2:].count("=")


class AttachmentSerializer(serializers.Serializer):
    """One email attachment (SendGrid): the file as base64 with its name and MIME type."""

    filename = StrictCharField(
        max_length=255, help_text="Shown to the recipient, e.g. receipt.pdf."
    )
    content = Base64Field()
    type = StrictCharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=255,
        help_text="MIME type, e.g. application/pdf; guessed from the filename when absent.",
    )
    disposition = serializers.ChoiceField(
        choices=("attachment", "inline"), required=False, default="attachment"
    )
    content_id = StrictCharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=255,
        help_text="Required with `inline`: the id the HTML refers to as cid:<content_id>.",
    )

    def validate_filename(self, value: str) -> str:
        if _BAD_FILENAME.search(value) or value.strip(" .") == "":
            raise serializers.ValidationError(
                "Must be a plain file name without slashes or control characters."
            )
        return value

    def validate_type(self, value: str) -> str:
        if value and not _MIME_TYPE.fullmatch(value):
            raise serializers.ValidationError("Must be a MIME type such as application/pdf.")
        return value

    def validate_content_id(self, value: str) -> str:
        if value and not _CONTENT_ID.fullmatch(value):
            raise serializers.ValidationError("Must be a token such as logo or logo@corbi.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs["content"]:
            raise serializers.ValidationError({"content": ["Must not be empty."]})
        if attrs["disposition"] == "inline" and not attrs["content_id"]:
            raise serializers.ValidationError({"content_id": ["An inline attachment needs one."]})
        attrs["type"] = (
            attrs["type"]
            or mimetypes.guess_type(attrs["filename"])[0]
            or "application/octet-stream"
        )
        attrs["size"] = decoded_size(attrs["content"])
        return attrs


TEMPLATE_SCHEMA = {
    "oneOf": [
        {
            "type": "object",
            "title": "WhatsAppTemplate",
            "description": "WhatsApp (Twilio Content template): sent as ContentSid + "
            "ContentVariables, without a body. A variable left out falls back to the template's "
            "default sample value.",
            "properties": {
                "content_sid": {"type": "string", "pattern": "^HX[0-9a-fA-F]{32}$"},
                "variables": {
                    "type": "object",
                    "maxProperties": 100,
                    "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 1600},
                },
            },
            "required": ["content_sid"],
            "additionalProperties": False,
            "example": {
                "content_sid": "HX0123456789abcdef0123456789abcdef",
                "variables": {"1": "Ana", "2": "10:30"},
            },
        },
        {
            "type": "object",
            "title": "SendGridTemplate",
            "description": "SendGrid dynamic template: `data` fills its Handlebars placeholders "
            "(subject and content come from the template).",
            "properties": {
                "id": {"type": "string", "pattern": "^d-[0-9a-fA-F]{32}$"},
                "data": {"type": "object", "additionalProperties": True},
            },
            "required": ["id"],
            "additionalProperties": False,
            "example": {
                "id": "d-0123456789abcdef0123456789abcdef",
                "data": {"name": "Ana", "total": "42.00 EUR"},
            },
        },
    ],
    "nullable": True,
}


@extend_schema_field(TEMPLATE_SCHEMA)
class TemplateField(serializers.JSONField):
    """A provider template object; its shape is checked by the provider spec's `template`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, allow_null=True, default=None, **kwargs)

    def to_internal_value(self, data: object) -> object:
        # DRF's JSONField serialises the value once to prove it is JSON; the provider spec's
        # check walks it anyway (and a parsed request body is JSON by construction).
        return data


SEND_AT_IN_THE_PAST = "Must not be in the past."


def send_at_too_old(value: datetime | None) -> bool:
    """More than SCHEDULE_PAST_TOLERANCE_SECONDS in the past: refused for a new message (the
    services check it once they know the request is not a replay of an existing one)."""
    tolerance = timedelta(seconds=settings.SCHEDULE_PAST_TOLERANCE_SECONDS)
    return value is not None and value < timezone.now() - tolerance


def check_send_at(value: datetime | None) -> datetime | None:
    """`send_at` as sent: at most SCHEDULE_MAX_AHEAD_SECONDS ahead. One in the past means now
    within SCHEDULE_PAST_TOLERANCE_SECONDS; further back it is refused for a new message only
    (send_at_too_old), so replaying a request whose time has passed still finds its message."""
    if value is None:
        return None
    now = timezone.now()
    if value > now + timedelta(seconds=settings.SCHEDULE_MAX_AHEAD_SECONDS):
        days = settings.SCHEDULE_MAX_AHEAD_SECONDS / 86400
        raise serializers.ValidationError(f"Must be at most {days:g} days ahead.")
    return value


class MessageCreateSerializer(serializers.Serializer):
    """One outbound message; the destination format and body limit come from the provider spec."""

    def get_fields(self) -> dict[str, serializers.Field]:
        """Shallow copies of fields built once per class.

        DRF deep-copies every declared field per serializer instance, which re-runs each
        field's __init__ (validators, error messages, the nested attachment serializer): about
        a millisecond per request. These fields keep no per-request state (validation reads
        the data it is given and the field's own settings), so unbound prototypes, built once
        with DRF's own get_fields, are copied instead; each copy is then bound to this
        serializer as usual. A nested child (`attachments`' AttachmentSerializer) is shared,
        as one child already is by every item of a bulk request.
        """
        prototypes = type(self).__dict__.get("_field_prototypes")
        if prototypes is None:
            prototypes = super().get_fields()
            type(self)._field_prototypes = prototypes
        return {name: copy.copy(field) for name, field in prototypes.items()}

    provider = serializers.ChoiceField(
        choices=MESSAGING_SLUGS,
        error_messages={"invalid_choice": f"Must be one of {', '.join(MESSAGING_SLUGS)}."},
    )
    to = StrictCharField(max_length=_column(Message, "to"))  # 320: the longest email address
    body = OptionalText()
    subject = OptionalText(max_length=_column(Message, "subject"))  # 998: RFC 5322's line limit
    html = OptionalText()
    idempotency_key = StrictCharField(
        required=False,
        allow_null=True,
        default=None,
        max_length=_column(Message, "idempotency_key"),
        trim_whitespace=False,
    )
    # Send even to a suppressed recipient: only a transactional message may (docs: README).
    transactional = StrictBooleanField(required=False, default=False)
    ignore_suppression = StrictBooleanField(required=False, default=False)
    send_at = AwareDateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="When to send, ISO 8601 with an offset (e.g. 2030-01-01T09:00:00+01:00); "
        "absent or null: at once. A future time makes the message `scheduled`.",
    )

    template = TemplateField(
        help_text="WhatsApp: a Twilio Content template; email: a SendGrid dynamic template."
    )
    media_urls = serializers.ListField(
        child=StrictCharField(max_length=2048),
        required=False,
        allow_null=True,
        default=list,
        max_length=MAX_MEDIA_URLS,
        help_text="Public https URLs the provider fetches: WhatsApp (MediaUrl), Telegram "
        "(sendPhoto for images, sendDocument otherwise) and Instagram (attachment). One per "
        "message.",
    )
    attachments = serializers.ListField(
        child=AttachmentSerializer(),
        required=False,
        allow_null=True,
        default=list,
        max_length=settings.MESSAGE_ATTACHMENTS_MAX_COUNT,
        help_text="Email only: files sent with the message; at most "
        f"{settings.MESSAGE_ATTACHMENTS_MAX_COUNT} and "
        f"{settings.MESSAGE_ATTACHMENTS_MAX_BYTES} bytes in all (decoded).",
    )
    parse_mode = serializers.ChoiceField(
        choices=PARSE_MODES,
        required=False,
        allow_null=True,
        default=None,
        help_text="Telegram only: how the text is formatted (the integration's parse_mode when "
        "absent). Escape the text as docs/messages.md shows.",
    )
    tag = serializers.ChoiceField(
        choices=MESSAGE_TAGS,
        required=False,
        allow_null=True,
        default=None,
        help_text="Instagram only: HUMAN_AGENT lets a person reply up to 7 days after the "
        "user's last message (outside the standard 24-hour window).",
    )

    def validate_send_at(self, value: datetime | None) -> datetime | None:
        return check_send_at(value)

    def validate_media_urls(self, value: list[str] | None) -> list[str]:
        errors: dict[int, list[str]] = {}
        for index, url in enumerate(value or []):
            try:
                fields.media_url(url)
            except ValueError as exc:
                errors[index] = [str(exc)]
        if errors:
            raise serializers.ValidationError(errors)
        return list(value or [])

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        provider = attrs["provider"]
        rules = SPECS[provider].messages
        assert rules is not None  # MESSAGING_SLUGS only
        errors: dict[str, list[str]] = {}
        try:
            attrs["to"] = rules.destination(attrs["to"])
        except ValueError as exc:
            errors["to"] = [str(exc)]
        attrs["attachments"] = list(attrs["attachments"] or [])
        _check_extras(provider, rules, attrs, errors)
        _check_text(provider, rules, attrs, errors)
        if attrs["ignore_suppression"] and not attrs["transactional"]:
            errors["ignore_suppression"] = ["Only a message with transactional: true may set it."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


def _check_extras(provider: str, rules: Any, attrs: dict[str, Any], errors: dict[str, Any]) -> None:
    """What a message carries beyond text, against what `provider` takes (its spec)."""
    template = attrs["template"]
    if template is not None:
        if rules.template is None:
            hint = "; format text with parse_mode" if rules.parse_modes else ""
            errors["template"] = [f"{provider} messages take no template{hint}."]
        else:
            try:
                attrs["template"] = rules.template(template)
            except FieldProblem as exc:
                errors["template"] = {exc.part: [exc.message]}
            except ValueError as exc:
                errors["template"] = [str(exc)]
    media = attrs["media_urls"]
    if media and not rules.media_limit:
        hint = "; send files as attachments" if rules.attachments else ""
        errors["media_urls"] = [f"{provider} messages take no media_urls{hint}."]
    elif len(media) > rules.media_limit:
        errors["media_urls"] = [f"{provider} takes at most {rules.media_limit} per message."]
    attachments = attrs["attachments"]
    if attachments and not rules.attachments:
        hint = "; send media by URL with media_urls" if rules.media_limit else ""
        errors["attachments"] = [f"{provider} messages take no attachments{hint}."]
    elif sum(a["size"] for a in attachments) > settings.MESSAGE_ATTACHMENTS_MAX_BYTES:
        errors["attachments"] = [
            f"Must be at most {settings.MESSAGE_ATTACHMENTS_MAX_BYTES} bytes in all (decoded)."
        ]
    for name, allowed in (("parse_mode", rules.parse_modes), ("tag", rules.tags)):
        if attrs[name] is not None and attrs[name] not in allowed:
            errors[name] = [f"{provider} messages take no {name}."]


def _check_text(provider: str, rules: Any, attrs: dict[str, Any], errors: dict[str, Any]) -> None:
    """Body, subject and html, given the provider and whether a template or media carries the
    message."""
    body, subject, html = attrs["body"], attrs["subject"], attrs["html"]
    templated = attrs["template"] is not None and rules.template is not None
    if templated:
        for name in ("body", "subject", "html"):
            if attrs[name] and name not in rules.template_allows:
                errors[name] = [f"A {provider} template holds the content: leave {name} empty."]
        if attrs["media_urls"] and "media_urls" not in errors:
            errors["media_urls"] = [f"A {provider} template message takes no media_urls."]
        return
    if rules.email:
        if not subject.strip():
            errors["subject"] = ["An email needs a subject (or a template)."]
        if not body.strip() and not html.strip():
            errors["body"] = ["An email needs a body or html (or a template)."]
        limit = rules.body_limit
    else:
        if subject or html:
            errors["subject" if subject else "html"] = [f"{provider} messages are text only."]
        media = bool(attrs["media_urls"])
        limit = rules.media_text_limit if media else rules.body_limit
        if media and body and not limit:
            errors["body"] = [f"{provider} sends media without text: send the text on its own."]
            return
        if not media and not body.strip():
            errors["body"] = ["This field is required."]
    if len(body) > limit or len(html) > limit:
        what = "beside media" if attrs["media_urls"] else f"for {provider}"
        errors["body"] = [f"Must be at most {limit} characters {what}."]


class MessageBulkSerializer(serializers.Serializer):
    """A batch of messages (at most BULK_MAX_MESSAGES): all valid or none written."""

    messages = serializers.ListField(
        child=MessageCreateSerializer(), min_length=1, max_length=settings.BULK_MAX_MESSAGES
    )

    def validate_messages(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        errors: list[dict[str, list[str]]] = [{} for _ in items]
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            key = item["idempotency_key"]
            if key is None:
                continue
            if key in seen:
                errors[index] = {
                    "idempotency_key": [f"Repeats the key of message {seen[key]} in this request."]
                }
            else:
                seen[key] = index
        if any(errors):
            raise serializers.ValidationError(errors)
        return items


class LocalDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time left as sent: a naive one is read in the booking's own time zone."""

    default_error_messages = {"invalid": _DATETIME_HELP}

    def enforce_timezone(self, value: datetime) -> datetime:
        return value


class BookingRequestSerializer(serializers.Serializer):
    """A booking as product code sends it; start and end without an offset are in `timezone`."""

    summary = StrictCharField(max_length=_column(Booking, "summary"))
    description = OptionalText(max_length=8000)
    start = LocalDateTimeField()
    end = LocalDateTimeField()
    timezone = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default="UTC",
        max_length=_column(Booking, "timezone"),
    )
    location = OptionalText(max_length=_column(Booking, "location"))
    attendees = serializers.ListField(
        child=serializers.EmailField(),
        required=False,
        allow_null=True,
        max_length=MAX_ATTENDEES,
        default=list,
    )

    def validate_timezone(self, value: str | None) -> str:
        name = value or "UTC"
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError(
                "Must be an IANA time zone such as Europe/Madrid."
            ) from None
        return name

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        zone = ZoneInfo(attrs["timezone"])
        errors: dict[str, list[str]] = {}
        for name in ("start", "end"):
            value = attrs[name]
            if timezone.is_naive(value):
                value = value.replace(tzinfo=zone)
            if not 1970 <= value.year <= 9998:
                errors[name] = [_DATETIME_HELP]
            attrs[name] = value
        if not errors and attrs["end"] <= attrs["start"]:
            errors["end"] = ["Must be after start."]
        if errors:
            raise serializers.ValidationError(errors)
        attrs["attendees"] = list(attrs.get("attendees") or [])
        return attrs

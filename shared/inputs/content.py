"""What a message carries beyond text (templates, media URLs, attachments, parse_mode, tag),
checked against what its provider's spec (`MessageRules`) allows."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from shared.inputs.fields import StrictCharField
from shared.providers.registry import SPECS
from shared.providers.spec import FieldProblem

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


def check_extras(provider: str, rules: Any, attrs: dict[str, Any], errors: dict[str, Any]) -> None:
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


def check_text(provider: str, rules: Any, attrs: dict[str, Any], errors: dict[str, Any]) -> None:
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

"""The API's one JSON parser: bounded size, depth and values; no NUL or lone surrogate anywhere."""

from __future__ import annotations

import json
import re
from typing import Any

from rest_framework import exceptions, parsers
from rest_framework.utils.json import strict_constant

from api.exceptions import JSONTooDeep, RequestBodyTooLarge

# The deepest legitimate body is 3 levels ({"messages": [{...}]}); 32 leaves room and keeps
# every later recursive walk (json.dumps, serializers, psycopg) far from the recursion limit.
MAX_JSON_DEPTH = 32
# A full bulk request (1,000 messages) holds about 7,000 values.
MAX_JSON_VALUES = 100_000
MAX_REPORTED_STRINGS = 20
CHARACTER_ERROR = (
    "Must not contain NUL (\\u0000) or unpaired surrogate (\\ud800-\\udfff) characters."
)

# With escaped backslashes and quotes gone, a string literal is a quote to the next quote (or
# to the end, when unterminated: malformed anyway); every pattern here is linear.
_STRING = re.compile(r'"[^"]*"?')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_FORBIDDEN = re.compile(r"[\x00\ud800-\udfff]")
_BAD = object()  # stands in for a value, or the value of a key, that holds a forbidden character


def _too_many_values() -> RequestBodyTooLarge:
    return RequestBodyTooLarge(f"The JSON body must hold at most {MAX_JSON_VALUES} values.")


def check_shape(text: str) -> None:
    """Refuse nesting past MAX_JSON_DEPTH (400), or too many containers (413), before json runs.

    Only the brackets outside string literals count, so the scan never recurses.
    """
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", unescaped))
    if len(brackets) > 2 * (MAX_JSON_VALUES + 1):
        raise _too_many_values()
    depth = 0
    for char in brackets:
        depth += 1 if char in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise JSONTooDeep(f"The JSON body must not nest deeper than {MAX_JSON_DEPTH} levels.")


def _path(node: tuple | None) -> str:
    """'messages.3.body' from the (parent, key) chain; forbidden characters in keys escaped."""
    parts: list[str] = []
    while node is not None:
        node, key = node
        parts.append(_FORBIDDEN.sub(lambda m: f"\\u{ord(m[0]):04x}", str(key)))
    return ".".join(reversed(parts)) or "non_field_errors"


def _children(node: tuple | None, value: dict | list) -> list[tuple[tuple, Any]]:
    pairs = value.items() if isinstance(value, dict) else enumerate(value)
    out = []
    for key, item in pairs:
        if (isinstance(key, str) and _FORBIDDEN.search(key)) or (
            isinstance(item, str) and _FORBIDDEN.search(item)
        ):
            out.append(((node, key), _BAD))
        elif isinstance(item, dict | list) and item:
            out.append(((node, key), item))
    return out


def bad_string_paths(data: Any, limit: int = MAX_REPORTED_STRINGS) -> list[str]:
    """Paths, in document order, of the keys and strings holding NUL or lone surrogates.

    Raises RequestBodyTooLarge past MAX_JSON_VALUES values, which also bounds this walk.
    """
    if isinstance(data, str):
        return ["non_field_errors"] if _FORBIDDEN.search(data) else []
    found: list[str] = []
    stack: list[tuple[tuple | None, Any]] = [(None, data)]
    seen = 0
    while stack and len(found) < limit:
        node, value = stack.pop()
        if value is _BAD:
            found.append(_path(node))
            continue
        if isinstance(value, dict | list):
            seen += len(value)
            if seen > MAX_JSON_VALUES:
                raise _too_many_values()
            stack.extend(reversed(_children(node, value)))
    return found


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing what later layers cannot recurse through or store.

    Over MAX_JSON_VALUES values → 413 (bytes over DATA_UPLOAD_MAX_MEMORY_SIZE: Django stops them
    when DRF reads request.body, api.errors answers 413); nesting deeper than
    MAX_JSON_DEPTH → 400 before json recursion starts; NUL or an unpaired surrogate in any key
    or string → 400 naming the path (`extra.from_name`, `messages.3.body`), so no view, service
    or database ever sees one.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        parser_context = parser_context or {}
        encoding = parsers.get_encoding(parser_context)
        raw = stream.read()  # DRF read request.body first: Django capped it (413 in api.errors)
        try:
            text = raw.decode(encoding)
        except UnicodeError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        check_shape(text)
        try:
            data = json.loads(text, parse_constant=strict_constant if self.strict else None)
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        paths = bad_string_paths(data)
        if paths:
            raise exceptions.ValidationError({path: [CHARACTER_ERROR] for path in paths})
        return data

"""Gunicorn settings every launcher picks up from the repo root: a credential-redacting access log."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from shared.redaction import redact, redact_query, redact_uri

# Atoms that carry the request URI, its query or a URL the client sent (Referer).
_URI_ATOMS = ("U", "{raw_uri}e", "{path_info}e", "f", "{referer}i")
_QUERY_ATOMS = ("q", "{query_string}e")


class RedactingLogger(Logger):
    """gunicorn's Logger whose access-log atoms hide credential-looking query values."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        method, protocol = environ.get("REQUEST_METHOD"), environ.get("SERVER_PROTOCOL")
        atoms["r"] = f"{method} {redact_uri(str(environ.get('RAW_URI', '')))} {protocol}"
        for key in _URI_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_uri(atoms[key])
        for key in _QUERY_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = redact(redact_query(atoms[key]))
        return atoms


logger_class = RedactingLogger

# gunicorn 27's control socket sits at one fixed path per user, shared by every gunicorn on the
# host (tests, bench and the dev stack start several); nothing here uses it.
control_socket_disable = True

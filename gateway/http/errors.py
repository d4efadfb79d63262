"""The one error shape of the HTTP ops API, and the exception that carries it.

Every failure a client can see is ``{"error": {"code", "message", "problems"}}``
with a 4xx/5xx status; a handler raises :class:`ApiError` and the app turns it
into that body in one place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


class ApiError(Exception):
    """An error with the HTTP status it maps to; ``problems`` point at fields or fixture lines."""

    def __init__(self, status: int, code: str, message: str,
                 problems: Iterable[Mapping[str, Any]] = (), headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = [dict(p) for p in problems]
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "problems": self.problems}}

    def to_json(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=False).encode("utf-8")


def field_problem(field: str, reason: str) -> dict[str, Any]:
    return {"field": field, "line": None, "reason": reason}


def invalid(field: str, reason: str) -> ApiError:
    """400 for a body or query value that is missing or wrong; the message names the field."""
    return ApiError(400, "invalid_request", f"{field}: {reason}", [field_problem(field, reason)])


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


def unauthorized(reason: str) -> ApiError:
    return ApiError(401, "unauthorized", reason,
                    headers={"WWW-Authenticate": 'Bearer realm="gateway-ops"'})


def too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body larger than {limit} bytes")

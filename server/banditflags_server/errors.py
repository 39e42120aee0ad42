"""JSON errors of the wire protocol (docs/protocol.md "Errors").

Handlers raise :class:`ApiError` (or a subclass); the app's exception handlers turn it into
``{"error": {"code", "message", "field", "errors"}}`` with the right status. Messages never contain a key.
"""

from __future__ import annotations

from typing import Any

MAX_LISTED = 50

_STATUS_CODES = {
    400: "invalid_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_field",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answered as JSON; ``errors`` is a list of ``(field, message)``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        errors: list[tuple[str | None, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _STATUS_CODES.get(status, "error")
        self.message = message
        self.errors = errors if errors is not None else ([(field, message)] if field else [])
        self.field = field if field is not None else (self.errors[0][0] if self.errors else None)
        self.headers = headers
        self.extra = extra  # top-level fields beside "error" (a segment in use: its "flags")

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "field": self.field,
                "errors": [{"field": f, "message": m} for f, m in self.errors[:MAX_LISTED]],
            },
            **(self.extra or {}),
        }


class ValidationError(ApiError):
    """422 ``invalid_field`` listing every problem found (the first one is ``field``)."""

    def __init__(self, errors: list[tuple[str | None, str]]) -> None:
        field, message = errors[0]
        full = f"{field}: {message}" if field else message
        super().__init__(422, full, field=field, errors=errors)


def not_found(what: str) -> ApiError:
    """404 for a missing resource."""
    return ApiError(404, f"{what} not found")


def conflict(message: str, field: str | None = None) -> ApiError:
    """409 ``conflict``."""
    return ApiError(409, message, field=field)

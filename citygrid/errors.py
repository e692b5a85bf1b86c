"""Errors as values of the domain: a stable machine-readable code and the HTTP status it maps to."""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every error a client can cause; the kit renders it as RFC 9457 problem+json."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class NotFound(DomainError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    title = "Conflict"


class PreconditionFailed(DomainError):
    code = "precondition_failed"
    status = 412
    title = "Precondition failed"


class PreconditionRequired(DomainError):
    code = "precondition_required"
    status = 428
    title = "Precondition required"


class Unauthenticated(DomainError):
    code = "auth.unauthenticated"
    status = 401
    title = "Unauthenticated"


class Forbidden(DomainError):
    code = "auth.forbidden"
    status = 403
    title = "Forbidden"


class InvalidInput(DomainError):
    code = "invalid_input"
    status = 422
    title = "Invalid input"

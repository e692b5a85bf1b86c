"""RFC 9457 problem details: every error a client sees, with a stable machine-readable ``code``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from citygrid.errors import DomainError
from citygrid.logging import request_id_var, scrubbed_logger

PROBLEM_JSON = "application/problem+json"
# Scrubbed before any handler sees a record: the traceback of a failed INSERT quotes its row.
log = scrubbed_logger("citygrid.problems")

HTTP_CODES = {
    400: "http.bad_request",
    401: "auth.unauthenticated",
    403: "auth.forbidden",
    404: "http.not_found",
    405: "http.method_not_allowed",
    406: "http.not_acceptable",
    413: "http.payload_too_large",
    415: "http.unsupported_media_type",
    429: "http.rate_limited",
}


# The problem document as the contract describes it (RFC 9457 and the members CityGrid adds).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string", "description": "urn:citygrid:problem:<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string", "description": "Stable and machine-readable: branch on this."},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}, "description": "Field errors (422)."},
    },
    "additionalProperties": True,
}
_DESCRIPTIONS = {
    400: "Bad request",
    401: "No valid credentials",
    403: "Not allowed for this principal",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict with the current state",
    422: "Invalid parameters",
    429: "Over a rate limit or quota (Retry-After, RateLimit)",
    502: "The owning service answered what cannot be passed on",
    503: "The owning service is unavailable or saturated (Retry-After)",
    504: "The owning service did not answer in time",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting each of ``statuses`` with its problem+json body."""
    return {
        status: {
            "description": _DESCRIPTIONS.get(status, "Problem"),
            "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:citygrid:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    body.update({k: v for k, v in extra.items() if v is not None})
    all_headers = dict(headers or {})
    if request_id:
        all_headers.setdefault("X-Request-ID", request_id)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=all_headers)


def _field_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    # The offending input is not echoed back: it may be a megabyte, or personal data.
    return [
        {"loc": list(item.get("loc", ())), "type": item.get("type"), "msg": item.get("msg")}
        for item in error.errors()
    ]


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def on_domain_error(request: Request, error: DomainError) -> JSONResponse:
        return problem(
            error.status,
            error.code,
            error.title,
            error.detail,
            instance=request.url.path,
            headers=error.headers,
            **error.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = _field_errors(error)
        if any(item["type"] == "json_invalid" for item in errors):
            return problem(
                400,
                "request.malformed_json",
                "Malformed JSON",
                "the request body is not valid JSON",
                instance=request.url.path,
                errors=errors,
            )
        return problem(
            422,
            "validation_failed",
            "Validation failed",
            "the request does not match the schema",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(error.status_code, f"http.{error.status_code}")
        detail = error.detail if isinstance(error.detail, str) else None
        return problem(
            error.status_code,
            code,
            detail or code,
            detail,
            instance=request.url.path,
            headers=dict(error.headers or {}),
        )


def unexpected_error_response(method: str, path: str) -> JSONResponse:
    """The 500 problem for the exception being handled, which is logged without the personal data
    its text may quote (``citygrid.scrub``: SQL parameters, failing rows, phones, ID numbers)."""
    log.exception("unhandled error on %s %s", method, path)
    return problem(
        500,
        "internal_error",
        "Internal error",
        "the server failed; the request id identifies it",
        instance=path,
    )

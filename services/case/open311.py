"""Open311 GeoReport v2 routes (``/open311/v2/...``): citizens' apps report and follow problems.

Every resource comes as ``.xml`` (the spec's required format) or ``.json``. Errors are the spec's
``[{code, description}]`` in the same format, never problem+json, so an unchanged Open311 client
can read them. The gateway authenticates the caller (``api_key``) before anything reaches here.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import cache
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from citygrid.auth import CurrentPrincipal, district_scope, require_district, require_scope
from citygrid.db import transaction_time
from citygrid.errors import DomainError, NotFound
from citygrid.masking import mask_address, mask_text
from citygrid.runtime import RuntimeDep
from services.case import open311_queries as queries
from services.case.context import Calendars, DuplicateRadius, Grid
from services.case.domain.categories import load_catalogue
from services.case.domain.open311_mapping import (
    CHANGESET,
    MAX_REQUESTS,
    SPECIFICATION_URL,
    comma_list,
    district_name,
    parse_submission,
    parse_w3c,
    public_status,
    service_notice,
    status_notes,
    statuses_of,
    w3c,
    window,
)
from services.case.domain.open311_xml import (
    CONTENT_TYPES,
    MEDIA_TYPES,
    Format,
    error_payload,
    format_of,
    format_of_path,
    render,
)
from services.case.models import Category

WRITE_SCOPE = "cases:write"
MAX_FORM_FIELDS = 200


class UnknownResource(NotFound):
    code = "open311.unknown_resource"
    title = "Unknown resource"


def open311_status(status: int) -> int:
    """The spec knows 400, 403 and 404; rate limits and outages keep their own status."""
    if status in (401, 403):
        return 403
    if status == 404 or status == 429 or status >= 500:
        return status
    return 400


def error_response(
    fmt: Format, status: int, descriptions: list[str], problem: str, headers: dict[str, str] | None = None
) -> Response:
    spec_status = open311_status(status)
    return Response(
        render(fmt, "errors", error_payload(spec_status, descriptions, problem)),
        status_code=spec_status,
        media_type=CONTENT_TYPES[fmt],
        headers=headers,
    )


class Open311Route(APIRoute):
    """Renders every error of its endpoint (domain, validation, HTTP) in the Open311 error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def open311_handler(request: Request) -> Response:
            fmt = format_of_path(request.url.path)
            try:
                return await handler(request)
            except DomainError as error:
                problems = error.extra.get("errors")
                descriptions = [str(item) for item in problems] if isinstance(problems, list) else []
                return error_response(
                    fmt, error.status, descriptions or [error.detail], error.code, error.headers
                )
            except RequestValidationError as error:
                descriptions = [
                    f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg')}"
                    for item in error.errors()
                ]
                return error_response(fmt, 400, descriptions, "open311.invalid_query")
            except StarletteHTTPException as error:
                return error_response(
                    fmt, error.status_code, [str(error.detail)], f"http.{error.status_code}"
                )

        return open311_handler


router = APIRouter(prefix="/open311/v2", tags=["open311"], route_class=Open311Route)

FORMATS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The document in the format the path names.",
        "content": {"text/xml": {}, "application/json": {}},
    }
}
REQUEST_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["service_code", "lat", "long"],
                    "properties": {
                        name: {"type": "string"}
                        for name in (
                            "api_key",
                            "service_code",
                            "lat",
                            "long",
                            "address_string",
                            "description",
                            "email",
                            "first_name",
                            "last_name",
                            "phone",
                            "device_id",
                            "account_id",
                            "media_url",
                        )
                    },
                    "additionalProperties": {"type": "string", "description": "attribute[CODE]"},
                }
            }
        },
    }
}


def document(fmt: Format, root: str, payload: Any, status: int = 200) -> Response:
    return Response(render(fmt, root, payload), status_code=status, media_type=CONTENT_TYPES[fmt])


@cache
def shipped_keywords() -> dict[str, tuple[str, ...]]:
    return {category.code: category.keywords for category in load_catalogue().categories}


def service_out(category: Category) -> dict[str, Any]:
    keywords = (category.name_zh, *shipped_keywords().get(category.code, ()))
    return {
        "service_code": category.open311_service_code,
        "service_name": category.name_en,
        "description": f"{category.name_en} ({category.name_zh})",
        "metadata": False,
        "type": "realtime",
        "keywords": ", ".join(dict.fromkeys(keywords)),
        "group": category.open311_group,
    }


def request_out(public: queries.PublicRequest) -> dict[str, Any]:
    """A case as a service request: never its reporter's name, phone or email. The list is public
    (keyless reads), so the description and address are always masked as for a caller without
    ``pii:read``: no phone, ID number or e-mail in the text, no door or room number in the address."""
    case = public.case
    open_case = public_status(case.status) == "open"
    return {
        "service_request_id": case.number,
        "status": public_status(case.status),
        "status_notes": status_notes(case.status, public.merged_into_number),
        "service_name": public.service_name,
        "service_code": public.service_code,
        "description": mask_text(case.description),
        "agency_responsible": case.unit or f"{district_name(case.district_code)} District City Management",
        "service_notice": service_notice(public.limits),
        "requested_datetime": w3c(case.created_at),
        "updated_datetime": w3c(case.updated_at),
        "expected_datetime": w3c(case.deadline_at) if open_case and case.stage == "handle" else None,
        "address": mask_address(case.address),
        "address_id": None,
        "zipcode": None,
        "lat": case.lat,
        "long": case.lon,
        "media_url": public.media_url,
    }


def endpoint_url(request: Request) -> str:
    """The endpoint as the client reached it: the gateway names its own host and scheme."""
    host = request.headers.get("x-forwarded-host") or request.url.netloc
    scheme = request.headers.get("x-forwarded-proto") or request.url.scheme
    return f"{scheme}://{host}/open311/v2"


@router.get("/discovery.{format}", operation_id="open311_discovery", responses=FORMATS)
async def discovery(format: str, request: Request) -> Response:
    """Where this GeoReport v2 endpoint is and which formats it speaks."""
    fmt = format_of(format)
    payload = {
        "changeset": CHANGESET,
        "contact": "The city's digital city-management command centre (12319).",
        "key_service": "API keys are issued by the platform's operators through the gateway's admin API.",
        "endpoints": [
            {
                "specification": SPECIFICATION_URL,
                "url": endpoint_url(request),
                "changeset": CHANGESET,
                "type": "production",
                "formats": list(MEDIA_TYPES),
            }
        ],
    }
    return document(fmt, "discovery", payload)


@router.get("/services.{format}", operation_id="open311_services", responses=FORMATS)
async def services(format: str, runtime: RuntimeDep) -> Response:
    """Every active small class of the catalogue as an Open311 service."""
    fmt = format_of(format)
    async with runtime.db() as session:
        categories = await queries.active_services(session)
    return document(fmt, "services", [service_out(category) for category in categories])


@router.get(
    "/services/{service_code}.{format}",
    operation_id="open311_service_definition",
    responses=FORMATS,
)
async def service_definition(service_code: str, format: str, runtime: RuntimeDep) -> Response:
    """A service's extra attributes: none yet, every service has ``metadata`` false."""
    fmt = format_of(format)
    async with runtime.db() as session:
        category = await queries.service_by_code(session, service_code)
    return document(
        fmt, "service_definition", {"service_code": category.open311_service_code, "attributes": []}
    )


@router.post(
    "/requests.{format}",
    status_code=201,
    operation_id="open311_create_request",
    responses=FORMATS,
    openapi_extra=REQUEST_FORM,
)
async def create_request(
    format: str,
    request: Request,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    calendars: Calendars,
    grid: Grid,
    duplicate_radius_m: DuplicateRadius,
) -> Response:
    """Report a problem (form-encoded): it becomes a public case; the reporter's details stay private."""
    fmt = format_of(format)
    require_scope(principal, WRITE_SCOPE)
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    fields = [(key, value) for key, value in form.multi_items() if not isinstance(value, UploadFile)]
    submission = parse_submission([(key, value) for key, value in fields if isinstance(value, str)])
    async with runtime.uow() as uow:
        case, category = await queries.submit(
            uow,
            submission,
            principal,
            calendars.calendar,
            grid=grid.index,
            duplicate_radius_m=duplicate_radius_m,
        )
    payload = [
        {
            "service_request_id": case.number,
            "token": str(case.id),
            "service_notice": service_notice(category.limits),
            "account_id": submission.account_id,
        }
    ]
    response = document(fmt, "service_requests", payload, status=201)
    response.headers["Location"] = f"/open311/v2/requests/{case.number}.{fmt.value}"
    return response


@router.get("/requests.{format}", operation_id="open311_requests", responses=FORMATS)
async def list_requests(
    format: str,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    service_request_id: str | None = None,
    service_code: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    status: str | None = None,
    jurisdiction_id: str | None = None,
) -> Response:
    """Public requests, newest first (at most 1000): the last 90 days unless a range is given."""
    fmt = format_of(format)
    numbers = comma_list(service_request_id, name="service_request_id")
    codes = comma_list(service_code, name="service_code")
    statuses = statuses_of(comma_list(status, name="status"))
    start = parse_w3c(start_date, name="start_date") if start_date else None
    end = parse_w3c(end_date, name="end_date") if end_date else None
    async with runtime.db() as session:
        first, last = window(start, end, await transaction_time(session))
        found = await queries.public_requests(
            session,
            numbers=numbers,
            service_codes=codes,
            statuses=statuses,
            start=first,
            end=last,
            district=district_scope(principal),
            limit=MAX_REQUESTS,
        )
    return document(fmt, "service_requests", [request_out(item) for item in found])


@router.get(
    "/requests/{service_request_id}.{format}",
    operation_id="open311_request",
    responses=FORMATS,
)
async def get_request(
    service_request_id: str, format: str, runtime: RuntimeDep, principal: CurrentPrincipal
) -> Response:
    """One request, as a list of one (the spec's shape)."""
    fmt = format_of(format)
    async with runtime.db() as session:
        found = await queries.public_request(session, service_request_id)
    require_district(principal, found.case.district_code)
    return document(fmt, "service_requests", [request_out(found)])


@router.get("/tokens/{token}.{format}", operation_id="open311_token", responses=FORMATS)
async def get_token(token: str, format: str, runtime: RuntimeDep, principal: CurrentPrincipal) -> Response:
    """The service request id a token stands for (a token is the case's id)."""
    fmt = format_of(format)
    async with runtime.db() as session:
        number = await queries.number_of_token(session, token, district=district_scope(principal))
    return document(fmt, "service_requests", [{"service_request_id": number, "token": token}])


@router.api_route(
    "/{resource:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def unknown_resource(resource: str) -> Response:
    raise UnknownResource(f"GeoReport v2 has no resource '{resource}'")

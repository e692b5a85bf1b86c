"""The EPCIS 2.0 REST binding's capture and query interfaces, under ``/v1/epcis``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import JSONResponse

from citygrid.auth import CurrentPrincipal, require_city_wide
from citygrid.runtime import RuntimeDep
from services.gas.epcis import capture as epcis
from services.gas.epcis.mapping import EPCIS_CONTEXT

router = APIRouter(prefix="/v1/epcis", tags=["epcis"])
CAPTURE_TYPES = ("application/json", "application/ld+json")
STANDARD_HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}


class NotEpcisJson(epcis.EpcisProblem):
    code = "gas.epcis_media_type"
    status = 415
    title = "Unsupported media type"
    exception = "UnsupportedMediaTypeException"


class UnknownErrorBehaviour(epcis.EpcisProblem):
    code = "gas.epcis_error_behaviour"
    status = 400
    title = "Invalid capture error behaviour"
    exception = "ValidationException"


@router.options("/capture", operation_id="epcis_capture_options", status_code=204)
async def capture_options(principal: CurrentPrincipal) -> Response:
    """The capture limits, advertised as the REST binding asks."""
    return Response(
        status_code=204,
        headers={
            **STANDARD_HEADERS,
            "Allow": "OPTIONS, POST",
            "GS1-EPCIS-Capture-Limit": str(epcis.CAPTURE_LIMIT),
            "GS1-EPCIS-Capture-File-Size-Limit": str(epcis.CAPTURE_FILE_SIZE_LIMIT),
            "GS1-Capture-Error-Behaviour": ",".join(epcis.ERROR_BEHAVIOURS),
        },
    )


@router.post(
    "/capture",
    operation_id="epcis_capture",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "An EPCISDocument (or EPCISQueryDocument), EPCIS 2.0 JSON/JSON-LD.",
            "content": {media: {"schema": {"type": "object"}} for media in CAPTURE_TYPES},
        }
    },
    responses={
        202: {"description": "Captured; `Location` names the capture job."},
        400: {
            "description": "`epcisException:ValidationException`: the document is refused, nothing stored."
        },
        413: {"description": "`epcisException:CaptureLimitExceededException`."},
        415: {"description": "Not `application/json` or `application/ld+json`."},
    },
)
async def capture(
    request: Request,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    behaviour: Annotated[str, Header(alias="GS1-Capture-Error-Behaviour")] = "rollback",
) -> JSONResponse:
    """Capture a document of scans: taken whole (``rollback``, the default) or event by event
    (``proceed``); the job says what became of each refused event."""
    require_city_wide(principal, "the city's EPCIS repository")
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in CAPTURE_TYPES:
        raise NotEpcisJson(
            f"send the document as application/json or application/ld+json, not '{media or 'nothing'}'"
        )
    mode = behaviour.strip().lower()
    mode = "rollback" if mode == "all" else mode  # the schema's enum also lists "all": all or nothing
    if mode not in epcis.ERROR_BEHAVIOURS:
        raise UnknownErrorBehaviour(f"GS1-Capture-Error-Behaviour is rollback or proceed, not {behaviour!r}")
    body = await request.body()
    captured = await epcis.capture(runtime, body, mode, principal)
    return JSONResponse(
        epcis.job_document(captured.job),
        status_code=202,
        headers={**STANDARD_HEADERS, "Location": f"/v1/epcis/capture/{captured.job.id}"},
    )


@router.get("/capture/{capture_id}", operation_id="epcis_capture_job")
async def capture_job(
    capture_id: Annotated[str, Path(pattern=r"^cap-[0-9a-f]{32}$")],
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
) -> JSONResponse:
    require_city_wide(principal, "the city's EPCIS repository")
    async with runtime.reads() as session:
        job = await epcis.get_job(session, capture_id)
    return JSONResponse(epcis.job_document(job), headers=STANDARD_HEADERS)


@router.get("/events", operation_id="epcis_query_events")
async def query_events(request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> JSONResponse:
    """Events as an EPCISQueryDocument, oldest first: ``EQ_bizStep``, ``GE_eventTime``,
    ``LT_eventTime``, ``MATCH_epc``/``MATCH_anyEPC``, ``EQ_readPoint``, ``eventType``, ``perPage``
    and ``nextPageToken`` (also in the ``Link: rel="next"`` header)."""
    require_city_wide(principal, "the city's EPCIS repository")
    query = epcis.parse_query(dict(request.query_params))
    async with runtime.db() as session:
        events, token = await epcis.query_events(session, query)
    document: dict[str, Any] = {
        "@context": [EPCIS_CONTEXT],
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": datetime.now(UTC).isoformat(),
        "epcisBody": {
            "queryResults": {"queryName": "SimpleEventQuery", "resultsBody": {"eventList": events}}
        },
    }
    headers = dict(STANDARD_HEADERS)
    if token is not None:
        following = request.url.include_query_params(nextPageToken=token)
        headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return JSONResponse(document, headers=headers)

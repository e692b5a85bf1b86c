"""HTTP routes of evidence photos: uploaded as raw JPEG/PNG bodies, listed, and served back.

These routes take image bodies, so they are served outside the kit's JSON-only rule; every other
check (the gateway's principal, the body limit for images) still applies.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from citygrid.auth import CurrentPrincipal
from citygrid.blobs import IMAGE_TYPES
from citygrid.http import UnsupportedMediaType
from citygrid.middleware import public_path
from citygrid.pagination import Page
from citygrid.runtime import RuntimeDep
from services.case import evidence
from services.case.context import FieldWork
from services.case.domain.evidence import EvidenceKind
from services.case.schemas import EvidenceOut

router = APIRouter(prefix="/v1", tags=["evidence"])

IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The photo itself (not multipart, not base64).",
        "content": {kind: {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_TYPES},
    }
}
IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {kind: {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_TYPES}},
    304: {"description": "The client's copy (If-None-Match) is current."},
}


@router.post(
    "/cases/{case_id}/evidence",
    status_code=201,
    operation_id="add_evidence",
    openapi_extra=IMAGE_BODY,
    responses={200: {"model": EvidenceOut, "description": "This photo was already attached."}},
)
async def add_evidence(
    case_id: uuid.UUID,
    kind: Annotated[EvidenceKind, Query(description="What the photo shows.")],
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    field: FieldWork,
) -> EvidenceOut:
    """Attach a photo (``Content-Type: image/jpeg`` or ``image/png``, the bytes as the body).

    Handling needs at least one ``after`` photo taken during the current handling round.
    """
    declared = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if declared not in IMAGE_TYPES:
        raise UnsupportedMediaType(
            f"send the photo as image/jpeg or image/png, not '{declared or 'nothing'}'",
            accepted=sorted(IMAGE_TYPES),
        )
    data = await request.body()
    async with runtime.uow() as uow:
        record, created = await evidence.add_evidence(
            uow,
            field.blobs,
            case_id,
            kind,
            principal,
            data=data,
            declared_type=declared,
            max_bytes=field.evidence_max_bytes,
        )
        out = evidence.evidence_out(record)
    if not created:
        response.status_code = 200
    response.headers["Location"] = public_path(request, f"{request.url.path}/{record.id}")
    return out


@router.get("/cases/{case_id}/evidence", operation_id="list_evidence")
async def list_evidence(
    case_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> Page[EvidenceOut]:
    """The case's photos, oldest first (at most 50 a case)."""
    async with runtime.db() as session:
        rows = await evidence.list_evidence(session, case_id, principal)
        return Page[EvidenceOut](items=[evidence.evidence_out(row) for row in rows])


@router.get("/cases/{case_id}/evidence/{evidence_id}", operation_id="get_evidence")
async def get_evidence(
    case_id: uuid.UUID, evidence_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> EvidenceOut:
    async with runtime.db() as session:
        return evidence.evidence_out(await evidence.get_evidence(session, case_id, evidence_id, principal))


@router.get(
    "/cases/{case_id}/evidence/{evidence_id}/content",
    operation_id="get_evidence_content",
    response_class=Response,
    responses=IMAGE_RESPONSE,
)
async def get_evidence_content(
    case_id: uuid.UUID,
    evidence_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    field: FieldWork,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """The photo's bytes. Its ETag is its SHA-256, so a cached copy never goes stale."""
    async with runtime.db() as session:
        record = await evidence.get_evidence(session, case_id, evidence_id, principal)
    headers = {
        "ETag": f'"{record.sha256}"',
        "Cache-Control": "private, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
    }
    if if_none_match is not None and f'"{record.sha256}"' in if_none_match:
        return Response(status_code=304, headers=headers)
    data = await field.blobs.get(record.sha256)
    return Response(content=data, media_type=record.content_type, headers=headers)

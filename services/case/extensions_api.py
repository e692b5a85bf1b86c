"""HTTP routes of extension requests: the unit asks for more time, the dispatcher approves or denies."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from citygrid.auth import CurrentPrincipal, Principal
from citygrid.masking import PII_SCOPE, mask_text
from citygrid.pagination import Page
from citygrid.runtime import RuntimeDep
from citygrid.versioning import IfMatch, etag, expected_version
from services.case import extensions
from services.case.field_schemas import ApproveExtension, DenyExtension, ExtensionOut, RequestExtension
from services.case.models import CaseExtension

router = APIRouter(prefix="/v1", tags=["extensions"])

ETAG_HEADER = {"ETag": {"description": "The case's new version.", "schema": {"type": "string"}}}


def extension_out(extension: CaseExtension, principal: Principal) -> ExtensionOut:
    """The request as the caller may see it: its reason and the decision's note are free text,
    masked without ``pii:read`` like a case's description."""
    out = ExtensionOut.model_validate(extension)
    if principal.has_scope(PII_SCOPE):
        return out
    return out.model_copy(
        update={"reason": mask_text(out.reason) or "", "decision_note": mask_text(out.decision_note)}
    )


@router.post(
    "/cases/{case_id}/extensions",
    status_code=201,
    operation_id="request_extension",
    responses={201: {"headers": ETAG_HEADER}},
)
async def request_extension(
    case_id: uuid.UUID,
    body: RequestExtension,
    response: Response,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> ExtensionOut:
    """The unit asks for a later handling deadline, with the reason (unit handler)."""
    version = expected_version(if_match)
    async with runtime.uow() as uow:
        case, extension = await extensions.request_extension(
            uow,
            case_id,
            principal,
            expected_version=version,
            reason=body.reason,
            new_deadline=body.new_deadline,
        )
        out = extension_out(extension, principal)
    response.headers["ETag"] = etag(case.version)
    return out


@router.get("/cases/{case_id}/extensions", operation_id="list_extensions")
async def list_extensions(
    case_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> Page[ExtensionOut]:
    """Every extension request of the case, oldest first (a case has a handful at most)."""
    async with runtime.db() as session:
        rows = await extensions.list_extensions(session, case_id, principal)
        return Page[ExtensionOut](items=[extension_out(row, principal) for row in rows])


@router.post(
    "/cases/{case_id}/extensions/{extension_id}/approve",
    operation_id="approve_extension",
    responses={200: {"headers": ETAG_HEADER}},
)
async def approve_extension(
    case_id: uuid.UUID,
    extension_id: uuid.UUID,
    response: Response,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
    body: ApproveExtension | None = None,
) -> ExtensionOut:
    """Move the handling deadline to the one requested, or to ``deadline`` (dispatcher)."""
    version = expected_version(if_match)
    async with runtime.uow() as uow:
        case, extension = await extensions.decide_extension(
            uow,
            case_id,
            extension_id,
            principal,
            expected_version=version,
            approve=True,
            note=body.note if body else None,
            deadline=body.deadline if body else None,
        )
        out = extension_out(extension, principal)
    response.headers["ETag"] = etag(case.version)
    return out


@router.post(
    "/cases/{case_id}/extensions/{extension_id}/deny",
    operation_id="deny_extension",
    responses={200: {"headers": ETAG_HEADER}},
)
async def deny_extension(
    case_id: uuid.UUID,
    extension_id: uuid.UUID,
    body: DenyExtension,
    response: Response,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> ExtensionOut:
    """Keep the deadline, with the reason (dispatcher)."""
    version = expected_version(if_match)
    async with runtime.uow() as uow:
        case, extension = await extensions.decide_extension(
            uow,
            case_id,
            extension_id,
            principal,
            expected_version=version,
            approve=False,
            note=body.note,
        )
        out = extension_out(extension, principal)
    response.headers["ETag"] = etag(case.version)
    return out

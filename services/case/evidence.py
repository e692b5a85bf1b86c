"""Evidence photos as use cases: check what is uploaded, store the bytes, record who added what when.

The bytes are written to the blob store before the record commits; a failed commit leaves an
unreferenced blob, which is harmless because blobs are named by their content.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal, require_district
from citygrid.blobs import BlobStore, sniff_image
from citygrid.db import UnitOfWork
from citygrid.errors import NotFound
from citygrid.ids import new_id
from services.case import service
from services.case.domain import evidence as rules
from services.case.domain.principals import acting_roles, check_unit
from services.case.models import Case, CaseEvidence
from services.case.schemas import EvidenceOut


class EvidenceNotFound(NotFound):
    code = "evidence.not_found"


async def add_evidence(
    uow: UnitOfWork,
    blobs: BlobStore,
    case_id: uuid.UUID,
    kind: rules.EvidenceKind,
    actor: Principal,
    *,
    data: bytes,
    declared_type: str,
    max_bytes: int,
) -> tuple[CaseEvidence, bool]:
    """The evidence record, and whether it is new (the same photo sent again is the first record)."""
    content_type = sniff_image(data, max_bytes=max_bytes)
    rules.check_declared_type(declared_type, content_type)
    session = uow.session
    # A shared lock: photos may arrive in parallel, but not while a step changes the case's status.
    case = await session.scalar(select(Case).where(Case.id == case_id).with_for_update(read=True))
    if case is None:
        raise service.CaseNotFound(f"no case {case_id}")
    require_district(actor, case.district_code)
    roles = acting_roles(actor.kind, actor.roles)
    count = await session.scalar(select(func.count()).where(CaseEvidence.case_id == case.id))
    rules.check_upload(kind, case.status, roles, int(count or 0))
    if rules.RULES[kind].unit_bound:
        check_unit(f"a {kind.value} photo", case_unit=case.unit, actor_unit=actor.unit, roles=roles)
    stored = await blobs.put(data, content_type)
    added = await session.scalar(
        insert(CaseEvidence)
        .values(
            id=new_id(),
            case_id=case.id,
            kind=kind.value,
            sha256=stored.sha256,
            content_type=stored.content_type,
            size_bytes=stored.size_bytes,
            uploaded_by=actor.subject,
            uploaded_by_name=actor.name,
            uploaded_at=func.now(),
        )
        .on_conflict_do_nothing(index_elements=["case_id", "kind", "sha256"])
        .returning(CaseEvidence.id)
    )
    record = await session.scalar(
        select(CaseEvidence).where(
            CaseEvidence.case_id == case.id,
            CaseEvidence.kind == kind.value,
            CaseEvidence.sha256 == stored.sha256,
        )
    )
    assert record is not None
    return record, added is not None


async def list_evidence(
    session: AsyncSession, case_id: uuid.UUID, principal: Principal
) -> list[CaseEvidence]:
    await service.visible_case(session, case_id, principal)
    rows = await session.scalars(
        select(CaseEvidence)
        .where(CaseEvidence.case_id == case_id)
        .order_by(CaseEvidence.uploaded_at, CaseEvidence.id)
    )
    return list(rows.all())


async def get_evidence(
    session: AsyncSession, case_id: uuid.UUID, evidence_id: uuid.UUID, principal: Principal
) -> CaseEvidence:
    await service.visible_case(session, case_id, principal)
    record = await session.scalar(
        select(CaseEvidence).where(CaseEvidence.id == evidence_id, CaseEvidence.case_id == case_id)
    )
    if record is None:
        raise EvidenceNotFound(f"case {case_id} has no evidence {evidence_id}")
    return record


def evidence_url(case_id: object, evidence_id: object, service: str | None, url: str | None) -> str:
    """Where the photo is fetched: here, or the raising service's gateway path."""
    return f"v1/cases/{case_id}/evidence/{evidence_id}/content" if service is None or not url else url


def evidence_out_of_row(row: dict[str, Any]) -> EvidenceOut:
    """A ``case_evidence`` row read as JSON (``service.CaseRecord``)."""
    url = evidence_url(row["case_id"], row["id"], row["service"], row["url"])
    return EvidenceOut.model_validate({**row, "url": url})


def evidence_out(record: CaseEvidence) -> EvidenceOut:
    return EvidenceOut(
        id=record.id,
        case_id=record.case_id,
        kind=record.kind,
        service=record.service,
        sha256=record.sha256,
        content_type=record.content_type,
        size_bytes=record.size_bytes,
        uploaded_by=record.uploaded_by,
        uploaded_by_name=record.uploaded_by_name,
        uploaded_at=record.uploaded_at,
        taken_at=record.taken_at,
        url=evidence_url(record.case_id, record.id, record.service, record.url),
    )

"""The case database as Open311 sees it: the active catalogue, public service requests, submissions.

Open311 lists only cases the public reported (source ``public``): cases raised by inspectors, video
or other services are the city's own work, and their descriptions may carry plates or names.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from citygrid.auth import Principal
from citygrid.db import UnitOfWork
from citygrid.errors import NotFound
from contract.case import CaseSource, CaseStatus
from contract.common import GeoPoint
from services.case import service
from services.case.domain.calendar import WorkCalendar
from services.case.domain.grid import GridIndex
from services.case.domain.open311_mapping import InvalidSubmission, Submission, district_of, is_identifier
from services.case.models import Case, Category, Open311Submission
from services.case.schemas import ReportCase, Reporter


class UnknownService(NotFound):
    code = "open311.unknown_service"
    title = "Unknown service"


class UnknownServiceCode(InvalidSubmission):
    code = "open311.unknown_service"


class RequestNotFound(NotFound):
    code = "open311.request_not_found"
    title = "Service request not found"


@dataclass(frozen=True)
class PublicRequest:
    """A public case with what its Open311 view needs from other rows."""

    case: Case
    service_code: str | None
    service_name: str | None
    limits: dict[str, Any] | None
    media_url: str | None
    merged_into_number: str | None


async def active_services(session: AsyncSession) -> list[Category]:
    rows = await session.scalars(select(Category).where(Category.active.is_(True)).order_by(Category.code))
    return list(rows.all())


async def service_by_code(session: AsyncSession, service_code: str) -> Category:
    if not is_identifier(service_code):
        raise UnknownService(f"no service '{service_code}'; see services.xml")
    category = await session.scalar(
        select(Category).where(Category.open311_service_code == service_code, Category.active.is_(True))
    )
    if category is None:
        raise UnknownService(f"no service '{service_code}'; see services.xml")
    return category


async def submit(
    uow: UnitOfWork,
    submission: Submission,
    actor: Principal,
    calendar: WorkCalendar,
    *,
    grid: GridIndex | None = None,
    duplicate_radius_m: float = service.DEFAULT_DUPLICATE_RADIUS_M,
) -> tuple[Case, Category]:
    """Report the submitted problem as a public case, keeping what only Open311 carries beside it.

    The point is placed on the unit grid like any report; the nearest district's reference point
    names the district only for a point outside every cell."""
    session = uow.session
    category = None
    if is_identifier(submission.service_code):
        category = await session.scalar(
            select(Category).where(
                Category.open311_service_code == submission.service_code, Category.active.is_(True)
            )
        )
    if category is None:
        raise UnknownServiceCode(f"no service '{submission.service_code}'; see services.xml")
    lon, lat = submission.point()
    has_reporter = submission.reporter_name or submission.phone or submission.email
    try:
        report = ReportCase(
            category_code=category.code,
            description=submission.description or category.name_en,
            location=GeoPoint.of(lon, lat),
            district_code=district_of(lon, lat),
            address=submission.address_string,
            source=CaseSource.PUBLIC,
            reporter=Reporter(name=submission.reporter_name, phone=submission.phone, email=submission.email)
            if has_reporter
            else None,
        )
    except ValidationError as error:
        problems = [f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()]
        raise InvalidSubmission("; ".join(problems), errors=problems) from None
    case = await service.report_case(
        uow, report, actor, calendar, grid=grid, duplicate_radius_m=duplicate_radius_m
    )
    session.add(
        Open311Submission(
            case_id=case.id,
            media_url=submission.media_url,
            device_id=submission.device_id,
            account_id=submission.account_id,
            attributes=submission.attributes,
            submitted_by=actor.subject,
        )
    )
    await session.flush()
    return case, category


def _public_requests_query() -> Any:
    target = aliased(Case, name="merge_target")
    return (
        select(
            Case,
            Category.open311_service_code,
            Category.name_en,
            Category.limits,
            Open311Submission.media_url,
            target.number,
        )
        .outerjoin(Category, Category.code == Case.category_code)
        .outerjoin(Open311Submission, Open311Submission.case_id == Case.id)
        .outerjoin(target, target.id == Case.merged_into)
        .where(Case.source == CaseSource.PUBLIC)
    )


# Built once: an alias made per request costs SQLAlchemy a column adaptation of the whole statement
# on every call (about a quarter of an Open311 read's CPU); statements are immutable, so routes
# refine this one with ``where`` and ``order_by``.
PUBLIC_REQUESTS = _public_requests_query()


def _public(row: Any) -> PublicRequest:
    case, service_code, service_name, limits, media_url, merged_into_number = row
    return PublicRequest(case, service_code, service_name, limits, media_url, merged_into_number)


async def public_requests(
    session: AsyncSession,
    *,
    numbers: Sequence[str] = (),
    service_codes: Sequence[str] = (),
    statuses: frozenset[CaseStatus] = frozenset(),
    start: datetime | None = None,
    end: datetime | None = None,
    district: str | None = None,
    limit: int,
) -> list[PublicRequest]:
    """Newest first. Named requests ignore every other filter, as the spec says; ``district`` is
    not a filter but the caller's binding (``citygrid.auth.district_scope``) and always applies."""
    query = PUBLIC_REQUESTS.order_by(Case.created_at.desc(), Case.id.desc()).limit(limit)
    if district is not None:
        query = query.where(Case.district_code == district)
    if numbers:
        query = query.where(Case.number.in_(list(numbers)))
    else:
        if service_codes:
            query = query.where(Category.open311_service_code.in_(list(service_codes)))
        if statuses:
            query = query.where(Case.status.in_(sorted(statuses)))
        if start is not None:
            query = query.where(Case.created_at >= start)
        if end is not None:
            query = query.where(Case.created_at <= end)
    return [_public(row) for row in (await session.execute(query)).all()]


async def public_request(session: AsyncSession, number: str) -> PublicRequest:
    if not is_identifier(number):
        raise RequestNotFound(f"no service request '{number}'")
    row = (await session.execute(PUBLIC_REQUESTS.where(Case.number == number))).first()
    if row is None:
        raise RequestNotFound(f"no service request '{number}'")
    return _public(row)


async def number_of_token(session: AsyncSession, token: str, *, district: str | None = None) -> str:
    """A token is the case's id: the number it was given is the service request id (of the
    caller's district, for a district-bound caller)."""
    try:
        case_id = uuid.UUID(token)
    except ValueError:
        raise RequestNotFound(f"no token '{token}'") from None
    query = select(Case.number).where(Case.id == case_id, Case.source == CaseSource.PUBLIC)
    if district is not None:
        query = query.where(Case.district_code == district)
    number = await session.scalar(query)
    if number is None:
        raise RequestNotFound(f"no token '{token}'")
    return number

"""Case use cases: each runs inside the caller's unit of work and records its events there."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

from sqlalchemy import ScalarSelect, bindparam, func, literal_column, select, tuple_
from sqlalchemy.dialects.postgresql import JSON, aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal, require_district
from citygrid.clock import within_range
from citygrid.db import DriverRead, UnitOfWork, transaction_time
from citygrid.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from citygrid.ids import new_id
from citygrid.pagination import cursor_value, decode_cursor, encode_cursor
from citygrid.runtime import Runtime
from contract.case import CaseSource, CaseStatus
from contract.common import Origin
from services.case import events, units
from services.case.catalogue import category_for_report, stage_limits
from services.case.domain.calendar import WorkCalendar
from services.case.domain.categories import Stage
from services.case.domain.deadlines import Clock, after_step
from services.case.domain.evidence import EvidenceKind, require_after_photos
from services.case.domain.grid import GridIndex
from services.case.domain.numbering import case_number, local_day
from services.case.domain.principals import acting_roles, check_unit
from services.case.domain.workflow import NEEDS_NOTE, Action, next_status
from services.case.models import Case, CaseEvidence, CaseHistory, CaseNumberCounter, Category
from services.case.placement import likely_original, mergeable, place_of, resolve_place
from services.case.schemas import ReportCase

# A new report of the same small class this close to an open case is flagged as a likely duplicate.
DEFAULT_DUPLICATE_RADIUS_M = 50.0


class CaseNotFound(NotFound):
    code = "case.not_found"


class NoteRequired(InvalidInput):
    code = "case.note_required"


class InvalidMerge(Conflict):
    code = "case.invalid_merge"


class StaleVersion(PreconditionFailed):
    code = "case.stale_version"
    title = "Stale version"


async def _next_number(session: AsyncSession, district_code: str, now: datetime) -> str:
    day = local_day(now)
    statement = (
        insert(CaseNumberCounter)
        .values(district_code=district_code, day=day, last=1)
        .on_conflict_do_update(
            index_elements=[CaseNumberCounter.district_code, CaseNumberCounter.day],
            set_={"last": CaseNumberCounter.last + 1},
        )
        .returning(CaseNumberCounter.last)
    )
    sequence = (await session.execute(statement)).scalar_one()
    return case_number(district_code, day, sequence)


def _clock_of(case: Case) -> Clock:
    stage = Stage(case.stage) if case.stage else None
    return Clock(stage, case.stage_started_at, case.deadline_at, case.paused_remaining_seconds)


def _set_clock(case: Case, clock: Clock) -> None:
    if clock.started_at != case.stage_started_at:
        case.overdue_at = None  # a new stage: its own deadline, not yet missed
    case.stage = clock.stage.value if clock.stage else None
    case.stage_started_at = clock.started_at
    case.deadline_at = clock.deadline_at
    case.paused_remaining_seconds = clock.paused_remaining_seconds


async def report_case(
    uow: UnitOfWork,
    request: ReportCase,
    actor: Principal,
    calendar: WorkCalendar,
    *,
    origin: Origin | None = None,
    grid: GridIndex | None = None,
    duplicate_radius_m: float = DEFAULT_DUPLICATE_RADIUS_M,
) -> Case:
    """Record a report, placed on ``grid`` (services/case/placement.py) and checked for duplicates
    within ``duplicate_radius_m``; a video report repeating a registered open case is merged into it."""
    session = uow.session
    category = await category_for_report(session, request.category_code)
    now = await transaction_time(session)
    resolution = resolve_place(grid, request.location.lon, request.location.lat, request.district_code)
    place = resolution.place
    # Where the point lies decides, not the district the report names: a district-bound reporter
    # files reports of its own district only.
    require_district(actor, place.district_code)
    case = Case(
        id=new_id(),
        status=CaseStatus.REPORTED,
        category_code=request.category_code,
        description=request.description,
        lon=request.location.lon,
        lat=request.location.lat,
        address=request.address,
        district_code=place.district_code,
        street_code=place.street_code,
        community_code=place.community_code,
        grid_code=place.grid_code,
        source=request.source,
        reporter_name=request.reporter.name if request.reporter else None,
        reporter_phone=request.reporter.phone if request.reporter else None,
        reporter_email=request.reporter.email if request.reporter else None,
        version=1,
        reported_by=actor.subject,
        created_at=now,
        updated_at=now,
    )
    if origin is not None:  # another service raised it (services/case/intake.py)
        case.origin_service, case.origin_reference = origin.service, origin.reference
    _set_clock(
        case, after_step(None, CaseStatus.REPORTED, now, Clock.stopped(), stage_limits(category), calendar)
    )
    # Searched before the case is written, so the insert carries the answer (no update after it).
    original = await likely_original(session, case, duplicate_radius_m)
    case.likely_duplicate_of = original.id if original is not None else None
    # Numbered last: the district's day counter is a row every report of the district locks until
    # commit, so it is taken when only the inserts remain.
    case.number = await _next_number(session, place.district_code, now)
    session.add(case)
    session.add(
        CaseHistory(
            case_id=case.id,
            action="report",
            from_status=None,
            to_status=case.status,
            actor=actor.subject,
            actor_name=actor.name,
            note=resolution.note,
            at=now,
        )
    )
    events.record_report(uow, case, actor)
    await session.flush()  # written when it is returned: callers add rows naming it, or read it back
    if original is not None and request.source is CaseSource.VIDEO and mergeable(original):
        note = f"video report within {duplicate_radius_m:g} m of case {original.number}: merged automatically"
        return await transition(
            uow,
            case.id,
            Action.MERGE,
            units.SYSTEM,
            expected_version=1,
            calendar=calendar,
            note=note,
            merge_into=original.id,
        )
    return case


ONE_CASE = select(Case).where(Case.id == bindparam("case_id"))
ONE_CASE_FOR_UPDATE = ONE_CASE.with_for_update()


async def get_case(session: AsyncSession, case_id: uuid.UUID, *, for_update: bool = False) -> Case:
    case = await session.scalar(ONE_CASE_FOR_UPDATE if for_update else ONE_CASE, {"case_id": case_id})
    if case is None:
        raise CaseNotFound(f"no case {case_id}")
    return case


async def visible_case(
    session: AsyncSession, case_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Case:
    """The case, for a caller who may see it: a district-bound principal gets 403
    ``auth.other_district`` for another district's case (every route reading one case comes here)."""
    case = await get_case(session, case_id, for_update=for_update)
    require_district(principal, case.district_code)
    return case


def _rows_as_json(model: type[CaseHistory] | type[CaseEvidence], *order: Any) -> ScalarSelect[Any]:
    """A case's rows of ``model`` as one JSON array in ``order``, for the case's own statement."""
    table = model.__table__
    pairs = chain.from_iterable((literal_column(f"'{column.name}'"), column) for column in table.columns)
    rows = func.json_agg(aggregate_order_by(func.json_build_object(*pairs), *order))
    return (
        select(func.coalesce(rows, literal_column("'[]'::json"), type_=JSON))
        .where(table.c.case_id == Case.id)
        .scalar_subquery()
    )


HISTORY_AS_JSON = _rows_as_json(CaseHistory, CaseHistory.at, CaseHistory.id)
EVIDENCE_AS_JSON = _rows_as_json(CaseEvidence, CaseEvidence.uploaded_at, CaseEvidence.id)


@dataclass(frozen=True, slots=True)
class CaseRow:
    """A case as a read on the driver returns it (``citygrid.db.DriverRead``): its columns, no ORM
    object (building one costs more than the read). A test holds its fields to the table's."""

    id: uuid.UUID
    number: str
    status: CaseStatus
    category_code: str
    description: str
    lon: float
    lat: float
    address: str | None
    district_code: str
    street_code: str | None
    community_code: str | None
    grid_code: str | None
    likely_duplicate_of: uuid.UUID | None
    source: CaseSource
    origin_service: str | None
    origin_reference: str | None
    reporter_name: str | None
    reporter_phone: str | None
    reporter_email: str | None
    unit: str | None
    accepted_by: str | None
    merged_into: uuid.UUID | None
    merged_into_number: str | None
    stage: str | None
    stage_started_at: datetime | None
    deadline_at: datetime | None
    paused_remaining_seconds: float | None
    overdue_at: datetime | None
    registered_at: datetime | None
    dispatched_at: datetime | None
    handled_at: datetime | None
    closed_at: datetime | None
    version: int
    reported_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> CaseRow:
        values = {name: row[name] for name in CASE_COLUMNS}
        values["status"] = CaseStatus(values["status"])
        values["source"] = CaseSource(values["source"])
        return cls(**values)


CASE_COLUMNS: tuple[str, ...] = tuple(column.name for column in Case.__table__.columns)


@dataclass(frozen=True)
class CaseRecord:
    """A case with its history and evidence, oldest first, as JSON objects of their rows."""

    case: Case | CaseRow
    history: list[dict[str, Any]]
    evidence: list[dict[str, Any]]


# Built once: a statement made per call costs SQLAlchemy its cache key again on every request.
CASE_RECORD = DriverRead.of(
    select(Case, HISTORY_AS_JSON.label("history"), EVIDENCE_AS_JSON.label("evidence")).where(
        Case.id == bindparam("case_id")
    )
)
CASE_RECORD_BESIDE = select(HISTORY_AS_JSON, EVIDENCE_AS_JSON).where(Case.id == bindparam("case_id"))


async def visible_case_record(runtime: Runtime, case_id: uuid.UUID, principal: Principal) -> CaseRecord:
    """The case and everything its detail shows in one statement (one round trip, not three), read
    on the driver: the detail is the hottest read of the service."""
    row = await runtime.fetch_row(CASE_RECORD, case_id=case_id)
    if row is None:
        raise CaseNotFound(f"no case {case_id}")
    require_district(principal, row["district_code"])
    return CaseRecord(case=CaseRow.of(row), history=row["history"], evidence=row["evidence"])


async def case_record(session: AsyncSession, case: Case) -> CaseRecord:
    """What the detail of a case this transaction holds shows beside it, in one statement: the
    answer of a workflow step, written rows included."""
    history, evidence = (await session.execute(CASE_RECORD_BESIDE, {"case_id": case.id})).one()
    return CaseRecord(case=case, history=history, evidence=evidence)


async def transition(
    uow: UnitOfWork,
    case_id: uuid.UUID,
    action: Action,
    actor: Principal,
    *,
    expected_version: int,
    calendar: WorkCalendar,
    note: str | None = None,
    unit: str | None = None,
    merge_into: uuid.UUID | None = None,
) -> Case:
    """Take one workflow step, if the case is still at ``expected_version``."""
    session = uow.session
    if action is Action.MERGE and merge_into is not None:
        await _lock_for_merge(session, case_id, merge_into)
    case = await visible_case(session, case_id, actor, for_update=True)
    if case.version != expected_version:
        raise StaleVersion(
            f"the case is at version {case.version}, not {expected_version}; reload it and retry",
            current_version=case.version,
        )
    roles = acting_roles(actor.kind, actor.roles)
    target = next_status(case.status, action, roles)
    if action in UNIT_STEPS:
        check_unit(action.value, case_unit=case.unit, actor_unit=actor.unit, roles=roles)
    if action in NEEDS_NOTE and not note:
        raise NoteRequired(f"{action.value} needs a note giving the reason")
    if action is Action.HANDLE:
        require_after_photos(await _photos_this_round(session, case, EvidenceKind.AFTER))
    if action is Action.MERGE:
        original = await _merge_target(session, case, merge_into, actor)
        case.merged_into, case.merged_into_number = original.id, original.number
    if action is Action.DISPATCH and unit is not None:
        await units.require_active_unit(session, unit)
    now = await transaction_time(session)
    previous = case.status
    ended_deadline = case.deadline_at  # evaluation needs it: the clock below moves to the next stage
    case.status = target
    if unit is not None:
        case.unit = unit
    category = await session.get(Category, case.category_code)
    if category is not None:  # categories are deactivated, never deleted
        _set_clock(case, after_step(action, target, now, _clock_of(case), stage_limits(category), calendar))
    if action is Action.REGISTER:
        case.registered_at = now
    elif action is Action.DISPATCH:
        case.dispatched_at = now
        case.accepted_by = None
    elif action is Action.ACCEPT:
        case.accepted_by = actor.subject
    elif action is Action.HANDLE:
        case.handled_at = now
    elif action is Action.CLOSE:
        case.closed_at = now
    case.version += 1
    case.updated_at = now
    session.add(
        CaseHistory(
            case_id=case.id,
            action=action.value,
            from_status=previous,
            to_status=target,
            actor=actor.subject,
            actor_name=actor.name,
            note=note,
            unit=unit,
            at=now,
            deadline_at=ended_deadline,
        )
    )
    extra = (
        {"merged_into": case.merged_into, "merged_into_number": case.merged_into_number}
        if action is Action.MERGE
        else {}
    )
    events.record(uow, events.EVENT_OF_ACTION[action], case, actor, note, **extra)
    await session.flush()
    if action is Action.REGISTER:
        return await _dispatch_by_rule(uow, case, calendar)
    return case


# The steps only the unit the case is dispatched to takes.
UNIT_STEPS = frozenset({Action.ACCEPT, Action.RETURN, Action.HANDLE})


async def _photos_this_round(session: AsyncSession, case: Case, kind: EvidenceKind) -> int:
    """Photos of ``kind`` taken since the current stage began (a rework starts a new round)."""
    query = select(func.count()).where(CaseEvidence.case_id == case.id, CaseEvidence.kind == kind.value)
    if case.stage_started_at is not None:
        query = query.where(CaseEvidence.uploaded_at >= case.stage_started_at)
    return int((await session.execute(query)).scalar_one())


async def _dispatch_by_rule(uow: UnitOfWork, case: Case, calendar: WorkCalendar) -> Case:
    """Dispatch a just-registered case to the unit the most specific matching rule names, if any;
    otherwise it waits in the dispatcher's queue."""
    rule = await units.matching_rule(uow.session, case.category_code, place_of(case))
    if rule is None:
        return case
    area = rule.area_code or "the whole city"
    return await transition(
        uow,
        case.id,
        Action.DISPATCH,
        units.SYSTEM,
        expected_version=case.version,
        calendar=calendar,
        note=f"dispatch rule {rule.category_code} × {area} → {rule.unit_code}",
        unit=rule.unit_code,
    )


async def _lock_for_merge(session: AsyncSession, case_id: uuid.UUID, target_id: uuid.UUID) -> None:
    """Lock the report and the case it is merged into before either is read, lower id first.

    The report is locked to be changed (``FOR UPDATE``); the target ``FOR SHARE``: every step of
    the target (a close, a cancel …) updates its row and so waits until the merge commits, while
    reports merged into the same case at once (a burst of video alarms) do not wait for each other.
    One order for every merge, the ids', so two merges never hold each other's rows.
    """
    for locked in sorted({case_id, target_id}):
        query = select(Case.id).where(Case.id == locked)
        await session.execute(query.with_for_update(read=locked != case_id))


async def _merge_target(
    session: AsyncSession, case: Case, target_id: uuid.UUID | None, actor: Principal
) -> Case:
    """The case the report is merged into, read under the lock ``_lock_for_merge`` took: as it is
    now, not as this session may have seen it before (``populate_existing``)."""
    if target_id is None or target_id == case.id:
        raise InvalidMerge("name the open case this report duplicates")
    target = await session.scalar(
        select(Case)
        .where(Case.id == target_id)
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    )
    if target is None:
        raise CaseNotFound(f"no case {target_id}")
    require_district(actor, target.district_code)  # before its status: nothing of it is shown
    if not mergeable(target):
        raise InvalidMerge(
            f"case {target.number} is {target.status.value}: merge into a registered, open case",
            target_status=target.status.value,
        )
    return target


_LIST_FILTERS = {
    "status": lambda: Case.status == bindparam("status"),
    "district_code": lambda: Case.district_code == bindparam("district_code"),
    "category_code": lambda: Case.category_code == bindparam("category_code"),
    "reported_from": lambda: Case.created_at >= bindparam("reported_from"),
    "reported_to": lambda: Case.created_at < bindparam("reported_to"),
    "after": lambda: (
        tuple_(Case.created_at, Case.id) < tuple_(bindparam("after_time"), bindparam("after_id"))
    ),
}


@functools.cache
def _case_list(filters: frozenset[str]) -> DriverRead:
    """The page read for one set of filters, compiled once (there are at most 64 sets)."""
    query = (
        select(*Case.__table__.columns)
        .order_by(Case.created_at.desc(), Case.id.desc())
        .limit(bindparam("limit"))
    )
    for name in sorted(filters):
        query = query.where(_LIST_FILTERS[name]())
    return DriverRead.of(query)


async def list_cases(
    runtime: Runtime,
    *,
    limit: int,
    cursor: str | None,
    status: CaseStatus | None = None,
    district_code: str | None = None,
    category_code: str | None = None,
    reported_from: datetime | None = None,
    reported_to: datetime | None = None,
) -> tuple[list[CaseRow], str | None]:
    """Newest first; each filter has an index ending in (created_at, id). Read on the driver."""
    params: dict[str, Any] = {
        name: value
        for name, value in (
            ("status", status.value if status is not None else None),
            ("district_code", district_code),
            ("category_code", category_code),
            ("reported_from", reported_from),
            ("reported_to", reported_to),
        )
        if value is not None
    }
    if cursor is not None:
        created, last_id = decode_cursor(cursor, 2)
        params["after_time"] = cursor_value(
            lambda raw: within_range(datetime.fromisoformat(str(raw))), created
        )
        params["after_id"] = cursor_value(lambda raw: uuid.UUID(str(raw)), last_id)
        params["after"] = True
    read = _case_list(frozenset(params) - {"after_time", "after_id"})
    rows = [CaseRow.of(row) for row in await runtime.fetch_rows(read, limit=limit + 1, **params)]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.created_at.isoformat(), str(last.id))
    return rows[:limit], next_cursor

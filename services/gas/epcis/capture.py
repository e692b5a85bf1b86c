"""EPCIS 2.0 capture and query over our scans (the standard's REST binding).

Capture (``POST /epcis/capture``): a document is validated against our typed models of the JSON
binding. An ObjectEvent with one of our business steps that names registered cylinders is a scan
(``mapping``), taken as ``POST /v1/scans`` takes it; any other ObjectEvent (another company's
goods, a sensor report on a cylinder) is kept whole as it came; another event type refuses the
document (this repository holds ObjectEvents). All of it in one transaction. ``GS1-Capture-Error-Behaviour: rollback`` (the default) stores nothing if
any event is refused; ``proceed`` keeps the events that were taken. The capture job is recorded
either way and answered at once: we finish a document within the request, so the job the
``Location`` names is no longer running.

An event whose eventID is stored already is the same event sent again: it is skipped, not an error.

Identifiers: a cylinder is its GRAI (EPC URI or Digital Link) or ``urn:citygrid:cylinder:<code>``;
an enterprise (readPoint or bizLocation) is ``urn:citygrid:enterprise:<code>``; a user a delivery
reaches is the bizLocation ``urn:citygrid:user:<id>``. Commissioning is refused: registration needs
the owner, manufacture date and tare that an ObjectEvent does not carry (``/v1/cylinders/import``).

Query (``GET /epcis/events``): our scans as ObjectEvents and the events kept whole, oldest first,
paged with ``nextPageToken``; a scan captured with an ``eventID`` keeps it, the others are
``urn:uuid:<scan>``.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Text, and_, cast, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal
from citygrid.clock import CITY_TIMEZONE, EARLIEST, LATEST
from citygrid.errors import Conflict, DomainError
from citygrid.ids import new_id
from citygrid.pagination import decode_cursor, encode_cursor
from citygrid.runtime import Runtime
from services.gas import scans
from services.gas.domain.lifecycle import ScanKind
from services.gas.epcis.codes import UnknownIdentifier, parse_cylinder_identifier
from services.gas.epcis.mapping import (
    MappedScan,
    Unmappable,
    cbv_term,
    context_prefixes,
    map_event,
    scan_to_object_event,
)
from services.gas.epcis.models import EpcisValidationError, ObjectEvent, parse_document
from services.gas.models import CaptureJob, Cylinder, EpcisEventId, EpcisForeignEvent, Scan
from services.gas.schemas import ScanIn

ENTERPRISE_URN = "urn:citygrid:enterprise:"
USER_URN = "urn:citygrid:user:"
# The largest capture: events per document and bytes per request (advertised on OPTIONS).
CAPTURE_LIMIT = 1_000
CAPTURE_FILE_SIZE_LIMIT = 4 * 1024 * 1024
ERROR_BEHAVIOURS = ("rollback", "proceed")
# Our scan kinds the query shows, and the mapping's names for them.
QUERYABLE = {
    ScanKind.FILL.value: "fill",
    ScanKind.DISPATCH.value: "dispatch",
    ScanKind.DELIVER.value: "deliver",
    ScanKind.RECOVER.value: "recover",
    ScanKind.INSPECT.value: "inspect",
    ScanKind.SCRAP.value: "scrap",
    ScanKind.VOID.value: "void",
}
# The business steps of a cylinder's life (an event with another step is kept whole, not a scan).
OUR_STEPS = frozenset(
    {
        "commissioning",
        "urn:citygrid:bizstep:filling",
        "shipping",
        "receiving",
        "collecting",
        "inspecting",
        "decommissioning",
        "destroying",
    }
)
BIZ_STEP_KINDS = {
    "filling": "fill",
    "urn:citygrid:bizstep:filling": "fill",
    "shipping": "dispatch",
    "receiving": "deliver",
    "collecting": "recover",
    "inspecting": "inspect",
    "destroying": "scrap",
    "decommissioning": "void",
}
QUERY_PARAMETERS = frozenset(
    {
        "EQ_bizStep",
        "GE_eventTime",
        "LT_eventTime",
        "MATCH_epc",
        "MATCH_anyEPC",
        "EQ_readPoint",
        "perPage",
        "nextPageToken",
        "eventType",
    }
)
MAX_PER_PAGE = 500
EVENT_ID_LOCK = 7_733_004  # the seed of the advisory locks on captured event ids


class EpcisProblem(DomainError):
    """A problem in the REST binding's terms: ``type`` is the standard's exception name."""

    exception = "ImplementationException"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, type=f"epcisException:{self.exception}", **extra)


class ValidationException(EpcisProblem):
    code = "gas.epcis_validation"
    status = 400
    title = "All events are rejected"
    exception = "ValidationException"


class QueryParameterException(EpcisProblem):
    code = "gas.epcis_query_parameter"
    status = 400
    title = "Invalid query parameter"
    exception = "QueryParameterException"


class CaptureLimitExceeded(EpcisProblem):
    code = "gas.epcis_capture_limit"
    status = 413
    title = "Capture limit exceeded"
    exception = "CaptureLimitExceededException"


class NoSuchCapture(EpcisProblem):
    code = "gas.epcis_unknown_capture"
    status = 404
    title = "No such capture job"
    exception = "NoSuchResourceException"


class EventExists(Conflict):
    code = "gas.epcis_event_exists"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, type="epcisException:ResourceAlreadyExistsException")


@dataclass(frozen=True)
class Captured:
    job: CaptureJob
    scans: int


def _enterprise(uri: str | None) -> str | None:
    if uri is None:
        return None
    if not uri.startswith(ENTERPRISE_URN):
        raise Unmappable(f"readPoint {uri!r}: name an enterprise as {ENTERPRISE_URN}<code>")
    return uri[len(ENTERPRISE_URN) :]


def _user(uri: str | None) -> uuid.UUID:
    if uri is None or not uri.startswith(USER_URN):
        raise Unmappable(f"a delivery names the user it reaches as bizLocation {USER_URN}<id>")
    try:
        return uuid.UUID(uri[len(USER_URN) :])
    except ValueError:
        raise Unmappable(f"bizLocation {uri!r} names no user id") from None


def scans_of(mapped: MappedScan) -> list[ScanIn]:
    """Our scans for one mapped event (one per cylinder it names); ``Unmappable`` with the reason."""
    if mapped.kind == "commission":
        raise Unmappable(
            "commissioning is refused: a cylinder is registered with its owner, manufacture date and "
            "tare through /v1/cylinders/import, which an ObjectEvent does not carry"
        )
    enterprise = _enterprise(mapped.read_point)
    if mapped.kind != "deliver" and enterprise is None and mapped.biz_location is not None:
        enterprise = _enterprise(mapped.biz_location)
    user = _user(mapped.biz_location) if mapped.kind == "deliver" else None
    out = []
    for code in mapped.cylinder_codes:
        try:
            out.append(
                ScanIn(
                    cylinder_code=code,
                    kind=ScanKind(mapped.kind),
                    at=mapped.at,
                    enterprise_code=enterprise,
                    net_mass_kg=mapped.net_mass_kg,
                    user_id=user,
                    passed=mapped.passed,
                    note=f"EPCIS {mapped.event_id}" if mapped.event_id else "EPCIS",
                )
            )
        except ValidationError as error:
            raise Unmappable(f"cylinder {code}: {error.errors()[0]['msg']}") from None
    return out


@dataclass(frozen=True)
class Planned:
    """One event of a document and what it becomes: scans, or a row kept whole."""

    index: int
    event_id: str | None
    scans: list[ScanIn]
    foreign: dict[str, Any] | None


def _raw_events(body: bytes) -> list[dict[str, Any]]:
    document = json.loads(body)
    epcis_body = document["epcisBody"]
    if "eventList" in epcis_body:
        return list(epcis_body["eventList"])
    return list(epcis_body["queryResults"]["resultsBody"]["eventList"])


def _named_codes(event: ObjectEvent) -> set[str]:
    codes = set()
    for identifier in event.epc_list or ():
        with contextlib.suppress(UnknownIdentifier):
            codes.add(parse_cylinder_identifier(identifier))
    return codes


def _foreign_row(
    raw: dict[str, Any], event: ObjectEvent, step: str | None, context: Any, capture_id: str
) -> dict[str, Any]:
    kept = dict(raw)
    extra = [
        entry for entry in (context if isinstance(context, list) else [context]) if isinstance(entry, dict)
    ]
    if extra and "@context" not in kept:
        kept["@context"] = extra  # the document's prefixes the event's extensions are written with
    event_id = event.event_id or f"urn:uuid:{new_id()}"
    kept["eventID"] = event_id
    return {
        "event_id": event_id,
        "event_time": event.event_time,
        "biz_step": step,  # the bare CBV term (or the URI), as EQ_bizStep asks for it
        "read_point": event.read_point.id if event.read_point is not None else None,
        "epcs": list(event.epc_list or []),
        "document": kept,
        "capture_id": capture_id,
    }


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def refuse_unstorable(body: bytes) -> None:
    """A document PostgreSQL could not store is refused as invalid, before anything is parsed: NUL
    and lone surrogates are valid JSON escapes but no text a database keeps."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return  # the parse that follows says what is wrong
    for text in _strings(document):
        if "\x00" in text or any(0xD800 <= ord(character) <= 0xDFFF for character in text):
            raise ValidationException("the document holds a NUL character or a lone surrogate")


def _storable_event(index: int, event: ObjectEvent) -> None:
    """Identifiers within the columns that keep them, times within the range every record keeps."""
    if not EARLIEST <= event.event_time < LATEST:
        raise ValidationException(
            f"event {index}: eventTime must fall between 1970 and 2200", event_index=index
        )
    for what, value, longest in (
        ("eventID", event.event_id, 500),
        ("readPoint", event.read_point.id if event.read_point else None, 500),
        ("bizStep", event.biz_step, 300),
    ):
        if value is not None and len(value) > longest:
            raise ValidationException(
                f"event {index}: {what} is over {longest} characters", event_index=index
            )


async def plan(runtime: Runtime, body: bytes, capture_id: str) -> list[Planned]:
    """What each event of the document becomes; ``ValidationException`` (with the event's index)
    when the document is refused whole."""
    if len(body) > CAPTURE_FILE_SIZE_LIMIT:
        raise CaptureLimitExceeded(f"a capture is at most {CAPTURE_FILE_SIZE_LIMIT} bytes")
    refuse_unstorable(body)
    try:
        document = parse_document(body)
    except EpcisValidationError as error:
        raise ValidationException(
            "the document is not EPCIS 2.0 JSON: " + "; ".join(error.errors[:10])
        ) from None
    events = document.events
    if len(events) > CAPTURE_LIMIT:
        raise CaptureLimitExceeded(f"a capture holds at most {CAPTURE_LIMIT} events")
    for index, event in enumerate(events):
        if not isinstance(event, ObjectEvent):
            raise ValidationException(
                f"event {index}: this repository holds ObjectEvents; a {event.type} is refused with its document",
                event_index=index,
            )
    object_events = [event for event in events if isinstance(event, ObjectEvent)]
    for index, event in enumerate(object_events):
        _storable_event(index, event)
    named = [_named_codes(event) for event in object_events]
    wanted = set().union(*named) if named else set()
    registered: set[str] = set()
    if wanted:
        async with runtime.reads() as session:
            registered = set(
                (await session.scalars(select(Cylinder.code).where(Cylinder.code.in_(wanted)))).all()
            )
    prefixes = context_prefixes(document.context)
    raw = _raw_events(body)
    planned = []
    for index, event in enumerate(object_events):
        step = _step(event, prefixes)
        if named[index] & registered and step in OUR_STEPS:
            try:
                mapped = map_event(event, prefixes=prefixes)
                planned.append(Planned(index, event.event_id, scans_of(mapped), None))
            except Unmappable as error:
                raise ValidationException(f"event {index}: {error.reason}", event_index=index) from None
        else:
            row = _foreign_row(raw[index], event, step, document.context, capture_id)
            planned.append(Planned(index, row["event_id"] if event.event_id else None, [], row))
    return planned


def _step(event: ObjectEvent, prefixes: Mapping[str, str]) -> str | None:
    if event.biz_step is None:
        return None
    try:
        return cbv_term(event.biz_step, "BizStep", {**prefixes, **context_prefixes(event.context)})
    except ValueError:
        return event.biz_step


async def capture(runtime: Runtime, body: bytes, behaviour: str, principal: Principal) -> Captured:
    """Capture one EPCIS document; raises ``ValidationException`` (nothing stored, no job) when the
    document itself is refused, else records the job with what became of the events."""
    job_id = f"cap-{new_id().hex}"
    planned = await plan(runtime, body, job_id)
    errors: list[dict[str, Any]] = []
    taken = 0
    try:
        taken = await _take(runtime, planned, behaviour, principal, errors)
    except _RolledBack:
        taken = 0
    async with runtime.uow() as uow:
        now = await uow.now()
        job = CaptureJob(
            id=job_id,
            created_at=now,
            finished_at=now,
            running=False,
            success=not errors,
            error_behaviour=behaviour,
            errors=errors,
            events=len(planned),
            captured_by=principal.subject,
        )
        uow.session.add(job)
    return Captured(job, taken)


class _RolledBack(Exception):
    """Leaves the capture's unit of work without committing (rollback behaviour, an event refused)."""


async def _take(
    runtime: Runtime,
    planned: list[Planned],
    behaviour: str,
    principal: Principal,
    errors: list[dict[str, Any]],
) -> int:
    """Take the planned events in one unit of work; appends what was refused to ``errors``;
    returns the events stored."""
    async with runtime.uow() as uow:
        session = uow.session
        ids = sorted(
            {p.event_id for p in planned if p.event_id}
            | {p.foreign["event_id"] for p in planned if p.foreign}
        )
        # The same event captured twice at once, on two replicas: the second waits here for the
        # first's commit, then finds the id taken (locks taken in one order: no deadlock).
        for event_id in ids:
            await session.execute(
                select(func.pg_advisory_xact_lock(func.hashtextextended(event_id, EVENT_ID_LOCK)))
            )
        known = await _known_event_ids(session, ids)
        fresh = []
        for item in planned:
            key = item.event_id or (item.foreign or {}).get("event_id")
            if key in known:
                continue  # sent before, or twice in this document: the same event once
            if key is not None:
                known.add(key)
            fresh.append(item)
        flat: list[ScanIn] = []
        owners: list[Planned] = []
        for item in fresh:
            flat.extend(item.scans)
            owners.extend([item] * len(item.scans))
        results = await scans.ingest(uow, flat, principal, source="epcis") if flat else []
        failed = {owners[r.index].index for r in results if not r.accepted}
        for result in results:
            if not result.accepted:
                errors.append(
                    {
                        "eventIndex": owners[result.index].index,
                        "epc": result.cylinder_code,
                        "code": result.code,
                        "reason": result.detail,
                    }
                )
        if errors and behaviour == "rollback":
            raise _RolledBack
        ids_rows = [
            {"event_id": owners[r.index].event_id, "scan_id": r.scan_id, "scan_at": flat[r.index].at}
            for r in results
            if r.accepted and owners[r.index].event_id and owners[r.index].index not in failed
        ]
        if ids_rows:
            # One id per event: an event naming several cylinders keeps its first scan's.
            await session.execute(insert(EpcisEventId).values(ids_rows).on_conflict_do_nothing())
        foreign = [p.foreign for p in fresh if p.foreign is not None]
        if foreign:
            await session.execute(insert(EpcisForeignEvent).values(foreign).on_conflict_do_nothing())
        scanned = {owners[r.index].index for r in results if r.accepted} - failed
        return len(scanned) + len(foreign)


async def _known_event_ids(session: AsyncSession, event_ids: Sequence[str]) -> set[str]:
    if not event_ids:
        return set()
    scanned = await session.scalars(select(EpcisEventId.event_id).where(EpcisEventId.event_id.in_(event_ids)))
    kept = await session.scalars(
        select(EpcisForeignEvent.event_id).where(EpcisForeignEvent.event_id.in_(event_ids))
    )
    return set(scanned.all()) | set(kept.all())


async def get_job(session: AsyncSession, job_id: str) -> CaptureJob:
    job = await session.get(CaptureJob, job_id)
    if job is None:
        raise NoSuchCapture(f"no capture job {job_id}")
    return job


def job_document(job: CaptureJob) -> dict[str, Any]:
    """The CaptureJob resource as the REST binding describes it."""
    return {
        "captureID": job.id,
        "createdAt": job.created_at.astimezone(CITY_TIMEZONE).isoformat(),
        "finishedAt": job.finished_at.astimezone(CITY_TIMEZONE).isoformat() if job.finished_at else None,
        "running": job.running,
        "success": job.success,
        "captureErrorBehaviour": job.error_behaviour,
        "errors": job.errors,
    }


@dataclass(frozen=True)
class EventQuery:
    steps: tuple[str, ...] | None  # bare CBV terms or URIs
    from_time: datetime | None
    to_time: datetime | None
    epcs: tuple[str, ...] | None  # as the caller wrote them
    codes: tuple[str, ...] | None  # the cylinder codes among them
    read_points: tuple[str, ...] | None
    per_page: int
    after: tuple[datetime, str] | None


def _list(value: str) -> tuple[str, ...]:
    """A parameter's values: the REST binding joins them with '|' (a comma is taken too)."""
    return tuple(part.strip() for part in value.replace("|", ",").split(",") if part.strip())


def _time(name: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise QueryParameterException(f"{name}: {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise QueryParameterException(f"{name}: {value!r} names no UTC offset")
    if not EARLIEST <= moment < LATEST:
        raise QueryParameterException(f"{name}: a time between 1970 and 2200")
    return moment


def _bare_step(step: str) -> str:
    return step.removeprefix("https://ref.gs1.org/cbv/BizStep-").removeprefix("urn:epcglobal:cbv:bizstep:")


def parse_query(parameters: Mapping[str, str]) -> EventQuery:
    """The query's parameters, or ``QueryParameterException`` naming the one refused."""
    unknown = sorted(set(parameters) - QUERY_PARAMETERS)
    if unknown:
        raise QueryParameterException(
            f"unknown or unsupported query parameter {unknown[0]} (supported: {', '.join(sorted(QUERY_PARAMETERS))})"
        )
    if "eventType" in parameters and set(_list(parameters["eventType"])) - {"ObjectEvent"}:
        raise QueryParameterException("eventType: this repository holds ObjectEvents only")
    steps = (
        tuple(_bare_step(step) for step in _list(parameters["EQ_bizStep"]))
        if "EQ_bizStep" in parameters
        else None
    )
    epcs = parameters.get("MATCH_epc") or parameters.get("MATCH_anyEPC")
    given = _list(epcs) if epcs is not None else None
    codes = None
    if given is not None:
        found = []
        for epc in given:
            with contextlib.suppress(UnknownIdentifier):
                found.append(parse_cylinder_identifier(epc))
        codes = tuple(found)
    read_points = _list(parameters["EQ_readPoint"]) if "EQ_readPoint" in parameters else None
    per_page = 30
    if "perPage" in parameters:
        if (
            not re.fullmatch(r"[0-9]{1,3}", parameters["perPage"])
            or not 1 <= int(parameters["perPage"]) <= MAX_PER_PAGE
        ):
            raise QueryParameterException(f"perPage: a whole number from 1 to {MAX_PER_PAGE}")
        per_page = int(parameters["perPage"])
    after = None
    if "nextPageToken" in parameters:
        try:
            at, key = decode_cursor(parameters["nextPageToken"], 2)
            after = (_time("nextPageToken", str(at)), str(key))
        except (DomainError, ValueError):
            raise QueryParameterException("nextPageToken: not a token this repository issued") from None
    return EventQuery(
        steps=steps,
        from_time=_time("GE_eventTime", parameters["GE_eventTime"]) if "GE_eventTime" in parameters else None,
        to_time=_time("LT_eventTime", parameters["LT_eventTime"]) if "LT_eventTime" in parameters else None,
        epcs=given,
        codes=codes,
        read_points=read_points,
        per_page=per_page,
        after=after,
    )


def mapped_of(scan: Scan, event_id: str | None) -> MappedScan:
    kind = QUERYABLE[scan.kind]
    place = f"{ENTERPRISE_URN}{scan.enterprise_code}" if scan.enterprise_code else None
    location = f"{USER_URN}{scan.user_id}" if kind == "deliver" and scan.user_id else None
    return MappedScan(
        kind=kind,
        cylinder_codes=(scan.cylinder_code,),
        at=scan.at.astimezone(CITY_TIMEZONE),
        read_point=place,
        biz_location=location,
        passed=scan.passed if kind == "inspect" else None,
        net_mass_kg=scan.net_mass_kg if kind == "fill" else None,
        event_id=event_id or f"urn:uuid:{scan.id}",
    )


def _scan_kinds(steps: tuple[str, ...] | None) -> tuple[str, ...]:
    if steps is None:
        return tuple(QUERYABLE)
    wanted = {BIZ_STEP_KINDS[step] for step in steps if step in BIZ_STEP_KINDS}
    return tuple(kind for kind, mapped in QUERYABLE.items() if mapped in wanted)


async def _scan_page(session: AsyncSession, query: EventQuery) -> list[tuple[datetime, str, dict[str, Any]]]:
    kinds = _scan_kinds(query.steps)
    if not kinds or query.codes == ():
        return []
    statement = (
        select(Scan, EpcisEventId.event_id)
        .outerjoin(EpcisEventId, and_(EpcisEventId.scan_id == Scan.id, EpcisEventId.scan_at == Scan.at))
        .where(Scan.kind.in_(kinds))
        .order_by(Scan.at, Scan.id)
        .limit(query.per_page + 1)
    )
    if query.codes is not None:
        statement = statement.where(Scan.cylinder_code.in_(query.codes))
    if query.read_points is not None:
        places = [p[len(ENTERPRISE_URN) :] for p in query.read_points if p.startswith(ENTERPRISE_URN)]
        statement = statement.where(Scan.enterprise_code.in_(places))
    if query.from_time is not None:
        statement = statement.where(Scan.at >= query.from_time)
    if query.to_time is not None:
        statement = statement.where(Scan.at < query.to_time)
    if query.after is not None:
        at, key = query.after
        statement = statement.where(or_(Scan.at > at, and_(Scan.at == at, cast(Scan.id, Text) > key)))
    rows = (await session.execute(statement)).all()
    return [
        (scan.at, str(scan.id), scan_to_object_event(mapped_of(scan, event_id))) for scan, event_id in rows
    ]


async def _kept_page(session: AsyncSession, query: EventQuery) -> list[tuple[datetime, str, dict[str, Any]]]:
    statement = (
        select(EpcisForeignEvent)
        .order_by(EpcisForeignEvent.event_time, EpcisForeignEvent.event_id)
        .limit(query.per_page + 1)
    )
    if query.steps is not None:
        statement = statement.where(EpcisForeignEvent.biz_step.in_(query.steps))
    if query.epcs is not None:
        statement = statement.where(EpcisForeignEvent.epcs.overlap(list(query.epcs)))
    if query.read_points is not None:
        statement = statement.where(EpcisForeignEvent.read_point.in_(query.read_points))
    if query.from_time is not None:
        statement = statement.where(EpcisForeignEvent.event_time >= query.from_time)
    if query.to_time is not None:
        statement = statement.where(EpcisForeignEvent.event_time < query.to_time)
    if query.after is not None:
        at, key = query.after
        statement = statement.where(
            or_(
                EpcisForeignEvent.event_time > at,
                and_(EpcisForeignEvent.event_time == at, EpcisForeignEvent.event_id > key),
            )
        )
    rows = (await session.scalars(statement)).all()
    return [(row.event_time, row.event_id, dict(row.document)) for row in rows]


async def query_events(session: AsyncSession, query: EventQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page of events, oldest first, from the scans and the events kept whole (each read by its
    time index, merged here), and the token of the next page."""
    merged = sorted(
        [*await _scan_page(session, query), *await _kept_page(session, query)],
        key=lambda row: (row[0], row[1]),
    )
    page = merged[: query.per_page]
    token = None
    if len(merged) > query.per_page:
        at, key, _ = page[-1]
        token = encode_cursor(at.isoformat(), key)
    return [event for _, _, event in page], token

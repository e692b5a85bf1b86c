"""Leak incidents: a report opens one, and its response follows the drill the city practises.

Reporting publishes ``gas.incident.reported`` (the case service opens an urgent case in the
emergencies class, 燃气泄漏); each step of the drill is taken in order (``domain.incidents``),
stamped with who did it and when, and published as ``gas.incident.advanced``; the last one closes
the incident (``gas.incident.closed`` in place of its advance). Steps are taken under the incident's row lock, so two
responders pressing the same step on two replicas take it once: the second gets 409.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal, require_district
from citygrid.db import UnitOfWork
from citygrid.errors import Conflict, NotFound
from citygrid.ids import new_id
from contract.common import GeoPoint
from contract.gas import IncidentAdvanced, IncidentClosed, IncidentReported
from services.gas.domain.incidents import IncidentStep, StepOutOfOrder, advance
from services.gas.models import Incident, IncidentStepRecord
from services.gas.schemas import IncidentIn

# Gas leak (燃气泄漏): urgent, counted in natural hours (services/case/data/categories).
LEAK_CATEGORY = "20406"


class UnknownIncident(NotFound):
    code = "gas.unknown_incident"


class StepNotNext(Conflict):
    code = "gas.incident_step_out_of_order"


async def report(uow: UnitOfWork, item: IncidentIn, principal: Principal) -> Incident:
    require_district(principal, item.district_code)
    now = await uow.now()
    incident = Incident(
        id=new_id(),
        step=IncidentStep.REPORTED.value,
        premises_type=item.premises_type.value,
        source=item.source.value,
        place=item.place,
        district_code=item.district_code,
        lon=item.location.lon,
        lat=item.location.lat,
        description=item.description,
        reporter_name=item.reporter_name,
        reporter_phone=item.reporter_phone,
        cylinder_code=item.cylinder_code,
        reported_at=now,
        created_at=now,
        updated_at=now,
    )
    uow.session.add(incident)
    uow.session.add(
        IncidentStepRecord(
            incident_id=incident.id, step=IncidentStep.REPORTED.value, at=now, actor=principal.subject
        )
    )
    await uow.session.flush()
    uow.publish(
        IncidentReported(
            reference=str(incident.id),
            category_code=LEAK_CATEGORY,
            district_code=item.district_code,
            location=GeoPoint.of(item.location.lon, item.location.lat),
            address=item.place,
            # The reporter's name and phone stay here: a case needs the place and what leaks.
            description=f"Gas leak ({item.source.value}) at a {item.premises_type.value}: {item.description}",
            detected_at=now,
            incident_id=incident.id,
            premises_type=item.premises_type,
            source=item.source,
        ),
        aggregate_id=str(incident.id),
        version=1,
    )
    return incident


async def get(
    session: AsyncSession, incident_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Incident:
    query = select(Incident).where(Incident.id == incident_id)
    if for_update:
        query = query.with_for_update()
    incident = await session.scalar(query)
    if incident is None:
        raise UnknownIncident(f"no incident {incident_id}")
    require_district(principal, incident.district_code)
    return incident


async def steps_of(session: AsyncSession, incident_id: uuid.UUID) -> list[IncidentStepRecord]:
    query = (
        select(IncidentStepRecord)
        .where(IncidentStepRecord.incident_id == incident_id)
        .order_by(IncidentStepRecord.at, IncidentStepRecord.id)
    )
    return list((await session.scalars(query)).all())


async def take_step(
    uow: UnitOfWork, incident_id: uuid.UUID, step: IncidentStep, note: str | None, principal: Principal
) -> Incident:
    session = uow.session
    incident = await get(session, incident_id, principal, for_update=True)
    try:
        advance(IncidentStep(incident.step), step)
    except StepOutOfOrder as error:
        raise StepNotNext(str(error), expected=error.expected.value if error.expected else None) from None
    now = await uow.now()
    incident.step = step.value
    incident.version += 1
    incident.updated_at = now
    if step == IncidentStep.CLOSED:
        incident.closed_at = now
    session.add(
        IncidentStepRecord(
            incident_id=incident.id, step=step.value, at=now, actor=principal.subject, note=note
        )
    )
    await session.flush()
    aggregate = str(incident.id)
    uow.publish(
        IncidentAdvanced(incident_id=incident.id, step=step.value, at=now, actor=principal.subject),
        aggregate_id=aggregate,
        version=incident.version,
    )
    if step == IncidentStep.CLOSED:
        uow.publish(
            IncidentClosed(incident_id=incident.id, closed_at=now),
            aggregate_id=aggregate,
            version=incident.version,
        )
    return incident


async def list_open(session: AsyncSession, district: str | None, limit: int) -> list[Incident]:
    query = (
        select(Incident)
        .where(Incident.closed_at.is_(None))
        .order_by(Incident.reported_at.desc())
        .limit(limit)
    )
    if district is not None:
        query = query.where(Incident.district_code == district)
    return list((await session.scalars(query)).all())


async def steps_for(
    session: AsyncSession, incident_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[IncidentStepRecord]]:
    """The steps of several incidents in one statement, each incident's in order."""
    found: dict[uuid.UUID, list[IncidentStepRecord]] = {incident_id: [] for incident_id in incident_ids}
    if incident_ids:
        query = (
            select(IncidentStepRecord)
            .where(IncidentStepRecord.incident_id.in_(incident_ids))
            .order_by(IncidentStepRecord.at, IncidentStepRecord.id)
        )
        for step in (await session.scalars(query)).all():
            found[step.incident_id].append(step)
    return found

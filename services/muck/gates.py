"""Site-gate cameras: a vision alarm of a muck class confirmed at a site's gate (an uncovered load,
muddy wheels, an overloaded or unregistered truck) becomes a violation of the truck at the gate,
tied to its undelivered manifest, with the alarm's snapshots as evidence.

The vision service raises the case of the alarm itself, so nothing is published here: the record
is the truck's and its manifest's (their violations list shows it), and the alarm's reference is
its key, so a redelivered alarm records nothing twice. The truck is the one whose latest position
(every replica holds the fleet's) was at that site around the alarm's time; when none or several
were, the violation is kept under ``UNKNOWN_PLATE`` for a person to tie.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from citygrid.db import UnitOfWork
from citygrid.events import CloudEvent
from citygrid.ids import new_id
from citygrid.inbox import ConsumerSpec
from contract import vision
from contract.muck import TransportViolation
from services.muck.manifests.service import undelivered_for
from services.muck.models import Violation
from services.muck.positions.latest import Latest, LatestPositions

log = logging.getLogger("services.muck.gates")

CONSUMER = "muck-vision-alarm-confirmed"
KIND_OF: Final[dict[str, TransportViolation]] = {
    "truck_not_covered": TransportViolation.UNCOVERED,
    "muddy_wheels": TransportViolation.MUDDY_WHEELS,
    "truck_overload": TransportViolation.OVERLOAD,
    "unregistered_truck_at_gate": TransportViolation.UNREGISTERED_TRUCK,
}
UNKNOWN_PLATE: Final = "UNKNOWN"
# How near the site and how close in time a truck's latest position must be to be the one at the gate.
NEAR_DEGREES: Final = 0.002  # about 200 m
NEAR_TIME: Final = timedelta(minutes=5)

GATE_SITE = text(
    "SELECT code, district_code, boundary FROM sites WHERE :camera = ANY(gate_cameras) ORDER BY code LIMIT 1"
)


def wants(event: CloudEvent) -> bool:
    data = event.data if isinstance(event.data, dict) else {}
    return data.get("algorithm_code") in KIND_OF


def truck_at(site_ring: list[list[float]], at: datetime, fleet: Iterable[Latest]) -> str | None:
    """The one truck whose latest position was at the site around ``at``; None for none or several."""
    lons = [point[0] for point in site_ring]
    lats = [point[1] for point in site_ring]
    west, east = min(lons) - NEAR_DEGREES, max(lons) + NEAR_DEGREES
    south, north = min(lats) - NEAR_DEGREES, max(lats) + NEAR_DEGREES
    found = {
        latest.plate
        for latest in fleet
        if west <= latest.lon <= east and south <= latest.lat <= north and abs(latest.at - at) <= NEAR_TIME
    }
    return found.pop() if len(found) == 1 else None


def consumer(fleet: Callable[[], LatestPositions]) -> ConsumerSpec:
    """The consumer; ``fleet`` gives the replica's latest positions (made when the runtime starts)."""

    async def handle(uow: UnitOfWork, event: CloudEvent) -> None:
        alarm = vision.AlarmConfirmed.from_envelope(event)
        kind = KIND_OF[alarm.algorithm_code]
        site = (await uow.session.execute(GATE_SITE, {"camera": alarm.camera_id})).first()
        if site is None:
            return  # a camera on a street, not at a registered site's gate
        plate = truck_at(site.boundary, alarm.detected_at, fleet())
        if plate is None and kind is TransportViolation.UNREGISTERED_TRUCK:
            plate = UNKNOWN_PLATE
        manifest = (await undelivered_for(uow.session, [plate])).get(plate) if plate else None
        snapshots: list[dict[str, Any]] = [json.loads(ref.model_dump_json()) for ref in alarm.evidence]
        await uow.session.execute(
            insert(Violation)
            .values(
                id=new_id(),
                plate=plate or UNKNOWN_PLATE,
                kind=kind.value,
                severity="normal",
                episode_started_at=alarm.detected_at,
                at=alarm.detected_at,
                lon=alarm.location.lon,
                lat=alarm.location.lat,
                detail=f"{alarm.algorithm_code} at the gate of {site.code} (camera {alarm.camera_id})"[:500],
                manifest_id=manifest.id if manifest is not None else None,
                manifest_number=manifest.number if manifest is not None else None,
                company_code=manifest.company_code if manifest is not None else None,
                district_code=site.district_code,
                snapshots=snapshots,
                source_alarm=alarm.reference,
            )
            .on_conflict_do_nothing()
        )

    return ConsumerSpec(
        name=CONSUMER,
        domain=vision.AlarmConfirmed.domain(),
        subject=vision.AlarmConfirmed.subject,
        handler=handle,
        wants=wants,
    )

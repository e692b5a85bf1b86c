"""Cameras at drop-off points: a vision alarm of a waste class, confirmed at a camera the register
maps to a point, is that point's violation, with the alarm's snapshots as evidence.

The vision service raises the alarm's case itself, so nothing is published here: the violation is
the point's record (its list shows it, and later AI-box sightings of the same episode join it
rather than open a second case). The consumer runs through the kit's inbox, so an alarm delivered
twice is handled once; the alarm's reference is unique on the violation too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from sqlalchemy import select

from citygrid.db import UnitOfWork
from citygrid.events import CloudEvent
from citygrid.inbox import ConsumerSpec
from contract import vision
from services.waste.domain.supervision import Observation, Observed
from services.waste.events import VISION_ALARMS
from services.waste.models import DropOffPoint, Violation, ViolationSource
from services.waste.supervision.service import Tally, observe

log = logging.getLogger("services.waste.cameras")

# The vision catalogue's classes (services/vision/domain/catalogue.py) a drop-off point's camera raises.
OBSERVED_OF: Final[dict[str, Observed]] = {
    "overflowing_bin": Observed.OVERFLOW,
    "garbage_beside_bin": Observed.BAGS_OUTSIDE_BIN,
    "bagged_garbage_outside_bin": Observed.BAGS_OUTSIDE_BIN,
    "smoking_bin": Observed.SMOKE_OR_FIRE,
    "smoke_and_fire": Observed.SMOKE_OR_FIRE,
}


def wants(event: CloudEvent) -> bool:
    data = event.data if isinstance(event.data, dict) else {}
    return data.get("algorithm_code") in OBSERVED_OF


def consumer(counted: Callable[[Tally], None]) -> ConsumerSpec:
    """The consumer; ``counted`` adds a handled alarm's counts to the service's metrics."""

    async def handle(uow: UnitOfWork, event: CloudEvent) -> None:
        alarm = vision.AlarmConfirmed.from_envelope(event)
        point = await uow.session.scalar(
            select(DropOffPoint)
            .where(DropOffPoint.cameras.contains([alarm.camera_id]))
            .order_by(DropOffPoint.code)
            .limit(1)
        )
        if point is None:
            return  # a camera on a street, not at a registered drop-off point
        if await uow.session.scalar(select(Violation.id).where(Violation.source_alarm == alarm.reference)):
            return  # the same alarm republished under a new event id
        tally = Tally()
        observation = Observation(
            OBSERVED_OF[alarm.algorithm_code], alarm.detected_at, alarm.confidence, confirmed=True
        )
        recorded = await observe(
            uow,
            point,
            observation,
            ViolationSource.CAMERA,
            tally,
            snapshots=alarm.evidence,
            source_alarm=alarm.reference,
        )
        log.info("alarm %s at point %s: %s", alarm.reference, point.code, recorded.decision.verdict.value)
        counted(tally)

    return ConsumerSpec(
        name=VISION_ALARMS,
        domain=vision.AlarmConfirmed.domain(),
        subject=vision.AlarmConfirmed.subject,
        handler=handle,
        wants=wants,
    )

"""A gas leak's response drill: the steps of the emergency plan, taken one by one in their order.

reported → notified → evacuated → cordoned → ignition_controlled → ventilated → measured_safe →
repaired → closed. No step may be skipped: ventilating before every ignition source is controlled,
or repairing before the air is measured safe, is how a leak becomes an explosion.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from contract.gas import LeakSource, PremisesType

__all__ = [
    "DRILL",
    "NOTIFIED_PARTIES",
    "IncidentStep",
    "LeakSource",
    "PremisesType",
    "StepOutOfOrder",
    "advance",
    "is_open",
    "next_step",
]


class IncidentStep(StrEnum):
    # Declared in the drill's order: the order is read from here.
    REPORTED = "reported"
    NOTIFIED = "notified"
    EVACUATED = "evacuated"
    CORDONED = "cordoned"
    IGNITION_CONTROLLED = "ignition_controlled"
    VENTILATED = "ventilated"
    MEASURED_SAFE = "measured_safe"
    REPAIRED = "repaired"
    CLOSED = "closed"


# Who the notified step reaches, every time.
NOTIFIED_PARTIES: Final = ("city_management", "fire_brigade", "gas_company")

DRILL: Final[tuple[IncidentStep, ...]] = tuple(IncidentStep)


class StepOutOfOrder(ValueError):
    """A step that is not the next one of the drill; ``expected`` is None once the incident is closed."""

    def __init__(self, current: IncidentStep, step: IncidentStep, expected: IncidentStep | None) -> None:
        self.current = current
        self.step = step
        self.expected = expected
        what_is_next = f"the next step is {expected.value}" if expected else "the incident is closed"
        super().__init__(f"cannot take {step.value} after {current.value}: {what_is_next}")


def next_step(current: IncidentStep) -> IncidentStep | None:
    index = DRILL.index(current) + 1
    return DRILL[index] if index < len(DRILL) else None


def advance(current: IncidentStep, step: IncidentStep) -> IncidentStep:
    """The incident at ``step``, which must be the one right after ``current``."""
    expected = next_step(current)
    if step != expected:
        raise StepOutOfOrder(current, step, expected)
    return step


def is_open(step: IncidentStep) -> bool:
    return step != IncidentStep.CLOSED

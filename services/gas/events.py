"""What the gas service publishes: a refused fill (``gas.violation.detected``, one per cylinder,
station and city day) and the steps of leak incidents. It follows no other service's events."""

from __future__ import annotations

from citygrid.natsauth import NatsIdentity

PUBLISHES = "gas"
# Illegal bottled gas trading (违规经营瓶装燃气): the small class a refused fill is enforced under.
VIOLATION_CATEGORY = "20605"

# What the gas service does on NATS, and so all it may do (citygrid.natsauth): publish its own events.
NATS_IDENTITY = NatsIdentity(user="gas", publishes=PUBLISHES)


def violation_reference(station_code: str, cylinder_code: str, day: str) -> str:
    """The case's origin reference: the same cylinder refused again the same day at the same
    station names the same case (the case service opens one case per reference)."""
    return f"fill:{station_code}:{cylinder_code}:{day}"

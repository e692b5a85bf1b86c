"""What the waste service publishes and what it listens to.

``waste.violation.detected`` leaves through the outbox when an AI box's observation is a new
violation: the case service raises its case. A camera's alarm is the vision service's, which raises
the case itself; here it becomes the point's violation only, and nothing is published for it.
The register publishes nothing: no other service keeps a copy of it yet.
"""

from __future__ import annotations

from citygrid.natsauth import Durable, NatsIdentity

PUBLISHES = "waste"
VISION_ALARMS = "waste-vision-alarm-confirmed"
CASE_EVENTS_CONSUMER = "waste-case-events"
CASE_EVENTS = "case.case.>"

# What the waste service does on NATS, and so all it may do (citygrid.natsauth).
NATS_IDENTITY = NatsIdentity(
    user="waste",
    publishes=PUBLISHES,
    # Cameras' alarms at drop-off points (services/waste/supervision/cameras.py), and the cases
    # raised for this service's violations as they move on (services/waste/outcomes.py).
    consumes=(
        Durable("vision", VISION_ALARMS, "vision.alarm.confirmed"),
        Durable("case", CASE_EVENTS_CONSUMER, CASE_EVENTS),
    ),
)

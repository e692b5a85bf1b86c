"""What the muck service publishes and what it listens to.

Domain events (``muck.*``) leave through the outbox. Positions are not events: 13,000 a second would
swamp the stream, and a lost one is replaced by the next report seconds later. Once stored, each
replica's batch of latest positions goes out on one core NATS subject that every replica listens to,
so each keeps every truck's latest position in memory whichever replica the terminal is connected to.
"""

from __future__ import annotations

from citygrid.natsauth import Durable, NatsIdentity

PUBLISHES = "muck"
# Core NATS, outside the MUCK stream's subjects: the replicas' latest positions, at most once.
LATEST_POSITIONS_SUBJECT = "muck-live.positions"

# What the muck service does on NATS, and so all it may do (citygrid.natsauth).
NATS_IDENTITY = NatsIdentity(
    user="muck",
    publishes=PUBLISHES,
    # Site-gate cameras' alarms (services/muck/gates.py).
    consumes=(Durable("vision", "muck-vision-alarm-confirmed", "vision.alarm.confirmed"),),
    # Its own violations, read live by the command centre's map (services/muck/live/).
    follows=(PUBLISHES,),
    publish=(LATEST_POSITIONS_SUBJECT,),
    subscribe=(LATEST_POSITIONS_SUBJECT,),
)

"""Which scope each service's calls need: the one declaration the gateway and the service both check.

A service passes its own ``ScopeRules`` to ``create_service_app(scopes=...)``; the gateway checks
the same ones before it forwards (``gateway.routing``). A consumer of the exchange API reads here
which scopes to ask for: ``<dataset>:read`` for reads, ``<dataset>:write`` for changes,
``<dataset>:ingest`` for the machine feeds, ``admin`` for ``v1/admin``.
"""

from __future__ import annotations

from citygrid.scopes import ScopeRules

# Open311 (GeoReport v2) reads are public in the standard; the gateway decides which of them an
# anonymous client may make (CITYGRID_OPEN311_ANONYMOUS_READS).
CASE = ScopeRules(service="case", dataset="cases", anonymous_reads=("open311/v2",))
VISION = ScopeRules(
    service="vision",
    dataset="vision",
    # Analysis engines' detections and cameras' heartbeats.
    ingest_paths=frozenset({"v1/detections", "v1/cameras/heartbeats"}),
)
GAS = ScopeRules(
    service="gas",
    dataset="gas",
    # Stations' scales and couriers' handsets (fill checks, scans), enterprises' EPCIS systems.
    ingest_paths=frozenset({"v1/fill-checks", "v1/scans", "v1/epcis/capture"}),
)
WASTE = ScopeRules(
    service="waste",
    dataset="waste",
    # Drop-off points' AI boxes (bin-side supervision): their batches of events. Vehicles' platforms
    # and facilities' weighbridges (the collection chain): pickups, movements, weighings, and the
    # positions terminal vendors relay (terminals themselves speak JT/T 808 over TCP).
    ingest_paths=frozenset({"v1/bin-events", "v1/pickups", "v1/movements", "v1/weighings", "v1/positions"}),
)
MUCK = ScopeRules(
    service="muck",
    dataset="muck",
    # Positions relayed by terminal vendors' platforms (terminals themselves speak JT/T 808 over TCP).
    ingest_paths=frozenset({"v1/positions"}),
)

# Every domain service the gateway may route to.
SERVICES: dict[str, ScopeRules] = {rules.service: rules for rules in (CASE, GAS, WASTE, MUCK, VISION)}

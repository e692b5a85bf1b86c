"""The transport rules over the whole fleet: each stored position placed (sites, transport window,
distance to its manifest's corridor), fed to its truck's rules, and the manifest moved along by what
the geofences saw. Pure: the service reads the positions and the manifests, and writes what this
returns.

A manifest follows its truck: leaving the origin site loads it and puts it in transit, entering the
designated disposal site delivers it, unloading inside another disposal site makes it abnormal
(delivered elsewhere). The receiver's confirmation, a gate scan, cancelling and resolving come from
people, through the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from services.muck.domain.geofences import (
    Corridor,
    CorridorIndex,
    Point,
    PolygonIndex,
    Site,
    SiteIndex,
    entered_and_exited,
)
from services.muck.domain.manifests import AbnormalReason, ManifestAction, ManifestStatus
from services.muck.domain.violations import (
    DEFAULT_SETTINGS,
    NO_MANIFEST,
    Finding,
    Load,
    Observation,
    RuleSettings,
    TruckContext,
    TruckRules,
    ViolationKind,
)
from services.muck.domain.windows import TimeWindow, permitted

__all__ = [
    "Area",
    "Carried",
    "Detected",
    "Evaluation",
    "Evaluator",
    "Fix",
    "Geography",
    "Step",
]

_UNDELIVERED = frozenset({ManifestStatus.ISSUED, ManifestStatus.LOADED, ManifestStatus.IN_TRANSIT})
_ON_THE_ROAD = frozenset({ManifestStatus.LOADED, ManifestStatus.IN_TRANSIT})


@dataclass(frozen=True, slots=True)
class Fix:
    """One stored position, as the rules read it."""

    plate: str
    at: datetime
    lon: float
    lat: float
    speed_kmh: float
    load: Load


@dataclass(frozen=True)
class Area:
    """A transport area: inside it, muck moves only within its windows."""

    id: str
    ring: Sequence[Point]
    windows: tuple[TimeWindow, ...]


class Geography:
    """The register's places as the rules need them, built once per change of the register."""

    def __init__(
        self,
        sites: Iterable[Site],
        corridors: Iterable[Corridor] = (),
        areas: Iterable[Area] = (),
        site_districts: Mapping[str, str] | None = None,
    ) -> None:
        self.sites = SiteIndex(sites)
        self.corridors = CorridorIndex(corridors)
        areas = list(areas)
        self.areas = PolygonIndex(((area.id, area.ring) for area in areas), "transport area")
        self.windows: dict[str, tuple[TimeWindow, ...]] = {area.id: area.windows for area in areas}
        self.site_districts: Mapping[str, str] = dict(site_districts or {})

    def in_window(self, at: datetime, areas: frozenset[str]) -> bool:
        """Whether muck may move at ``at`` in every area the position is in (outside them all: yes)."""
        return all(permitted(at, self.windows[area]) for area in areas if self.windows[area])


@dataclass(frozen=True)
class Carried:
    """A truck's undelivered manifest, as the rules follow it."""

    manifest_id: str
    number: str
    status: ManifestStatus
    origin_site: str
    disposal_site: str
    route_code: str | None
    district_code: str | None = None


@dataclass(frozen=True)
class Step:
    """A manifest action the geofences call for: the service applies it to the row."""

    manifest_id: str
    plate: str
    action: ManifestAction
    at: datetime
    detail: str
    reason: AbnormalReason | None = None


@dataclass(frozen=True)
class Detected:
    """A violation found, with the manifest the truck was on when it was found."""

    plate: str
    finding: Finding
    manifest: Carried | None


@dataclass
class Evaluation:
    detected: list[Detected] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    taken: int = 0  # positions newer than their truck's latest, so fed to the rules


class Evaluator:
    """Every truck's rules, fed the fleet's positions in batches; kept by the replica evaluating."""

    def __init__(self, geography: Geography, settings: RuleSettings = DEFAULT_SETTINGS) -> None:
        self.geography = geography
        self.settings = settings
        self.trucks: dict[str, TruckRules] = {}

    def __len__(self) -> int:
        return len(self.trucks)

    def evaluate(
        self, fixes: Sequence[Fix], manifests: Mapping[str, Carried], *, replay: bool = False
    ) -> Evaluation:
        """What ``fixes`` bring, given each plate's undelivered manifest (``manifests``).

        ``replay`` rebuilds the trucks' episodes from positions already evaluated (after a restart
        or a takeover): findings and steps are not returned, as they were the first time.
        """
        result = Evaluation()
        if not fixes:
            return result
        ordered = sorted(fixes, key=lambda fix: (fix.plate, fix.at))
        lons = np.fromiter((fix.lon for fix in ordered), dtype=np.float64, count=len(ordered))
        lats = np.fromiter((fix.lat for fix in ordered), dtype=np.float64, count=len(ordered))
        sites = self.geography.sites.containing_many(lons, lats)
        areas = self.geography.areas.containing_many(lons, lats)
        distances = self._corridor_distances(ordered, manifests, lons, lats)
        disposal = self.geography.sites.disposal_sites
        carried_now = dict(manifests)
        for i, fix in enumerate(ordered):
            rules = self.trucks.get(fix.plate)
            if rules is None:
                rules = self.trucks[fix.plate] = TruckRules(self.settings)
            before = rules.last.sites if rules.last is not None else None
            if before is not None and rules.last is not None and fix.at <= rules.last.at:
                continue  # late or resent: stored, not taken (TruckRules.observe)
            carried = carried_now.get(fix.plate)
            undelivered = carried is not None and carried.status in _UNDELIVERED
            observation = Observation(
                at=fix.at,
                lon=fix.lon,
                lat=fix.lat,
                speed_kmh=fix.speed_kmh,
                load=fix.load,
                sites=sites[i],
                disposal_sites=sites[i] & disposal,
                corridor_distance_m=None
                if np.isnan(distances[i]) or not undelivered
                else float(distances[i]),
                in_window=self.geography.in_window(fix.at, areas[i]),
            )
            context = (
                TruckContext(carried.manifest_id, carried.origin_site, carried.disposal_site)
                if carried is not None and undelivered
                else NO_MANIFEST
            )
            findings = rules.observe(observation, context)
            result.taken += 1
            if replay:
                continue
            on_manifest = carried if undelivered else None
            result.detected += [Detected(fix.plate, finding, on_manifest) for finding in findings]
            if carried is not None and undelivered:
                steps = _manifest_steps(carried, fix, before, observation, findings)
                if steps:
                    result.steps += steps
                    carried_now[fix.plate] = replace(carried, status=_after(steps))
        return result

    def _corridor_distances(
        self, ordered: Sequence[Fix], manifests: Mapping[str, Carried], lons: np.ndarray, lats: np.ndarray
    ) -> np.ndarray:
        """Each position's metres to its manifest's corridor; NaN where none applies."""
        distances = np.full(len(ordered), np.nan)
        corridors = self.geography.corridors
        at: list[int] = []
        codes: list[str] = []
        for i, fix in enumerate(ordered):
            carried = manifests.get(fix.plate)
            if carried is not None and carried.route_code is not None and carried.route_code in corridors:
                at.append(i)
                codes.append(carried.route_code)
        if at:
            distances[at] = corridors.distances_m(codes, lons[at], lats[at])
        return distances


def _manifest_steps(
    carried: Carried,
    fix: Fix,
    before: frozenset[str] | None,
    observation: Observation,
    findings: Sequence[Finding],
) -> list[Step]:
    steps: list[Step] = []
    status = carried.status
    _, exited = entered_and_exited(before or frozenset(), observation.sites)

    def step(action: ManifestAction, detail: str, reason: AbnormalReason | None = None) -> None:
        steps.append(Step(carried.manifest_id, fix.plate, action, fix.at, detail, reason))

    if status is ManifestStatus.ISSUED and carried.origin_site in exited:
        step(ManifestAction.LOAD, f"left {carried.origin_site}")
        status = ManifestStatus.LOADED
    if (
        status is ManifestStatus.LOADED
        and carried.origin_site not in observation.sites
        and before is not None
    ):
        step(ManifestAction.DEPART, f"on the road from {carried.origin_site}")
        status = ManifestStatus.IN_TRANSIT
    if status in _ON_THE_ROAD:
        if carried.disposal_site in observation.sites:
            step(ManifestAction.DELIVER, f"entered {carried.disposal_site}")
        elif any(
            finding.kind is ViolationKind.UNLOADED_OUTSIDE_SITE and observation.disposal_sites
            for finding in findings
        ):
            elsewhere = ", ".join(sorted(observation.disposal_sites))
            step(
                ManifestAction.FLAG,
                f"unloaded at {elsewhere}, not at {carried.disposal_site}",
                AbnormalReason.DELIVERED_ELSEWHERE,
            )
    return steps


_STATUS_AFTER = {
    ManifestAction.LOAD: ManifestStatus.LOADED,
    ManifestAction.DEPART: ManifestStatus.IN_TRANSIT,
    ManifestAction.DELIVER: ManifestStatus.DELIVERED,
    ManifestAction.FLAG: ManifestStatus.ABNORMAL,
}


def _after(steps: Sequence[Step]) -> ManifestStatus:
    return _STATUS_AFTER[steps[-1].action]

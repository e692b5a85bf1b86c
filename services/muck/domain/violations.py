"""The transport rules one truck's positions are checked against, observed one by one in time order.

Each rule follows an episode: the stretch of consecutive positions over which its condition holds,
from the first of them. A rule reports once an episode has lasted its threshold (off route reports
again, severe, at the longer one), never twice for the same episode, and the episode ends at the
first position where the condition no longer holds, so a later lapse is a new episode. Practice in
Guangdong: off route beyond 50 m, 10 minutes to return, over 15 minutes severe; a terminal is
offline after 10 minutes without data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

__all__ = [
    "DEFAULT_SETTINGS",
    "NO_MANIFEST",
    "Finding",
    "Load",
    "Observation",
    "RuleSettings",
    "Severity",
    "TruckContext",
    "TruckRules",
    "ViolationKind",
    "offline",
]

Load = Literal["empty", "half", "full", "unknown"]
Severity = Literal["normal", "severe"]

LOADED: Final[frozenset[Load]] = frozenset({"half", "full"})
# How much a truck carries, to tell a load taken on at a site from one it came in with; an unknown
# load counts as nothing, so a truck that loads without a sensor's word is not let off.
_CARRIED: Final[dict[Load, int]] = {"empty": 0, "unknown": 0, "half": 1, "full": 2}


class ViolationKind(StrEnum):
    OFF_ROUTE = "off_route"
    OUTSIDE_HOURS = "outside_hours"
    OVERSPEED = "overspeed"
    ILLEGAL_DUMPING = "illegal_dumping"  # suspected: a loaded truck stopped outside every site
    UNLOADED_OUTSIDE_SITE = "unloaded_outside_site"
    LEFT_WITHOUT_MANIFEST = "left_without_manifest"
    TERMINAL_OFFLINE = "terminal_offline"


@dataclass(frozen=True)
class RuleSettings:
    corridor_tolerance_m: float = 50.0
    off_route_after: timedelta = timedelta(minutes=10)
    off_route_severe_after: timedelta = timedelta(minutes=15)
    overspeed_kmh: float = 60.0
    overspeed_after: timedelta = timedelta(seconds=60)
    stop_speed_kmh: float = 3.0
    dumping_stop_after: timedelta = timedelta(minutes=10)
    moving_speed_kmh: float = 5.0
    offline_after: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        for name in ("off_route_after", "off_route_severe_after", "overspeed_after", "dumping_stop_after"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be a positive duration")
        if self.offline_after <= timedelta(0):
            raise ValueError("offline_after must be a positive duration")
        if self.off_route_severe_after < self.off_route_after:
            raise ValueError("off_route_severe_after cannot be shorter than off_route_after")
        if min(self.corridor_tolerance_m, self.overspeed_kmh, self.stop_speed_kmh, self.moving_speed_kmh) < 0:
            raise ValueError("distances and speeds cannot be negative")


DEFAULT_SETTINGS: Final = RuleSettings()


@dataclass(frozen=True, slots=True)
class Observation:
    """One position of the truck, with what the service found of its place.

    ``sites`` are the ids of the sites containing it, ``disposal_sites`` those of them that are
    disposal sites; ``corridor_distance_m`` is its distance to its manifest's corridor, None where no
    corridor applies; ``in_window`` whether the area's transport window allows moving muck now.
    """

    at: datetime
    lon: float
    lat: float
    speed_kmh: float
    load: Load
    sites: frozenset[str]
    disposal_sites: frozenset[str]
    corridor_distance_m: float | None
    in_window: bool


@dataclass(frozen=True)
class TruckContext:
    """The manifest the truck carries a load on, until it is delivered; all None without one."""

    manifest_id: str | None
    origin_site: str | None
    disposal_site: str | None


NO_MANIFEST: Final = TruckContext(None, None, None)


@dataclass(frozen=True)
class Finding:
    """A violation found at the observation ``at``, in the episode that started at ``episode_started_at``."""

    kind: ViolationKind
    severity: Severity
    episode_started_at: datetime
    at: datetime
    lon: float
    lat: float
    detail: str


@dataclass(slots=True)
class _Episode:
    """A run of consecutive observations over which one rule's condition holds."""

    started_at: datetime | None = None
    findings: int = 0  # how many this episode has reported, so none is reported twice
    manifest_id: str | None = None  # an episode belongs to one trip: a new manifest starts a new one

    def hold(self, at: datetime, manifest_id: str | None = None) -> timedelta:
        """The condition holds at ``at``: how long the episode has lasted, 0 at its first observation."""
        if self.started_at is None or manifest_id != self.manifest_id:
            self.started_at, self.findings, self.manifest_id = at, 0, manifest_id
        return at - self.started_at

    def end(self) -> None:
        self.started_at, self.findings, self.manifest_id = None, 0, None


def _minutes(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass(slots=True)
class TruckRules:
    """One truck's rules and their episodes, fed its observations as they arrive."""

    settings: RuleSettings = DEFAULT_SETTINGS
    last: Observation | None = None  # the latest observation taken, the one the next is compared with
    _off_route: _Episode = field(default_factory=_Episode, init=False, repr=False)
    _outside_hours: _Episode = field(default_factory=_Episode, init=False, repr=False)
    _overspeed: _Episode = field(default_factory=_Episode, init=False, repr=False)
    _stopped_loaded: _Episode = field(default_factory=_Episode, init=False, repr=False)
    # The load the truck had at its first observation inside each construction site it is in.
    _entered_with: dict[str, Load] = field(default_factory=dict, init=False, repr=False)

    def observe(self, obs: Observation, context: TruckContext = NO_MANIFEST) -> list[Finding]:
        """The findings this observation brings; [] for one not newer than the latest taken.

        A terminal re-uploads the positions it kept in a blind area late and out of order, and
        resends a report whose acknowledgement was lost: those are stored, but the rules, which
        measure episodes forward in time, do not take them.
        """
        previous = self.last
        if previous is not None and obs.at <= previous.at:
            return []
        self.last = obs
        found: list[Finding] = []
        self._check_off_route(obs, context, found)
        self._check_outside_hours(obs, context, found)
        self._check_overspeed(obs, found)
        self._check_illegal_dumping(obs, context, found)
        if previous is not None:
            self._check_unloading(previous, obs, context, found)
        self._check_departure(obs, context, found, saw_it_enter=previous is not None)
        return found

    def _check_off_route(self, obs: Observation, context: TruckContext, found: list[Finding]) -> None:
        s, episode, distance = self.settings, self._off_route, obs.corridor_distance_m
        # Inside a site the truck is where it should be whatever its distance to the route.
        if (
            context.manifest_id is None
            or distance is None
            or obs.sites
            or not distance > s.corridor_tolerance_m
        ):
            episode.end()
            return
        lasted = episode.hold(obs.at, context.manifest_id)
        assert episode.started_at is not None
        detail = f"{distance:.0f} m from the approved route for {_minutes(lasted)} min"
        if episode.findings == 0 and lasted >= s.off_route_after:
            episode.findings = 1
            found.append(_finding(ViolationKind.OFF_ROUTE, "normal", episode.started_at, obs, detail))
        # Not elif: one late observation after a gap may cross both thresholds at once.
        if episode.findings == 1 and lasted >= s.off_route_severe_after:
            episode.findings = 2
            found.append(_finding(ViolationKind.OFF_ROUTE, "severe", episode.started_at, obs, detail))

    def _check_outside_hours(self, obs: Observation, context: TruckContext, found: list[Finding]) -> None:
        episode = self._outside_hours
        if context.manifest_id is None or obs.in_window:
            episode.end()
            return
        if context.manifest_id != episode.manifest_id:
            episode.end()
        # A stop outside the window keeps the episode going; only moving muck starts one.
        if episode.started_at is None and obs.speed_kmh >= self.settings.moving_speed_kmh:
            episode.hold(obs.at, context.manifest_id)
            episode.findings = 1
            detail = f"moving at {obs.speed_kmh:.0f} km/h outside the area's transport window"
            found.append(_finding(ViolationKind.OUTSIDE_HOURS, "normal", obs.at, obs, detail))

    def _check_overspeed(self, obs: Observation, found: list[Finding]) -> None:
        s, episode = self.settings, self._overspeed
        if obs.speed_kmh <= s.overspeed_kmh:
            episode.end()
            return
        lasted = episode.hold(obs.at)
        if lasted >= s.overspeed_after and not episode.findings:
            episode.findings = 1
            assert episode.started_at is not None
            detail = f"{obs.speed_kmh:.0f} km/h, above the {s.overspeed_kmh:.0f} km/h limit, for {_minutes(lasted)} min"
            found.append(_finding(ViolationKind.OVERSPEED, "normal", episode.started_at, obs, detail))

    def _check_illegal_dumping(self, obs: Observation, context: TruckContext, found: list[Finding]) -> None:
        s, episode = self.settings, self._stopped_loaded
        # A terminal without a load sensor says unknown: on an undelivered manifest the truck is loaded.
        loaded = obs.load in LOADED or (obs.load == "unknown" and context.manifest_id is not None)
        if not loaded or obs.speed_kmh >= s.stop_speed_kmh or obs.sites:
            episode.end()
            return
        lasted = episode.hold(obs.at)
        if lasted >= s.dumping_stop_after and not episode.findings:
            episode.findings = 1
            assert episode.started_at is not None
            detail = f"stopped loaded outside every site for {_minutes(lasted)} min"
            found.append(_finding(ViolationKind.ILLEGAL_DUMPING, "normal", episode.started_at, obs, detail))

    def _check_unloading(
        self, previous: Observation, obs: Observation, context: TruckContext, found: list[Finding]
    ) -> None:
        if previous.load not in LOADED or obs.load != "empty":
            return
        if context.disposal_site is not None:
            if context.disposal_site in obs.sites:
                return
            detail = f"unloaded outside its designated disposal site {context.disposal_site}"
        elif obs.disposal_sites:
            return
        else:
            detail = "unloaded outside every disposal site"
        if obs.disposal_sites:
            detail += f", inside {', '.join(sorted(obs.disposal_sites))}"
        found.append(_finding(ViolationKind.UNLOADED_OUTSIDE_SITE, "normal", obs.at, obs, detail))

    def _check_departure(
        self, obs: Observation, context: TruckContext, found: list[Finding], *, saw_it_enter: bool
    ) -> None:
        inside = obs.sites - obs.disposal_sites
        loaded_at: list[str] = []
        for site in [site for site in self._entered_with if site not in inside]:
            if _CARRIED[obs.load] > _CARRIED[self._entered_with.pop(site)]:
                loaded_at.append(site)
        for site in inside:
            # First seen already inside (a restart, a terminal switched on there): whatever it
            # carries may have been loaded there.
            self._entered_with.setdefault(site, obs.load if saw_it_enter else "unknown")
        # A truck that drives through a site, or along a boundary its GPS strays over, leaves with
        # what it came in with: only a load taken on at the site needs a manifest from it.
        if not loaded_at or obs.load not in LOADED:
            return
        if context.manifest_id is not None and context.origin_site in loaded_at:
            return
        names = ", ".join(sorted(loaded_at))
        detail = (
            f"left {names} loaded without a manifest"
            if context.manifest_id is None
            else f"left {names} loaded on manifest {context.manifest_id}, which is from {context.origin_site}"
        )
        found.append(_finding(ViolationKind.LEFT_WITHOUT_MANIFEST, "normal", obs.at, obs, detail))


def _finding(
    kind: ViolationKind, severity: Severity, started_at: datetime, obs: Observation, detail: str
) -> Finding:
    return Finding(kind, severity, started_at, obs.at, obs.lon, obs.lat, detail)


def offline(
    last_seen: datetime | None, now: datetime, on_manifest: bool, settings: RuleSettings = DEFAULT_SETTINGS
) -> bool:
    """Whether a truck on a manifest has sent nothing for ``offline_after``; one never seen is offline.

    The caller seeds ``last_seen`` from the stored positions after a restart, or every truck on a
    manifest would look offline until it reports.
    """
    if not on_manifest:
        return False
    return last_seen is None or now - last_seen >= settings.offline_after

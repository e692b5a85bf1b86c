"""The positions of the live map: every truck's latest position fanned out to the connected clients.

The latest map (``LatestPositions``) hands each batch that changed it to ``LivePositions.offer``, on
the intake's path (inside the position writer's round, or the callback of another replica's
message): that only puts the batch in a short queue, does nothing while no client is connected, and
drops the batch when the queue is full. One fan-out task per replica takes the batches and, for each
client, keeps the positions inside its box, thins them per truck to at most one per the client's
interval, and queues their frames; a client whose queue passes its bound is dropped (its stream
ends). Neither a slow client nor many of them hold up the intake or one another.

Position events are ephemeral: they carry no SSE id and nothing resumes them; a client that
reconnects gets a fresh snapshot of the map instead.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter

from prometheus_client import Counter

from citygrid.clock import city_time
from citygrid.fleet.reports import LOAD_CODES
from citygrid.live import sse_frame
from citygrid.metrics import KitMetrics
from services.muck.positions.latest import Latest, LatestPositions

log = logging.getLogger("services.muck.live")

FEED = "positions"
DEFAULT_INTERVAL_SECONDS = 5
MIN_INTERVAL_SECONDS = 1
MAX_INTERVAL_SECONDS = 300
# A snapshot sends at most this many trucks; past it, ``truncated`` tells the client to zoom in.
SNAPSHOT_LIMIT = 10_000
# Position events queued for one client before it counts as too slow and is dropped: a city-wide
# snapshot's worth, so a client that is only a batch or two behind is kept.
CLIENT_BACKLOG = 20_000
# Batches waiting for the fan-out task; a batch that finds the queue full is dropped (the trucks'
# next reports, seconds later, put them right).
BATCH_BACKLOG = 64
SNAPSHOT_CHUNK = 500
LOAD_NAMES = {code: name for name, code in LOAD_CODES.items()}
_NUMBER = re.compile(r"[+-]?\d{1,3}(\.\d{1,15})?")


@dataclass(frozen=True, slots=True)
class Box:
    """A bounding box in degrees, edges included."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def contains(self, lon: float, lat: float) -> bool:
        return self.min_lon <= lon <= self.max_lon and self.min_lat <= lat <= self.max_lat


def parse_box(text: str) -> Box:
    """``minLon,minLat,maxLon,maxLat``: four finite numbers, each min below its max, in range.
    ValueError says what is wrong."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 4 or not all(_NUMBER.fullmatch(part) for part in parts):
        raise ValueError("bbox is four numbers: minLon,minLat,maxLon,maxLat")
    min_lon, min_lat, max_lon, max_lat = (float(part) for part in parts)
    if not all(math.isfinite(value) for value in (min_lon, min_lat, max_lon, max_lat)):
        raise ValueError("bbox values must be finite numbers")
    if not -180 <= min_lon < max_lon <= 180:
        raise ValueError("bbox longitudes: minLon below maxLon, both within -180..180")
    if not -90 <= min_lat < max_lat <= 90:
        raise ValueError("bbox latitudes: minLat below maxLat, both within -90..90")
    return Box(min_lon, min_lat, max_lon, max_lat)


def position_data(position: Latest) -> str:
    """The JSON ``data`` of a ``position`` event."""
    return json.dumps(
        {
            "plate": position.plate,
            "at": city_time(position.at),
            "lon": position.lon,
            "lat": position.lat,
            "speed_kmh": position.speed_kmh,
            "direction": position.direction,
            "load": None if position.load is None else LOAD_NAMES.get(position.load),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def position_frame(position: Latest) -> str:
    return sse_frame(position_data(position), event="position")


def snapshot_end_frame(trucks: int, truncated: bool) -> str:
    """Sent once after the snapshot's position events: how many, and whether the box held more."""
    return sse_frame(json.dumps({"trucks": trucks, "truncated": truncated}), event="snapshot")


@dataclass(eq=False, slots=True)
class Thinning:
    """Per truck at most one position per ``interval`` seconds of ``now`` (the replica's clock).

    A truck's first position goes at once; a newer one within the interval is held, replaced by
    any newer still, and released by ``due`` when the interval since the last one sent is over. So
    the client gets each truck's newest position at most ``interval`` late, and never a stale one.
    """

    interval: float
    # Plate -> (report time of the position sent last, when it was sent).
    _sent: dict[str, tuple[datetime, float]] = field(default_factory=dict)
    _held: dict[str, Latest] = field(default_factory=dict)
    # (when the held position may go, plate), earliest first; entries of positions released or
    # forgotten meanwhile are skipped when they come up.
    _due: list[tuple[float, str]] = field(default_factory=list)

    @property
    def next_due(self) -> float | None:
        return self._due[0][0] if self._due else None

    @property
    def holding(self) -> int:
        return len(self._held)

    def sent(self, position: Latest, now: float) -> None:
        """The client was sent ``position`` (by the snapshot, say)."""
        self._sent[position.plate] = (position.at, now)
        self._held.pop(position.plate, None)

    def offer(self, position: Latest, now: float) -> bool:
        """True: send it now. False: not newer than the one sent, or held for later."""
        plate = position.plate
        previous = self._sent.get(plate)
        if previous is not None:
            sent_at, sent_when = previous
            if position.at <= sent_at:
                return False
            if now < sent_when + self.interval:
                held = self._held.get(plate)
                if held is None:
                    heapq.heappush(self._due, (sent_when + self.interval, plate))
                if held is None or position.at > held.at:
                    self._held[plate] = position
                return False
        self.sent(position, now)
        return True

    def due(self, now: float, keep: Callable[[Latest], bool] = lambda _: True) -> list[Latest]:
        """The held positions whose interval is over and that ``keep`` (the truck is still in the
        client's box, say); they count as sent now, the others are forgotten."""
        released: list[Latest] = []
        while self._due and self._due[0][0] <= now:
            _, plate = heapq.heappop(self._due)
            held = self._held.get(plate)
            if held is None or self._sent[plate][1] + self.interval > now:
                continue  # released already, or an entry from before the truck's last send
            del self._held[plate]
            if keep(held):
                self.sent(held, now)
                released.append(held)
        return released


@dataclass(eq=False)
class PositionClient:
    """One connected map client: its box, its thinning and its bounded queue of position frames."""

    box: Box | None
    thinning: Thinning
    backlog: int
    dropped: bool = False
    _chunks: deque[tuple[str, int]] = field(default_factory=deque)
    _queued: int = 0
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def queued(self) -> int:
        """Position events waiting to be written to the client."""
        return self._queued

    def select(self, positions: Iterable[Latest], now: float) -> list[Latest]:
        """Of a batch of latest positions, those the client is sent now: inside its box, thinned."""
        box = self.box
        return [
            position
            for position in positions
            if (box is None or box.contains(position.lon, position.lat))
            and self.thinning.offer(position, now)
        ]

    def push(self, frames: str, count: int) -> bool:
        """Queue ``count`` events' frames; False (and the client dropped) past its backlog."""
        if self.dropped:
            return False
        if self._queued + count > self.backlog:
            self.drop()
            return False
        self._chunks.append((frames, count))
        self._queued += count
        self._ready.set()
        return True

    def drop(self) -> None:
        self.dropped = True
        self._chunks.clear()
        self._queued = 0
        self._ready.set()

    async def next(self) -> str | None:
        """Every frame queued so far, once there is one; None once the client is dropped."""
        while not self._chunks and not self.dropped:
            self._ready.clear()
            await self._ready.wait()
        if self.dropped:
            return None
        frames = "".join(chunk for chunk, _ in self._chunks)
        self._chunks.clear()
        self._queued = 0
        return frames


@dataclass(frozen=True)
class Snapshot:
    """The latest positions inside a client's box when it connected (at most ``SNAPSHOT_LIMIT``)."""

    positions: list[Latest]
    truncated: bool

    def frames(self) -> Iterable[str]:
        """The snapshot's ``position`` events in chunks, then the ``snapshot`` event."""
        for start in range(0, len(self.positions), SNAPSHOT_CHUNK):
            yield "".join(position_frame(p) for p in self.positions[start : start + SNAPSHOT_CHUNK])
        yield snapshot_end_frame(len(self.positions), self.truncated)


@dataclass(eq=False)
class LivePositions:
    """This replica's fan-out of latest positions to its map clients (see the module's docstring)."""

    latest: LatestPositions
    metrics: KitMetrics
    # Where the fan-out task goes once a first client connects: the runtime's, cancelled when it stops.
    tasks: list[asyncio.Task[None]]
    snapshot_limit: int = SNAPSHOT_LIMIT
    client_backlog: int = CLIENT_BACKLOG
    clock: Callable[[], float] = time.monotonic
    clients: set[PositionClient] = field(default_factory=set)
    _batches: asyncio.Queue[Sequence[Latest]] = field(default_factory=lambda: asyncio.Queue(BATCH_BACKLOG))
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._streams = self.metrics.live_streams.labels(feed=FEED)
        self._dropped_clients = self.metrics.live_dropped.labels(feed=FEED)
        self._dropped_batches = Counter(
            "citygrid_muck_live_batches_dropped",
            "Batches of latest positions the live map's fan-out dropped, being behind.",
            registry=self.metrics.registry,
        )

    @classmethod
    def following(
        cls, latest: LatestPositions, metrics: KitMetrics, tasks: list[asyncio.Task[None]]
    ) -> LivePositions:
        """A fan-out registered as the latest map's listener."""
        live = cls(latest, metrics, tasks)
        latest.on_changed = live.offer
        return live

    def offer(self, changed: Sequence[Latest]) -> None:
        """The latest map's listener, on the intake's path: queue the batch, never wait."""
        if not self.clients:
            return
        try:
            self._batches.put_nowait(changed)
        except asyncio.QueueFull:
            self._dropped_batches.inc()

    def open(self, box: Box | None, interval: float) -> tuple[PositionClient, Snapshot]:
        """Register a client; its snapshot is what the map holds inside its box at this moment,
        and every batch from now on reaches its queue."""
        now = self.clock()
        client = PositionClient(box, Thinning(interval), self.client_backlog)
        inside: list[Latest] = []
        truncated = False
        for position in self.latest:  # no await: no batch is applied meanwhile
            if box is None or box.contains(position.lon, position.lat):
                if len(inside) >= self.snapshot_limit:
                    truncated = True
                    break
                inside.append(position)
        for position in inside:
            client.thinning.sent(position, now)
        self.clients.add(client)
        self._streams.set(len(self.clients))
        self._start()
        return client, Snapshot(inside, truncated)

    def close(self, client: PositionClient) -> None:
        self.clients.discard(client)
        self._streams.set(len(self.clients))

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="live-muck-positions")
            self.tasks.append(self._task)

    async def run(self) -> None:
        """Fan batches out for as long as the process lives; a failed round is logged and skipped."""
        while True:
            try:
                await self.fan_out(await self._next_batch())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live positions: a fan-out round failed")
                await asyncio.sleep(0.1)

    async def _next_batch(self) -> Sequence[Latest]:
        """The next batch, or none when a client's held position comes due first."""
        due = [when for client in self.clients if (when := client.thinning.next_due) is not None]
        if not due:
            return await self._batches.get()
        try:
            async with asyncio.timeout(max(0.0, min(due) - self.clock())):
                return await self._batches.get()
        except TimeoutError:
            return ()

    async def fan_out(self, batch: Sequence[Latest]) -> None:
        """Each client's share of ``batch`` and of its held positions now due, rendered once each."""
        now = self.clock()
        by_lon = sorted(batch, key=attrgetter("lon"))
        lons = [position.lon for position in by_lon]
        rendered: dict[int, str] = {}

        def frame(position: Latest) -> str:
            text = rendered.get(id(position))
            if text is None:
                text = rendered[id(position)] = position_frame(position)
            return text

        for client in list(self.clients):
            if client.dropped:
                continue
            box = client.box
            candidates: Sequence[Latest] = by_lon
            if box is not None:
                # Only the batch's slice within the box's longitudes is looked at.
                candidates = by_lon[
                    bisect.bisect_left(lons, box.min_lon) : bisect.bisect_right(lons, box.max_lon)
                ]
            released = client.thinning.due(now, keep=self._still_inside(box))
            chosen = released + client.select(candidates, now)
            if chosen and not client.push("".join(frame(p) for p in chosen), len(chosen)):
                self._drop(client)
            await asyncio.sleep(0)  # the intake and the other streams run between clients

    def _still_inside(self, box: Box | None) -> Callable[[Latest], bool]:
        """Whether a held position may still go: the truck's newest known position is in the box."""

        def keep(held: Latest) -> bool:
            if box is None:
                return True
            current = self.latest.get(held.plate) or held
            return box.contains(current.lon, current.lat)

        return keep

    def _drop(self, client: PositionClient) -> None:
        self.close(client)
        self._dropped_clients.inc()
        log.info("live positions dropped a client that fell behind (%d events queued)", client.backlog)

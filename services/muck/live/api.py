"""The live map feed of a command centre: trucks' positions and transport violations as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from citygrid.auth import CurrentPrincipal, district_scope
from citygrid.clock import CityTime
from citygrid.live import (
    EVENT_STREAM,
    EVENT_STREAM_HEADERS,
    LiveEvent,
    LiveFeed,
    parse_last_event_id,
    require_event_stream,
)
from citygrid.metrics import KitMetrics
from citygrid.runtime import RuntimeDep
from citygrid.settings import ServiceSettings
from contract.common import KnownDistrict
from contract.muck import ViolationDetected
from services.muck.events import PUBLISHES
from services.muck.live.feed import (
    DEFAULT_INTERVAL_SECONDS,
    MAX_INTERVAL_SECONDS,
    MIN_INTERVAL_SECONDS,
    SNAPSHOT_LIMIT,
    Box,
    LivePositions,
    PositionClient,
    Snapshot,
    parse_box,
)
from services.muck.positions.api import InvalidBox
from services.muck.positions.schemas import Load

FEED = "violations"
SUBJECT = ViolationDetected.subject
VIOLATION_EVENT = "violation"

router = APIRouter(prefix="/v1", tags=["muck live map"])


def violation_feed(settings: ServiceSettings, metrics: KitMetrics) -> LiveFeed:
    return LiveFeed.from_settings(FEED, PUBLISHES, subject=SUBJECT, settings=settings, metrics=metrics)


async def get_violation_feed(runtime: RuntimeDep) -> LiveFeed:
    return runtime.live_feed(FEED)


def get_live_positions(request: Request) -> LivePositions:
    live: LivePositions = request.app.state.live
    return live


ViolationFeed = Annotated[LiveFeed, Depends(get_violation_feed)]
Positions = Annotated[LivePositions, Depends(get_live_positions)]


class PositionEvent(BaseModel):
    """The `data` of a `position` event: a truck's latest position."""

    plate: str
    at: CityTime = Field(description="When the terminal took the fix.")
    lon: float
    lat: float
    speed_kmh: float
    direction: int = Field(description="Heading, degrees clockwise from north.")
    load: Load | None


class ViolationEvent(BaseModel):
    """The `data` of a `violation` event: what a map shows of a transport violation."""

    type: str = Field(description="The event type, e.g. `muck.violation.detected.v1`.")
    violation_id: str
    plate: str
    kind: str = Field(description="A `TransportViolation` of the muck contract, e.g. `off_route`.")
    severity: str = Field(description="`normal` or `severe`.")
    district_code: str | None
    lon: float
    lat: float
    detected_at: CityTime


class SnapshotEvent(BaseModel):
    """The `data` of the `snapshot` event that follows the snapshot's `position` events."""

    trucks: int = Field(description="How many `position` events the snapshot was.")
    truncated: bool = Field(description=f"The box held more than the {SNAPSHOT_LIMIT} a snapshot sends.")


def render_violation(item: LiveEvent) -> str:
    event = ViolationDetected.model_validate(item.event.data)
    return ViolationEvent(
        type=item.event.type,
        violation_id=event.reference,
        plate=event.plate,
        kind=event.kind.value,
        severity=event.severity,
        district_code=event.district_code,
        lon=event.location.lon,
        lat=event.location.lat,
        detected_at=event.detected_at,
    ).model_dump_json()


def selects(district: str | None, box: Box | None) -> Callable[[LiveEvent], bool]:
    """A client's filter of violations: its district, its box (on the violation's location)."""

    def matches(item: LiveEvent) -> bool:
        data = item.event.data
        if district is not None and data.get("district_code") != district:
            return False
        if box is None:
            return True
        lon, lat = data["location"]["coordinates"]
        return box.contains(float(lon), float(lat))

    return matches


def named_violation(frame: str) -> str:
    """The kit's frame of an event (``id: n`` first) as a named ``violation`` event; its other
    lines (``retry``, heartbeats, ``gap``) as they are."""
    if not frame.startswith("id: "):
        return frame
    id_line, rest = frame.split("\n", 1)
    return f"{id_line}\nevent: {VIOLATION_EVENT}\n{rest}"


_ENDED = object()


async def _next_or_end(iterator: AsyncIterator[str]) -> str | object:
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return _ENDED


def _waiting(*futures: asyncio.Future[Any] | None) -> list[asyncio.Future[Any]]:
    return [future for future in futures if future is not None]


async def map_frames(
    violations: AsyncIterator[str],
    positions: PositionClient | None,
    snapshot: Snapshot | None,
    on_end: Callable[[], None],
) -> AsyncIterator[str]:
    """The client's stream: the kit's first line, the snapshot, then violations (what a resume
    missed first) and positions as they come, until the client leaves or either side drops it."""
    next_violation: asyncio.Future[str | object] | None = None
    next_positions: asyncio.Future[str | None] | None = None
    try:
        first = await _next_or_end(violations)  # ``retry: …``, at once
        if first is _ENDED:
            return
        yield str(first)
        if snapshot is not None:
            for chunk in snapshot.frames():
                yield chunk
        next_violation = asyncio.ensure_future(_next_or_end(violations))
        if positions is not None:
            next_positions = asyncio.ensure_future(positions.next())
        while True:
            done, _ = await asyncio.wait(
                _waiting(next_violation, next_positions), return_when=FIRST_COMPLETED
            )
            if next_violation in done:
                frame = next_violation.result()
                if frame is _ENDED:
                    return  # fell behind on violations, or what a resume missed could not be read
                yield named_violation(str(frame))
                next_violation = asyncio.ensure_future(_next_or_end(violations))
            if positions is not None and next_positions in done:
                frames = next_positions.result()
                if frames is None:
                    return  # fell behind on positions: dropped
                yield frames
                next_positions = asyncio.ensure_future(positions.next())
    finally:
        waiting = _waiting(next_violation, next_positions)
        for future in waiting:
            future.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        close = getattr(violations, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()  # the kit's generator closes its listener
        on_end()


FRAMES = f"""A map's stream of three kinds of named events (comment lines `: heartbeat` arrive every
15 s while nothing happens):

- `position` (data: `PositionEvent`): a truck's latest position inside the box, at most one per truck
  per `interval` seconds (the newest held back is sent when its interval is over). It has no `id`:
  positions are ephemeral and never replayed. On connect the stream starts with a snapshot, one
  `position` event for each truck in the box (at most {SNAPSHOT_LIMIT}), then one `snapshot` event
  (data: `SnapshotEvent`), then live positions. Each replica sends the whole fleet's, whichever replica
  stored them. A reconnecting client gets a fresh snapshot. A caller bound to a district gets no
  positions: the fleet's positions are the whole city's.
- `violation` (data: `ViolationEvent`): a transport violation of the district and in the box. `id` is
  its position in the MUCK event stream: a client that reconnects with `Last-Event-ID` receives the
  violations it missed, once, within the kit's resume bound; otherwise a named `gap` event says from
  where the feed resumed (reload the violations over REST).
- `gap`: see above.

A client too slow to read its stream is dropped (the stream ends); it reconnects."""


@router.get(
    "/live",
    operation_id="follow_live_map",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": FRAMES,
            "content": {
                EVENT_STREAM: {
                    "schema": {
                        "oneOf": [
                            PositionEvent.model_json_schema(),
                            ViolationEvent.model_json_schema(),
                            SnapshotEvent.model_json_schema(),
                        ]
                    }
                }
            },
        },
        406: {"description": "The request did not ask for `text/event-stream`."},
        503: {"description": "The feed is not connected yet, or this replica serves its maximum of streams."},
    },
)
async def follow_live_map(
    feed: ViolationFeed,
    live: Positions,
    principal: CurrentPrincipal,
    bbox: Annotated[
        str | None,
        Query(
            max_length=200,
            description="minLon,minLat,maxLon,maxLat: only positions, and violations, inside it.",
        ),
    ] = None,
    interval: Annotated[
        int,
        Query(
            ge=MIN_INTERVAL_SECONDS,
            le=MAX_INTERVAL_SECONDS,
            description="At most one position per truck this many seconds apart.",
        ),
    ] = DEFAULT_INTERVAL_SECONDS,
    district: Annotated[KnownDistrict | None, Query(description="Only violations of this district.")] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="The `id` of the last violation event received."),
    ] = None,
    accept: Annotated[str | None, Header(description="Must name `text/event-stream`.")] = None,
) -> StreamingResponse:
    """Follow the fleet on a map (server-sent events): trucks' positions in a box, thinned, and the
    transport violations of a district or the box; a district-bound caller follows its own district's
    violations, and no positions."""
    require_event_stream(accept)
    try:
        box = parse_box(bbox) if bbox is not None else None
    except ValueError as error:
        raise InvalidBox(str(error)) from None
    district = district_scope(principal, district)
    listener = feed.open(selects(district, box), last_event_id=parse_last_event_id(last_event_id))
    positions: PositionClient | None = None
    snapshot: Snapshot | None = None
    if principal.district is None:
        positions, snapshot = live.open(box, interval)

    def close() -> None:
        feed.close(listener)
        if positions is not None:
            live.close(positions)

    return StreamingResponse(
        map_frames(feed.frames(listener, render_violation), positions, snapshot, close),
        media_type=EVENT_STREAM,
        headers=EVENT_STREAM_HEADERS,
        # Closes both even when the client left before its stream began.
        background=BackgroundTask(close),
    )

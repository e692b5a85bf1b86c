"""The live feed of case changes for command-centre screens: server-sent events, by district or unit."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
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
from contract.case import CaseEvent, CaseStatus
from contract.common import KnownDistrict
from services.case.events import PUBLISHES
from services.case.schemas import UnitCode

FEED = "cases"
SUBJECT = "case.case.>"

router = APIRouter(prefix="/v1", tags=["cases"])


def case_feed(settings: ServiceSettings, metrics: KitMetrics) -> LiveFeed:
    return LiveFeed.from_settings(FEED, PUBLISHES, subject=SUBJECT, settings=settings, metrics=metrics)


async def get_case_feed(runtime: RuntimeDep) -> LiveFeed:
    return runtime.live_feed(FEED)


CaseFeed = Annotated[LiveFeed, Depends(get_case_feed)]


class CaseChange(BaseModel):
    """One change of a case as a screen sees it: no reporter, no notes, no actor."""

    type: str = Field(description="The event type, e.g. `case.case.dispatched.v1`.")
    case_id: uuid.UUID
    number: str
    status: CaseStatus
    category_code: str
    district_code: str
    unit: str | None
    version: int
    occurred_at: CityTime


def _change_schema() -> dict[str, Any]:
    schema = CaseChange.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # CaseStatus is in the document's components already
    return schema


def render(item: LiveEvent) -> str:
    event = CaseEvent.model_validate(item.event.data)
    return CaseChange(
        type=item.event.type,
        case_id=event.case_id,
        number=event.number,
        status=event.status,
        category_code=event.category_code,
        district_code=event.district_code,
        unit=event.unit,
        version=event.version,
        occurred_at=event.occurred_at,
    ).model_dump_json()


def selects(district: str | None, unit: str | None) -> Any:
    def matches(item: LiveEvent) -> bool:
        data = item.event.data
        if district is not None and data.get("district_code") != district:
            return False
        return unit is None or data.get("unit") == unit

    return matches


FRAMES = """Each change is one event: `id` is its position in the event stream, `data` a `CaseChange`
as JSON. Comment lines (`: heartbeat`) arrive every 15 s while nothing happens. A reconnecting client
sends `Last-Event-ID` and receives what it missed, once, when that is at most
`CITYGRID_LIVE_MAX_REPLAY_EVENTS` events (1000) and `CITYGRID_LIVE_MAX_REPLAY_SECONDS` (15 minutes) old.
Otherwise (or when the id is unknown or the events are no longer kept) a named `gap` event says
from where the feed resumed: reload the cases over REST, then keep applying the live events."""


@router.get(
    "/cases/live",
    operation_id="follow_cases",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": FRAMES,
            "content": {EVENT_STREAM: {"schema": _change_schema()}},
        },
        406: {"description": "The request did not ask for `text/event-stream`."},
        503: {"description": "The feed is not connected yet, or this replica serves its maximum of streams."},
    },
)
async def follow_cases(
    feed: CaseFeed,
    principal: CurrentPrincipal,
    district: Annotated[KnownDistrict | None, Query(description="Only cases of this district.")] = None,
    unit: Annotated[UnitCode | None, Query(description="Only cases dispatched to this unit.")] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="The `id` of the last event received.")
    ] = None,
    accept: Annotated[str | None, Header(description="Must name `text/event-stream`.")] = None,
) -> StreamingResponse:
    """Follow case changes as they happen (server-sent events), optionally of one district or unit;
    a district-bound caller follows its own district's."""
    require_event_stream(accept)
    district = district_scope(principal, district)
    listener = feed.open(selects(district, unit), last_event_id=parse_last_event_id(last_event_id))
    return StreamingResponse(
        feed.frames(listener, render),
        media_type=EVENT_STREAM,
        headers=EVENT_STREAM_HEADERS,
        # Closes the listener even when the client left before its stream began.
        background=BackgroundTask(feed.close, listener),
    )

"""Admin endpoints of the message log (scope ``admin``, city-wide): query, export, verify."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from citygrid.clock import CityTime
from citygrid.pagination import Cursor, Limit, Page, cursor_time, cursor_value, decode_cursor, encode_cursor
from citygrid.problems import problem_responses
from citygrid.runtime import RuntimeDep
from gateway.admin import require_admin
from gateway.message_log import partitions, store
from gateway.message_log.chain import Record

router = APIRouter(
    prefix="/admin/v1/message-log",
    tags=["gateway admin"],
    responses=problem_responses(400, 401, 403, 422, 429),
)


class RecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    writer_id: uuid.UUID
    seq: int
    at: CityTime
    request_id: str | None
    consumer: str
    dataset: str
    action: str
    method: str
    path: str
    query_keys: list[str]
    status: int
    duration_ms: int
    dropped_before: int
    prev_hash: str
    prev_at: CityTime | None
    hash: str
    record_count: int | None = Field(description="Records the answer held (exchange reads; else null).")
    fields: list[str] = Field(description="The fields those records held (exchange reads; else empty).")


async def record_filters(
    consumer: Annotated[
        str | None, Query(max_length=200, description="A principal: `consumer:<id>`.")
    ] = None,
    dataset: Annotated[str | None, Query(max_length=100, description="e.g. `case/cases`.")] = None,
    since: Annotated[AwareDatetime | None, Query(description="From this time (included).")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Before this time.")] = None,
    status: Annotated[str | None, Query(pattern=r"^[1-5](\d\d|xx)$", description="`404` or `4xx`.")] = None,
) -> store.Filters:
    return store.Filters(consumer=consumer, dataset=dataset, since=since, until=until, status=status)


FiltersDep = Annotated[store.Filters, Depends(record_filters)]


@router.get("", operation_id="list_message_log")
async def list_records(
    request: Request, runtime: RuntimeDep, filters: FiltersDep, limit: Limit = 100, cursor: Cursor = None
) -> Page[RecordOut]:
    """Records in time order, oldest first; ``since`` and ``until`` bound the partitions read."""
    await require_admin(request)
    after: tuple[datetime, uuid.UUID] | None = None
    if cursor:
        at, record_id = decode_cursor(cursor, 2)
        after = (cursor_time(at), cursor_value(uuid.UUID, record_id))
    found = await store.page(runtime.reads, filters, after=after, limit=limit + 1)
    next_cursor = (
        encode_cursor(found[limit - 1].at.isoformat(), str(found[limit - 1].id))
        if len(found) > limit
        else None
    )
    return Page[RecordOut](
        items=[RecordOut.model_validate(r) for r in found[:limit]], next_cursor=next_cursor
    )


class ExportFormat(StrEnum):
    NDJSON = "ndjson"
    CSV = "csv"


# An export is written in pieces of about this size, and the event loop is let go between pieces:
# a year of records is minutes of serialising, and the replica's other calls must not wait on it.
CHUNK_BYTES = 65_536


def _plain(record: Record) -> dict[str, object]:
    return RecordOut.model_validate(record).model_dump(mode="json")


async def _ndjson(records: AsyncIterator[Record]) -> AsyncIterator[bytes]:
    chunk = bytearray()
    async for record in records:
        chunk += RecordOut.model_validate(record).model_dump_json().encode()
        chunk += b"\n"
        if len(chunk) >= CHUNK_BYTES:
            yield bytes(chunk)
            chunk.clear()
            await asyncio.sleep(0)
    if chunk:
        yield bytes(chunk)


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = ";".join(value) if isinstance(value, list) else str(value)
    # A spreadsheet must not take a cell for a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def _csv(records: AsyncIterator[Record]) -> AsyncIterator[bytes]:
    columns = list(RecordOut.model_fields)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    async for record in records:
        plain = _plain(record)
        writer.writerow([_cell(plain[name]) for name in columns])
        if buffer.tell() >= CHUNK_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            await asyncio.sleep(0)
    yield buffer.getvalue().encode()


@router.get(
    "/export",
    operation_id="export_message_log",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
)
async def export_records(
    request: Request, runtime: RuntimeDep, filters: FiltersDep, format: ExportFormat = ExportFormat.NDJSON
) -> StreamingResponse:
    """Every record the filters select, in time order, streamed (read a thousand at a time)."""
    await require_admin(request)
    records = store.every_record(runtime.reads, filters)
    if format is ExportFormat.CSV:
        return StreamingResponse(
            _csv(records),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="message-log.csv"'},
        )
    return StreamingResponse(_ndjson(records), media_type="application/x-ndjson")


class BreakOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    writer_id: uuid.UUID
    reason: str
    detail: str
    seq: int | None
    record_id: uuid.UUID | None


class VerificationOut(BaseModel):
    ok: bool
    writers_checked: int
    records_checked: int
    kept_from: CityTime | None
    breaks: list[BreakOut]


@router.get("/verify", operation_id="verify_message_log")
async def verify_chains(
    request: Request,
    runtime: RuntimeDep,
    since: Annotated[AwareDatetime | None, Query(description="Check records from this time.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Check records before this time.")] = None,
    writer: Annotated[uuid.UUID | None, Query(description="One writer's chain only.")] = None,
) -> VerificationOut:
    """Walk every writer's chain and name the first broken link of each (changed, removed,
    reordered record; a removed head or tail; a writer row that was edited)."""
    await require_admin(request)
    state = request.app.state.gateway
    kept_from = await partitions.kept_from(runtime.reads)
    result = await store.verify(
        runtime.reads,
        state.message_log_hashers,
        kept_from=kept_from,
        since=since,
        until=until,
        writer_id=writer,
    )
    return VerificationOut(
        ok=result.ok,
        writers_checked=result.writers_checked,
        records_checked=result.records_checked,
        kept_from=kept_from,
        breaks=[BreakOut.model_validate(b) for b in result.breaks],
    )

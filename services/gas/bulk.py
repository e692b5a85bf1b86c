"""Bulk registration and export of cylinders: a CSV file of millions of rows in, a stream out.

Import: the upload is read as it arrives, each row checked as the JSON import checks one cylinder,
and the good rows are fed straight into PostgreSQL's COPY inside one transaction. Every bad row is
reported with its line (the first ``MAX_ERRORS``); if there is any, or a code is registered already,
the transaction is rolled back: a file is registered whole or not at all. Memory stays flat whatever
the file's size: one chunk of the upload and one batch of rows at a time.

Export: keyset pages of ``EXPORT_BATCH`` rows by code, each its own short statement (no transaction
held open for the length of a download), written out as CSV or as a JSON array.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from asyncpg.exceptions import UniqueViolationError
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.errors import DomainError, InvalidInput
from services.gas.domain import rules
from services.gas.models import Cylinder
from services.gas.registry import cylinder_row, gas_companies
from services.gas.schemas import CylinderIn

CSV_COLUMNS = (
    "code",
    "owner_code",
    "manufacturer",
    "serial",
    "manufactured_on",
    "last_inspected_on",
    "last_inspection_passed",
    "tare_kg",
    "capacity_kg",
)
REQUIRED_COLUMNS = frozenset(
    {"code", "owner_code", "manufacturer", "serial", "manufactured_on", "capacity_kg"}
)
# What COPY writes: the row as the JSON import would make it (derived dates included).
COPY_COLUMNS = (
    "code",
    "owner_code",
    "manufacturer",
    "serial",
    "manufactured_on",
    "last_inspected_on",
    "last_passed_inspection_on",
    "next_inspection_due",
    "end_of_life",
    "tare_kg",
    "capacity_kg",
)
MAX_ERRORS = 100
IMPORT_TIMEOUT = "30min"
EXPORT_BATCH = 5_000
EXPORT_COLUMNS = (*COPY_COLUMNS, "status", "last_scan_at", "last_place")


class ImportRefused(InvalidInput):
    code = "gas.import_refused"
    status = 422
    title = "Import refused"


class NotCsv(DomainError):
    code = "gas.not_csv"
    status = 415
    title = "Unsupported media type"


DEFAULT_MAX_BYTES = 1 << 30  # 5.4 M rows of about 100 bytes, with room


class FileTooLarge(DomainError):
    code = "gas.import_too_large"
    status = 413
    title = "Payload too large"


@dataclass
class Parser:
    """Turns a CSV upload, chunk by chunk, into checked rows; collects the bad ones' errors."""

    companies: frozenset[str]
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    rows: int = 0
    _columns: list[str] | None = None
    _pending: str = ""
    _line: int = 0

    def feed(self, text: str, *, final: bool = False) -> list[tuple[Any, ...]]:
        """Rows complete in ``text`` (with what earlier chunks left). A record may span lines inside
        quotes: text is cut only where the quotes seen so far are balanced."""
        self._pending += text
        if final:
            complete, self._pending = self._pending, ""
        else:
            cut = self._pending.rfind("\n")
            while cut >= 0 and self._pending.count('"', 0, cut) % 2:
                cut = self._pending.rfind("\n", 0, cut)
            if cut < 0:
                return []
            complete, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
        return self._records(complete.splitlines(keepends=True))

    def _records(self, lines: Iterable[str]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for values in csv.reader(lines):
            self._line += 1
            if not values or values == [""]:
                continue
            if self._columns is None:
                self._columns = self._header(values)
                continue
            record = self._record(values)
            if record is not None:
                out.append(record)
        return out

    def _header(self, values: list[str]) -> list[str]:
        names = [value.strip() for value in values]
        unknown = sorted(set(names) - set(CSV_COLUMNS))
        missing = sorted(REQUIRED_COLUMNS - set(names))
        if unknown or missing or len(set(names)) != len(names):
            raise ImportRefused(
                "the header names the columns once each: " + ", ".join(CSV_COLUMNS),
                errors=[{"line": 1, "unknown": unknown, "missing": missing}],
            )
        return names

    def _error(self, detail: str, code: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"line": self._line, "code": code, "detail": detail})

    def _record(self, values: list[str]) -> tuple[Any, ...] | None:
        assert self._columns is not None
        if len(values) != len(self._columns):
            self._error(f"{len(values)} fields where the header has {len(self._columns)}")
            return None
        fields: dict[str, Any] = {
            name: value.strip() or None for name, value in zip(self._columns, values, strict=True)
        }
        quick = plain_row(fields)
        if quick is not None:
            if quick[1] not in self.companies:
                self._error(f"no gas company {quick[1]}", "gas.unknown_company")
                return None
            self.rows += 1
            return quick
        passed = fields.get("last_inspection_passed")
        if passed is not None:
            fields["last_inspection_passed"] = {"true": True, "false": False}.get(passed.lower(), passed)
        try:
            item = CylinderIn.model_validate(fields)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "row"
            self._error(f"{where}: {first['msg']}")
            return None
        if item.owner_code not in self.companies:
            self._error(f"no gas company {item.owner_code}", "gas.unknown_company")
            return None
        self.rows += 1
        row = cylinder_row(item)
        return tuple(row[name] for name in COPY_COLUMNS)


CODE = re.compile(r"[0-9A-Za-z\-]{6,40}")
ENTERPRISE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]{1,31}")
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
KILOGRAMS = re.compile(r"[0-9]{1,3}(\.[0-9]{1,6})?")
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2199, 12, 31)


def _day(text: str | None) -> date | None:
    if text is None or not DAY.fullmatch(text):
        raise ValueError
    day = date.fromisoformat(text)
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError
    return day


def _kilograms(text: str) -> float:
    if not KILOGRAMS.fullmatch(text):
        raise ValueError
    value = float(text)
    if not 0 < value <= 200:
        raise ValueError
    return value


def _text(value: str | None, longest: int) -> str:
    if value is None or len(value) > longest or "\x00" in value:
        raise ValueError
    return value


def plain_row(fields: dict[str, Any]) -> tuple[Any, ...] | None:
    """The COPY record of a row written the plain way (as files are), checked by hand at a fraction
    of the model's cost; ``None`` for anything else, which ``CylinderIn`` then judges (and explains).
    It accepts a subset of what the model accepts, never more: the same patterns and bounds, plain
    ISO dates, plain decimals, true/false."""
    try:
        code, owner = fields.get("code"), fields.get("owner_code")
        if code is None or owner is None or not CODE.fullmatch(code) or not ENTERPRISE.fullmatch(owner):
            return None
        manufacturer = _text(fields.get("manufacturer"), 200)
        serial = _text(fields.get("serial"), 64)
        made = _day(fields.get("manufactured_on"))
        assert made is not None
        inspected_text, passed_text = fields.get("last_inspected_on"), fields.get("last_inspection_passed")
        if (inspected_text is None) != (passed_text is None):
            return None
        inspected = None if inspected_text is None else _day(inspected_text)
        if inspected is not None and inspected < made:
            return None
        passed: bool | None = None
        if passed_text is not None:
            if passed_text.lower() not in ("true", "false"):
                return None
            passed = passed_text.lower() == "true"
        tare_text = fields.get("tare_kg")
        tare = None if tare_text is None else _kilograms(tare_text)
        capacity_text = fields.get("capacity_kg")
        if capacity_text is None:
            return None
        capacity = _kilograms(capacity_text)
    except ValueError:
        return None
    passed_on = inspected if passed else None
    return (
        code,
        owner,
        manufacturer,
        serial,
        made,
        inspected,
        passed_on,
        rules.inspection_due(made, passed_on),
        rules.end_of_life(made, passed_on),
        tare,
        capacity,
    )


async def import_csv(
    sessions: async_sessionmaker[AsyncSession], chunks: AsyncIterator[bytes], *, max_bytes: int
) -> int:
    """Register every cylinder of a CSV upload in one transaction, or none; returns how many."""
    async with sessions() as session, session.begin():
        # A file of millions takes minutes: not the request's statement limit (the lock limit stays).
        await session.execute(text(f"SET LOCAL statement_timeout = '{IMPORT_TIMEOUT}'"))
        parser = Parser(frozenset(await gas_companies(session)))
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        received = 0
        decoder = codecs.getincrementaldecoder("utf-8-sig")()

        async def records() -> AsyncIterator[tuple[Any, ...]]:
            nonlocal received
            async for chunk in chunks:
                received += len(chunk)
                if received > max_bytes:
                    raise FileTooLarge(f"the file is over {max_bytes} bytes", limit=max_bytes)
                try:
                    text = decoder.decode(chunk)
                except UnicodeDecodeError:
                    raise ImportRefused("the file is not UTF-8 text") from None
                for record in parser.feed(text):
                    yield record
            try:
                rest = decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise ImportRefused("the file is not UTF-8 text") from None
            for record in parser.feed(rest, final=True):
                yield record

        try:
            await driver.copy_records_to_table("cylinders", records=records(), columns=list(COPY_COLUMNS))
        except UniqueViolationError as error:
            detail = getattr(error, "detail", None) or str(error)
            raise ImportRefused(
                "a code in the file is registered already (or comes twice): codes are never reused",
                errors=[{"line": None, "code": "gas.code_taken", "detail": detail}],
            ) from None
        if parser.error_count:
            raise ImportRefused(
                f"{parser.error_count} rows were refused; nothing was registered",
                errors=parser.errors,
                refused_rows=parser.error_count,
            )
        if parser.rows == 0 and parser._columns is None:
            raise ImportRefused("the file is empty: send a header and rows")
        return parser.rows


def _cell(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    return value


async def export_rows(
    sessions: async_sessionmaker[AsyncSession], owner: str | None
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Every cylinder (of ``owner``), by code, in batches: one short statement per batch."""
    after = ""
    columns = [getattr(Cylinder, name) for name in EXPORT_COLUMNS]
    while True:
        query = select(*columns).where(Cylinder.code > after).order_by(Cylinder.code).limit(EXPORT_BATCH)
        if owner is not None:
            query = query.where(Cylinder.owner_code == owner)
        async with sessions() as session:
            batch = [tuple(row) for row in (await session.execute(query)).all()]
        if not batch:
            return
        yield batch
        if len(batch) < EXPORT_BATCH:
            return
        after = batch[-1][0]


async def export_csv(sessions: async_sessionmaker[AsyncSession], owner: str | None) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue().encode()
    async for batch in export_rows(sessions, owner):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([[_cell(v) for v in row] for row in batch])
        yield buffer.getvalue().encode()


async def export_json(sessions: async_sessionmaker[AsyncSession], owner: str | None) -> AsyncIterator[bytes]:
    yield b"["
    first = True
    async for batch in export_rows(sessions, owner):
        parts = []
        for row in batch:
            document = {name: _cell(value) for name, value in zip(EXPORT_COLUMNS, row, strict=True)}
            parts.append(json.dumps(document, ensure_ascii=False, default=str))
        yield (("" if first else ",") + ",".join(parts)).encode()
        first = False
    yield b"]"

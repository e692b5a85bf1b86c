"""Bulk registration from a CSV upload (COPY, all or nothing) and the streamed export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

from services.gas.bulk import MAX_ERRORS, Parser
from services.gas.tests.conftest import Gas

HEADER = "code,owner_code,manufacturer,serial,manufactured_on,last_inspected_on,last_inspection_passed,tare_kg,capacity_kg\n"


def rows(count: int, start: int = 0, owner: str = "GZGAS") -> str:
    return "".join(
        f'GZ{n:010d},{owner},"Foshan Works, Line 2",S{n},2024-03-01,2026-01-05,true,16.8,14.5\n'
        for n in range(start, start + count)
    )


async def chunked(body: bytes, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, len(body), size):
        yield body[offset : offset + size]


async def upload(gas: Gas, body: bytes | str, content_type: str = "text/csv") -> dict[str, Any]:
    data = body.encode() if isinstance(body, str) else body
    response = await gas.client.post(
        "/v1/cylinders/import-file",
        content=chunked(data, 7_919),
        headers={**gas.as_(), "content-type": content_type},
    )
    return {"status": response.status_code, **response.json()}


async def count(gas: Gas) -> int:
    response = await gas.get("/v1/cylinders/export", scopes=("gas:read",))
    return len(response.text.splitlines()) - 1


async def test_a_file_of_thousands_is_registered_whole_and_its_dates_derived(gas: Gas) -> None:
    await gas.register_demo()
    answer = await upload(gas, HEADER + rows(12_000))
    assert answer["status"] == 200, answer
    assert answer["created"] == 12_000
    one = (await gas.get("/v1/cylinders/GZ0000000042")).json()
    assert one["manufacturer"] == "Foshan Works, Line 2"
    assert one["last_passed_inspection_on"] == "2026-01-05"
    assert one["next_inspection_due"] == "2030-01-05"
    assert one["end_of_life"] == "2032-03-01"
    assert one["status"] == "in_stock"


async def test_one_bad_row_refuses_the_whole_file_with_every_bad_line(gas: Gas) -> None:
    await gas.register_demo()
    bad = HEADER + rows(3) + "GZ0000000100,GZGAS,W,S,2024-13-01,,,16.8,14.5\n" + rows(3, 200, owner="NOBODY")
    answer = await upload(gas, bad)
    assert answer["status"] == 422
    assert answer["code"] == "gas.import_refused"
    assert [e["line"] for e in answer["errors"]] == [5, 6, 7, 8]
    assert answer["errors"][1]["code"] == "gas.unknown_company"
    assert await count(gas) == 0, "nothing half-imported"


async def test_a_code_registered_before_refuses_the_file(gas: Gas) -> None:
    await gas.register_demo()
    assert (await upload(gas, HEADER + rows(5)))["created"] == 5
    answer = await upload(gas, HEADER + rows(5, 3))
    assert answer["status"] == 422
    assert answer["errors"][0]["code"] == "gas.code_taken"
    assert await count(gas) == 5


async def test_a_wrong_header_type_or_encoding_is_refused(gas: Gas) -> None:
    await gas.register_demo()
    header = await upload(gas, "code,owner,colour\nGZ1,GZGAS,red\n")
    assert header["status"] == 422
    assert header["errors"][0]["unknown"] == ["colour", "owner"]
    assert (await upload(gas, HEADER + rows(1), content_type="application/json"))["status"] == 415
    latin = (HEADER + rows(1)).encode() + b"GZ0000000009,GZGAS,W\xe9rk,S,2024-03-01,,,16.8,14.5\n"
    encoding = await upload(gas, latin)
    assert encoding["status"] == 422
    assert "UTF-8" in encoding["detail"]


async def test_an_oversized_file_is_413_and_writes_nothing(gas_factory) -> None:
    async with gas_factory(cylinder_import_max_bytes=4_000) as gas:
        await gas.register_demo()
        answer = await upload(gas, HEADER + rows(200))
        assert answer["status"] == 413
        assert await count(gas) == 0


async def test_the_export_streams_every_cylinder_as_csv_and_json(gas: Gas) -> None:
    await gas.register_demo()
    await upload(gas, HEADER + rows(11_000))
    exported = await gas.get("/v1/cylinders/export", scopes=("gas:read",))
    assert exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(table) == 11_000
    assert table[0]["code"] == "GZ0000000000"
    assert table[-1]["code"] == "GZ0000010999"
    as_json = await gas.client.get(
        "/v1/cylinders/export?format=json&owner=GZGAS", headers=gas.as_(scopes=("gas:read",))
    )
    documents = json.loads(as_json.text)
    assert len(documents) == 11_000
    assert documents[5]["manufactured_on"] == "2024-03-01"
    none = await gas.client.get(
        "/v1/cylinders/export?format=json&owner=NANFANG", headers=gas.as_(scopes=("gas:read",))
    )
    assert json.loads(none.text) == []


def test_the_parser_keeps_a_quoted_newline_across_chunks_and_caps_its_errors() -> None:
    parser = Parser(frozenset({"GZGAS"}))
    text = HEADER + 'GZ0000000001,GZGAS,"Works\nLine 2",S1,2024-03-01,,,16.8,14.5\n'
    cut = text.index("Line")
    first = parser.feed(text[:cut])
    second = parser.feed(text[cut:], final=True)
    assert first == []
    assert len(second) == 1
    assert second[0][2] == "Works\nLine 2"
    bad = Parser(frozenset({"GZGAS"}))
    bad.feed(HEADER + "x\n" * (MAX_ERRORS + 50), final=True)
    assert bad.error_count == MAX_ERRORS + 50
    assert len(bad.errors) == MAX_ERRORS


TRICKY_ROWS = [
    "GZ0000000001,GZGAS,Works,S1,2024-03-01,,,16.8,14.5",
    "GZ0000000002,GZGAS,Works,S2,2016-02-29,2020-02-29,TRUE,,14.5",
    "GZ0000000003,GZGAS,Works,S3,2016-02-29,2020-02-29,false,200,0.1",
    "GZ0000000004,GZGAS,  Works  ,S4,2024-03-01,,,16.80,14.5",
    "GZ0000000005,GZGAS,Works,S5,20240301,,,16.8,14.5",
    "GZ0000000006,GZGAS,Works,S6,2024-03-01,,,1e1,14.5",
    "GZ0000000007,GZGAS,Works,S7,2024-03-01,,,1_0,14.5",
    "GZ0000000008,GZGAS,Works,S8,2024-03-01,,,nan,14.5",
    "GZ0000000009,GZGAS,Works,S9,2024-03-01,,,0,14.5",
    "GZ0000000010,GZGAS,Works,S10,2024-03-01,,,200.0000001,14.5",
    "GZ0000000011,GZGAS,Works,S11,2024-03-01,2023-01-01,true,16.8,14.5",
    "GZ0000000012,GZGAS,Works,S12,2024-03-01,2025-01-01,,16.8,14.5",
    "GZ0000000013,GZGAS,Works,S13,2024-03-01,,yes,16.8,14.5",
    "GZ0000000014,GZGAS,Works,S14,1969-12-31,,,16.8,14.5",
    "GZ0000000015,GZGAS,Works,S15,2200-01-01,,,16.8,14.5",
    "GZ0000000016,GZGAS,Wor\x00ks,S16,2024-03-01,,,16.8,14.5",
    "GZ0000000017,GZGAS," + "W" * 201 + ",S17,2024-03-01,,,16.8,14.5",
    "GZ00017,GZGAS,Works,S18,2024-03-01,,,16.8,14.5",
    "GZ_0000000019,GZGAS,Works,S19,2024-03-01,,,16.8,14.5",
    "GZ0000000020,-GZGAS,Works,S20,2024-03-01,,,16.8,14.5",
    "GZ0000000021,GZGAS,Works,S21,2024-02-30,,,16.8,14.5",
    "GZ0000000022,GZGAS,Works,,2024-03-01,,,16.8,14.5",
    "GZ0000000023,GZGAS,Works,S23,2024-03-01,,,,",
    "GZ0000000024,GZGAS,Works,S24,2024-03-01,,,١٦,14.5",
]


def test_the_plain_path_and_the_model_agree_on_every_row(monkeypatch) -> None:
    from services.gas import bulk

    text = HEADER + "\n".join(TRICKY_ROWS) + "\n"
    fast = Parser(frozenset({"GZGAS"}))
    quick = fast.feed(text, final=True)
    monkeypatch.setattr(bulk, "plain_row", lambda fields: None)
    slow = Parser(frozenset({"GZGAS"}))
    judged = slow.feed(text, final=True)
    assert quick == judged
    assert [e["line"] for e in fast.errors] == [e["line"] for e in slow.errors]
    assert len(quick) >= 4, "the plain rows are taken"
    assert fast.error_count >= 15, "the odd rows are refused by both"

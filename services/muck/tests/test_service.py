"""The muck service over HTTP and JT/T 808, on real PostgreSQL and NATS: the register, positions from
both intakes stored and shared between replicas, tracks, and bad input refused with nothing written."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from citygrid.fleet.terminals import RegisteredTerminals
from citygrid.jt808.codec import (
    AUTHENTICATE,
    BEIJING,
    FAILURE,
    OK,
    POSITION,
    POSITION_BATCH,
    REGISTER,
    REGISTERED,
    TERMINAL_TAKEN,
    TERMINAL_UNKNOWN,
    VEHICLE_UNKNOWN,
    Authentication,
    Position,
    PositionBatch,
    Registration,
    RegistrationReply,
)
from citygrid.settings import to_libpq_url
from citygrid.testing import wait_until
from services.muck.tests.conftest import PLATFORM, READER, TIANHE, Muck, truck
from tests.test_jt808_server import Terminal

PLATE = "粤A00001D"


def square(lon: float, lat: float, half: float = 0.001) -> list[list[float]]:
    return [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
    ]


def site(code: str = "TH-CS-1", kind: str = "construction", **changes: Any) -> dict[str, Any]:
    return {
        "code": code,
        "kind": kind,
        "name": "Tianhe works",
        "district_code": TIANHE,
        "boundary": square(113.36, 23.13),
        "permit_number": "PZ-1",
        "permit_valid_from": "2026-01-01",
        "permit_valid_until": "2027-12-31",
        "approved_quantity_m3": 50_000.0,
        "gate_cameras": ["44010608131310000001"],
        **changes,
    }


def report(plate: str = PLATE, seconds_ago: int = 0, lon: float = 113.36, **changes: Any) -> dict[str, Any]:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds_ago)
    return {
        "plate": plate,
        "at": at.isoformat(),
        "location": {"type": "Point", "coordinates": [lon, 23.13]},
        "speed_kmh": 32.5,
        "direction": 90,
        "load": "full",
        **changes,
    }


async def stored_positions(muck: Muck) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(to_libpq_url(muck.runtime.settings.database_url))
    try:
        return list(await connection.fetch("SELECT * FROM positions ORDER BY plate, at"))
    finally:
        await connection.close()


# -- the register ------------------------------------------------------------------------------------


async def test_trucks_are_registered_by_plate_and_one_terminal_is_one_trucks(muck: Muck) -> None:
    await muck.register_fleet(2)
    taken = await muck.post("/v1/trucks/import", {"trucks": [truck(9, terminal_phone="013800000001")]})
    assert taken.status_code == 200
    assert [r["code"] for r in taken.json()["refused"]] == ["muck.terminal_taken"]
    stranger = await muck.post("/v1/trucks/import", {"trucks": [truck(8, company_code="NOBODY")]})
    assert [r["code"] for r in stranger.json()["refused"]] == ["muck.unknown_company"]
    # The register keeps the 20 digits of a 2019 header, whichever header the truck was given with.
    one = (await muck.get(f"/v1/trucks/{PLATE}")).json()
    assert one["terminal_phone"] == "00000000013800000001"
    # Half of what registering in a terminal's place takes: the register's only.
    assert (await muck.get(f"/v1/trucks/{PLATE}", scopes=READER)).json()["terminal_phone"] is None
    listed = (await muck.get("/v1/trucks?limit=1", scopes=READER)).json()
    assert len(listed["items"]) == 1
    following = (await muck.get(f"/v1/trucks?limit=1&cursor={listed['next_cursor']}", scopes=READER)).json()
    assert [t["plate"] for t in listed["items"] + following["items"]] == [PLATE, "粤A00002D"]
    assert (await muck.get("/v1/trucks/粤A99999D", scopes=READER)).json()["code"] == "muck.not_found"


async def test_a_drivers_personal_data_is_masked_without_pii_read(muck: Muck) -> None:
    await muck.register_fleet(1)
    driver = {
        "company_code": "GZJY",
        "name": "陈大文",
        "phone": "13912345678",
        "id_number": "44010619800101123X",
        "licence_number": "JZ-1",
    }
    response = await muck.post("/v1/drivers", driver)
    assert response.status_code == 201, response.text
    masked = (await muck.get("/v1/drivers", scopes=READER)).json()["items"][0]
    assert masked["name"] != "陈大文"
    assert "12345678" not in masked["phone"]
    assert "19800101" not in masked["id_number"]
    revealed = (await muck.get("/v1/drivers", scopes=(*READER, "pii:read"))).json()["items"][0]
    assert (revealed["name"], revealed["phone"]) == ("陈大文", "13912345678")


async def test_a_site_with_a_self_crossing_boundary_is_refused_and_a_district_sees_its_own(
    muck: Muck,
) -> None:
    bowtie = [[113.0, 23.0], [113.01, 23.01], [113.01, 23.0], [113.0, 23.01]]
    response = await muck.post(
        "/v1/sites/import",
        {
            "sites": [
                site(),
                site("HP-DS-1", "disposal", district_code="440112"),
                site("BAD", boundary=bowtie),
            ]
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2
    assert [r["key"] for r in response.json()["refused"]] == ["BAD"]
    tianhe = (await muck.get("/v1/sites", scopes=READER, district=TIANHE)).json()["items"]
    assert [s["code"] for s in tianhe] == ["TH-CS-1"]
    other = await muck.get("/v1/sites/HP-DS-1", scopes=READER, district=TIANHE)
    assert other.status_code == 403
    assert other.json()["code"] == "auth.other_district"


async def test_bad_register_input_is_422_problem_and_nothing_is_written(muck: Muck) -> None:
    bodies: list[dict[str, Any]] = [
        {"trucks": [truck(1, terminal_phone="12345")]},
        {"trucks": [truck(1, capacity_m3=-1)]},
        {"trucks": []},
    ]
    for body in bodies:
        response = await muck.post("/v1/trucks/import", body)
        assert response.status_code == 422, body
        assert response.headers["content-type"].startswith("application/problem+json")
    area = {"code": "C", "name": "Central", "boundary": square(113.3, 23.1, 0.1), "windows": ["20:00-20:00"]}
    assert (await muck.post("/v1/areas/import", {"areas": [area]})).status_code == 422
    assert (await muck.get("/v1/trucks", scopes=READER)).json()["items"] == []


# -- positions over HTTP ---------------------------------------------------------------------------


async def test_relayed_positions_are_stored_and_each_bad_one_refused_alone(muck: Muck) -> None:
    await muck.register_fleet(2)
    batch = [
        report(seconds_ago=60),
        report(seconds_ago=30),
        report("粤A00002D", seconds_ago=10),
        report("粤B99999D"),  # not in the register
        report(lon=10.0),  # not in China
        report(seconds_ago=30 * 86400),  # older than positions are accepted
    ]
    response = await muck.post("/v1/positions", {"positions": batch}, scopes=PLATFORM)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["received"], result["stored"]) == (6, 3)
    assert [(r["index"], r["code"]) for r in result["refused"]] == [
        (3, "muck.unknown_truck"),
        (4, "fleet.position_out_of_range"),
        (5, "fleet.position_too_old"),
    ]
    rows = await stored_positions(muck)
    assert [(row["plate"], row["source"], row["load"]) for row in rows] == [
        (PLATE, "http", 3),
        (PLATE, "http", 3),
        ("粤A00002D", "http", 3),
    ]
    latest = (await muck.get(f"/v1/trucks/{PLATE}/position", scopes=READER)).json()
    assert latest["at"] == datetime.fromisoformat(batch[1]["at"]).isoformat().replace("+00:00", "Z")
    assert latest["load"] == "full"


async def test_a_track_is_in_time_order_one_point_per_time_and_simplified_on_request(muck: Muck) -> None:
    await muck.register_fleet(1)
    # A straight drive east, every 30 s, and the same report sent twice (its acknowledgement was lost).
    drive = [report(seconds_ago=30 * (20 - step), lon=round(113.30 + 0.001 * step, 6)) for step in range(20)]
    await muck.post("/v1/positions", {"positions": drive}, scopes=PLATFORM)
    await muck.post("/v1/positions", {"positions": drive[5:6]}, scopes=PLATFORM)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    params = {"since": since, "until": until}
    whole = await muck.client.get(f"/v1/trucks/{PLATE}/track", params=params, headers=muck.as_(READER))
    assert whole.status_code == 200, whole.text
    points = whole.json()["points"]
    assert len(points) == 20
    assert [p["location"]["coordinates"][0] for p in points] == [
        round(113.30 + 0.001 * s, 6) for s in range(20)
    ]
    simple = await muck.client.get(
        f"/v1/trucks/{PLATE}/track", params={**params, "simplify_m": 10}, headers=muck.as_(READER)
    )
    assert simple.json()["simplified_from"] == 20
    assert len(simple.json()["points"]) == 2  # a straight line: its two ends
    too_long = await muck.client.get(
        f"/v1/trucks/{PLATE}/track",
        params={"since": "2026-01-01T00:00:00+08:00", "until": "2026-01-03T00:00:00+08:00"},
        headers=muck.as_(READER),
    )
    assert too_long.status_code == 422
    assert too_long.json()["code"] == "muck.invalid_period"


async def test_bad_positions_are_422_problem_and_nothing_is_stored(muck: Muck) -> None:
    await muck.register_fleet(1)
    naive = report()
    naive["at"] = "2026-12-02T10:00:00"
    for item in (naive, report(speed_kmh=-3), report(direction=360), {**report(), "extra": 1}):
        response = await muck.post("/v1/positions", {"positions": [item]}, scopes=PLATFORM)
        assert response.status_code == 422, item
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await stored_positions(muck) == []


async def test_a_district_bound_reader_is_refused_the_fleets_positions(muck: Muck) -> None:
    response = await muck.get("/v1/positions/latest", scopes=READER, district=TIANHE)
    assert response.status_code == 403
    assert response.json()["code"] == "auth.other_district"


# -- positions over JT/T 808 -----------------------------------------------------------------------


def fix(lon_raw: int, seconds_ago: int = 0) -> Position:
    at = (datetime.now(UTC) - timedelta(seconds=seconds_ago)).astimezone(BEIJING).replace(microsecond=0)
    return Position(
        alarm=0,
        status=0b11 | (0b01 << 8),  # ACC on, fixed, half loaded
        lat_raw=23_130_000,
        lon_raw=lon_raw,
        altitude=15,
        speed_raw=405,
        direction=180,
        time=at,
        extras={0x01: (98765).to_bytes(4, "big")},
    )


async def log_in(terminal: Terminal) -> str:
    await terminal.send(
        REGISTER, Registration(44, 100, "CGRID", "MT-1", "T1", 2, terminal_plate(terminal)).encode(2013)
    )
    frame = await terminal.reply()
    answer = RegistrationReply.decode(frame.body, frame.header)
    assert answer.result == REGISTERED, answer
    assert answer.auth_code is not None
    await terminal.send(AUTHENTICATE, Authentication(answer.auth_code).encode(2013))
    assert (await terminal.general_reply()).result == OK
    return answer.auth_code


def terminal_plate(terminal: Terminal) -> str:
    return f"粤A{int(terminal.phone[-5:]):05d}D"


async def test_a_terminal_registers_authenticates_and_reports_over_jt808(muck: Muck) -> None:
    await muck.register_fleet(2)
    terminal = await Terminal.connect(muck.listener, "013800000001")
    await log_in(terminal)
    await terminal.send(POSITION, fix(113_361_000).encode(2013))
    assert (await terminal.general_reply()).result == OK
    batch = PositionBatch(kind=1, positions=(fix(113_350_000, 600), fix(113_355_000, 570)))
    await terminal.send(POSITION_BATCH, batch.encode(2013))
    assert (await terminal.general_reply()).result == OK
    await terminal.close()
    rows = await stored_positions(muck)
    assert [(r["lon"], r["source"], r["blind_area"], r["load"], r["mileage_km"]) for r in rows] == [
        (113.35, "jt808", True, 1, 9876.5),
        (113.355, "jt808", True, 1, 9876.5),
        (113.361, "jt808", False, 1, 9876.5),
    ]
    latest = (await muck.get(f"/v1/trucks/{PLATE}/position", scopes=READER)).json()
    assert latest["location"]["coordinates"] == [113.361, 23.13]
    assert latest["speed_kmh"] == 40.5


async def test_an_unregistered_terminal_is_refused_and_stores_nothing(muck: Muck) -> None:
    await muck.register_fleet(1)
    terminal = await Terminal.connect(muck.listener, "013899999999")
    await terminal.send(REGISTER, Registration(44, 100, "X", "Y", "Z", 2, "粤B12345").encode(2013))
    frame = await terminal.reply()
    assert RegistrationReply.decode(frame.body, frame.header).result == TERMINAL_UNKNOWN
    await terminal.send(POSITION, fix(113_361_000).encode(2013))
    assert (await terminal.general_reply()).result == FAILURE
    await terminal.close()
    assert await stored_positions(muck) == []


async def test_a_terminal_authenticates_on_another_replica_and_every_replica_knows_its_latest_position(
    muck_factory,
) -> None:
    async with muck_factory() as first, muck_factory() as second:
        await first.register_fleet(1)
        terminal = await Terminal.connect(first.listener, "013800000001")
        code = await log_in(terminal)
        await terminal.close()
        # Reconnected to the other replica, the terminal authenticates with the code it was given.
        again = await Terminal.connect(second.listener, "013800000001")
        await again.send(AUTHENTICATE, Authentication(code).encode(2013))
        assert (await again.general_reply()).result == OK
        await again.send(POSITION, fix(113_370_000).encode(2013))
        assert (await again.general_reply()).result == OK
        await again.close()

        async def first_knows() -> bool:
            answer = await first.get(f"/v1/trucks/{PLATE}/position", scopes=READER)
            return answer.status_code == 200 and bool(answer.json()["location"]["coordinates"][0] == 113.37)

        await wait_until(first_knows, timeout=10)
        # A code guessed is refused.
        stranger = await Terminal.connect(first.listener, "013800000001")
        await stranger.send(AUTHENTICATE, Authentication("0000000000000000").encode(2013))
        assert (await stranger.general_reply()).result == FAILURE
        await stranger.close()


async def test_a_restarted_replica_loads_the_fleets_latest_positions_from_the_store(muck_factory) -> None:
    async with muck_factory() as first:
        await first.register_fleet(2)
        await first.post(
            "/v1/positions", {"positions": [report(seconds_ago=20), report("粤A00002D")]}, scopes=PLATFORM
        )
    async with muck_factory() as restarted:
        page = (await restarted.get("/v1/positions/latest", scopes=READER)).json()
    assert [item["plate"] for item in page["items"]] == [PLATE, "粤A00002D"]


async def test_a_registered_terminal_cannot_be_registered_again_until_the_register_releases_it(
    muck: Muck,
) -> None:
    await muck.register_fleet(1)
    genuine = await Terminal.connect(muck.listener, "013800000001")
    code = await log_in(genuine)
    await genuine.close()
    # Someone who knows the truck's number and plate tries to register it from another device.
    impostor = await Terminal.connect(muck.listener, "013800000001")
    await impostor.send(REGISTER, Registration(44, 100, "X", "Y", "Z", 2, PLATE).encode(2013))
    frame = await impostor.reply()
    refused = RegistrationReply.decode(frame.body, frame.header)
    assert (refused.result, refused.auth_code) == (TERMINAL_TAKEN, None)
    await impostor.close()
    # The genuine terminal still authenticates with its code.
    again = await Terminal.connect(muck.listener, "013800000001")
    await again.send(AUTHENTICATE, Authentication(code).encode(2013))
    assert (await again.general_reply()).result == OK
    await again.close()
    # Its unit replaced: the register releases the number, the new unit registers, the old code is void.
    released = await muck.post(f"/v1/trucks/{PLATE}/terminal/release", {})
    assert released.status_code == 200, released.text
    assert released.json()["registered_at"] is None
    replaced = await Terminal.connect(muck.listener, "013800000001")
    await log_in(replaced)
    await replaced.close()
    old = await Terminal.connect(muck.listener, "013800000001")
    await old.send(AUTHENTICATE, Authentication(code).encode(2013))
    assert (await old.general_reply()).result == FAILURE
    await old.close()


async def test_a_terminals_full_range_values_are_stored_and_an_impossible_one_is_dropped_alone(
    muck: Muck,
) -> None:
    await muck.register_fleet(1)
    terminal = await Terminal.connect(muck.listener, "013800000001")
    await log_in(terminal)
    alarmed = Position(
        alarm=0x8000_0001,  # bit 31 (illegal door opening) and the emergency button
        status=0xC000_0303,
        lat_raw=23_130_000,
        lon_raw=113_361_000,
        altitude=0xFFFF,  # "not known", as some terminals send it
        speed_raw=120,
        direction=359,
        time=fix(0).time,
        extras={},
    )
    impossible = Position(0, 0b11, 23_130_000, 113_362_000, 10, 120, 400, fix(30).time, {})
    await terminal.send(POSITION_BATCH, PositionBatch(kind=0, positions=(alarmed, impossible)).encode(2013))
    assert (await terminal.general_reply()).result == OK
    await terminal.close()
    (stored,) = await stored_positions(muck)
    assert (stored["alarm"], stored["status"], stored["altitude_m"], stored["direction"]) == (
        0x8000_0001,
        0xC000_0303,
        None,
        359,
    )


async def test_the_same_report_twice_in_one_upload_is_one_row(muck: Muck) -> None:
    await muck.register_fleet(1)
    twice = report(seconds_ago=30)
    response = await muck.post("/v1/positions", {"positions": [twice, twice, report()]}, scopes=PLATFORM)
    assert response.status_code == 200, response.text
    assert response.json()["refused"] == []
    assert len(await stored_positions(muck)) == 2


async def test_a_latest_positions_message_no_replica_would_send_changes_nothing() -> None:
    from services.muck.positions.latest import Latest, LatestPositions

    latest = LatestPositions()
    now = datetime.now(UTC)
    good = Latest(PLATE, now, 113.36, 23.13, 30.0, 90, 3, now)
    assert latest.apply_message(LatestPositions.encode([good])) == 1
    stamp = now.timestamp()
    for wire in (
        [PLATE, stamp + 86400, 113.36, 23.13, 30.0, 90, 3, stamp],  # a day ahead
        [PLATE, stamp, float("nan"), 23.13, 30.0, 90, 3, stamp],
        [PLATE, stamp, 500.0, 23.13, 30.0, 90, 3, stamp],
        ["x" * 40, stamp, 113.36, 23.13, 30.0, 90, 3, stamp],
        [PLATE, "2026-12-02T10:00:00", 113.36, 23.13, 30.0, 90, 3, stamp],
        [PLATE, 1e300, 113.36, 23.13, 30.0, 90, 3, stamp],
    ):
        assert latest.apply_message(json.dumps([wire]).encode()) == -1, wire
    assert latest.get(PLATE) == good
    assert latest.apply_message(b"not json") == -1
    assert latest.apply_message(b"{}") == -1


async def test_a_bbox_upside_down_and_a_period_out_of_range_are_422(muck: Muck) -> None:
    upside_down = await muck.get("/v1/positions/latest?bbox=114,23,113,24", scopes=READER)
    assert upside_down.status_code == 422
    assert upside_down.json()["code"] == "muck.invalid_bbox"
    ancient = await muck.client.get(
        f"/v1/trucks/{PLATE}/track",
        params={"since": "0001-01-01T00:00:00+14:00", "until": "0001-01-01T12:00:00+14:00"},
        headers=muck.as_(READER),
    )
    assert ancient.status_code == 422
    assert ancient.json()["code"] == "muck.invalid_period"


async def test_a_platform_bound_to_a_company_relays_that_companys_trucks_only(muck: Muck) -> None:
    await muck.register_fleet(1)
    other = {"code": "OTHER", "name": "Other Transport", "licence_number": "ZT-2"}
    await muck.post("/v1/companies/import", {"companies": [other]})
    await muck.post("/v1/trucks/import", {"trucks": [truck(7, company_code="OTHER")]})
    batch = [report(), report("粤A00007D")]
    response = await muck.post("/v1/positions", {"positions": batch}, scopes=PLATFORM, unit="GZJY")
    assert response.status_code == 200, response.text
    assert [(r["index"], r["code"]) for r in response.json()["refused"]] == [(1, "muck.unknown_truck")]
    assert [row["plate"] for row in await stored_positions(muck)] == [PLATE]


async def test_a_registration_naming_another_plate_or_none_is_refused(muck: Muck) -> None:
    await muck.register_fleet(1)
    for plate in ("粤B99999D", ""):
        terminal = await Terminal.connect(muck.listener, "013800000001")
        await terminal.send(REGISTER, Registration(44, 100, "X", "Y", "Z", 0, plate).encode(2013))
        frame = await terminal.reply()
        assert RegistrationReply.decode(frame.body, frame.header).result == VEHICLE_UNKNOWN
        await terminal.close()
    # The truck's own terminal still registers: nothing was given away.
    genuine = await Terminal.connect(muck.listener, "013800000001")
    await log_in(genuine)
    await genuine.close()


async def test_with_the_store_unreachable_a_platform_gets_503_and_a_terminal_failure(muck: Muck) -> None:
    from citygrid.db import create_engine, create_sessionmaker
    from citygrid.devstack.servers import free_port

    await muck.register_fleet(1)
    terminal = await Terminal.connect(muck.listener, "013800000001")
    await log_in(terminal)
    # The writer's database goes away (a port nothing listens on): a real refused connection.
    settings = muck.runtime.settings.model_copy(
        update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/gone"}
    )
    gone = create_engine(settings)
    writer = muck.app.state.positions.writer
    kept = writer.sessions
    writer.sessions = lambda: create_sessionmaker(gone)
    try:
        response = await muck.post("/v1/positions", {"positions": [report()]}, scopes=PLATFORM)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "fleet.store_unavailable"
        assert response.headers["retry-after"] == "5"
        await terminal.send(POSITION, fix(113_361_000).encode(2013))
        assert (await terminal.general_reply()).result == FAILURE
    finally:
        writer.sessions = kept
        await gone.dispose()
    # The store back: the terminal sends its report again and it is taken.
    await terminal.send(POSITION, fix(113_361_000).encode(2013))
    assert (await terminal.general_reply()).result == OK
    await terminal.close()
    assert len(await stored_positions(muck)) == 1


async def test_a_released_terminal_is_disconnected_on_every_replica_by_the_sweep(muck_factory) -> None:
    async with muck_factory() as first, muck_factory() as second:
        await first.register_fleet(2)
        released = await Terminal.connect(second.listener, "013800000001")
        await log_in(released)
        kept = await Terminal.connect(second.listener, "013800000002")
        await log_in(kept)
        # The register (through the first replica) releases the first truck's terminal.
        answer = await first.post(f"/v1/trucks/{PLATE}/terminal/release", {})
        assert answer.status_code == 200, answer.text

        terminals = second.listener.handler
        assert isinstance(terminals, RegisteredTerminals)
        assert await terminals.sweep(second.listener) == 1
        async with asyncio.timeout(5):
            assert await released.reader.read(1) == b""
        await kept.send(POSITION, fix(113_370_000).encode(2013))
        assert (await kept.general_reply()).result == OK
        assert await terminals.sweep(second.listener) == 0
        await kept.close()


async def test_a_truck_given_another_terminal_voids_the_old_ones_code(muck: Muck) -> None:
    await muck.register_fleet(1)
    first = await Terminal.connect(muck.listener, "013800000001")
    code = await log_in(first)
    await first.close()
    moved = await muck.post("/v1/trucks/import", {"trucks": [truck(1, terminal_phone="013800000099")]})
    assert moved.status_code == 200, moved.text
    new = await Terminal.connect(muck.listener, "013800000099")
    await new.send(AUTHENTICATE, Authentication(code).encode(2013))
    assert (await new.general_reply()).result == FAILURE
    await new.send(REGISTER, Registration(44, 100, "CGRID", "MT-1", "T1", 2, PLATE).encode(2013))
    frame = await new.reply()
    assert RegistrationReply.decode(frame.body, frame.header).result == REGISTERED
    await new.close()

"""The sanitation fleet's positions on real PostgreSQL: over JT/T 808 from the vehicles' own
terminals and over HTTP from vendors' platforms, through the kit's fleet intake (the same code as
the muck service's), into the waste database's own positions table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from citygrid.jt808.codec import (
    AUTHENTICATE,
    BEIJING,
    FAILURE,
    OK,
    POSITION,
    REGISTER,
    REGISTERED,
    TERMINAL_TAKEN,
    TERMINAL_UNKNOWN,
    Authentication,
    Position,
    Registration,
    RegistrationReply,
)
from citygrid.settings import to_libpq_url
from services.waste.tests.conftest import BOX, HUANGPU, READER, Waste
from tests.test_jt808_server import Terminal

TRUCK = "粤A1001F"
PHONE = "013900001001"  # the truck's terminal, as its 2013 header carries it


def vehicle(plate: str = TRUCK, phone: str = PHONE, **changes: Any) -> dict[str, Any]:
    return {
        "plate": plate,
        "kind": "collection",
        "stream": "food",
        "company": "Huangpu Sanitation",
        "district_code": HUANGPU,
        "terminal_phone": phone,
    } | changes


async def register(waste: Waste, *vehicles: dict[str, Any]) -> None:
    response = await waste.post("/v1/vehicles/import", {"vehicles": list(vehicles or (vehicle(),))})
    assert response.status_code == 200, response.text
    assert response.json()["refused"] == [], response.text


def listener(waste: Waste) -> Any:
    return waste.app.state.fleet.listener


def relayed(plate: str = TRUCK, seconds_ago: int = 0, lon: float = 113.48, **changes: Any) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return {
        "plate": plate,
        "at": at.isoformat(),
        "location": {"type": "Point", "coordinates": [lon, 23.11]},
        "speed_kmh": 32.5,
        "direction": 90,
    } | changes


def fix(lon_raw: int, seconds_ago: int = 0) -> Position:
    at = (datetime.now(UTC) - timedelta(seconds=seconds_ago)).astimezone(BEIJING).replace(microsecond=0)
    return Position(
        alarm=0,
        status=0b11,  # ACC on, fixed
        lat_raw=23_110_000,
        lon_raw=lon_raw,
        altitude=15,
        speed_raw=300,
        direction=90,
        time=at,
        extras={},
    )


async def log_in(terminal: Terminal, plate: str = TRUCK) -> str:
    await terminal.send(REGISTER, Registration(44, 100, "CGRID", "ST-1", "T1", 2, plate).encode(2013))
    frame = await terminal.reply()
    answer = RegistrationReply.decode(frame.body, frame.header)
    assert answer.result == REGISTERED, answer
    assert answer.auth_code is not None
    await terminal.send(AUTHENTICATE, Authentication(answer.auth_code).encode(2013))
    assert (await terminal.general_reply()).result == OK
    return answer.auth_code


async def stored(database: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(to_libpq_url(database))
    try:
        return list(
            await connection.fetch("SELECT plate, lon, source, blind_area FROM positions ORDER BY at")
        )
    finally:
        await connection.close()


async def test_a_vehicles_terminal_registers_authenticates_and_its_positions_are_stored(
    waste: Waste, waste_database: str
) -> None:
    await register(waste)
    terminal = await Terminal.connect(listener(waste), PHONE)
    await log_in(terminal)
    await terminal.send(POSITION, fix(113_481_000).encode(2013))
    assert (await terminal.general_reply()).result == OK
    await terminal.close()
    assert [tuple(row) for row in await stored(waste_database)] == [(TRUCK, 113.481, "jt808", False)]
    shown = (await waste.get(f"/v1/vehicles/{TRUCK}")).json()
    assert shown["registered_at"] is not None


async def test_a_terminal_not_in_the_register_is_refused_and_stores_nothing(
    waste: Waste, waste_database: str
) -> None:
    await register(waste)
    stranger = await Terminal.connect(listener(waste), "013999999999")
    await stranger.send(REGISTER, Registration(44, 100, "X", "Y", "Z", 2, TRUCK).encode(2013))
    frame = await stranger.reply()
    assert RegistrationReply.decode(frame.body, frame.header).result == TERMINAL_UNKNOWN
    await stranger.send(POSITION, fix(113_481_000).encode(2013))
    assert (await stranger.general_reply()).result == FAILURE
    await stranger.close()
    assert await stored(waste_database) == []


async def test_a_released_terminal_may_register_again_and_its_open_connection_is_closed(waste: Waste) -> None:
    await register(waste)
    old = await Terminal.connect(listener(waste), PHONE)
    old_code = await log_in(old)
    impostor = await Terminal.connect(listener(waste), PHONE)
    await impostor.send(REGISTER, Registration(44, 100, "X", "Y", "Z", 2, TRUCK).encode(2013))
    frame = await impostor.reply()
    assert RegistrationReply.decode(frame.body, frame.header).result == TERMINAL_TAKEN
    await impostor.close()

    released = await waste.post(f"/v1/vehicles/{TRUCK}/terminal/release", None)
    assert released.status_code == 200, released.text
    assert released.json()["registered_at"] is None
    assert await waste.app.state.fleet.terminals.sweep(listener(waste)) == 1
    async with asyncio.timeout(5):
        assert await old.reader.read(1) == b""
    replaced = await Terminal.connect(listener(waste), PHONE)
    assert await log_in(replaced) != old_code
    await replaced.close()


async def test_a_vehicle_given_another_terminal_voids_the_old_ones_code(waste: Waste) -> None:
    await register(waste)
    first = await Terminal.connect(listener(waste), PHONE)
    code = await log_in(first)
    await first.close()
    await register(waste, vehicle(phone="013900002002"))
    new = await Terminal.connect(listener(waste), "013900002002")
    await new.send(AUTHENTICATE, Authentication(code).encode(2013))
    assert (await new.general_reply()).result == FAILURE  # the old unit's code is not the new one's
    await log_in(new)  # the new unit registers at once, with no release
    await new.close()


async def test_relayed_positions_are_stored_and_each_bad_one_refused_alone(
    waste: Waste, waste_database: str
) -> None:
    await register(waste, vehicle(), vehicle("粤A7007T", "013900007007", district_code="440106"))
    batch = [
        relayed(seconds_ago=30),
        relayed("粤Z0000Z"),  # not in the register
        relayed(lon=0.0),  # not a place in China
        relayed(seconds_ago=8 * 24 * 3600),  # older than the partitions kept for late uploads
        relayed("粤A7007T"),  # another district's vehicle, for a district-bound platform
    ]
    response = await waste.post("/v1/positions", {"positions": batch}, scopes=BOX, district=HUANGPU)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["received"], answer["stored"]) == (5, 1)
    assert [(r["index"], r["code"]) for r in answer["refused"]] == [
        (1, "waste.unknown_vehicle"),
        (2, "fleet.position_out_of_range"),
        (3, "fleet.position_too_old"),
        (4, "waste.unknown_vehicle"),
    ]
    assert [tuple(row) for row in await stored(waste_database)] == [(TRUCK, 113.48, "http", False)]


async def test_a_reader_may_not_relay_positions_and_a_bad_batch_is_422(waste: Waste) -> None:
    await register(waste)
    forbidden = await waste.post("/v1/positions", {"positions": [relayed()]}, scopes=READER)
    assert forbidden.status_code == 403, forbidden.text
    naive = relayed() | {"at": "2026-12-03T08:00:00"}
    refused = await waste.post("/v1/positions", {"positions": [naive]}, scopes=BOX)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")

"""The waste service's collection chain over a whole day of the fleet, each figure beside a baseline
from the same run.

``python -m bench.waste`` (defaults a tenth of the city; the city's fleet is ``--vehicles 4000
--cleaning 1800 --points 4000 --collection-points 1000``):

- **register**: drop-off points with their bins (RFID tags), collection points, collection vehicles
  of every stream, cleaning vehicles, 24 facilities with weighbridges and a route per vehicle,
  through the service's imports (batches of up to 1,000), beside a raw COPY of the same rows into a
  second database migrated the same way;
- **intake**: a day of chain records generated from ``random.Random(seed)`` (per collection vehicle
  a departure, about three trips of about fifteen lifts of its stream's bins at its route's points,
  each trip's arrival at a facility and its weighbridge record, the return to the depot; per
  cleaning vehicle two loads weighed; a small share of violations: a bin of another stream, a net
  30 % off the lifts, a trip back at the depot loaded, a long stop of a loaded vehicle) posted to
  ``/v1/pickups``, ``/v1/weighings`` and ``/v1/movements`` by a few concurrent clients, rows/s and
  the service's CPU per row, beside a raw COPY of the very same rows into the same tables;
- **round**: the service started again with its round due every second, timed until it has assembled
  and checked every vehicle (no note left in ``chain_dirty_vehicles``), vehicles/s and trips/s
  beside the domain's own ``assemble_trips`` + ``check_trips`` over the same records in one
  process, and the violations found by kind beside those generated;
- **figures**: a year of weighings (and 92 days of trips and violations, for the points' rates)
  copied in, then tonnage, rates, facility intake, coverage and points' rates over the longest
  period each takes (p50/p99 over ``--calls`` calls), each beside the same aggregate as one
  hand-written SQL query run with asyncpg, and whether both answered the same;
- **memory**: the service's resident set at the end, beside the same process idle at its start.

Vehicles' positions are not part of it: the service has no position intake yet (movements come
from the platforms). Missed collections are not judged in the run (the grace is set to its 7-day
maximum): the routes are registered at the start of the run, and today's windows have no lifts.
Fixtures, not timed: the routes' schedules backdated a year (so the day's windows count in the
coverage), and the intake replica's lease on the round ended before the round replica starts (a
replica that stops gives it back; one killed keeps it 60 s). Timings are for comparison within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import asyncpg
import httpx

from bench.gas import rss_mib
from bench.hotpath import cpu_seconds, process, wait_healthy
from bench.muck import start_sampler, stop_sampler
from bench.stack import percentile
from citygrid.auth import PRINCIPAL_HEADER, Principal, generate_keypair, sign_principal
from citygrid.clock import CITY_TIMEZONE
from citygrid.devstack.servers import create_databases, database_url, free_port, servers_for
from citygrid.devstack.stack import dev_identities
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess
from citygrid.settings import to_libpq_url
from contract.common import GUANGZHOU_DISTRICTS

DB, RAW_DB = "bench_waste", "bench_waste_raw"
PRINCIPAL = Principal(
    subject="bench-platform",
    kind="service",
    name="bench-platform",
    scopes=frozenset({"waste:read", "waste:write", "waste:ingest"}),
)
DISTRICTS = tuple(GUANGZHOU_DISTRICTS)
STREAMS = ("food", "recyclable", "hazardous", "other")
# A point's bins of each stream, and what one weighs when lifted (kg).
BINS = {"other": 3, "food": 2, "recyclable": 2, "hazardous": 1}
BIN_KG = {"other": (50.0, 150.0), "food": (50.0, 130.0), "recyclable": (20.0, 60.0), "hazardous": (5.0, 25.0)}
# The collection fleet, 20 vehicles at a time: 9 of other waste, 6 food, 4 recyclable, 1 hazardous.
FLEET_ORDER = ("other",) * 9 + ("food",) * 6 + ("recyclable",) * 4 + ("hazardous",)
# The city's 24 end facilities and transfer stations: kind, streams accepted, how many.
FACILITY_KINDS = (
    ("incineration", ("other", "hazardous"), 6),
    ("landfill", ("other",), 3),
    ("food_waste_treatment", ("food",), 6),
    ("recycling", ("recyclable",), 4),
    ("transfer_station", ("other", "recyclable"), 5),
)
PICKUPS_PER_TRIP = 15
COLLECTION_WINDOW, CLEANING_WINDOW = "04:00-14:00", "06:00-16:00"
# The documented checks (docs/waste.md), restated to say what the generated day should raise.
WEIGHT_TOLERANCE, WEIGHT_FLOOR_KG = 0.10, 200.0
STOP_LIMIT = timedelta(minutes=10)
KINDS = (
    "mixed_load",
    "weight_mismatch",
    "trip_not_unloaded",
    "unloaded_at_unregistered_place",
    "missed_collection",
)
COPY_CHUNK = 5_000
NAMESPACE = uuid.UUID("0b7a6c1e-5d3f-4e2a-9c8b-7f6e5d4c3b2a")


class PickupRow(NamedTuple):
    """A lift, in the order of ``pickups``' columns the intake writes."""

    plate: str
    at: datetime
    rfid: str
    point_code: str
    stream: str
    weight_kg: float

    def item(self) -> dict[str, Any]:
        return {
            "plate": self.plate,
            "point_code": self.point_code,
            "rfid": self.rfid,
            "weight_kg": self.weight_kg,
            "at": self.at.isoformat(),
        }


class WeighingRow(NamedTuple):
    plate: str
    at: datetime
    facility_code: str
    weighbridge: str
    gross_kg: float
    tare_kg: float
    net_kg: float
    stream: str
    district_code: str

    def item(self) -> dict[str, Any]:
        return {
            "facility_code": self.facility_code,
            "weighbridge": self.weighbridge,
            "plate": self.plate,
            "gross_kg": self.gross_kg,
            "tare_kg": self.tare_kg,
            "at": self.at.isoformat(),
        }


class MovementRow(NamedTuple):
    plate: str
    at: datetime
    kind: str
    place: str
    ended_at: datetime | None
    lon: float | None
    lat: float | None
    source: str

    def item(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind, "plate": self.plate, "at": self.at.isoformat()}
        if self.kind in ("departed_depot", "returned_to_depot"):
            body["depot"] = self.place
        elif self.kind == "arrived_at_facility":
            body["facility_code"] = self.place
        else:
            body["ended_at"] = self.ended_at.isoformat() if self.ended_at is not None else None
            body["location"] = {"type": "Point", "coordinates": [self.lon, self.lat]}
        return body


PICKUP_COLUMNS = list(PickupRow._fields)
WEIGHING_COLUMNS = list(WeighingRow._fields)
MOVEMENT_COLUMNS = list(MovementRow._fields)


@dataclass
class Register:
    """The register as the imports take it (JSON items), and what the generator needs of it."""

    points: list[dict[str, Any]] = field(default_factory=list)
    collection_points: list[dict[str, Any]] = field(default_factory=list)
    vehicles: list[dict[str, Any]] = field(default_factory=list)
    facilities: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bins(self) -> int:
        return sum(len(point["bins"]) for point in self.points)

    @property
    def records(self) -> int:
        return sum(
            len(kind)
            for kind in (self.points, self.collection_points, self.vehicles, self.facilities, self.routes)
        )


@dataclass
class Day:
    """A day of the fleet's records and what its checks should find."""

    day: date
    register: Register
    pickups: list[PickupRow] = field(default_factory=list)
    weighings: list[WeighingRow] = field(default_factory=list)
    movements: list[MovementRow] = field(default_factory=list)
    # (kind, plate) → how many violations the documented checks raise on these records.
    violations: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Trips by how they end.
    trips: Counter[str] = field(default_factory=Counter)

    @property
    def rows(self) -> int:
        return len(self.pickups) + len(self.weighings) + len(self.movements)


# -- the generated day ----------------------------------------------------------------------------


def collection_plate(n: int) -> str:
    return f"粤AC{n:05d}"


def cleaning_plate(n: int) -> str:
    return f"粤AS{n:05d}"


def _lon_lat(chance: random.Random) -> tuple[float, float]:
    return round(113.20 + chance.random() * 0.45, 6), round(22.95 + chance.random() * 0.40, 6)


def _location(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def build_register(
    chance: random.Random, points: int, collection_points: int, vehicles: int, cleaning: int
) -> Register:
    register = Register()
    number = 0
    for kind, streams, count in FACILITY_KINDS:
        for _ in range(count):
            number += 1
            register.facilities.append(
                {
                    "code": f"F{number:02d}",
                    "name": f"{kind.replace('_', ' ')} {number}",
                    "kind": kind,
                    "district_code": DISTRICTS[number % len(DISTRICTS)],
                    "location": _location(*_lon_lat(chance)),
                    "streams": list(streams),
                    "weighbridges": ["WB1", "WB2"],
                }
            )
    for n in range(points):
        code = f"DP{n:05d}"
        register.points.append(
            {
                "code": code,
                "name": f"drop-off point {n}",
                "community": f"community {n // 20}",
                "district_code": DISTRICTS[n % len(DISTRICTS)],
                "location": _location(*_lon_lat(chance)),
                "address": f"road {n // 10} no. {n % 10 + 1}",
                "opening_hours": ["07:00-09:00", "18:00-21:00"],
                "bins": [
                    {"rfid": f"{code}-{stream[:3].upper()}{k}", "stream": stream, "capacity_l": 240}
                    for stream in STREAMS
                    for k in range(BINS[stream])
                ],
                "contact_phone": f"138{n:08d}",
            }
        )
    for n in range(collection_points):
        register.collection_points.append(
            {
                "code": f"CP{n:05d}",
                "name": f"collection point {n}",
                "district_code": DISTRICTS[n % len(DISTRICTS)],
                "location": _location(*_lon_lat(chance)),
                "streams": list(STREAMS),
            }
        )
    for n in range(vehicles):
        register.vehicles.append(
            {
                "plate": collection_plate(n),
                "kind": "collection",
                "stream": FLEET_ORDER[n % len(FLEET_ORDER)],
                "company": f"sanitation company {n % 30}",
                "district_code": DISTRICTS[n % len(DISTRICTS)],
                "terminal_phone": f"0139{n:08d}",
            }
        )
    for n in range(cleaning):
        register.vehicles.append(
            {
                "plate": cleaning_plate(n),
                "kind": "cleaning",
                "stream": None,
                "company": f"sanitation company {n % 30}",
                "district_code": DISTRICTS[n % len(DISTRICTS)],
                "terminal_phone": f"0138{n:08d}",
            }
        )
    return register


def _accepting(register: Register, stream: str) -> list[dict[str, Any]]:
    return [facility for facility in register.facilities if stream in facility["streams"]]


def _weight_off(picked: float, net: float) -> bool:
    return abs(net - picked) > max(WEIGHT_TOLERANCE * net, WEIGHT_FLOOR_KG)


def generate(
    seed: int,
    day: date,
    *,
    points: int,
    collection_points: int,
    vehicles: int,
    cleaning: int,
    violation_share: float,
) -> Day:
    """The register and a day of its fleet's records, the same for the same seed and day."""
    chance = random.Random(seed)
    register = build_register(chance, points, collection_points, vehicles, cleaning)
    generated = Day(day=day, register=register)
    bins_of = {
        point["code"]: {
            stream: [b["rfid"] for b in point["bins"] if b["stream"] == stream] for stream in STREAMS
        }
        for point in register.points
    }
    codes = [point["code"] for point in register.points]
    collection = [v for v in register.vehicles if v["kind"] == "collection"]
    # Each violation kind on its own vehicles; the weight is judged on heavy loads (food, other),
    # whose trips weigh enough for 30 % to be past the 200 kg floor.
    share = max(1, round(violation_share * len(collection))) if violation_share > 0 else 0
    shuffled = [v["plate"] for v in collection]
    chance.shuffle(shuffled)
    mixed = set(shuffled[:share])
    stream_of = {v["plate"]: v["stream"] for v in collection}
    heavy = [p for p in shuffled[share:] if stream_of[p] in ("food", "other")]
    weight = set(heavy[:share])
    rest = [p for p in shuffled[share:] if p not in weight]
    not_unloaded, long_stop = set(rest[:share]), set(rest[share : 2 * share])
    start_of_day = datetime.combine(day, datetime.min.time(), tzinfo=CITY_TIMEZONE)

    def minutes(low: float, high: float) -> timedelta:
        return timedelta(seconds=round(chance.uniform(low, high) * 60))

    for vehicle in collection:
        plate, stream, district = vehicle["plate"], vehicle["stream"], vehicle["district_code"]
        facility = chance.choice(_accepting(register, stream))
        trips = chance.choices((2, 3, 4), weights=(1, 4, 1))[0]
        per_trip = max(1, round(PICKUPS_PER_TRIP / BINS[stream]) + chance.choice((-1, 0, 0, 1)))
        stops = chance.sample(codes, trips * per_trip)
        depot = f"DEPOT-{district}"
        register.routes.append(
            {
                "code": f"R{plate[-6:]}",
                "name": f"{stream} round of {plate}",
                "plate": plate,
                "district_code": district,
                "stream": stream,
                "days": [1, 2, 3, 4, 5, 6, 7],
                "time_window": COLLECTION_WINDOW,
                "stops": stops,
                "facility_code": facility["code"],
            }
        )
        at = start_of_day + timedelta(hours=4, minutes=30) + minutes(0, 60)
        generated.movements.append(
            MovementRow(plate, at, "departed_depot", depot, None, None, None, "platform")
        )
        at += minutes(10, 25)
        for trip in range(trips):
            lifts: list[PickupRow] = []
            served = stops[trip * per_trip : (trip + 1) * per_trip]
            for index, point in enumerate(served):
                at += minutes(2, 4)
                tags = list(bins_of[point][stream])
                if plate in mixed and trip == 0 and index == len(served) // 2:
                    foreign = next(s for s in STREAMS if s != stream)
                    tags.append(bins_of[point][foreign][0])
                    generated.violations["mixed_load", plate] += 1
                for tag in tags:
                    at += timedelta(seconds=chance.randint(30, 60))
                    tag_stream = next(s for s in STREAMS if tag in bins_of[point][s])
                    low, high = BIN_KG[tag_stream]
                    lifts.append(
                        PickupRow(plate, at, tag, point, tag_stream, round(chance.uniform(low, high), 1))
                    )
                if index == 1 and ((plate in long_stop and trip == 0) or chance.random() < 0.05):
                    # A stop outside every registered place after the vehicle is loaded: 25 minutes
                    # of a long-stop vehicle (a violation), 3 minutes of traffic otherwise.
                    lasted = timedelta(minutes=25 if plate in long_stop and trip == 0 else 3)
                    lon, lat = _lon_lat(chance)
                    stop_at = at + minutes(1, 2)
                    generated.movements.append(
                        MovementRow(plate, stop_at, "stopped", "", stop_at + lasted, lon, lat, "platform")
                    )
                    if lasted >= STOP_LIMIT:
                        generated.violations["unloaded_at_unregistered_place", plate] += 1
                    at = stop_at + lasted
            generated.pickups += lifts
            picked = sum(lift.weight_kg for lift in lifts)
            if plate in not_unloaded and trip == trips - 1:
                at += minutes(20, 40)
                generated.movements.append(
                    MovementRow(plate, at, "returned_to_depot", depot, None, None, None, "platform")
                )
                generated.violations["trip_not_unloaded", plate] += 1
                generated.trips["returned_to_depot"] += 1
                break
            at += minutes(20, 40)
            generated.movements.append(
                MovementRow(plate, at, "arrived_at_facility", facility["code"], None, None, None, "platform")
            )
            at += minutes(5, 12)
            net = round(
                picked * (1.3 if plate in weight and trip == 0 else 1 + chance.uniform(-0.04, 0.04)), 1
            )
            tare = round(chance.uniform(8_000, 12_000), 1)
            gross = round(tare + net, 1)
            generated.weighings.append(
                WeighingRow(
                    plate, at, facility["code"], chance.choice(facility["weighbridges"]),
                    gross, tare, gross - tare, stream, district,
                )
            )  # fmt: skip
            if _weight_off(picked, gross - tare):
                generated.violations["weight_mismatch", plate] += 1
            generated.trips["unloaded"] += 1
            at += minutes(15, 30)
        else:
            at += minutes(10, 30)
            generated.movements.append(
                MovementRow(plate, at, "returned_to_depot", depot, None, None, None, "platform")
            )
    for vehicle in register.vehicles:
        if vehicle["kind"] != "cleaning":
            continue
        plate, district = vehicle["plate"], vehicle["district_code"]
        facility = chance.choice(_accepting(register, "other"))
        depot = f"DEPOT-{district}"
        register.routes.append(
            {
                "code": f"S{plate[-6:]}",
                "name": f"street cleaning of {plate}",
                "plate": plate,
                "district_code": district,
                "stream": None,
                "days": [1, 2, 3, 4, 5, 6, 7],
                "time_window": CLEANING_WINDOW,
                "stops": chance.sample(codes, 3),
                "facility_code": facility["code"],
            }
        )
        at = start_of_day + timedelta(hours=6) + minutes(0, 90)
        generated.movements.append(
            MovementRow(plate, at, "departed_depot", depot, None, None, None, "platform")
        )
        # Two loads of sweepings: a trip each, without lifts (a sweeper has no RFID reader).
        for _ in range(2):
            at += minutes(120, 180)
            generated.movements.append(
                MovementRow(plate, at, "arrived_at_facility", facility["code"], None, None, None, "platform")
            )
            at += minutes(5, 12)
            tare = round(chance.uniform(6_000, 9_000), 1)
            gross = round(tare + chance.uniform(1_500, 4_000), 1)
            generated.weighings.append(
                WeighingRow(
                    plate, at, facility["code"], chance.choice(facility["weighbridges"]),
                    gross, tare, gross - tare, "other", district,
                )
            )  # fmt: skip
            generated.trips["unloaded"] += 1
        at += minutes(15, 30)
        generated.movements.append(
            MovementRow(plate, at, "returned_to_depot", depot, None, None, None, "platform")
        )
    # As the platforms and weighbridges send them: in the order they happened, the fleet mixed.
    generated.pickups.sort(key=lambda row: (row.at, row.plate))
    generated.weighings.sort(key=lambda row: (row.at, row.plate))
    generated.movements.sort(key=lambda row: (row.at, row.plate))
    return generated


# -- the service as its own process ---------------------------------------------------------------


def service_env(
    server_url: str, nats: NatsAccess, public_key: str, port: int, round_seconds: float
) -> dict[str, str]:
    from services.waste.events import NATS_IDENTITY

    user, password = nats.credentials(NATS_IDENTITY.user)
    return {
        **os.environ,
        "CITYGRID_ENVIRONMENT": "development",
        "CITYGRID_PORT": str(port),
        # The fleet's JT/T 808 listener, unused here, on a port of its own too.
        "CITYGRID_JT808_HOST": "127.0.0.1",
        "CITYGRID_JT808_PORT": str(free_port()),
        "CITYGRID_DATABASE_URL": database_url(server_url, DB),
        "CITYGRID_NATS_URL": nats.server_url,
        "CITYGRID_NATS_USER": user,
        "CITYGRID_NATS_PASSWORD": password,
        "CITYGRID_INTERNAL_TOKEN_PUBLIC_KEY": public_key,
        "CITYGRID_LOG_LEVEL": "WARNING",
        "CITYGRID_CHAIN_ROUND_SECONDS": str(round_seconds),
        # The routes are registered in the run and today's windows have no lifts: not judged.
        "CITYGRID_MISSED_COLLECTION_GRACE_MINUTES": str(7 * 24 * 60),
        "PYTHONUNBUFFERED": "1",
    }


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value from a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}(\{{([^}}]*)\}})? (\S+)$", re.MULTILINE)
    for match in pattern.finditer(text):
        found = ",".join(sorted(part for part in (match.group(2) or "").split(",") if part))
        if found == wanted:
            return float(match.group(3))
    return 0.0


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(to_libpq_url(url))


async def copy_rows(
    connection: asyncpg.Connection, table: str, rows: Sequence[tuple[Any, ...]], columns: list[str]
) -> None:
    for first in range(0, len(rows), COPY_CHUNK):
        await connection.copy_records_to_table(
            table, records=rows[first : first + COPY_CHUNK], columns=columns
        )


# -- register -------------------------------------------------------------------------------------


IMPORTS = (
    ("/v1/facilities/import", "facilities", 100),
    ("/v1/points/import", "points", 1000),
    ("/v1/collection-points/import", "collection_points", 1000),
    ("/v1/vehicles/import", "vehicles", 1000),
    ("/v1/routes/import", "routes", 1000),
)


async def register_through_service(
    service_url: str, headers: dict[str, str], register: Register
) -> dict[str, Any]:
    refused: Counter[str] = Counter()
    errors: list[str] = []
    created = 0
    async with httpx.AsyncClient(base_url=service_url, headers=headers, timeout=120) as client:
        started = time.perf_counter()
        for path, key, batch in IMPORTS:
            items: list[dict[str, Any]] = getattr(register, key)
            for first in range(0, len(items), batch):
                response = await client.post(path, json={key: items[first : first + batch]})
                if response.status_code != 200:
                    errors.append(f"{path} {response.status_code}: {response.text[:300]}")
                    continue
                answer = response.json()
                created += answer["created"]
                refused.update(refusal["code"] for refusal in answer["refused"])
        seconds = time.perf_counter() - started
    return {
        "records": register.records,
        "bins": register.bins,
        "created": created,
        "refused": dict(refused),
        "errors": errors,
        "seconds": seconds,
        "per_s": register.records / seconds,
    }


def register_rows(register: Register) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    """The register as the imports store it, table by table, in an order the foreign keys take."""
    return [
        (
            "facilities",
            ["code", "name", "kind", "district_code", "lon", "lat", "streams", "weighbridges"],
            [
                (f["code"], f["name"], f["kind"], f["district_code"], *f["location"]["coordinates"],
                 f["streams"], f["weighbridges"])
                for f in register.facilities
            ],
        ),
        (
            "drop_off_points",
            ["code", "name", "community", "district_code", "lon", "lat", "address", "opening_hours",
             "cameras", "contact_phone"],
            [
                (p["code"], p["name"], p["community"], p["district_code"], *p["location"]["coordinates"],
                 p["address"], json.dumps(p["opening_hours"]), [], p["contact_phone"])
                for p in register.points
            ],
        ),
        (
            "bins",
            ["rfid", "point_code", "stream", "capacity_l"],
            [(b["rfid"], p["code"], b["stream"], b["capacity_l"]) for p in register.points for b in p["bins"]],
        ),
        (
            "collection_points",
            ["code", "name", "district_code", "lon", "lat", "streams"],
            [
                (c["code"], c["name"], c["district_code"], *c["location"]["coordinates"], c["streams"])
                for c in register.collection_points
            ],
        ),
        (
            "vehicles",
            ["plate", "kind", "stream", "company", "district_code", "terminal_phone"],
            [
                (v["plate"], v["kind"], v["stream"], v["company"], v["district_code"], v["terminal_phone"].rjust(20, "0"))
                for v in register.vehicles
            ],
        ),
        (
            "routes",
            ["code", "name", "plate", "district_code", "stream", "days", "time_window", "stops", "facility_code"],
            [
                (r["code"], r["name"], r["plate"], r["district_code"], r["stream"], r["days"], r["time_window"],
                 r["stops"], r["facility_code"])
                for r in register.routes
            ],
        ),
    ]  # fmt: skip


async def register_raw(raw_url: str, register: Register) -> dict[str, Any]:
    tables = register_rows(register)
    connection = await connect(raw_url)
    try:
        started = time.perf_counter()
        for table, columns, rows in tables:
            await copy_rows(connection, table, rows, columns)
        seconds = time.perf_counter() - started
    finally:
        await connection.close()
    copied = sum(len(rows) for _, _, rows in tables)
    return {"rows": copied, "seconds": seconds, "per_s": register.records / seconds}


async def backdate_routes(url: str) -> None:
    """Fixture: the routes as if registered a year ago, so the generated day's windows are due (the
    coverage figure counts them)."""
    connection = await connect(url)
    try:
        await connection.execute("UPDATE routes SET schedule_changed_at = now() - interval '400 days'")
    finally:
        await connection.close()


# -- intake ---------------------------------------------------------------------------------------


INTAKES = (("pickups", "/v1/pickups"), ("weighings", "/v1/weighings"), ("movements", "/v1/movements"))


async def wait_for_first_round(url: str, timeout: float = 30.0) -> None:
    """The round runs once shortly after the start (nothing to do yet); the intake waits for it, so
    no round runs during the intake."""
    connection = await connect(url)
    try:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if await connection.fetchval("SELECT count(*) FROM chain_cursor"):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError("the chain round did not run")
    finally:
        await connection.close()


async def post_batches(
    service_url: str, headers: dict[str, str], path: str, key: str, items: list[dict[str, Any]],
    batch: int, senders: int, pid: int,
) -> dict[str, Any]:  # fmt: skip
    bodies = deque(
        json.dumps({key: items[first : first + batch]}).encode() for first in range(0, len(items), batch)
    )
    outcomes: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    errors: Counter[int] = Counter()
    samples: list[str] = []

    async def sender(session: aiohttp.ClientSession) -> None:
        while bodies:
            body = bodies.popleft()
            async with session.post(path, data=body) as response:
                text = await response.read()
            if response.status != 200:
                errors[response.status] += 1
                if len(samples) < 3:
                    samples.append(f"{path} {response.status}: {text[:300].decode(errors='replace')}")
                continue
            answer = json.loads(text)
            outcomes.update(
                stored=answer["stored"], duplicates=answer["duplicates"], refused=answer["refused"]
            )
            if answer["refused"]:
                refused.update(r["code"] for r in answer["results"] if r["outcome"] == "refused")

    connector = aiohttp.TCPConnector(limit=senders)
    async with aiohttp.ClientSession(
        base_url=service_url,
        headers={**headers, "content-type": "application/json"},
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=300),
    ) as session:
        cpu_before = cpu_seconds([pid])
        started = time.perf_counter()
        await asyncio.gather(*(sender(session) for _ in range(senders)))
        seconds = time.perf_counter() - started
        cpu = cpu_seconds([pid]) - cpu_before
    return {
        "rows": len(items),
        "seconds": seconds,
        "per_s": len(items) / seconds,
        "service_cpu_us_per_row": 1e6 * cpu / max(len(items), 1),
        "stored": outcomes["stored"],
        "duplicates": outcomes["duplicates"],
        "refused": dict(refused),
        "http_errors": {str(status): count for status, count in errors.items()},
        "error_samples": samples,
    }


async def ingest(
    service_url: str, headers: dict[str, str], day: Day, batch: int, senders: int, pid: int
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for kind, path in INTAKES:
        rows: list[PickupRow] | list[WeighingRow] | list[MovementRow] = getattr(day, kind)
        items = [row.item() for row in rows]
        figures[kind] = await post_batches(service_url, headers, path, kind, items, batch, senders, pid)
    seconds = sum(figures[kind]["seconds"] for kind, _ in INTAKES)
    cpu_us = sum(figures[kind]["service_cpu_us_per_row"] * figures[kind]["rows"] for kind, _ in INTAKES)
    figures["all"] = {
        "rows": day.rows,
        "seconds": seconds,
        "per_s": day.rows / seconds,
        "service_cpu_us_per_row": cpu_us / day.rows,
    }
    return figures


async def raw_copy(raw_url: str, day: Day) -> dict[str, Any]:
    """The same rows straight into the same tables of the second database, one client."""
    columns = {"pickups": PICKUP_COLUMNS, "weighings": WEIGHING_COLUMNS, "movements": MOVEMENT_COLUMNS}
    figures: dict[str, Any] = {}
    connection = await connect(raw_url)
    try:
        for kind, _ in INTAKES:
            rows: list[tuple[Any, ...]] = getattr(day, kind)
            started = time.perf_counter()
            await copy_rows(connection, kind, rows, columns[kind])
            seconds = time.perf_counter() - started
            figures[kind] = {"rows": len(rows), "seconds": seconds, "per_s": len(rows) / seconds}
    finally:
        await connection.close()
    seconds = sum(figures[kind]["seconds"] for kind, _ in INTAKES)
    figures["all"] = {"rows": day.rows, "seconds": seconds, "per_s": day.rows / seconds}
    return figures


# -- the round ------------------------------------------------------------------------------------


async def hand_over(url: str) -> int:
    """The notes the intake left for the round; and the stopped replica's lease ended (it holds it
    for 60 s after its last round, and the next replica would wait that out first)."""
    connection = await connect(url)
    try:
        await connection.execute("UPDATE chain_cursor SET lease_until = now()")
        return int(await connection.fetchval("SELECT count(*) FROM chain_dirty_vehicles"))
    finally:
        await connection.close()


async def round_caught_up(url: str, started: float, timeout: float) -> dict[str, Any]:
    """Poll until no note is left for the round, then until the trips stop changing."""
    connection = await connect(url)
    try:
        left = -1
        seconds: float | None = None
        while time.perf_counter() - started < timeout:
            left = int(await connection.fetchval("SELECT count(*) FROM chain_dirty_vehicles"))
            if left == 0:
                seconds = time.perf_counter() - started
                break
            await asyncio.sleep(0.1)
        trips = -1
        for _ in range(50):
            now_trips = int(await connection.fetchval("SELECT count(*) FROM trips"))
            if now_trips == trips:
                break
            trips = now_trips
            await asyncio.sleep(0.3)
        endings = {row["ending"]: row["n"] for row in await connection.fetch(
            "SELECT ending, count(*) AS n FROM trips GROUP BY ending"
        )}  # fmt: skip
        found: Counter[tuple[str, str]] = Counter()
        for row in await connection.fetch(
            "SELECT kind, plate, count(*) AS n FROM chain_violations GROUP BY kind, plate"
        ):
            found[row["kind"], row["plate"] or ""] += row["n"]
    finally:
        await connection.close()
    return {"seconds": seconds, "notes_left": left, "trips": trips, "endings": endings, "found": found}


def domain_baseline(day: Day) -> dict[str, Any]:
    """The domain's assembly and checks over the same records in this process: no database, no
    network, what the round's rules cost by themselves."""
    from services.waste.domain import chain
    from services.waste.domain.chain_checks import check_trips

    register = day.register
    vehicles = {
        v["plate"]: chain.Vehicle(
            v["plate"], chain.VehicleType(v["kind"]), chain.Stream(v["stream"] or "other"), depot=""
        )
        for v in register.vehicles
    }
    facilities = {
        f["code"]: chain.Facility(
            f["code"], chain.FacilityKind(f["kind"]), frozenset(chain.Stream(s) for s in f["streams"]),
            frozenset(f["weighbridges"]),
        )
        for f in register.facilities
    }  # fmt: skip

    def movement(row: MovementRow) -> chain.Movement:
        if row.kind == "departed_depot":
            return chain.DepotDeparture(row.plate, row.place, row.at)
        if row.kind == "returned_to_depot":
            return chain.DepotReturn(row.plate, row.place, row.at)
        if row.kind == "arrived_at_facility":
            return chain.FacilityArrival(row.plate, row.place, row.at)
        return chain.Stop(row.plate, row.at, row.ended_at, row.lon or 0.0, row.lat or 0.0)

    now = datetime.now(UTC)
    started = time.perf_counter()
    trips = chain.assemble_trips(
        [
            chain.Pickup(r.plate, r.point_code, r.rfid, chain.Stream(r.stream), r.weight_kg, r.at)
            for r in day.pickups
        ],
        [chain.Weighing(r.plate, r.facility_code, r.gross_kg, r.tare_kg, r.at) for r in day.weighings],
        [movement(r) for r in day.movements],
    )
    found = check_trips(trips, vehicles, facilities, now=now)
    seconds = time.perf_counter() - started
    violations: Counter[tuple[str, str]] = Counter((v.kind.value, v.plate or "") for v in found)
    return {
        "vehicles": len(register.vehicles),
        "trips": len(trips),
        "endings": dict(Counter(trip.end.value for trip in trips)),
        "seconds": seconds,
        "vehicles_per_s": len(register.vehicles) / seconds,
        "trips_per_s": len(trips) / seconds,
        "violations": violations,
    }


def by_kind(violations: Counter[tuple[str, str]]) -> dict[str, int]:
    counted: Counter[str] = Counter()
    for (kind, _), count in violations.items():
        counted[kind] += count
    return {kind: counted[kind] for kind in KINDS} | {k: n for k, n in counted.items() if k not in KINDS}


def differences(expected: Counter[tuple[str, str]], found: Counter[tuple[str, str]]) -> dict[str, Any]:
    """The (kind, vehicle) violations expected and not found, and found and not expected."""
    missing = sorted(f"{kind} {plate}" for kind, plate in (expected - found).elements())
    unexpected = sorted(f"{kind} {plate}" for kind, plate in (found - expected).elements())
    return {"missing": len(missing), "unexpected": len(unexpected), "some": (missing + unexpected)[:10]}


# -- figures over a year --------------------------------------------------------------------------


TRIP_COLUMNS = [
    "id", "plate", "stream", "district_code", "start", "started_at", "ending", "ended_at",
    "loaded_at", "points", "pickups", "picked_up_kg", "delivered_kg", "facility_code",
]  # fmt: skip
VIOLATION_COLUMNS = [
    "id", "dedup_key", "kind", "plate", "point_code", "facility_code", "trip_id", "stream",
    "district_code", "at", "lon", "lat", "detail", "category_code",
]  # fmt: skip
# The same columns as the lists above, spelled out: the queries are fixed text.
DAY_WEIGHINGS = """
SELECT plate, at, facility_code, weighbridge, gross_kg, tare_kg, net_kg, stream, district_code FROM weighings
"""
DAY_TRIPS = """
SELECT id, plate, stream, district_code, start, started_at, ending, ended_at, loaded_at, points, pickups,
       picked_up_kg, delivered_kg, facility_code FROM trips
"""
DAY_VIOLATIONS = """
SELECT id, dedup_key, kind, plate, point_code, facility_code, trip_id, stream, district_code, at, lon, lat,
       detail, category_code FROM chain_violations
"""


def _moved(moment: datetime | None, k: int) -> datetime | None:
    return moment - timedelta(days=k) if moment is not None else None


def _copy_id(value: uuid.UUID | None, k: int) -> uuid.UUID | None:
    return uuid.uuid5(NAMESPACE, f"{value}|{k}") if value is not None else None


async def load_year(url: str, days: int, trip_days: int) -> dict[str, Any]:
    """Fixture, not measured as the service's: the day's weighings copied to each of the ``days - 1``
    days before it, and its trips and violations to each of the ``trip_days - 1`` before it."""
    connection = await connect(url)
    started = time.perf_counter()
    try:
        weighings = [tuple(row) for row in await connection.fetch(DAY_WEIGHINGS)]
        for first in range(1, days, 30):
            rows = [
                (row[0], row[1] - timedelta(days=k), *row[2:])
                for k in range(first, min(first + 30, days))
                for row in weighings
            ]
            await copy_rows(connection, "weighings", rows, WEIGHING_COLUMNS)
        trips = await connection.fetch(DAY_TRIPS)
        trip_rows = [
            (_copy_id(t["id"], k), t["plate"], t["stream"], t["district_code"], t["start"],
             _moved(t["started_at"], k), t["ending"], _moved(t["ended_at"], k), _moved(t["loaded_at"], k),
             t["points"], t["pickups"], t["picked_up_kg"], t["delivered_kg"], t["facility_code"])
            for k in range(1, trip_days)
            for t in trips
        ]  # fmt: skip
        await copy_rows(connection, "trips", trip_rows, TRIP_COLUMNS)
        violations = await connection.fetch(DAY_VIOLATIONS)
        violation_rows = [
            (_copy_id(v["id"], k), f"{v['dedup_key']}|{k}"[:200], v["kind"], v["plate"], v["point_code"],
             v["facility_code"], _copy_id(v["trip_id"], k), v["stream"], v["district_code"], _moved(v["at"], k),
             v["lon"], v["lat"], v["detail"], v["category_code"])
            for k in range(1, trip_days)
            for v in violations
        ]  # fmt: skip
        await copy_rows(connection, "chain_violations", violation_rows, VIOLATION_COLUMNS)
        await connection.execute("ANALYZE weighings, trips, chain_violations, pickups")
        counts = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM weighings) AS weighings, (SELECT count(*) FROM trips) AS trips, "
            "(SELECT count(*) FROM chain_violations) AS chain_violations"
        )
    finally:
        await connection.close()
    return {"days": days, "trip_days": trip_days, "seconds": time.perf_counter() - started, **dict(counts)}


TONNAGE_SQL = {
    "stream": "SELECT stream, sum(net_kg), count(*) FROM weighings WHERE at >= $1 AND at < $2 GROUP BY 1 ORDER BY 1",
    "day": (
        "SELECT to_char((at AT TIME ZONE 'Asia/Shanghai')::date, 'YYYY-MM-DD'), sum(net_kg), count(*) "
        "FROM weighings WHERE at >= $1 AND at < $2 GROUP BY 1 ORDER BY 1"
    ),
}
RATES_SQL = """
SELECT coalesce(sum(w.net_kg), 0),
       coalesce(sum(w.net_kg) FILTER (WHERE w.stream = 'recyclable'), 0),
       coalesce(sum(w.net_kg) FILTER (WHERE w.stream = 'food' AND f.kind = 'food_waste_treatment'), 0)
FROM weighings w LEFT JOIN facilities f ON f.code = w.facility_code
WHERE w.at >= $1 AND w.at < $2
"""
FACILITY_SQL = """
SELECT facility_code, stream, sum(net_kg), count(*) FROM weighings
WHERE at >= $1 AND at < $2 GROUP BY 1, 2 ORDER BY 1, 2
"""
# The visits due in the windows opening on $1 (a route's stops, on its weekdays, from when its
# schedule took effect, closed by now), and those with a lift of the route's stream in the window.
COVERAGE_SQL = """
WITH visit AS (
    SELECT s.stop AS point, r.stream, r.schedule_changed_at,
           ($1::date + split_part(r.time_window, '-', 1)::time) AT TIME ZONE 'Asia/Shanghai' AS opens_at,
           (($1::date + CASE WHEN split_part(r.time_window, '-', 2)::time <= split_part(r.time_window, '-', 1)::time
                             THEN 1 ELSE 0 END)
            + split_part(r.time_window, '-', 2)::time) AT TIME ZONE 'Asia/Shanghai' AS closes_at
    FROM routes r CROSS JOIN LATERAL (SELECT DISTINCT unnest(r.stops) AS stop) s
    WHERE r.stream IS NOT NULL AND extract(isodow FROM $1::date)::int = ANY(r.days)
)
SELECT count(*),
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM pickups p WHERE p.point_code = v.point AND p.stream = v.stream
           AND p.at >= v.opens_at AND p.at < v.closes_at))
FROM visit v WHERE v.opens_at >= v.schedule_changed_at AND v.closes_at <= now()
"""
# Each point's violations over its occasions (a trip serving it, a visit missed), highest rate first.
POINT_RATES_SQL = """
SELECT point, sum(hit), sum(occasion) FROM (
    SELECT unnest(points) AS point, 1 AS occasion, 0 AS hit FROM trips
    WHERE started_at >= $1 AND started_at < $2
    UNION ALL
    SELECT point_code, CASE WHEN kind = 'missed_collection' THEN 1 ELSE 0 END, 1 FROM chain_violations
    WHERE at >= $1 AND at < $2 AND point_code IS NOT NULL
) AS served GROUP BY point
ORDER BY sum(hit)::float8 / nullif(sum(occasion), 0) DESC NULLS FIRST, point LIMIT 50
"""


@dataclass(frozen=True)
class Figure:
    name: str
    path: str
    params: dict[str, str]
    sql: str
    args: tuple[Any, ...]
    # Both answers as one comparable value.
    from_service: Callable[[Any], Any]
    from_sql: Callable[[list[asyncpg.Record]], Any]
    days: int = 1  # the period's length


def _t(kg: float) -> float:
    return kg / 1000.0


def same(a: Any, b: Any) -> bool:
    """Equal answers, sums of floats equal to a part in a billion (PostgreSQL may add in any order)."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def figures_over(day: date, days: int) -> list[Figure]:
    start = datetime.combine(day, datetime.min.time(), tzinfo=CITY_TIMEZONE)
    until = start + timedelta(days=1)
    since = until - timedelta(days=days)
    rates_since = until - timedelta(days=92)
    period = {"since": since.isoformat(), "until": until.isoformat()}
    tonnage = [
        Figure(
            f"tonnage by {by}", "/v1/figures/tonnage", {**period, "by": by}, TONNAGE_SQL[by], (since, until),
            lambda answer: {i["key"]: (i["tonnes"], i["weighings"]) for i in answer},
            lambda rows: {str(r[0]): (_t(r[1]), r[2]) for r in rows}, days,
        )
        for by in ("stream", "day")
    ]  # fmt: skip
    return [
        *tonnage,
        Figure(
            "rates", "/v1/figures/rates", period, RATES_SQL, (since, until),
            lambda a: (a["total_t"], a["recyclable_t"], a["food_treated_t"]),
            lambda rows: (_t(rows[0][0]), _t(rows[0][1]), _t(rows[0][2])), days,
        ),
        Figure(
            "facility intake", "/v1/figures/facility-intake", period, FACILITY_SQL, (since, until),
            lambda answer: {(i["facility_code"], i["stream"]): (i["tonnes"], i["weighings"]) for i in answer},
            lambda rows: {(r[0], r[1]): (_t(r[2]), r[3]) for r in rows}, days,
        ),
        Figure(
            "coverage", "/v1/figures/coverage", {"day": day.isoformat()}, COVERAGE_SQL, (day,),
            lambda a: (a["scheduled"], a["done"]),
            lambda rows: (rows[0][0], rows[0][1]),
        ),
        Figure(
            "point rates", "/v1/figures/point-rates",
            {"since": rates_since.isoformat(), "until": until.isoformat(), "limit": "50"},
            POINT_RATES_SQL, (rates_since, until),
            lambda answer: [(i["point_code"], i["violations"], i["occasions"]) for i in answer],
            lambda rows: [(r[0], int(r[1]), int(r[2])) for r in rows], 92,
        ),
    ]  # fmt: skip


def _summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "calls": len(latencies),
    }


async def _timed(call: Callable[[], Awaitable[Any]], calls: int) -> tuple[dict[str, float], Any]:
    answer = await call()  # warm: plans, caches, connections
    latencies = []
    for _ in range(calls):
        began = time.perf_counter()
        answer = await call()
        latencies.append((time.perf_counter() - began) * 1000)
    return _summary(latencies), answer


async def time_figures(
    service_url: str, headers: dict[str, str], url: str, day: date, days: int, calls: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    connection = await connect(url)
    try:
        async with httpx.AsyncClient(base_url=service_url, headers=headers, timeout=120) as client:
            for figure in figures_over(day, days):
                failure: str | None = None

                async def ask(figure: Figure = figure) -> Any:
                    response = await client.get(figure.path, params=figure.params)
                    if response.status_code != 200:
                        raise RuntimeError(f"{figure.path} {response.status_code}: {response.text[:300]}")
                    return response.json()

                async def query(figure: Figure = figure) -> list[asyncpg.Record]:
                    return list(await connection.fetch(figure.sql, *figure.args))

                sql, sql_answer = await _timed(query, calls)
                try:
                    service, answer = await _timed(ask, calls)
                except RuntimeError as error:
                    failure, service, answer = str(error), {}, None
                agree = failure is None and same(figure.from_service(answer), figure.from_sql(sql_answer))
                shown = figure.from_sql(sql_answer)
                results[figure.name] = {
                    "days": figure.days,
                    "answer": _brief(shown),
                    "service": service,
                    "sql": sql,
                    "ratio_p50": service["p50_ms"] / sql["p50_ms"] if service else None,
                    "agree": agree,
                    "failure": failure,
                    "service_answer": None
                    if agree or answer is None
                    else _shown(figure.from_service(answer)),
                    "sql_answer": None if agree else _shown(figure.from_sql(sql_answer)),
                }
    finally:
        await connection.close()
    return results


def _brief(value: Any) -> str:
    """An answer in a few words: how many rows, or the figures to one decimal."""
    if isinstance(value, dict | list):
        return f"{len(value)} rows"
    if isinstance(value, tuple):
        return ", ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _shown(value: Any) -> Any:
    """An answer short enough for the results file."""
    if isinstance(value, dict):
        return {str(k): v for k, v in list(value.items())[:8]}
    if isinstance(value, list):
        return value[:8]
    return value


async def scrape(service_url: str) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        return (await client.get(f"{service_url}/metrics")).text


# -- the run --------------------------------------------------------------------------------------


def run(
    *,
    seed: int,
    vehicles: int,
    cleaning: int,
    points: int,
    collection_points: int,
    violation_share: float,
    batch: int,
    senders: int,
    year_days: int,
    calls: int,
    profile_into: Path | None = None,
) -> dict[str, Any]:
    began = time.perf_counter()
    day_of = datetime.now(CITY_TIMEZONE).date() - timedelta(days=1)
    day = generate(
        seed, day_of, points=points, collection_points=collection_points, vehicles=vehicles,
        cleaning=cleaning, violation_share=violation_share,
    )  # fmt: skip
    results: dict[str, Any] = {
        "day": day_of.isoformat(),
        "seed": seed,
        "fleet": {"collection": vehicles, "cleaning": cleaning, "points": points, "bins": day.register.bins,
                  "collection_points": collection_points, "facilities": len(day.register.facilities),
                  "routes": len(day.register.routes)},
        "records": {"pickups": len(day.pickups), "weighings": len(day.weighings), "movements": len(day.movements)},
    }  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-bench-waste-"))
    try:
        with servers_for(workdir, durable=True, identities=dev_identities()) as (server_url, nats):
            url, raw_url = database_url(server_url, DB), database_url(server_url, RAW_DB)
            asyncio.run(create_databases(server_url, [DB, RAW_DB]))
            upgrade("services.waste", url)
            upgrade("services.waste", raw_url)
            private_key, public_key = generate_keypair()
            headers = {
                PRINCIPAL_HEADER: sign_principal(
                    PRINCIPAL, private_key=private_key, audience="waste", ttl_seconds=7200
                )
            }
            port = free_port()
            service_url = f"http://127.0.0.1:{port}"
            # The intake with the round held off (it runs once at the start, then an hour later).
            log = workdir / "waste-intake.log"
            with process(
                [sys.executable, "-m", "services.waste.main"],
                service_env(server_url, nats, public_key, port, round_seconds=3600),
                log,
            ) as child:
                wait_healthy(service_url, child, log)
                results["register"] = asyncio.run(
                    register_through_service(service_url, headers, day.register)
                )
                results["register_raw"] = asyncio.run(register_raw(raw_url, day.register))
                asyncio.run(backdate_routes(url))
                asyncio.run(wait_for_first_round(url))
                sampler = start_sampler(profile_into, child.pid, "intake")
                results["ingest"] = asyncio.run(ingest(service_url, headers, day, batch, senders, child.pid))
                stop_sampler(sampler)
                results["ingest_rss_mib"] = rss_mib(child.pid)
            results["raw_copy"] = asyncio.run(raw_copy(raw_url, day))
            results["notes"] = asyncio.run(hand_over(url))
            # The round alone: the service again, its round due every second.
            log = workdir / "waste-round.log"
            with process(
                [sys.executable, "-m", "services.waste.main"],
                service_env(server_url, nats, public_key, port, round_seconds=1),
                log,
            ) as child:
                wait_healthy(service_url, child, log)
                results["idle_rss_mib"] = rss_mib(child.pid)
                sampler = start_sampler(profile_into, child.pid, "round")
                cpu_before, started = cpu_seconds([child.pid]), time.perf_counter()
                caught = asyncio.run(round_caught_up(url, started, timeout=900))
                cpu = cpu_seconds([child.pid]) - cpu_before
                stop_sampler(sampler)
                exposition = asyncio.run(scrape(service_url))
                fleet = len(day.register.vehicles)
                seconds = caught["seconds"]
                results["round"] = {
                    "vehicles": fleet,
                    "seconds": seconds,
                    "notes_left": caught["notes_left"],
                    "trips": caught["trips"],
                    "endings": caught["endings"],
                    "vehicles_per_s": fleet / seconds if seconds else None,
                    "trips_per_s": caught["trips"] / seconds if seconds else None,
                    "service_cpu_ms_per_vehicle": 1000 * cpu / fleet,
                    "assemblies": metric(exposition, "citygrid_job_items_total", job="waste-chain-round"),
                    "rounds": metric(exposition, "citygrid_job_runs_total", job="waste-chain-round", outcome="ok"),
                    "round_errors": metric(exposition, "citygrid_job_runs_total", job="waste-chain-round", outcome="error"),
                    "vehicles_failed": metric(exposition, "citygrid_waste_chain_vehicles_failed_total"),
                }  # fmt: skip
                results["expected"] = {
                    "trips": sum(day.trips.values()),
                    "endings": dict(day.trips),
                    "violations": by_kind(day.violations),
                }
                results["found"] = {"violations": by_kind(caught["found"])}
                results["found_differences"] = differences(day.violations, caught["found"])
                domain = domain_baseline(day)
                results["domain"] = {**domain, "violations": by_kind(domain["violations"])}
                results["domain_differences"] = differences(day.violations, domain["violations"])
                results["year"] = asyncio.run(load_year(url, year_days, min(year_days, 92)))
                results["figures"] = asyncio.run(
                    time_figures(service_url, headers, url, day_of, year_days, calls)
                )
                results["service_rss_mib"] = rss_mib(child.pid)
                results["service_log_errors"] = [
                    line for line in log.read_text(errors="replace").splitlines() if "Traceback" in line or "ERROR" in line
                ][:5]  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["run_seconds"] = time.perf_counter() - began
    return results


def _ratio(a: float | None, b: float | None) -> str:
    return f"×{a / b:.3g}" if a and b else "×n/a"


def report(results: dict[str, Any]) -> list[str]:
    fleet, records = results["fleet"], results["records"]
    reg, reg_raw = results["register"], results["register_raw"]
    lines = [
        f"waste day      {results['day']} (seed {results['seed']}): {fleet['collection']} collection + "
        f"{fleet['cleaning']} cleaning vehicles, {fleet['points']} points with {fleet['bins']} bins, "
        f"{fleet['collection_points']} collection points, {fleet['facilities']} facilities, {fleet['routes']} routes; "
        f"{records['pickups']} pickups, {records['weighings']} weighings, {records['movements']} movements",
        f"waste register {reg['records']} records (+{reg['bins']} bins) through the imports in {reg['seconds']:.1f} s "
        f"({reg['per_s']:.0f}/s) vs raw COPY {reg_raw['seconds']:.2f} s ({reg_raw['per_s']:.0f}/s): "
        f"service/raw {_ratio(reg['per_s'], reg_raw['per_s'])}; refused {reg['refused'] or 'none'}"
        + (f"; ERRORS {reg['errors']}" if reg["errors"] else ""),
    ]
    ingest, raw = results["ingest"], results["raw_copy"]
    for kind in ("pickups", "weighings", "movements", "all"):
        got, base = ingest[kind], raw[kind]
        per_core = 1e6 / max(got["service_cpu_us_per_row"], 1e-9)
        line = (
            f"waste ingest   {kind:<9} {got['rows']:>7} rows {got['per_s']:>6.0f}/s vs raw COPY {base['per_s']:>7.0f}/s "
            f"(ingest/raw {_ratio(got['per_s'], base['per_s'])}), service CPU {got['service_cpu_us_per_row']:.0f} µs/row "
            f"= {per_core:.0f} rows/s per core"
        )
        if kind != "all":
            line += f"; stored {got['stored']}, duplicates {got['duplicates']}, refused {got['refused'] or 0}"
            if got["http_errors"]:
                line += f"; HTTP ERRORS {got['http_errors']} {got['error_samples']}"
        lines.append(line)
    lines.append("waste ingest   positions: not measured (the service has no position intake yet)")
    chain_round, domain, expected = results["round"], results["domain"], results["expected"]
    if chain_round["seconds"] is None:
        lines.append(
            f"waste round    NOT CAUGHT UP: {chain_round['notes_left']} notes left, {chain_round['trips']} trips"
        )
    else:
        lines.append(
            f"waste round    {chain_round['vehicles']} vehicles, {chain_round['trips']} trips in {chain_round['seconds']:.1f} s: "
            f"{chain_round['vehicles_per_s']:.0f} vehicles/s, {chain_round['trips_per_s']:.0f} trips/s vs the domain "
            f"in-process {domain['vehicles_per_s']:.0f} vehicles/s ({_ratio(chain_round['vehicles_per_s'], domain['vehicles_per_s'])}); "
            f"{results['notes']} notes, {chain_round['assemblies']:.0f} vehicle assemblies in {chain_round['rounds']:.0f} rounds, "
            f"service CPU {chain_round['service_cpu_ms_per_vehicle']:.1f} ms/vehicle "
            f"({chain_round['service_cpu_ms_per_vehicle'] * chain_round['vehicles'] / max(chain_round['assemblies'], 1):.1f} ms/assembly), "
            f"{chain_round['vehicles_failed']:.0f} vehicles failed, {chain_round['round_errors']:.0f} rounds failed"
        )
    lines.append(
        f"waste trips    expected {expected['trips']} {expected['endings']} | service {chain_round['trips']} "
        f"{chain_round['endings']} | domain {domain['trips']} {domain['endings']}"
    )
    found = results["found"]["violations"]
    lines.append(
        "waste violations expected/service/domain: "
        + ", ".join(
            f"{kind} {expected['violations'].get(kind, 0)}/{found.get(kind, 0)}/{domain['violations'].get(kind, 0)}"
            for kind in dict.fromkeys([*KINDS, *found, *domain["violations"]])
        )
        + " (missed collections not judged in this run)"
    )
    for who in ("found", "domain"):
        diff = results[f"{who}_differences"]
        if diff["missing"] or diff["unexpected"]:
            lines.append(
                f"waste MISMATCH {'service' if who == 'found' else 'domain'}: {diff['missing']} expected and not "
                f"found, {diff['unexpected']} found and not expected, e.g. {diff['some']}"
            )
    year = results["year"]
    lines.append(
        f"waste year     {year['weighings']} weighings over {year['days']} days, {year['trips']} trips and "
        f"{year['chain_violations']} violations over {year['trip_days']} days, copied in {year['seconds']:.1f} s"
    )
    for name, figures in results["figures"].items():
        if figures["failure"]:
            lines.append(f"waste figure   {name:<15} FAILED {figures['failure']}")
            continue
        service, sql = figures["service"], figures["sql"]
        lines.append(
            f"waste figure   {name:<15} {figures['days']:>3} d: p50 {service['p50_ms']:6.1f} ms p99 {service['p99_ms']:6.1f} ms "
            f"vs SQL p50 {sql['p50_ms']:6.1f} ms p99 {sql['p99_ms']:6.1f} ms (service/SQL p50 ×{figures['ratio_p50']:.2f}), "
            + (f"answers agree ({figures['answer']})" if figures["agree"] else
               f"ANSWERS DIFFER: service {figures['service_answer']} vs SQL {figures['sql_answer']}")
        )  # fmt: skip
    lines.append(
        f"waste memory   service RSS {results['service_rss_mib']:.0f} MiB at the end vs {results['idle_rss_mib']:.0f} MiB "
        f"idle at its start ({_ratio(results['service_rss_mib'], results['idle_rss_mib'])}); "
        f"{results['ingest_rss_mib']:.0f} MiB after the intake"
    )
    if results["service_log_errors"]:
        lines.append(f"waste log      {results['service_log_errors']}")
    lines.append(f"waste run      {results['run_seconds']:.0f} s in all")
    return lines


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.waste", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--vehicles", type=int, default=400, help="collection vehicles")
    parser.add_argument("--cleaning", type=int, default=180, help="cleaning vehicles")
    parser.add_argument("--points", type=int, default=400, help="drop-off points (8 bins each)")
    parser.add_argument("--collection-points", type=int, default=100)
    parser.add_argument("--violations", type=float, default=0.02, help="share of vehicles per violation kind")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=500, help="records per intake request (at most 1000)")
    parser.add_argument("--senders", type=int, default=4, help="intake requests in flight")
    parser.add_argument("--year-days", type=int, default=365, help="days of weighings the figures read")
    parser.add_argument("--calls", type=int, default=20, help="calls per figure")
    parser.add_argument("--profile", type=Path, help="sample the service with py-spy into this directory")
    parser.add_argument("--json", action="store_true", help="print the results as JSON before the report")
    arguments = parser.parse_args()
    if arguments.points < 80:
        parser.error("--points must be at least 80: a vehicle's route serves up to 64 distinct points")
    if not 1 <= arguments.batch <= 1000 or not 1 <= arguments.year_days <= 366:
        parser.error("--batch is 1 to 1000, --year-days 1 to 366")
    results = run(
        seed=arguments.seed,
        vehicles=arguments.vehicles,
        cleaning=arguments.cleaning,
        points=arguments.points,
        collection_points=arguments.collection_points,
        violation_share=arguments.violations,
        batch=arguments.batch,
        senders=arguments.senders,
        year_days=arguments.year_days,
        calls=arguments.calls,
        profile_into=arguments.profile,
    )
    if arguments.json:
        print(json.dumps(results, indent=2, default=str))
    print("\n".join(report(results)))
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "waste.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        cli()

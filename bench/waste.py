"""The waste service's collection chain over a whole day of the fleet, and its vehicles' positions
over a sample window of that day, each figure beside a baseline from the same run.

``python -m bench.waste`` (defaults a tenth of the city; the city's fleet is ``--vehicles 4000
--cleaning 1800 --points 4000 --collection-points 1000``):

- **register**: drop-off points with their bins (RFID tags), collection points, collection vehicles
  of every stream, cleaning vehicles, 24 facilities with weighbridges, a depot per ~50 vehicles of a
  district (each where the positions' window starts the track of one of its vehicles, so the window
  shows that one leaving it) and a route per vehicle, through the service's imports (batches of up
  to 1,000), beside a raw COPY of the same rows into a second database migrated the same way;
- **intake**: a day of chain records generated from ``random.Random(seed)`` (per collection vehicle
  a departure, about three trips of about fifteen lifts of its stream's bins at its route's points,
  each trip's arrival at a facility and its weighbridge record, the return to the depot; per
  cleaning vehicle two loads weighed; a small share of violations: a bin of another stream, a net
  30 % off the lifts, a trip back at the depot loaded, a long stop of a loaded vehicle) posted to
  ``/v1/pickups``, ``/v1/weighings`` and ``/v1/movements`` by a few concurrent clients, rows/s and
  the service's CPU per row, beside a raw COPY of the very same rows into the same tables;
- **positions**: a sample window of the day (``--positions-from 08:00 --positions-minutes 3`` by
  default, when the whole fleet is out) in which every collection and cleaning vehicle reports a
  position a second while it moves (out of its depot and not lifting at a point, at a facility or
  stopped, as the day's records have it), posted to ``/v1/positions`` in batches of 1,000 by
  ``--senders`` clients, then sent by each vehicle's terminal over its own JT/T 808 connection
  (registered with its plate and authenticated first, untimed; then one 0x0200 at a time, each on
  the acknowledgement of the one before), each beside a raw COPY of the very same rows into the
  positions table of the second database; rows/s, the service's CPU per position, whether both
  databases hold the same rows, and a projection to the city's fleet (``--projection-fleet``
  vehicles at 1 Hz while moving, ``--moving-hours`` a day) against the per-core capacity measured;
- **movements**: the service started again with its movements round due every
  ``--movements-round-seconds`` (the chain round held off), timed from the bench letting it lead
  until it has read every position stored (both intakes', ``citygrid_waste_movements_positions_read_total``),
  positions/s and the service's CPU per position, beside ``derive_track`` over the same positions in
  one process with the register's places as the service builds them (``load_places``), and whether
  the movements it stored are those that derivation gives;
- **round**: the service started again with its round due every second, timed until it has assembled
  and checked every vehicle (no note left in ``chain_dirty_vehicles``), vehicles/s and trips/s
  beside the domain's own ``assemble_trips`` + ``check_trips`` over the same records in one
  process, and the violations found by kind beside those generated;
- **figures**: a year of weighings (and 92 days of trips and violations, for the points' rates)
  copied in, then tonnage, rates, facility intake, coverage and points' rates over the longest
  period each takes (p50/p99 over ``--calls`` calls), each beside the same aggregate as one
  hand-written SQL query run with asyncpg, and whether both answered the same;
- **memory**: the service's resident set at the end, beside the same process idle at its start.

The movements read from the positions are measured last and apart: during the intake they would
take the service's CPU from the positions' figures, and in the chain round they would add movements
the generated day does not have (a departure from a depot it places) to the trips it checks.
Missed collections are not judged in the run (the grace is set to its 7-day maximum): the routes are
registered at the start of the run, and today's windows have no lifts. Fixtures, not timed: the
routes' schedules backdated a year (so the day's windows count in the coverage), the intake
replica's lease on the round ended before the round replica starts (a replica that stops gives it
back; one killed keeps it 60 s), the movements round's lease held by the bench from before the first
position is stored until it is measured (its cursor set then, so it reads every position), the
chain round's lease held by the bench while the movements round is measured, and the second
database's position partitions made as the service makes its own. Timings are for comparison
within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import asyncpg
import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bench.gas import rss_mib
from bench.hotpath import cpu_seconds, process, wait_healthy
from bench.muck import BenchTerminal, start_sampler, stop_sampler
from bench.stack import percentile
from citygrid.auth import PRINCIPAL_HEADER, Principal, generate_keypair, sign_principal
from citygrid.clock import CITY_TIMEZONE
from citygrid.devstack.servers import create_databases, database_url, free_port, servers_for
from citygrid.devstack.stack import dev_identities
from citygrid.fleet.reports import LOAD_CODES, REPORT_COLUMNS, Report
from citygrid.jt808.codec import (
    ACC_ON,
    AUTHENTICATE,
    BEIJING,
    EXTRA_MILEAGE,
    FIXED,
    OK,
    PLATFORM_REPLY,
    POSITION,
    REGISTER,
    REGISTERED,
    Authentication,
    GeneralReply,
    Header,
    Position,
    Registration,
    RegistrationReply,
    encode_frame,
)
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess
from citygrid.settings import to_asyncpg_url, to_libpq_url
from contract.common import GUANGZHOU_DISTRICTS
from services.waste.chain.rounds import CURSOR as CHAIN_CURSOR
from services.waste.domain import chain_movements
from services.waste.fleet.models import PARTITIONS, POSITION_COLUMNS
from services.waste.fleet.movements import CURSOR as MOVEMENTS_CURSOR
from services.waste.fleet.movements import MovementsConfig, load_places, movement_row

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
# A district's vehicles share depots of about this many each, with this radius.
VEHICLES_PER_DEPOT, DEPOT_RADIUS_M = 50, 100.0
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
    depots: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    # Each vehicle's depot (the day's departures and returns name it): the register of vehicles
    # keeps none, the depots are placed once the positions' window is known (``place_depots``).
    depot_of: dict[str, str] = field(default_factory=dict)

    @property
    def bins(self) -> int:
        return sum(len(point["bins"]) for point in self.points)

    @property
    def records(self) -> int:
        return sum(
            len(kind)
            for kind in (
                self.points, self.collection_points, self.vehicles, self.facilities, self.depots, self.routes,
            )
        )  # fmt: skip


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
    register.depot_of = assign_depots(register.vehicles)
    return register


def assign_depots(vehicles: list[dict[str, Any]]) -> dict[str, str]:
    """Each vehicle's depot: a district's vehicles, in turn, among depots of about
    ``VEHICLES_PER_DEPOT`` each (at least one a district)."""
    by_district: dict[str, list[str]] = defaultdict(list)
    for vehicle in vehicles:
        by_district[vehicle["district_code"]].append(vehicle["plate"])
    depot_of: dict[str, str] = {}
    for district, plates in by_district.items():
        depots = max(1, round(len(plates) / VEHICLES_PER_DEPOT))
        for n, plate in enumerate(plates):
            depot_of[plate] = f"DEPOT-{district}-{n % depots + 1}"
    return depot_of


def place_depots(seed: int, register: Register, reports: Sequence[Report]) -> None:
    """The depots, each where the window's track of its first vehicle moving in the window starts
    (the generator draws where a track starts; that vehicle is seen leaving the depot), anywhere in
    the city when none of its vehicles moves in the window."""
    chance = random.Random(seed * 1_000_003 + 50)  # a stream of its own: the rest stays as it is
    starts: dict[str, tuple[float, float]] = {}
    for report in reports:  # in time order: each vehicle's first position first
        starts.setdefault(report.plate, (report.lon, report.lat))
    members: dict[str, list[str]] = defaultdict(list)
    for vehicle in register.vehicles:
        members[register.depot_of[vehicle["plate"]]].append(vehicle["plate"])
    district_of = {vehicle["plate"]: vehicle["district_code"] for vehicle in register.vehicles}
    register.depots = []
    for code, plates in members.items():
        start = next((starts[plate] for plate in plates if plate in starts), None)
        lon, lat = start if start is not None else _lon_lat(chance)
        register.depots.append(
            {
                "code": code,
                "name": f"depot {code.removeprefix('DEPOT-')}",
                "district_code": district_of[plates[0]],
                "location": _location(lon, lat),
                "radius_m": DEPOT_RADIUS_M,
            }
        )


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
        depot = register.depot_of[plate]
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
        depot = register.depot_of[plate]
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
    server_url: str, nats: NatsAccess, public_key: str, port: int, jt808_port: int, round_seconds: float,
    movements_seconds: float = 3600,
) -> dict[str, str]:  # fmt: skip
    from services.waste.events import NATS_IDENTITY

    user, password = nats.credentials(NATS_IDENTITY.user)
    return {
        **os.environ,
        "CITYGRID_ENVIRONMENT": "development",
        "CITYGRID_PORT": str(port),
        # The fleet's JT/T 808 listener, on loopback and a port of its own too.
        "CITYGRID_JT808_HOST": "127.0.0.1",
        "CITYGRID_JT808_PORT": str(jt808_port),
        "CITYGRID_DATABASE_URL": database_url(server_url, DB),
        "CITYGRID_NATS_URL": nats.server_url,
        "CITYGRID_NATS_USER": user,
        "CITYGRID_NATS_PASSWORD": password,
        "CITYGRID_INTERNAL_TOKEN_PUBLIC_KEY": public_key,
        "CITYGRID_LOG_LEVEL": "WARNING",
        "CITYGRID_CHAIN_ROUND_SECONDS": str(round_seconds),
        "CITYGRID_MOVEMENTS_ROUND_SECONDS": str(movements_seconds),
        # The routes are registered in the run and today's windows have no lifts: not judged.
        "CITYGRID_MISSED_COLLECTION_GRACE_MINUTES": str(7 * 24 * 60),
        "PYTHONUNBUFFERED": "1",
    }


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value from a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for found, value in _samples(text, name):
        if ",".join(sorted(part for part in found.split(",") if part)) == wanted:
            return value
    return 0.0


def _samples(text: str, name: str) -> list[tuple[str, float]]:
    """A metric's samples in an exposition: each one's labels as written, and its value."""
    pattern = re.compile(rf"^{re.escape(name)}(\{{([^}}]*)\}})? (\S+)$", re.MULTILINE)
    return [(match.group(2) or "", float(match.group(3))) for match in pattern.finditer(text)]


def metric_sum(text: str, name: str) -> float:
    """A metric's samples summed over all their labels (0 when absent)."""
    return sum(value for _, value in _samples(text, name))


def metric_by(text: str, name: str, label: str) -> dict[str, float]:
    """A metric's samples by the value of one label."""
    by: defaultdict[str, float] = defaultdict(float)
    for labels, value in _samples(text, name):
        found = re.search(rf'(?:^|,){re.escape(label)}="([^"]*)"', labels)
        by[found.group(1) if found else ""] += value
    return dict(by)


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
    ("/v1/depots/import", "depots", 100),
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
            "depots",
            ["code", "name", "district_code", "lon", "lat", "radius_m"],
            [
                (d["code"], d["name"], d["district_code"], *d["location"]["coordinates"], d["radius_m"])
                for d in register.depots
            ],
        ),
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
    service_url: str, headers: dict[str, str], path: str, key: str, items: Iterable[dict[str, Any]],
    batch: int, senders: int, pid: int,
) -> dict[str, Any]:  # fmt: skip
    # Encoded a batch at a time: the items need not all be held as dicts at once.
    bodies: deque[bytes] = deque()
    rows = 0
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == batch:
            bodies.append(json.dumps({key: chunk}).encode())
            rows, chunk = rows + batch, []
    if chunk:
        bodies.append(json.dumps({key: chunk}).encode())
        rows += len(chunk)
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
            if isinstance(answer["refused"], list):  # the kit's IntakeResult (positions): each refusal
                outcomes.update(stored=answer["stored"], refused=len(answer["refused"]))
                refused.update(r["code"] for r in answer["refused"])
                continue
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
        "rows": rows,
        "seconds": seconds,
        "per_s": rows / seconds,
        "service_cpu_us_per_row": 1e6 * cpu / max(rows, 1),
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


# -- positions ------------------------------------------------------------------------------------


POSITION_BATCH = 1000  # the most /v1/positions takes in one request
# A vehicle stands still this long before its first lift at a point and after its last, and leaves
# the weighbridge this long after it is weighed.
DWELL, OFF_BRIDGE = timedelta(seconds=30), timedelta(minutes=2)
# Speeds while moving (km/h): a collection vehicle between points, a sweeper at work.
SPEEDS = {"collection": (15.0, 45.0), "cleaning": (5.0, 15.0)}
CITY_BOX = ((113.00, 113.90), (22.60, 23.90))  # where a track turns back
LOAD_NAMES = {code: name for name, code in LOAD_CODES.items()}
CITY_FLEET = 5_800  # the docstring's city: 4,000 collection and 1,800 cleaning vehicles
TERMINAL_WAVE = 500  # terminals connecting at once: a listen backlog is finite


def moving_spans(day: Day) -> dict[str, list[tuple[datetime, datetime]]]:
    """When each vehicle moves: out of its depot, and not lifting at a point (from ``DWELL`` before
    its first lift there to ``DWELL`` after its last), at a facility (from its arrival until
    ``OFF_BRIDGE`` after it is weighed) or stopped."""
    lifts: dict[str, list[PickupRow]] = defaultdict(list)
    for lift in day.pickups:
        lifts[lift.plate].append(lift)
    weighed: dict[str, list[datetime]] = defaultdict(list)
    for weighing in day.weighings:
        weighed[weighing.plate].append(weighing.at)
    moves: dict[str, list[MovementRow]] = defaultdict(list)
    for move in day.movements:
        moves[move.plate].append(move)
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for vehicle in day.register.vehicles:
        plate = vehicle["plate"]
        departed = next(m.at for m in moves[plate] if m.kind == "departed_depot")
        returned = next(m.at for m in moves[plate] if m.kind == "returned_to_depot")
        still: list[tuple[datetime, datetime]] = []
        at_point: list[Any] = []  # [point, first lift, last lift]
        for lift in lifts[plate]:
            if at_point and at_point[0] == lift.point_code:
                at_point[2] = lift.at
                continue
            if at_point:
                still.append((at_point[1] - DWELL, at_point[2] + DWELL))
            at_point = [lift.point_code, lift.at, lift.at]
        if at_point:
            still.append((at_point[1] - DWELL, at_point[2] + DWELL))
        for move in moves[plate]:
            if move.kind == "arrived_at_facility":
                weighed_at = next((at for at in weighed[plate] if at >= move.at), move.at)
                still.append((move.at, weighed_at + OFF_BRIDGE))
            elif move.kind == "stopped" and move.ended_at is not None:
                still.append((move.at, move.ended_at))
        moving: list[tuple[datetime, datetime]] = []
        at = departed
        for begins, ends in sorted(still):
            if begins > at:
                moving.append((at, min(begins, returned)))
            at = max(at, ends)
        if at < returned:
            moving.append((at, returned))
        spans[plate] = [(begins, ends) for begins, ends in moving if begins < ends]
    return spans


def generate_positions(seed: int, day: Day, start: datetime, seconds: int) -> list[Report]:
    """A position a second of every vehicle while it moves in ``[start, start + seconds)``, as its
    terminal reports it (degrees to 10⁻⁶, km/h and km to a tenth, whole seconds: what JT/T 808
    carries, so both intakes store the same values), in the order they happened, the fleet mixed."""
    chance = random.Random(seed * 1_000_003 + 808)  # a stream of its own: the day's records stay as they are
    spans = moving_spans(day)
    end = start + timedelta(seconds=seconds)
    second = timedelta(seconds=1)
    lifted: dict[str, list[datetime]] = defaultdict(list)
    for lift in day.pickups:
        lifted[lift.plate].append(lift.at)
    emptied: dict[str, list[datetime]] = defaultdict(list)
    for move in day.movements:
        if move.kind in ("departed_depot", "arrived_at_facility"):
            emptied[move.plate].append(move.at)
    (west, east), (south, north) = CITY_BOX
    reports: list[Report] = []
    for vehicle in day.register.vehicles:
        plate, kind = vehicle["plate"], vehicle["kind"]
        lon, lat = _lon_lat(chance)
        heading = chance.uniform(0, 360)
        low, high = SPEEDS[kind]
        speed = chance.uniform(low, high)
        altitude = chance.randint(5, 40)
        odometer = chance.uniform(20_000, 300_000)
        lifts, resets = lifted[plate], emptied[plate]
        for begins, ends in spans[plate]:
            at = max(begins, start)
            last = min(ends, end)
            while at < last:
                speed = min(high, max(low, speed + chance.uniform(-2.0, 2.0)))
                heading = (heading + chance.uniform(-8.0, 8.0)) % 360
                metres, bearing = speed / 3.6, math.radians(heading)
                lat += metres * math.cos(bearing) / 110_540
                lon += metres * math.sin(bearing) / (111_320 * math.cos(math.radians(lat)))
                if not (west <= lon <= east and south <= lat <= north):
                    heading = (heading + 180) % 360
                    lon, lat = min(east, max(west, lon)), min(north, max(south, lat))
                odometer += metres / 1000
                if kind == "cleaning":
                    load = LOAD_CODES["half"]
                else:
                    # Loaded once a lift came after the last departure or unloading.
                    lifted_at = bisect.bisect_left(lifts, at)
                    reset_at = bisect.bisect_left(resets, at)
                    loaded = lifted_at > 0 and (reset_at == 0 or lifts[lifted_at - 1] > resets[reset_at - 1])
                    load = LOAD_CODES["full" if loaded else "empty"]
                reports.append(
                    Report(
                        plate, at.astimezone(UTC), round(lon, 6), round(lat, 6), round(speed, 1),
                        int(heading) % 360, altitude, 0, ACC_ON | FIXED | load << 8, load, round(odometer, 1),
                    )
                )  # fmt: skip
                at += second
    reports.sort(key=lambda report: (report.at, report.plate))
    return reports


def position_item(report: Report) -> dict[str, Any]:
    """A position as a vendor's platform relays it (``contract.fleet.PositionFields``)."""
    return {
        "plate": report.plate,
        "at": report.at.astimezone(CITY_TIMEZONE).isoformat(),
        "location": _location(report.lon, report.lat),
        "speed_kmh": report.speed_kmh,
        "direction": report.direction,
        "altitude_m": report.altitude_m,
        "load": LOAD_NAMES[report.load] if report.load is not None else None,
        "mileage_km": report.mileage_km,
        "alarm": report.alarm,
        "status": report.status,
    }


def position_body(report: Report) -> bytes:
    """The same position as its terminal's 0x0200 body (mileage as extra 0x01, in tenths of a km)."""
    extras = (
        {} if report.mileage_km is None else {EXTRA_MILEAGE: round(report.mileage_km * 10).to_bytes(4, "big")}
    )
    return Position(
        report.alarm, report.status, round(report.lat * 1e6), round(report.lon * 1e6), report.altitude_m or 0,
        round(report.speed_kmh * 10), report.direction, report.at.astimezone(BEIJING), extras,
    ).encode(2013)  # fmt: skip


def position_rows(reports: Sequence[Report], source: str) -> list[tuple[Any, ...]]:
    """The rows the intake writes for these reports (``citygrid.fleet.intake.accept``)."""
    tail = (source, False, datetime.now(UTC))
    return [report[:REPORT_COLUMNS] + tail for report in reports]


async def raw_partitions(raw_url: str) -> int:
    """Fixture: the second database's position partitions, made as the service makes its own."""
    engine = create_async_engine(to_asyncpg_url(raw_url))
    try:
        return await PARTITIONS.ensure(async_sessionmaker(engine), datetime.now(CITY_TIMEZONE).date())
    finally:
        await engine.dispose()


async def raw_positions(raw_url: str, reports: Sequence[Report], source: str) -> dict[str, Any]:
    """The same positions straight into the second database's positions table, one client, in
    COPYs as large as the service's writer makes (``max_rows``)."""
    rows = position_rows(reports, source)
    connection = await connect(raw_url)
    try:
        started = time.perf_counter()
        await copy_rows(connection, "positions", rows, list(POSITION_COLUMNS))
        seconds = time.perf_counter() - started
    finally:
        await connection.close()
    return {"rows": len(rows), "seconds": seconds, "per_s": len(rows) / seconds}


# Each source's rows as one digest: both databases hold the same positions when the digests agree.
POSITIONS_DIGEST = """
SELECT count(*) AS rows, md5(string_agg(concat_ws('|', plate, extract(epoch FROM at)::bigint, lon, lat,
       speed_kmh, direction, altitude_m, alarm, status, load, mileage_km, blind_area), ',' ORDER BY plate, at)) AS digest
FROM positions WHERE source = $1
"""


async def positions_digest(url: str, source: str) -> tuple[int, str | None]:
    connection = await connect(url)
    try:
        row = await connection.fetchrow(POSITIONS_DIGEST, source)
    finally:
        await connection.close()
    return int(row["rows"]), row["digest"]


class FleetTerminal(BenchTerminal):
    """``bench.muck``'s terminal (its reading of replies), speaking for a vehicle of this register:
    its phone is the vehicle's ``terminal_phone``."""

    def __init__(
        self, n: int, phone: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(n, reader, writer)
        self.phone = phone

    def frame(self, msg_id: int, body: bytes) -> bytes:
        self.serial = (self.serial + 1) & 0xFFFF
        return encode_frame(Header(msg_id, self.phone, self.serial), body)

    async def send(self, msg_id: int, body: bytes) -> None:
        self.writer.write(self.frame(msg_id, body))


async def log_in(address: tuple[str, int], n: int, vehicle: dict[str, Any]) -> FleetTerminal | str:
    """A vehicle's terminal connected, registered (0x0100 naming its plate) and authenticated (0x0102);
    what went wrong otherwise."""
    try:
        async with asyncio.timeout(60):
            reader, writer = await asyncio.open_connection(*address)
    except (TimeoutError, OSError) as error:
        return f"connection failed: {error!r}"
    terminal = FleetTerminal(n, vehicle["terminal_phone"], reader, writer)
    try:
        async with asyncio.timeout(60):
            registration = Registration(44, 100, "BENCH", "M1", f"T{n}", 2, vehicle["plate"])
            await terminal.send(REGISTER, registration.encode(2013))
            frame = await terminal.reply()
            answer = RegistrationReply.decode(frame.body, frame.header)
            if answer.result != REGISTERED:
                writer.close()
                return f"registration result {answer.result}"
            await terminal.send(AUTHENTICATE, Authentication(answer.auth_code or "").encode(2013))
            frame = await terminal.reply()
            if GeneralReply.decode(frame.body, frame.header).result != OK:
                writer.close()
                return "authentication refused"
    except (TimeoutError, OSError) as error:
        writer.close()
        return f"login failed: {error!r}"
    return terminal


async def jt808_positions(
    address: tuple[str, int], vehicles: list[dict[str, Any]], reports: Sequence[Report], pid: int
) -> dict[str, Any]:
    """Every vehicle's terminal logged in (untimed), its window's positions encoded (untimed), then
    each terminal sending them one 0x0200 at a time, each on its acknowledgement: the reports timed."""
    logged: list[FleetTerminal | str] = []
    for first in range(0, len(vehicles), TERMINAL_WAVE):
        wave = range(first, min(first + TERMINAL_WAVE, len(vehicles)))
        logged += await asyncio.gather(*(log_in(address, n, vehicles[n]) for n in wave))
    terminals = {vehicles[n]["plate"]: t for n, t in enumerate(logged) if isinstance(t, FleetTerminal)}
    login_errors = Counter(t for t in logged if isinstance(t, str))
    frames: dict[str, list[bytes]] = defaultdict(list)
    unsent = 0
    for report in reports:
        terminal = terminals.get(report.plate)
        if terminal is None:
            unsent += 1
            continue
        frames[report.plate].append(terminal.frame(POSITION, position_body(report)))
    answers: Counter[str] = Counter()

    async def send(terminal: FleetTerminal, frames: list[bytes]) -> None:
        for frame in frames:
            terminal.writer.write(frame)
            reply = await terminal.reply()
            ok = (
                reply.header.msg_id == PLATFORM_REPLY
                and GeneralReply.decode(reply.body, reply.header).result == OK
            )
            answers["acknowledged" if ok else "failed"] += 1

    cpu_before = cpu_seconds([pid])
    started = time.perf_counter()
    outcomes = await asyncio.gather(
        *(send(terminals[plate], sent) for plate, sent in frames.items()), return_exceptions=True
    )
    seconds = time.perf_counter() - started
    cpu = cpu_seconds([pid]) - cpu_before
    for terminal in terminals.values():
        terminal.writer.close()
    broken = [repr(outcome) for outcome in outcomes if isinstance(outcome, BaseException)]
    acknowledged = answers["acknowledged"]
    return {
        "terminals": len(vehicles),
        "logged_in": len(terminals),
        "login_errors": dict(login_errors),
        "reporting": len(frames),
        "rows": len(reports) - unsent,
        "acknowledged": acknowledged,
        "failed": answers["failed"],
        "connections_broken": len(broken),
        "broken_samples": broken[:3],
        "seconds": seconds,
        "per_s": acknowledged / seconds if seconds else None,
        "service_cpu_us_per_row": 1e6 * cpu / max(acknowledged, 1),
    }


def _writer_batches(exposition: str) -> tuple[float, float]:
    """The group writer's COPYs so far, and the seconds they took."""
    return (
        metric(exposition, "citygrid_waste_position_batch_seconds_count"),
        metric(exposition, "citygrid_waste_position_batch_seconds_sum"),
    )


async def positions_intake(
    service_url: str, headers: dict[str, str], jt808: tuple[str, int], day: Day, reports: list[Report],
    senders: int, pid: int, profile_into: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The window's positions over HTTP, then over JT/T 808; the writer's COPYs of each."""
    figures: dict[str, Any] = {}
    before = _writer_batches(await scrape(service_url))
    items = (position_item(report) for report in reports)
    sampler = start_sampler(profile_into, pid, "positions-http")
    figures["http"] = await post_batches(
        service_url, headers, "/v1/positions", "positions", items, POSITION_BATCH, senders, pid
    )
    stop_sampler(sampler)
    exposition = await scrape(service_url)
    after = _writer_batches(exposition)
    figures["http"]["writer"] = {"copies": after[0] - before[0], "seconds": after[1] - before[1]}
    sampler = start_sampler(profile_into, pid, "positions-jt808")
    figures["jt808"] = await jt808_positions(jt808, day.register.vehicles, reports, pid)
    stop_sampler(sampler)
    exposition = await scrape(service_url)
    done = _writer_batches(exposition)
    figures["jt808"]["writer"] = {"copies": done[0] - after[0], "seconds": done[1] - after[1]}
    refused = re.findall(
        r"^citygrid_waste_positions_refused_total\{([^}]*)\} (\S+)$", exposition, re.MULTILINE
    )
    figures["refused_metric"] = {labels: float(value) for labels, value in refused if float(value)}
    for intake in ("http", "jt808"):
        figures[intake]["stored_metric"] = metric(exposition, "citygrid_waste_positions_total", intake=intake)
    return figures


async def compare_positions(url: str, raw_url: str) -> dict[str, Any]:
    """Whether the service's positions table holds, source by source, the rows the raw COPY wrote."""
    compared: dict[str, Any] = {}
    for source in ("http", "jt808"):
        (rows, digest), (raw_rows, raw_digest) = await asyncio.gather(
            positions_digest(url, source), positions_digest(raw_url, source)
        )
        compared[source] = {"service_rows": rows, "raw_rows": raw_rows, "same": digest == raw_digest}
    return compared


async def positions_size(raw_url: str) -> dict[str, float]:
    """What a position takes on disk (heap, index, TOAST of every partition), in the second database."""
    connection = await connect(raw_url)
    try:
        row = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM positions) AS rows, "
            "(SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('positions')) AS bytes"
        )
    finally:
        await connection.close()
    rows, size = int(row["rows"]), int(row["bytes"])
    return {"rows": rows, "bytes": size, "bytes_per_row": size / rows if rows else 0.0}


# -- movements read from the positions ------------------------------------------------------------


HOLDER = "bench"  # a lease holder that is no replica: the round is held off until the bench lets go
MOVEMENTS_READ = "citygrid_waste_movements_positions_read_total"
MOVEMENTS_JOB = "waste-movements-round"
MOVEMENTS_TIMEOUT = 900.0
MOVEMENTS_POLL = 0.25  # seconds between the scrapes of /metrics (each costs the service a little CPU)
# The jobs a replica runs once within its first 5 s (``citygrid.jobs``): the measurement starts after.
STARTUP_JOBS = (
    "waste-partitions", "waste-terminal-sweep", "waste-movements-round", "waste-chain-round",
    "waste-chain-figures", "waste-chain-retention",
)  # fmt: skip
# The cursor as the round's first run would make it (at the horizon), the lease the bench's.
HOLD_MOVEMENTS = """
INSERT INTO position_cursor (name, horizon, owner, lease_until)
VALUES ($1, (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint, $2, now() + interval '1 day')
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
"""
STORED_MOVEMENTS = "SELECT plate, at, kind, place, ended_at, lon, lat, source FROM movements"

MovementKey = tuple[str, datetime, str, str]  # a movement's identity: plate, time, kind, place


async def hold_movements(url: str) -> None:
    """Fixture: the movements round's cursor set before any position is stored, so the round reads
    them all, and its lease held by the bench, so no replica reads them before it is measured."""
    connection = await connect(url)
    try:
        await connection.execute(HOLD_MOVEMENTS, MOVEMENTS_CURSOR, HOLDER)
    finally:
        await connection.close()


async def hold_chain_round(url: str) -> None:
    """Fixture: the chain round's lease held by the bench, so the movements round is measured alone
    (the vehicles it notes are not assembled meanwhile)."""
    connection = await connect(url)
    try:
        await connection.execute(
            "UPDATE chain_cursor SET owner = $2, lease_until = now() + interval '1 day' WHERE name = $1",
            CHAIN_CURSOR,
            HOLDER,
        )
    finally:
        await connection.close()


async def first_runs(service_url: str, jobs: Sequence[str], timeout: float = 30.0) -> list[str]:
    """Wait until each of these jobs has run once in the replica; those that did not in time."""
    deadline = time.perf_counter() + timeout
    while True:
        exposition = await scrape(service_url)
        left = [
            job
            for job in jobs
            if not any(
                metric(exposition, "citygrid_job_runs_total", job=job, outcome=outcome)
                for outcome in ("ok", "error")
            )
        ]
        if not left or time.perf_counter() > deadline:
            return left
        await asyncio.sleep(0.2)


def _job_runs(exposition: str, outcome: str) -> float:
    return metric(exposition, "citygrid_job_runs_total", job=MOVEMENTS_JOB, outcome=outcome)


async def movements_round(
    service_url: str, url: str, pid: int, every_seconds: float, timeout: float
) -> dict[str, Any]:
    """The movements round let go over every position stored: timed from the bench's lease ending
    (the replica's next round takes the lead, up to one period later) until the replica's count of
    positions read reaches the positions stored, with the replica's CPU meanwhile."""
    connection = await connect(url)
    try:
        stored = int(await connection.fetchval("SELECT count(*) FROM positions"))
        before = await scrape(service_url)
        read_before = metric_sum(before, MOVEMENTS_READ)
        progress: list[tuple[float, float]] = [(0.0, 0.0)]  # (seconds, positions read) at each change
        seconds: float | None = None
        cpu_before, started = cpu_seconds([pid]), time.perf_counter()
        await connection.execute(
            "UPDATE position_cursor SET lease_until = now() WHERE name = $1", MOVEMENTS_CURSOR
        )
        while True:
            await asyncio.sleep(MOVEMENTS_POLL)
            exposition = await scrape(service_url)
            elapsed = time.perf_counter() - started
            read = metric_sum(exposition, MOVEMENTS_READ) - read_before
            if read != progress[-1][1]:
                progress.append((round(elapsed, 2), read))
            if read >= stored:
                seconds = elapsed
                break
            if elapsed > timeout:
                break
        cpu = cpu_seconds([pid]) - cpu_before
        kinds = {
            row["kind"]: row["n"]
            for row in await connection.fetch(
                "SELECT kind, count(*) AS n FROM movements WHERE source = 'positions' GROUP BY kind ORDER BY kind"
            )
        }
    finally:
        await connection.close()
    derived = metric_by(exposition, "citygrid_waste_movements_derived_total", "kind")
    derived_before = metric_by(before, "citygrid_waste_movements_derived_total", "kind")
    steps = [b[1] - a[1] for a, b in itertools.pairwise(progress)]
    return {
        "every_seconds": every_seconds,
        "stored": stored,
        "read": read,
        "seconds": seconds,
        "per_s": read / seconds if seconds else None,
        "service_cpu_us_per_position": 1e6 * cpu / max(read, 1),
        "runs": _job_runs(exposition, "ok") - _job_runs(before, "ok"),
        "run_errors": _job_runs(exposition, "error") - _job_runs(before, "error"),
        # Each change seen between two scrapes: one round's reading while rounds are further apart.
        "readings": len(steps),
        "most_per_reading": max(steps, default=0.0),
        "derived_metric": {kind: n - derived_before.get(kind, 0.0) for kind, n in sorted(derived.items())},
        "stored_by_kind": kinds,
        "lag_seconds": metric(exposition, "citygrid_waste_movements_lag_seconds"),
        "progress": progress,
    }


async def movements_in_process(url: str) -> dict[str, Any]:
    """``derive_track`` over the very positions the round read (both intakes' rows, as it read them),
    in this process, with the register's places as the service builds them (``load_places``) and the
    round's settings; and the movements it gives beside those the round stored."""
    config = MovementsConfig()
    engine = create_async_engine(to_asyncpg_url(url))
    try:
        async with async_sessionmaker(engine)() as session:
            began = time.perf_counter()
            places = await load_places(session, config.point_radius_m)
            places_seconds = time.perf_counter() - began
    finally:
        await engine.dispose()
    connection = await connect(url)
    try:
        rows = await connection.fetch("SELECT plate, at, lon, lat, speed_kmh FROM positions")
        stored = await connection.fetch(STORED_MOVEMENTS)
    finally:
        await connection.close()
    positions = [
        chain_movements.Position(row["plate"], row["at"], row["lon"], row["lat"], row["speed_kmh"])
        for row in rows
    ]
    started = time.perf_counter()
    derived = chain_movements.derive_track(
        positions, places, stop_speed_kmh=config.stop_speed_kmh, min_stop=config.min_stop
    )
    seconds = time.perf_counter() - started
    found = [movement_row(movement) for movement in derived.movements]
    return {
        "positions": len(positions),
        "places_seconds": places_seconds,
        "seconds": seconds,
        "per_s": len(positions) / seconds if seconds else None,
        "by_kind": dict(sorted(Counter(row["kind"] for row in found).items())),
        "compared": compare_movements(found, stored),
    }


def compare_movements(found: Sequence[dict[str, Any]], stored: Sequence[asyncpg.Record]) -> dict[str, Any]:
    """The movements derived in this process beside those the round stored (``source='positions'``):
    by identity, then by what they say (a stop's end, where it was). One derived here and stored from
    a platform under the same identity was kept as the platform's, as the service keeps the first."""
    mine: dict[MovementKey, tuple[Any, ...]] = {
        (row["plate"], row["at"], row["kind"], row["place"]): (row["ended_at"], row["lon"], row["lat"])
        for row in found
    }
    theirs: dict[MovementKey, tuple[Any, ...]] = {
        (row["plate"], row["at"], row["kind"], row["place"]): (row["ended_at"], row["lon"], row["lat"])
        for row in stored
        if row["source"] == "positions"
    }
    platform = {
        (row["plate"], row["at"], row["kind"], row["place"]) for row in stored if row["source"] != "positions"
    }
    missing = sorted(mine.keys() - theirs.keys())
    unexpected = sorted(theirs.keys() - mine.keys())
    differ = sorted(key for key in mine.keys() & theirs.keys() if mine[key] != theirs[key])
    return {
        "same": not (missing or unexpected or differ),
        "missing": len(missing),
        "kept_as_platform": sum(1 for key in missing if key in platform),
        "unexpected": len(unexpected),
        "differ": len(differ),
        "some": [
            f"{what} {kind} {plate} {at.isoformat()} {place}".rstrip()
            for what, keys in (("not stored", missing), ("not derived", unexpected), ("differs", differ))
            for plate, at, kind, place in keys[:4]
        ],
    }


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
    positions_from: dt_time = dt_time(8, 0),
    positions_minutes: float = 3.0,
    moving_hours: float = 8.0,
    projection_fleet: int = CITY_FLEET,
    movements_round_seconds: float = 1.0,
    profile_into: Path | None = None,
) -> dict[str, Any]:
    began = time.perf_counter()
    day_of = datetime.now(CITY_TIMEZONE).date() - timedelta(days=1)
    day = generate(
        seed, day_of, points=points, collection_points=collection_points, vehicles=vehicles,
        cleaning=cleaning, violation_share=violation_share,
    )  # fmt: skip
    window_start = datetime.combine(day_of, positions_from, tzinfo=CITY_TIMEZONE)
    window_seconds = round(positions_minutes * 60)
    generated = time.perf_counter()
    reports = generate_positions(seed, day, window_start, window_seconds)
    place_depots(seed, day.register, reports)
    generated = time.perf_counter() - generated
    results: dict[str, Any] = {
        "day": day_of.isoformat(),
        "seed": seed,
        "fleet": {"collection": vehicles, "cleaning": cleaning, "points": points, "bins": day.register.bins,
                  "collection_points": collection_points, "facilities": len(day.register.facilities),
                  "depots": len(day.register.depots), "routes": len(day.register.routes)},
        "records": {"pickups": len(day.pickups), "weighings": len(day.weighings), "movements": len(day.movements)},
        "window": {"from": window_start.isoformat(), "seconds": window_seconds, "positions": len(reports),
                   "vehicles_moving": len({report.plate for report in reports}),
                   "moving_share": len(reports) / max(window_seconds * len(day.register.vehicles), 1)},
        "projection_input": {"fleet": projection_fleet, "moving_hours": moving_hours},
    }  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-bench-waste-"))
    try:
        with servers_for(workdir, durable=True, identities=dev_identities()) as (server_url, nats):
            url, raw_url = database_url(server_url, DB), database_url(server_url, RAW_DB)
            asyncio.run(create_databases(server_url, [DB, RAW_DB]))
            upgrade("services.waste", url)
            upgrade("services.waste", raw_url)
            asyncio.run(hold_movements(url))
            private_key, public_key = generate_keypair()
            headers = {
                PRINCIPAL_HEADER: sign_principal(
                    PRINCIPAL, private_key=private_key, audience="waste", ttl_seconds=7200
                )
            }
            port, jt808_port = free_port(), free_port()
            service_url = f"http://127.0.0.1:{port}"
            # The intake with the round held off (it runs once at the start, then an hour later).
            log = workdir / "waste-intake.log"
            with process(
                [sys.executable, "-m", "services.waste.main"],
                service_env(server_url, nats, public_key, port, jt808_port, round_seconds=3600),
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
                # The positions, with the chain's records in: its partitions exist since the start.
                positions_began = time.perf_counter()
                results["positions"] = asyncio.run(
                    positions_intake(
                        service_url, headers, ("127.0.0.1", jt808_port), day, reports, senders, child.pid,
                        profile_into,
                    )
                )  # fmt: skip
                results["positions_rss_mib"] = rss_mib(child.pid)
                positions_seconds = time.perf_counter() - positions_began
            results["intake_log_errors"] = log_errors(log)
            results["raw_copy"] = asyncio.run(raw_copy(raw_url, day))
            positions_began = time.perf_counter()
            results["raw_partitions"] = asyncio.run(raw_partitions(raw_url))
            results["positions_raw"] = {
                source: asyncio.run(raw_positions(raw_url, reports, source)) for source in ("http", "jt808")
            }
            results["positions_compared"] = asyncio.run(compare_positions(url, raw_url))
            results["positions_size"] = asyncio.run(positions_size(raw_url))
            # With the window's generation: the section's share of the run.
            results["positions_seconds"] = (
                positions_seconds + time.perf_counter() - positions_began + generated
            )
            results["notes"] = asyncio.run(hand_over(url))
            # The round alone: the service again, its round due every second.
            log = workdir / "waste-round.log"
            with process(
                [sys.executable, "-m", "services.waste.main"],
                service_env(server_url, nats, public_key, port, jt808_port, round_seconds=1),
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
                results["service_log_errors"] = log_errors(log)
            # The movements round alone: the service again, its movements round due every
            # ``movements_round_seconds``, the chain round held off.
            movements_began = time.perf_counter()
            asyncio.run(hold_chain_round(url))
            log = workdir / "waste-movements.log"
            with process(
                [sys.executable, "-m", "services.waste.main"],
                service_env(
                    server_url, nats, public_key, port, jt808_port, round_seconds=3600,
                    movements_seconds=movements_round_seconds,
                ),
                log,
            ) as child:  # fmt: skip
                wait_healthy(service_url, child, log)
                not_run = asyncio.run(first_runs(service_url, STARTUP_JOBS))
                sampler = start_sampler(profile_into, child.pid, "movements")
                movements = asyncio.run(
                    movements_round(service_url, url, child.pid, movements_round_seconds, MOVEMENTS_TIMEOUT)
                )
                stop_sampler(sampler)
            results["movements_log_errors"] = log_errors(log)
            results["positions_movements"] = {
                "round": {**movements, "jobs_not_run_at_start": not_run},
                "in_process": asyncio.run(movements_in_process(url)),
            }
            results["movements_seconds"] = time.perf_counter() - movements_began
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["run_seconds"] = time.perf_counter() - began
    return results


def log_errors(log: Path) -> list[str]:
    """The first few errors (and warnings: a position not stored is one) a service logged."""
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if any(word in line for word in ("Traceback", "ERROR", "WARNING"))][:5]


def _ratio(a: float | None, b: float | None) -> str:
    return f"×{a / b:.3g}" if a and b else "×n/a"


def report(results: dict[str, Any]) -> list[str]:
    fleet, records = results["fleet"], results["records"]
    reg, reg_raw = results["register"], results["register_raw"]
    lines = [
        f"waste day      {results['day']} (seed {results['seed']}): {fleet['collection']} collection + "
        f"{fleet['cleaning']} cleaning vehicles, {fleet['points']} points with {fleet['bins']} bins, "
        f"{fleet['collection_points']} collection points, {fleet['facilities']} facilities, {fleet['depots']} depots, "
        f"{fleet['routes']} routes; "
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
    lines += positions_report(results)
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
        f"{results['ingest_rss_mib']:.0f} MiB after the intake, {results['positions_rss_mib']:.0f} MiB after the positions"
    )
    for which, replica in (("intake", "intake"), ("service", "round"), ("movements", "movements")):
        if results[f"{which}_log_errors"]:
            lines.append(f"waste log      the {replica} replica: {results[f'{which}_log_errors']}")
    lines.append(
        f"waste run      {results['run_seconds']:.0f} s in all, {results['positions_seconds']:.0f} s of it the positions, "
        f"{results['movements_seconds']:.0f} s the movements round"
    )
    return lines


def positions_report(results: dict[str, Any]) -> list[str]:
    window, figures, raw = results["window"], results["positions"], results["positions_raw"]
    fleet = results["fleet"]["collection"] + results["fleet"]["cleaning"]
    lines = [
        f"waste positions window {window['from']} + {window['seconds']} s: {window['vehicles_moving']} of {fleet} "
        f"vehicles moving, {window['positions']} positions at 1 Hz ({window['moving_share']:.0%} of the "
        f"vehicle-seconds)"
    ]
    per_core: dict[str, float] = {}
    for intake in ("http", "jt808"):
        got, base = figures[intake], raw[intake]
        per_core[intake] = 1e6 / max(got["service_cpu_us_per_row"], 1e-9)
        writer = got["writer"]
        copies = writer["copies"]
        line = (
            f"waste positions {intake:<6} {got['rows']:>7} rows {got['per_s'] or 0:>6.0f}/s vs raw COPY {base['per_s']:>7.0f}/s "
            f"({intake}/raw {_ratio(got['per_s'], base['per_s'])}), service CPU {got['service_cpu_us_per_row']:.1f} µs/position "
            f"= {per_core[intake]:.0f} positions/s per core; "
        )
        if intake == "http":
            line += f"stored {got['stored']}, refused {got['refused'] or 0}"
            if got["http_errors"]:
                line += f"; HTTP ERRORS {got['http_errors']} {got['error_samples']}"
        else:
            line += (
                f"{got['logged_in']}/{got['terminals']} terminals logged in, {got['reporting']} reporting one 0x0200 "
                f"at a time; acknowledged {got['acknowledged']}, failed {got['failed']}"
            )
            if got["login_errors"] or got["connections_broken"]:
                line += f"; LOGIN ERRORS {got['login_errors']}, {got['connections_broken']} connections broken {got['broken_samples']}"
        if copies:
            line += (
                f"; the writer's {copies:.0f} COPYs of {got['rows'] / copies:.0f} rows, "
                f"{1000 * writer['seconds'] / copies:.1f} ms each"
            )
        lines.append(line)
    compared = results["positions_compared"]
    lines.append(
        "waste positions stored "
        + ", ".join(
            f"{source} {c['service_rows']} rows in the service vs {c['raw_rows']} raw: "
            + ("the same" if c["same"] else "ROWS DIFFER")
            for source, c in compared.items()
        )
        + (f"; REFUSED (metric) {figures['refused_metric']}" if figures["refused_metric"] else "")
        + "".join(
            f"; {intake} METRIC COUNTS {figures[intake]['stored_metric']:.0f} STORED"
            for intake in ("http", "jt808")
            if figures[intake]["stored_metric"] != compared[intake]["service_rows"]
        )
    )
    wanted, size = results["projection_input"], results["positions_size"]
    peak = float(wanted["fleet"])  # every vehicle moving at once, a position a second each
    per_day = peak * wanted["moving_hours"] * 3600
    mean = per_day / 86_400
    lines.append(
        f"waste positions PROJECTION {wanted['fleet']} vehicles at 1 Hz while moving, {wanted['moving_hours']:g} h a day: "
        f"{peak:.0f} positions/s at the peak (all moving; {peak * window['moving_share']:.0f}/s at the window's share), "
        f"{mean:.0f}/s over the day, {per_day / 1e6:.0f} M rows "
        f"and ~{per_day * size['bytes_per_row'] / 2**30:.0f} GiB a day ({size['bytes_per_row']:.0f} B/row on disk); "
        + ", ".join(
            f"{intake} {per_core[intake]:.0f}/s per core: {peak / per_core[intake]:.2f} cores at the peak, "
            f"{mean / per_core[intake]:.2f} over the day"
            for intake in ("http", "jt808")
        )
        + f"; raw COPY (one client) {raw['http']['per_s']:.0f}/s = ×{raw['http']['per_s'] / peak:.1f} the peak"
    )
    return lines + movements_report(results["positions_movements"], peak)


def movements_report(movements: dict[str, Any], peak: float) -> list[str]:
    got, base = movements["round"], movements["in_process"]
    compared = base["compared"]
    per_core = 1e6 / max(got["service_cpu_us_per_position"], 1e-9)
    if got["seconds"] is None:
        head = (
            f"waste movements round NOT CAUGHT UP: {got['read']:.0f} of {got['stored']} positions read "
            f"in {MOVEMENTS_TIMEOUT:.0f} s"
        )
    else:
        head = (
            f"waste movements round {got['read']:.0f} of {got['stored']} positions read in {got['seconds']:.1f} s "
            f"(due every {got['every_seconds']:g} s; {got['readings']} readings, at most {got['most_per_reading']:.0f}): "
            f"{got['per_s']:.0f}/s vs derive_track in-process {base['per_s']:.0f}/s "
            f"(round/in-process {_ratio(got['per_s'], base['per_s'])})"
        )
    head += (
        f", service CPU {got['service_cpu_us_per_position']:.1f} µs/position = {per_core:.0f} positions/s per core "
        f"({peak / per_core:.2f} cores at the projection's peak); {got['runs']:.0f} rounds, "
        f"{got['run_errors']:.0f} failed"
    )
    if got["jobs_not_run_at_start"]:
        head += f"; JOBS NOT RUN AT THE START {got['jobs_not_run_at_start']}"
    if compared["same"]:
        agreement = "the same movements"
    else:
        agreement = (
            f"MOVEMENTS DIFFER: {compared['missing']} derived in-process and not stored by the round "
            f"({compared['kept_as_platform']} of them kept as the platform's), {compared['unexpected']} stored "
            f"and not derived in-process, {compared['differ']} saying otherwise, e.g. {compared['some']}"
        )
    return [
        head,
        f"waste movements derived (metric) {got['derived_metric'] or 'none'}; stored {got['stored_by_kind'] or 'none'} "
        f"vs in-process {base['by_kind'] or 'none'}: {agreement}",
    ]


def _clock(text: str) -> dt_time:
    try:
        return dt_time.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time of day (HH:MM)") from None


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
    parser.add_argument(
        "--positions-from",
        type=_clock,
        default=dt_time(8, 0),
        help="the positions' sample window starts at this time of the day (HH:MM)",
    )
    parser.add_argument("--positions-minutes", type=float, default=3.0, help="the sample window's length")
    parser.add_argument(
        "--projection-fleet", type=int, default=CITY_FLEET, help="vehicles the projection is for"
    )
    parser.add_argument("--moving-hours", type=float, default=8.0, help="hours a day a vehicle moves")
    parser.add_argument(
        "--movements-round-seconds",
        type=float,
        default=1.0,
        help="the movements round's period while it is measured (the service's default is 5)",
    )
    parser.add_argument("--profile", type=Path, help="sample the service with py-spy into this directory")
    parser.add_argument("--json", action="store_true", help="print the results as JSON before the report")
    arguments = parser.parse_args()
    if arguments.points < 80:
        parser.error("--points must be at least 80: a vehicle's route serves up to 64 distinct points")
    if not 1 <= arguments.batch <= 1000 or not 1 <= arguments.year_days <= 366:
        parser.error("--batch is 1 to 1000, --year-days 1 to 366")
    if not 0 < arguments.positions_minutes <= 24 * 60 or not 0 < arguments.moving_hours <= 24:
        parser.error("--positions-minutes is more than 0 to 1440, --moving-hours more than 0 to 24")
    if not arguments.movements_round_seconds > 0:
        parser.error("--movements-round-seconds is more than 0")
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
        positions_from=arguments.positions_from,
        positions_minutes=arguments.positions_minutes,
        moving_hours=arguments.moving_hours,
        projection_fleet=arguments.projection_fleet,
        movements_round_seconds=arguments.movements_round_seconds,
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

"""The fleet's routes: positions relayed by terminal vendors' platforms, and the release of a
vehicle's terminal so a replaced unit may register."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request
from pydantic import Field
from sqlalchemy import ARRAY, String, any_, bindparam, func, select

from citygrid.auth import CurrentPrincipal, require_city_wide
from citygrid.fleet.intake import Refused
from citygrid.fleet.relay import relay
from citygrid.fleet.reports import Report
from citygrid.runtime import RuntimeDep
from citygrid.schemas import IntakeResult, RequestModel
from contract.fleet import PositionFields
from services.waste.fleet.models import PositionSource
from services.waste.fleet.positions import FleetPositions
from services.waste.models import Vehicle
from services.waste.registry import service as registry
from services.waste.registry.api import PlatePath, vehicle_out
from services.waste.registry.schemas import Plate, VehicleOut

router = APIRouter(prefix="/v1", tags=["waste fleet"])

# Built once, the plates as one array parameter.
KNOWN_PLATES = select(Vehicle.plate).where(Vehicle.plate == any_(bindparam("plates", type_=ARRAY(String))))
KNOWN_PLATES_OF_DISTRICT = KNOWN_PLATES.where(Vehicle.district_code == bindparam("district"))


class PositionIn(PositionFields):
    """One position of a sanitation vehicle as a vendor's platform relays it from its terminal."""

    plate: Plate


class PositionBatchIn(RequestModel):
    positions: list[PositionIn] = Field(min_length=1, max_length=1000)
    # Positions a terminal kept while it had no network, sent late (as 0x0704 type 1).
    blind_area: bool = False


def fleet_of(request: Request) -> FleetPositions:
    positions: FleetPositions = request.app.state.fleet_positions
    return positions


@router.post("/positions", operation_id="report_positions")
async def report_positions(
    body: PositionBatchIn, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal
) -> IntakeResult:
    """Up to 1,000 positions relayed by a terminal vendor's platform; answered once stored. A position
    of a vehicle not in the register (or, for a district-bound platform, not of its district),
    without a fix, out of range or out of time is refused alone."""
    plates = list({item.plate for item in body.positions})
    async with runtime.reads() as session:
        if principal.district is None:
            found = await session.scalars(KNOWN_PLATES, {"plates": plates})
        else:
            found = await session.scalars(
                KNOWN_PLATES_OF_DISTRICT, {"plates": plates, "district": principal.district}
            )
        known = set(found.all())
    fleet = fleet_of(request)

    async def store(reports: Sequence[Report]) -> list[Refused]:
        return await fleet.store(reports, source=PositionSource.HTTP, blind_area=body.blind_area)

    return await relay(
        body.positions,
        known,
        store,
        unknown_code="waste.unknown_vehicle",
        unknown="no vehicle {plate} in the register (of this platform's district)",
    )


@router.post("/vehicles/{plate}/terminal/release", operation_id="release_terminal")
async def release_terminal(plate: PlatePath, runtime: RuntimeDep, principal: CurrentPrincipal) -> VehicleOut:
    """Let the vehicle's terminal register again (a unit replaced or reset); until then a second
    registration of its number is refused, so nobody who knows the number can take the vehicle over.
    Connections still logged in with the old code are closed by each replica's next sweep."""
    require_city_wide(principal, "the register of sanitation vehicles")
    async with runtime.uow() as uow:
        vehicle = await registry.one(uow.session, Vehicle, plate)
        await uow.session.refresh(vehicle, with_for_update=True)
        vehicle.auth_code_sha256 = None
        vehicle.registered_at = None
        vehicle.version = vehicle.version + 1
        vehicle.updated_at = func.now()
        await uow.session.flush()
        await uow.session.refresh(vehicle)
        return vehicle_out(vehicle, principal)

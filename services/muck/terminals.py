"""The trucks' JT/T 808 terminals as the muck service sees them: registration against the register,
authentication by the code issued then, and their positions into the intake.

A terminal is known by its phone number on a registered truck; anything else is refused
registration (``TERMINAL_UNKNOWN``) and authentication. A truck's terminal registers once: a second
registration is refused (``TERMINAL_TAKEN``) until the register releases it
(``POST /v1/trucks/{plate}/terminal/release``), since anyone who knows a phone number could
otherwise take a truck's identity from its terminal. The code is kept as its SHA-256 only, in the
database, so a terminal may reconnect to any replica.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Sequence
from datetime import UTC

from sqlalchemy import func, select

from citygrid.fleet.reports import LOAD_CODES, Report, known_altitude
from citygrid.jt808.codec import (
    REGISTERED,
    TERMINAL_TAKEN,
    TERMINAL_UNKNOWN,
    VEHICLE_UNKNOWN,
    Authentication,
    Header,
    Position,
    Registration,
)
from citygrid.jt808.server import Jt808Listener
from citygrid.runtime import Runtime
from services.muck.models import PositionSource, Truck
from services.muck.positions.service import Positions
from services.muck.registry.schemas import full_phone
from services.muck.registry.service import auth_code_digest

log = logging.getLogger("services.muck.terminals")


class MuckTerminals:
    """The ``TerminalHandler`` of the muck service's JT/T 808 listener."""

    def __init__(self, runtime: Runtime, positions: Positions) -> None:
        self.runtime = runtime
        self.intake = positions
        # Phones authenticated on this replica's connections, their trucks, and the code's digest
        # each logged in with (a release, or a registration since, changes it: ``sweep``).
        self._plates: dict[str, str] = {}
        self._digests: dict[str, str] = {}

    async def register(self, header: Header, registration: Registration) -> tuple[int, str | None]:
        phone = full_phone(header.phone)
        code = secrets.token_hex(8)
        async with self.runtime.uow() as uow:
            truck = await uow.session.scalar(
                select(Truck).where(Truck.terminal_phone == phone).with_for_update()
            )
            if truck is None:
                return TERMINAL_UNKNOWN, None
            # A terminal names its own truck's plate (a muck truck always carries one): knowing a
            # number alone does not register a terminal.
            if registration.plate != truck.plate:
                return VEHICLE_UNKNOWN, None
            if truck.auth_code_sha256 is not None:
                return TERMINAL_TAKEN, None
            truck.auth_code_sha256 = auth_code_digest(code)
            truck.registered_at = func.now()
        log.info("terminal of truck %s registered", truck.plate)
        return REGISTERED, code

    async def authenticate(self, header: Header, authentication: Authentication) -> bool:
        phone = full_phone(header.phone)
        async with self.runtime.reads() as session:
            found = (
                await session.execute(
                    select(Truck.plate, Truck.auth_code_sha256).where(Truck.terminal_phone == phone)
                )
            ).first()
        if found is None or found.auth_code_sha256 is None:
            return False
        if not hmac.compare_digest(found.auth_code_sha256, auth_code_digest(authentication.auth_code)):
            return False
        self._plates[header.phone] = found.plate
        self._digests[header.phone] = found.auth_code_sha256
        return True

    async def sweep(self, listener: Jt808Listener) -> int:
        """Close the connections whose terminal no longer holds the code it logged in with (released
        by the register, registered again since, or its phone given to another truck), on this
        replica; how many. A released terminal so stops reporting within a sweep, on every replica,
        with no message between them that could be lost."""
        connected = listener.authenticated_phones()
        for gone in set(self._plates) - connected:
            self._plates.pop(gone, None)
            self._digests.pop(gone, None)
        if not connected:
            return 0
        by_full = {full_phone(phone): phone for phone in connected}
        async with self.runtime.reads() as session:
            current = {
                row.terminal_phone: (row.plate, row.auth_code_sha256)
                for row in await session.execute(
                    select(Truck.terminal_phone, Truck.plate, Truck.auth_code_sha256).where(
                        Truck.terminal_phone.in_(list(by_full))
                    )
                )
            }
        closed = 0
        for full, phone in by_full.items():
            if current.get(full) != (self._plates.get(phone), self._digests.get(phone)):
                closed += listener.disconnect(phone)
                self._plates.pop(phone, None)
                self._digests.pop(phone, None)
                log.info("terminal %s no longer holds its code: disconnected", phone)
        return closed

    async def positions(self, header: Header, positions: Sequence[Position], *, blind_area: bool) -> None:
        plate = self._plates[header.phone]
        reports = [report_of(plate, position) for position in positions]
        await self.intake.store(reports, source=PositionSource.JT808, blind_area=blind_area)


def report_of(plate: str, position: Position) -> Report:
    load = position.load
    return Report(
        plate=plate,
        at=position.time.astimezone(UTC),
        lon=position.longitude,
        lat=position.latitude,
        speed_kmh=position.speed_kmh,
        direction=position.direction,
        altitude_m=known_altitude(position.altitude),
        alarm=position.alarm,
        status=position.status,
        load=LOAD_CODES.get(load),
        mileage_km=position.mileage_km,
        fixed=position.fixed,
    )

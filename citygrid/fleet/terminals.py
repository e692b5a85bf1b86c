"""A fleet's JT/T 808 terminals against the service's register: registration, authentication by the
code issued then, their positions into the service's intake, and the sweep that closes connections
whose terminal no longer holds its code.

A terminal is known by its phone number on a registered vehicle; anything else is refused
registration (``TERMINAL_UNKNOWN``) and authentication. A vehicle's terminal registers once, naming
the vehicle's plate: a second registration is refused (``TERMINAL_TAKEN``) until the register
releases it, since anyone who knows a phone number could otherwise take a vehicle's identity from
its terminal. The code is kept as its SHA-256 only, in the database, so a terminal may reconnect to
any replica.

The register's model has the columns ``plate``, ``terminal_phone`` (the 20 digits of a 2019
header), ``auth_code_sha256`` and ``registered_at``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC
from typing import Any

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

log = logging.getLogger("citygrid.fleet.terminals")

# Stores a terminal's reports (``blind_area``: a 0x0704 re-upload); returns once they are stored.
Store = Callable[[Sequence[Report], bool], Awaitable[None]]


def full_phone(phone: str) -> str:
    """A terminal phone as a register keeps it: the 20 digits of a 2019 header."""
    return phone.rjust(20, "0")


def auth_code_digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


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


class RegisteredTerminals:
    """The ``TerminalHandler`` of a fleet's JT/T 808 listener, over ``register`` (the vehicles' model)."""

    def __init__(self, runtime: Runtime, register: type[Any], store: Store) -> None:
        self.runtime = runtime
        self.register_model = register
        self.store = store
        # Phones authenticated on this replica's connections, their vehicles, and the code's digest
        # each logged in with (a release, or a registration since, changes it: ``sweep``).
        self._plates: dict[str, str] = {}
        self._digests: dict[str, str] = {}

    async def register(self, header: Header, registration: Registration) -> tuple[int, str | None]:
        model = self.register_model
        phone = full_phone(header.phone)
        code = secrets.token_hex(8)
        async with self.runtime.uow() as uow:
            vehicle = await uow.session.scalar(
                select(model).where(model.terminal_phone == phone).with_for_update()
            )
            if vehicle is None:
                return TERMINAL_UNKNOWN, None
            # A terminal names its own vehicle's plate: knowing a number alone does not register it.
            if registration.plate != vehicle.plate:
                return VEHICLE_UNKNOWN, None
            if vehicle.auth_code_sha256 is not None:
                return TERMINAL_TAKEN, None
            vehicle.auth_code_sha256 = auth_code_digest(code)
            vehicle.registered_at = func.now()
        log.info("terminal of vehicle %s registered", vehicle.plate)
        return REGISTERED, code

    async def authenticate(self, header: Header, authentication: Authentication) -> bool:
        model = self.register_model
        phone = full_phone(header.phone)
        async with self.runtime.reads() as session:
            found = (
                await session.execute(
                    select(model.plate, model.auth_code_sha256).where(model.terminal_phone == phone)
                )
            ).first()
        if found is None or found.auth_code_sha256 is None:
            return False
        if not hmac.compare_digest(found.auth_code_sha256, auth_code_digest(authentication.auth_code)):
            return False
        self._plates[header.phone] = found.plate
        self._digests[header.phone] = found.auth_code_sha256
        return True

    def positions(
        self, header: Header, positions: Sequence[Position], *, blind_area: bool
    ) -> Awaitable[None]:
        plate = self._plates[header.phone]
        return self.store([report_of(plate, position) for position in positions], blind_area)

    async def sweep(self, listener: Jt808Listener) -> int:
        """Close the connections whose terminal no longer holds the code it logged in with (released
        by the register, registered again since, or its phone given to another vehicle), on this
        replica; how many. A released terminal so stops reporting within a sweep, on every replica,
        with no message between them that could be lost."""
        model = self.register_model
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
                    select(model.terminal_phone, model.plate, model.auth_code_sha256).where(
                        model.terminal_phone.in_(list(by_full))
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

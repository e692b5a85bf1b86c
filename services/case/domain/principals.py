"""Who acts in the workflow: the roles a caller acts with, and the unit whose cases it may work on.

Roles reach the case service in the gateway's signed principal: an API consumer's roles are those an
admin registered for it, a person's come from the identity provider's token. Two rules sit on top:

- A principal of kind ``service`` (the platform's own processes: the overdue scan, intake of other
  services' events, dispatch rules, the AI re-check) acts as ``Role.SYSTEM`` and only as that,
  whatever roles it names, so a service never accepts, handles or cancels like a person.
- A person never acts as ``Role.SYSTEM``: a ``system`` role in a person's token is ignored, so an
  identity provider cannot make anybody the platform. API consumers keep it when an admin granted
  it (a department's platform doing AI re-checks through the exchange API).

A unit's steps (accept, return, handle, its photos, check-ins, extension requests) are taken by a
principal that names a unit (a unit's handler, or a unit's own system), on cases dispatched to that
unit only; a supervisor is not bound to a unit. Without a unit they are refused (``case.no_unit``):
a handler whose credentials lost their unit works on nobody's cases rather than on everybody's.
"""

from __future__ import annotations

from collections.abc import Iterable

from citygrid.errors import Forbidden
from services.case.domain.workflow import Role

ROLE_VALUES = frozenset(role.value for role in Role)


class NoUnit(Forbidden):
    code = "case.no_unit"
    title = "No unit"


class NotYourUnit(Forbidden):
    code = "case.not_your_unit"
    title = "Not your unit's case"


def acting_roles(kind: str, roles: Iterable[str]) -> frozenset[Role]:
    """The workflow roles a principal of this kind acts with; unknown role names count for nothing."""
    if kind == "service":
        return frozenset({Role.SYSTEM})
    named = frozenset(Role(role) for role in roles if role in ROLE_VALUES)
    if kind == "person":
        return named - {Role.SYSTEM}
    return named


def check_unit(step: str, *, case_unit: str | None, actor_unit: str | None, roles: frozenset[Role]) -> None:
    """Refuse a unit's step on a case that is not dispatched to the caller's unit, and to a caller
    that names no unit (a supervisor excepted)."""
    if Role.SUPERVISOR in roles:
        return
    if actor_unit is None:
        raise NoUnit(f"{step} is for a unit's handler; your credentials name no unit")
    if case_unit != actor_unit:
        raise NotYourUnit(
            f"{step} is for the unit the case is dispatched to ({case_unit or 'none yet'}), not {actor_unit}",
            case_unit=case_unit,
            your_unit=actor_unit,
        )

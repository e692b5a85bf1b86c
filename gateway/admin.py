"""Who may use the gateway's own admin API (``/admin/v1/...``): a city-wide principal holding the
scope ``admin``."""

from __future__ import annotations

from fastapi import Request

from citygrid.auth import ADMIN_SCOPE, MissingScope, Principal, require_city_wide


async def require_admin(request: Request) -> Principal:
    """The caller, when it holds the scope ``admin`` for the whole city; counted against its limit."""
    state = request.app.state.gateway
    client = state.admit(request)
    principal: Principal
    principal, allowance = await state.authenticate(request, client)
    if not principal.has_scope(ADMIN_SCOPE):
        raise MissingScope("this needs the scope 'admin'", required_scope=ADMIN_SCOPE)
    # A district's admin would otherwise mint itself a city-wide key, or revoke another district's.
    require_city_wide(principal, "the register of API consumers")
    await state.count(principal.subject, allowance)
    return principal

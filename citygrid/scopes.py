"""Which scope each call needs, decided once for the gateway and the service alike.

A service's calls need ``<dataset>:read`` for reads, ``<dataset>:write`` for changes,
``<dataset>:ingest`` for the machine feeds it names (``ingest_paths``, POST), and ``admin`` for
everything under ``v1/admin``, held by a city-wide principal: what a service administers (its
catalogues, calendars, units, rules, grid, dead letters) is the whole city's, so a district-bound
admin is refused there (403 ``auth.other_district``). Each service declares its ``ScopeRules`` once (in ``contract/``);
the gateway checks them before it forwards a call and ``create_service_app`` checks them again in
the service, after the internal principal is verified, so a principal that reached a service
directly with a valid token still needs the route's scope. Routes with finer rules (``pii:read``,
an admin step outside ``v1/admin``) add their own ``require_scope`` on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from citygrid.auth import (
    ADMIN_SCOPE,
    SAFE_METHODS,
    CurrentPrincipal,
    MissingScope,
    Principal,
    require_city_wide,
)

READ_METHODS = SAFE_METHODS
ADMIN_SEGMENTS = ("v1", "admin")


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


@dataclass(frozen=True)
class ScopeRules:
    """One service's scope declaration: the dataset its scopes are named after, and its exceptions.

    ``path`` arguments are the service's own paths, with or without the leading slash (``v1/cases``):
    what the gateway forwards after ``/api/<service>/``, and what the service itself receives.
    """

    service: str
    dataset: str
    # Paths that only machines feed (POST): they need ``<dataset>:ingest``, not ``:write``.
    ingest_paths: frozenset[str] = frozenset()
    # Path prefixes whose reads an anonymous principal may make (the gateway lets it through only
    # where its own door allows anonymous reads); everybody else still needs ``<dataset>:read``.
    anonymous_reads: tuple[str, ...] = ()

    def required_scope(self, method: str, path: str) -> str:
        segments = _segments(path)
        if tuple(segments[:2]) == ADMIN_SEGMENTS:
            return ADMIN_SCOPE
        if method.upper() in READ_METHODS:
            return f"{self.dataset}:read"
        action = "ingest" if "/".join(segments) in self.ingest_paths else "write"
        return f"{self.dataset}:{action}"

    def admits_anonymous(self, method: str, path: str) -> bool:
        if method.upper() not in READ_METHODS:
            return False
        normalised = "/".join(_segments(path))
        return any(
            normalised == prefix.strip("/") or normalised.startswith(prefix.strip("/") + "/")
            for prefix in self.anonymous_reads
        )

    def check(self, principal: Principal, method: str, path: str) -> None:
        """403 ``auth.missing_scope`` unless the principal holds the scope this call needs."""
        if principal.kind == "anonymous":
            if self.admits_anonymous(method, path):
                return
            scope = self.required_scope(method, path)
            raise MissingScope(f"this call needs the scope '{scope}'", required_scope=scope)
        scope = self.required_scope(method, path)
        if not principal.has_scope(scope):
            raise MissingScope(f"this call needs the scope '{scope}'", required_scope=scope)
        if scope == ADMIN_SCOPE:
            require_city_wide(principal, f"the {self.service} service's administration")


def service_path(request: Request) -> str:
    """The path the service was called on, below its root path (``/v1/cases/…``)."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


async def require_declared_scope(request: Request, principal: CurrentPrincipal) -> None:
    """The service's own check of its declaration (installed on every protected router)."""
    rules: ScopeRules | None = getattr(request.app.state, "scope_rules", None)
    path = service_path(request)
    if rules is not None:
        rules.check(principal, request.method, path)
    elif tuple(_segments(path)[:2]) == ADMIN_SEGMENTS and not principal.has_scope(ADMIN_SCOPE):
        # A service that declared nothing (development only) still keeps v1/admin to admins.
        raise MissingScope(f"this call needs the scope '{ADMIN_SCOPE}'", required_scope=ADMIN_SCOPE)


DeclaredScope = Annotated[None, Depends(require_declared_scope)]

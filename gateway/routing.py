"""Which scope each call needs and which paths the gateway routes at all.

The scope rule is not the gateway's own: every service declares its ``ScopeRules`` in
``contract.scopes`` and checks them itself too (``citygrid.scopes``), so the two never disagree.
"""

from __future__ import annotations

from citygrid.scopes import READ_METHODS, ScopeRules
from contract.scopes import SERVICES

__all__ = ["READ_METHODS", "UPSTREAMS", "Upstream", "is_clean", "is_routable", "required_scope"]

Upstream = ScopeRules

# Every domain service the gateway may route to, and the declaration its scopes follow.
UPSTREAMS: dict[str, Upstream] = SERVICES


def required_scope(upstream: Upstream, method: str, path: str) -> str:
    """``path`` is the part after ``/api/<service>/``, e.g. ``v1/cases/…``."""
    return upstream.required_scope(method, path)


def is_routable(path: str) -> bool:
    """Only the versioned API is exposed; health, metrics and anything odd stay internal."""
    return path.startswith("v1/") and is_clean(path)


def is_clean(path: str) -> bool:
    """No empty, ``.`` or ``..`` segment, no backslash, nothing unprintable."""
    if "\\" in path or not path.isprintable():
        return False
    segments = path.split("/")
    return all(segment not in ("", ".", "..") for segment in segments[:-1]) and segments[-1] not in (
        ".",
        "..",
    )

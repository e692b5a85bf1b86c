"""Which scope each call needs: ``<dataset>:read`` for reads, ``<dataset>:write`` for changes,
``<dataset>:ingest`` for the machine feeds a dataset names (analysis engines' detections)."""

from __future__ import annotations

from dataclasses import dataclass

from citygrid.auth import ADMIN_SCOPE

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Upstream:
    service: str
    dataset: str
    # Paths that only machines feed (POST): they need ``<dataset>:ingest``, not ``:write``.
    ingest_paths: frozenset[str] = frozenset()


# Every domain service the gateway may route to, and the dataset its scopes are named after.
UPSTREAMS: dict[str, Upstream] = {
    "case": Upstream("case", "cases"),
    "gas": Upstream("gas", "gas"),
    "waste": Upstream("waste", "waste"),
    "muck": Upstream("muck", "muck"),
    "vision": Upstream("vision", "vision", frozenset({"v1/detections", "v1/cameras/heartbeats"})),
}


def required_scope(upstream: Upstream, method: str, path: str) -> str:
    """``path`` is the part after ``/api/<service>/``, e.g. ``v1/cases/…``."""
    if path.startswith("v1/admin/") or path == "v1/admin":
        return ADMIN_SCOPE
    if method.upper() in READ_METHODS:
        return f"{upstream.dataset}:read"
    action = "ingest" if path in upstream.ingest_paths else "write"
    return f"{upstream.dataset}:{action}"


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

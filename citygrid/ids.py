"""Time-ordered identifiers (UUIDv7): index-friendly primary keys and event ids."""

from __future__ import annotations

import uuid

from uuid_utils import compat


def new_id() -> uuid.UUID:
    return compat.uuid7()

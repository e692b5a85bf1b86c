"""Time-ordered identifiers (UUIDv7): index-friendly primary keys and event ids."""

from __future__ import annotations

import os
import socket
import uuid

from uuid_utils import compat


def new_id() -> uuid.UUID:
    return compat.uuid7()


def replica_name() -> str:
    """This process's name as a lease's holder: its host (the pod), its process, and a nonce, so a
    restarted process is not taken for the one that held the lease before it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

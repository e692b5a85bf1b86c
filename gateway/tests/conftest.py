"""What the gateway's own tests share: its migrated database on the session's PostgreSQL."""

from __future__ import annotations

import pytest

from citygrid.testing import Infrastructure


@pytest.fixture(scope="session")
def gateway_database(infrastructure: Infrastructure) -> str:
    return infrastructure.database("gateway")

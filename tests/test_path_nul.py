"""A NUL character (``%00``) in a request's path is refused by the kit with a 422 problem before the
route's own dependencies and parameters see it: PostgreSQL refuses NUL in text, so a path parameter
carrying one would otherwise be a 500 wherever it reaches a query. Shown on the waste service, on
real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from citygrid.testing import Infrastructure, serve_app, truncate_all, wait_until
from services.waste.main import create_app
from services.waste.tests.conftest import READER, Waste, waste_settings

PARAMETER_PATHS = [
    "/v1/vehicles/ab%00cde",  # a plate, looked up by the route
    "/v1/points/HP-0001%00",  # at the end of a code
    "/v1/routes/%00",  # nothing but the NUL
    "/v1/chain-violations/%00",  # an id the route's parameter would refuse anyway
]


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["code"], problem["status"]) == (code, status)
    assert problem["type"] == f"urn:citygrid:problem:{code}"


@pytest.fixture
async def waste(infrastructure: Infrastructure, waste_database: str) -> AsyncIterator[Waste]:
    await truncate_all(waste_database)
    app = create_app(waste_settings(infrastructure, waste_database))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        running = Waste(infrastructure, app, url, client)
        await wait_until(running.runtime.messaging_ready.is_set)
        yield running


@pytest.mark.parametrize("path", PARAMETER_PATHS)
async def test_a_path_parameter_carrying_nul_is_a_422_problem_not_a_server_error(
    waste: Waste, path: str
) -> None:
    assert_problem(await waste.get(path, scopes=READER), 422, "http.nul_character")


async def test_a_nul_in_the_path_is_refused_on_the_kits_own_routes_and_after_the_principal(
    waste: Waste,
) -> None:
    assert_problem(
        await waste.post("/v1/admin/dead-letters/ab%00cd/replay", {}, scopes=("admin",), roles=("admin",)),
        422,
        "http.nul_character",
    )
    # A path no route serves is not found, NUL or not.
    assert_problem(await waste.get("/v1/vehi%00cles/abcde", scopes=READER), 404, "http.not_found")
    # The principal is checked first, as for a NUL in the query string.
    assert_problem(await waste.client.get("/v1/vehicles/ab%00cde"), 401, "auth.missing_internal_token")
    # The same path without the NUL is answered as usual.
    assert_problem(await waste.get("/v1/vehicles/abcde", scopes=READER), 404, "waste.not_found")

"""The demo data ``make run`` loads for the gas service, through the gateway."""

from __future__ import annotations

from citygrid.testing import wait_until
from services.gas.demo import seed
from tests.gas_stack import GasStack

GAS = "/api/gas/v1"


async def test_the_demo_walks_a_cylinder_to_a_household_once_and_raises_one_case(gas_stack: GasStack) -> None:
    headers = gas_stack.as_("gas-demo")
    assert await seed(gas_stack.client, headers) == 3
    assert await seed(gas_stack.client, headers) == 0
    walked = (await gas_stack.client.get(f"{GAS}/cylinders/GZ0000000001", headers=headers)).json()
    assert walked["status"] == "at_user"
    assert walked["holder_id"] is not None
    trace = (await gas_stack.client.get(f"{GAS}/cylinders/GZ0000000001/scans", headers=headers)).json()
    assert [s["kind"] for s in trace["items"]] == ["fill", "dispatch", "deliver"]

    async def raised() -> bool:
        listed = await gas_stack.client.get("/api/case/v1/cases", headers=gas_stack.as_("clerk"))
        return bool(listed.json()["items"])

    await wait_until(raised, timeout=15)
    (case,) = (await gas_stack.client.get("/api/case/v1/cases", headers=gas_stack.as_("clerk"))).json()[
        "items"
    ]
    assert case["category_code"] == "20605"
    assert case["origin"]["reference"].startswith("fill:GZGAS-ST-TH01:GZ0000000003:")

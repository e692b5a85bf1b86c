"""NATS down: HTTP keeps working and events wait in the outbox; NATS back: each arrives exactly once."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from citygrid.outbox import OutboxMessage
from citygrid.testing import stream_events, wait_until
from tests.test_case_flow import REPORT


async def unpublished(stack) -> int:
    async with stack.case_runtime.db() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
            )
            or 0
        )


async def test_cases_created_while_nats_is_down_are_published_exactly_once_when_it_returns(
    stack_factory, private_nats
):
    async with stack_factory(nats_url=private_nats.url) as stack:
        await wait_until(stack.case_runtime.messaging_ready.is_set)
        await asyncio.to_thread(private_nats.stop)

        created = []
        for n in range(20):
            response = await stack.client.post(
                "/api/case/v1/cases",
                json={**REPORT, "description": f"report {n}"},
                headers=stack.as_("clerk"),
            )
            assert response.status_code == 201, response.text
            created.append(response.json()["id"])
        assert await unpublished(stack) == 20

        # The API stays in service: readiness is about serving HTTP; NATS is reported beside it.
        ready = await stack.client.get(f"{stack.case_url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": True}
        assert ready.json()["reported"] == {"nats": False}
        scrape = (await stack.client.get(f"{stack.case_url}/metrics")).text
        assert "citygrid_nats_connected 0.0" in scrape
        assert "citygrid_outbox_backlog_events 20.0" in scrape

        await asyncio.to_thread(private_nats.start)

        async def drained() -> bool:
            return await unpublished(stack) == 0

        await wait_until(drained, timeout=60)
        events = await stream_events(private_nats.url, "CASE", at_least=20)
        assert len(events) == 20
        assert len({e.id for e in events}) == 20
        assert sorted(e.subject for e in events) == sorted(created)
        assert all(e.type == "case.case.reported.v1" for e in events)
        await asyncio.sleep(1.0)  # a late duplicate would land now
        assert len(await stream_events(private_nats.url, "CASE")) == 20


async def test_a_service_started_while_nats_is_down_is_ready_and_publishes_once_nats_comes(
    stack_factory, private_nats
):
    await asyncio.to_thread(private_nats.stop)
    async with stack_factory(nats_url=private_nats.url) as stack:
        ready = await stack.client.get(f"{stack.case_url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["reported"] == {"nats": False}
        response = await stack.client.post("/api/case/v1/cases", json=REPORT, headers=stack.as_("clerk"))
        assert response.status_code == 201, response.text
        assert not stack.case_runtime.messaging_ready.is_set()

        await asyncio.to_thread(private_nats.start)
        # No restart: the runtime connects by itself, declares its stream and starts its relay.
        await wait_until(stack.case_runtime.messaging_ready.is_set, timeout=30)
        events = await stream_events(private_nats.url, "CASE", at_least=1, timeout=30)
        assert [e.subject for e in events] == [response.json()["id"]]
        ready = await stack.client.get(f"{stack.case_url}/readyz")
        assert ready.json()["reported"] == {"nats": True}

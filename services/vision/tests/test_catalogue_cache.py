"""Each replica keeps the catalogue in memory: intake reads none per batch, and an admin's change
is in force at once where it was made and in the other replicas after their refresh."""

from __future__ import annotations

from sqlalchemy import event

from citygrid.testing import wait_until
from services.vision.tests.conftest import CONFIGURER, camera, detection


def refreshed_once(vision) -> bool:
    registry = vision.runtime.metrics.registry
    return bool(
        registry.get_sample_value("citygrid_job_runs_total", {"job": "catalogue-refresh", "outcome": "ok"})
    )


async def outcome(vision, confidence: float) -> str:
    response = await vision.ingest(detection(algorithm="littering", confidence=confidence))
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    return str(result["outcome"])


async def test_an_admins_change_is_in_force_in_another_replica_after_its_refresh(vision_factory):
    # The replicas' own refresh runs once after start, then waits an hour: the test refreshes.
    async with (
        vision_factory(catalogue_refresh_seconds=3600) as first,
        vision_factory(catalogue_refresh_seconds=3600) as second,
    ):
        await wait_until(lambda: refreshed_once(first) and refreshed_once(second), timeout=20)
        await first.register(camera())
        changed = await first.client.patch(
            "/v1/admin/algorithms/littering",
            json={"gates": {"min_confidence": 0.95}},
            headers=first.as_(CONFIGURER),
        )
        assert changed.status_code == 200, changed.text
        assert await outcome(first, 0.9) == "below_confidence"  # where it was made: at once

        statements: list[str] = []

        def seen(conn, cursor, statement, parameters, context, executemany) -> None:
            statements.append(statement)

        engine = second.runtime.engine
        assert engine is not None
        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        try:
            assert await outcome(second, 0.9) == "raised"  # its copy is older than the change
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", seen)
        assert statements, "the batch ran queries"
        assert not [s for s in statements if "FROM algorithms" in s]

        await second.app.state.vision.catalogue.refresh(second.runtime.db)  # what its job runs
        assert await outcome(second, 0.9) == "below_confidence"
        listed = (await second.client.get("/v1/algorithms", headers=second.as_())).json()
        assert next(a for a in listed if a["code"] == "littering")["gates"]["min_confidence"] == 0.95

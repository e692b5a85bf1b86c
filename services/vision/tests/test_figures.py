"""The review figures: computed once per period for the fleet, shown by every replica, from
queries that go through an index; the false-positive statistics aggregated by the database."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import DateTime, delete, insert, literal_column, text
from sqlalchemy.dialects import postgresql

from citygrid.settings import to_libpq_url
from citygrid.testing import wait_until
from services.vision.domain.review_stats import Reviewed, recommend_threshold
from services.vision.models import FleetGauges, Review
from services.vision.review import (
    auto_dispatch_query,
    camera_rates_query,
    class_buckets_query,
    false_positive_ratio_query,
    queue_query,
    refresh_fleet_gauges,
)
from services.vision.tests.conftest import camera, detection
from services.vision.tests.test_service import raise_alarm

WEEK_AGO = literal_column("now() - interval '7 days'", DateTime(timezone=True))
QUERIES = {
    "queue": (queue_query(), "_status_raised"),  # either status index: both lead to the queue
    "false-positive-ratio": (false_positive_ratio_query(WEEK_AGO), "ix_reviews_at"),
    "auto-dispatch": (auto_dispatch_query(WEEK_AGO), "ix_alarms_raised"),
    "class-buckets": (class_buckets_query(WEEK_AGO), "ix_reviews_at"),
    "camera-rates": (camera_rates_query(WEEK_AGO), "ix_reviews_at"),
}


def sample(registry, name: str, **labels: str) -> float:
    """The sample's value; NaN when there is none (so comparisons with a number are false)."""
    value = registry.get_sample_value(name, labels)
    return float("nan") if value is None else float(value)


def gauges_ran(vision) -> bool:
    ran = sample(
        vision.runtime.metrics.registry, "citygrid_job_runs_total", job="vision-gauges", outcome="ok"
    )
    return ran >= 1  # NaN (never ran) is not


async def some_reviews(vision) -> list[dict[str, Any]]:
    cameras = [f"440106000813200030{n:02d}" for n in range(3)]
    await vision.register(*[camera(c) for c in cameras])
    alarms = [await raise_alarm(vision, c) for c in cameras]
    rejected = await vision.client.post(
        f"/v1/alarms/{alarms[0]['id']}/reject",
        json={"reason": "shadow"},
        headers=vision.as_(**{"If-Match": '"1"'}),
    )
    assert rejected.status_code == 200, rejected.text
    confirmed = await vision.client.post(
        f"/v1/alarms/{alarms[1]['id']}/confirm", headers=vision.as_(**{"If-Match": '"1"'})
    )
    assert confirmed.status_code == 200, confirmed.text
    auto = await vision.ingest(detection(cameras[2], "truck_not_covered"))
    assert auto.json()["results"][0]["outcome"] == "raised"
    return alarms


async def a_year_of_history(vision, database: str) -> None:
    """50,000 reviews and 20,000 alarms over the last year, in the order they happened: the
    period of the figures is a small part of each table, as in production."""
    (alarm, *_) = await some_reviews(vision)
    async with vision.runtime.db() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO alarms (id, camera_id, algorithm_code, category_code, district_code, severity, "
                "status, auto_confirmed, box, best_box, best_confidence, detections, first_seen_at, "
                "last_seen_at, raised_at) "
                "SELECT gen_random_uuid(), a.camera_id, a.algorithm_code, a.category_code, "
                "a.district_code, a.severity, "
                "(ARRAY['confirmed', 'rejected', 'resolved', 'auto_confirmed'])[1 + n % 4], n % 4 = 3, "
                "a.box, a.best_box, a.best_confidence, 1, t, t, t "
                "FROM alarms a, generate_series(1, 20000) n, "
                "LATERAL (SELECT now() - interval '365 days' + n * interval '365 days' / 20000 AS t) time "
                "WHERE a.id = :alarm ORDER BY n"
            ),
            {"alarm": alarm["id"]},
        )
        await session.execute(
            text(
                "INSERT INTO reviews (id, alarm_id, camera_id, algorithm_code, false_positive, confidence, "
                "reviewer, at) "
                "SELECT gen_random_uuid(), :alarm, :camera, "
                "(ARRAY['littering', 'exposed_garbage', 'flyers', 'overflowing_bin'])[1 + n % 4], "
                "n % 7 = 0, 0.75 + (n % 250) / 1000.0, 'reviewer-1', "
                "now() - interval '365 days' + n * interval '365 days' / 50000 "
                "FROM generate_series(1, 50000) n ORDER BY n"
            ),
            {"alarm": alarm["id"], "camera": alarm["camera_id"]},
        )
    connection = await asyncpg.connect(to_libpq_url(database))
    try:
        await connection.execute("VACUUM ANALYZE alarms, reviews")  # summarises BRIN ranges as well
    finally:
        await connection.close()


@pytest.mark.parametrize("name", sorted(QUERIES))
async def test_every_figure_is_read_through_an_index(vision, vision_database, name):
    await a_year_of_history(vision, vision_database)
    statement, index = QUERIES[name]
    compiled = statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    async with vision.runtime.db() as session, session.begin():
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join((await session.scalars(text(f"EXPLAIN {compiled}"))).all())
    assert "Seq Scan" not in plan, plan
    assert index in plan, plan


async def test_the_figures_are_computed_once_for_the_fleet_and_shown_by_every_replica(vision_factory):
    # The replicas' own jobs run once, shortly after start, then wait an hour.
    async with vision_factory(stats_seconds=3600) as first, vision_factory(stats_seconds=3600) as second:
        await some_reviews(first)
        await wait_until(lambda: gauges_ran(first) and gauges_ran(second), timeout=20)
        async with first.runtime.db() as session, session.begin():
            await session.execute(delete(FleetGauges))  # due again

        computed = await asyncio.gather(
            *[
                refresh_fleet_gauges(r.runtime.db, r.app.state.vision.metrics, every_seconds=3600)
                for r in (first, second)
            ]
        )
        assert sorted(computed) == [False, True]
        again = await asyncio.gather(
            *[
                refresh_fleet_gauges(r.runtime.db, r.app.state.vision.metrics, every_seconds=3600)
                for r in (first, second)
            ]
        )
        assert again == [False, False]  # fresh: nobody computes before the period is over

        for replica in (first, second):
            registry = replica.app.state.vision.metrics.registry
            assert sample(registry, "citygrid_vision_review_queue_depth") == 1
            assert sample(registry, "citygrid_vision_review_oldest_age_seconds") > 0
            assert (
                sample(registry, "citygrid_vision_false_positive_ratio", algorithm="exposed_garbage") == 0.5
            )
            assert sample(registry, "citygrid_vision_auto_dispatch_ratio") == 0.25
            assert sample(registry, "citygrid_vision_figures_age_seconds") >= 0
            text_metrics = (await replica.client.get("/metrics")).text
            assert 'citygrid_vision_false_positive_ratio{algorithm="exposed_garbage"} 0.5' in text_metrics


async def test_a_class_without_reviews_this_week_loses_its_ratio(vision):
    await some_reviews(vision)
    metrics = vision.app.state.vision.metrics
    async with vision.runtime.db() as session, session.begin():
        await session.execute(delete(FleetGauges))
    await refresh_fleet_gauges(vision.runtime.db, metrics, every_seconds=3600)
    assert (
        sample(metrics.registry, "citygrid_vision_false_positive_ratio", algorithm="exposed_garbage") == 0.5
    )
    async with vision.runtime.db() as session, session.begin():
        await session.execute(text("UPDATE reviews SET at = now() - interval '8 days'"))
        await session.execute(delete(FleetGauges))
    await refresh_fleet_gauges(vision.runtime.db, metrics, every_seconds=3600)
    assert math.isnan(
        sample(metrics.registry, "citygrid_vision_false_positive_ratio", algorithm="exposed_garbage")
    )


async def test_the_recommended_threshold_aggregated_in_sql_is_the_domains(vision):
    (alarm, *_) = await some_reviews(vision)
    # 60 reviews of one class: false positives cluster at low confidence, several per 0.001 bucket.
    confidences = [0.8 + n / 600 for n in range(60)]
    verdicts = [c < 0.84 or n % 11 == 0 for n, c in enumerate(confidences)]
    async with vision.runtime.db() as session, session.begin():
        await session.execute(delete(Review))
        await session.execute(
            insert(Review),
            [
                {
                    "id": uuid.uuid4(),
                    "alarm_id": uuid.UUID(alarm["id"]),
                    "camera_id": alarm["camera_id"],
                    "algorithm_code": "exposed_garbage",
                    "false_positive": fp,
                    "confidence": c,
                    "reviewer": "reviewer-1",
                }
                for c, fp in zip(confidences, verdicts, strict=True)
            ],
        )
    stats = (await vision.client.get("/v1/stats/false-positives", headers=vision.as_())).json()
    (rate,) = stats["classes"]
    expected = recommend_threshold(
        [
            Reviewed(math.floor(c * 1000 + 1e-9) / 1000, fp)
            for c, fp in zip(confidences, verdicts, strict=True)
        ],
        0.75,
        target_rate=0.1,
    )
    assert expected.recommended_min_confidence is not None
    assert (rate["reviewed"], rate["false_positives"]) == (60, sum(verdicts))
    assert rate["recommended_min_confidence"] == expected.recommended_min_confidence
    assert rate["note"] == expected.reason
    assert stats["cameras"][0]["reviewed"] == 60

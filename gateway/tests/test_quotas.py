"""Quotas across gateway replicas on real PostgreSQL: two replicas let through no more than a
consumer's limit per minute or per day, every answer says where the consumer stands in the IETF
``RateLimit`` fields, a 429 says when to come back, and a replica that cannot reach the database
admits only its share and settles it once it can."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from citygrid.clock import CITY_TIMEZONE
from citygrid.db import create_sessionmaker
from citygrid.settings import to_asyncpg_url, to_libpq_url
from citygrid.testing import wait_until
from gateway.quotas import policies
from gateway.quotas.ledger import QuotaExceeded, QuotaLedger, purge
from gateway.quotas.policies import Allowance, Period, Standing
from gateway.tests.test_consumers import CASES, Gateway, Setup, new_consumer, setup

__all__ = ["setup"]  # the fixture, shared with the consumers' tests


# --- the arithmetic -----------------------------------------------------------------------------------


def test_a_minute_window_is_the_epoch_minute_and_a_day_the_citys_calendar_day():
    assert policies.window_of(Period.MINUTE, 125.5) == (120, 180)
    # 2026-12-04 23:59:59 in the city is 15:59:59 UTC; one second later a new city day begins.
    before = datetime(2026, 12, 4, 23, 59, 59, tzinfo=CITY_TIMEZONE).timestamp()
    start, end = policies.window_of(Period.DAY, before)
    assert datetime.fromtimestamp(start, CITY_TIMEZONE) == datetime(2026, 12, 4, tzinfo=CITY_TIMEZONE)
    assert end == before + 1
    assert policies.window_of(Period.DAY, before + 1)[0] == end


def test_the_ratelimit_fields_name_each_policy_as_the_ietf_draft_writes_them():
    fields = policies.headers((Standing(Period.MINUTE, 600, 598, 42), Standing(Period.DAY, 10_000, -3, 3600)))
    assert fields == {
        "RateLimit-Policy": '"minute";q=600;w=60, "day";q=10000;w=86400',
        "RateLimit": '"minute";r=598;t=42, "day";r=0;t=3600',
    }


def test_a_grant_takes_at_most_half_of_what_is_left_and_the_last_one_too():
    assert policies.granted(want=10, used=0, limit=100) == 10
    assert policies.granted(want=80, used=0, limit=100) == 50
    assert policies.granted(want=5, used=99, limit=100) == 1
    assert policies.granted(want=5, used=100, limit=100) == 0
    assert policies.granted(want=5, used=120, limit=100) == 0


def test_a_reservation_follows_the_demand_within_its_bounds():
    assert policies.wanted(0.0, 2.0, minimum=5, limit=600) == 5
    assert policies.wanted(100.0, 2.0, minimum=5, limit=600) == 200
    assert policies.wanted(10_000.0, 2.0, minimum=5, limit=600) == 600
    assert policies.wanted(0.0, 2.0, minimum=5, limit=3) == 3
    assert policies.offline_share(100, 3) == 33


# --- two replicas ------------------------------------------------------------------------------------


async def early_in_a_minute(needed: float = 20.0) -> None:
    """Wait, if need be, until at least ``needed`` seconds of the current minute are left: a test of
    one window must not run into the next."""
    into = time.time() % 60
    if into > 60 - needed:
        await asyncio.sleep(60 - into + 0.05)


async def burst(replicas: list[Gateway], key: str, count: int, parallel: int = 8) -> list[httpx.Response]:
    """``count`` reads, ``parallel`` at a time, taking turns over the replicas."""
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> httpx.Response:
        async with gate:
            return await replicas[i % len(replicas)].client.get(CASES, headers={"X-API-Key": key})

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def remaining_of(response: httpx.Response, period: str) -> int:
    items = dict(item.strip().split(";", 1) for item in response.headers["ratelimit"].split(","))
    fields = dict(part.split("=") for part in items[f'"{period}"'].split(";"))
    return int(fields["r"])


@pytest.fixture
async def two(setup: Setup) -> AsyncIterator[list[Gateway]]:
    async with setup.gateway() as first, setup.gateway() as second:
        yield [first, second]


async def test_two_replicas_let_through_no_more_than_the_limit_per_minute(setup: Setup, two: list[Gateway]):
    consumer = await new_consumer(two[0], setup, rate_limit_per_minute=40)
    await early_in_a_minute()
    answers = await burst(two, consumer["api_key"], 160)
    admitted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    others = [(a.status_code, a.text) for a in answers if a.status_code not in (200, 429)]
    assert others == []
    # Never over the limit; under it by at most what a replica still holds reserved.
    assert 40 - 2 * 5 <= len(admitted) <= 40
    rows = await setup.sql(
        "SELECT used FROM quota_usage WHERE subject = $1 AND period = 'minute'", f"consumer:{consumer['id']}"
    )
    assert [row["used"] for row in rows]
    assert rows[0]["used"] <= 40
    problem = refused[0].json()
    assert refused[0].headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "gateway.rate_limited"
    retry_after = int(refused[0].headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused[0].headers["ratelimit-policy"].startswith('"minute";q=40;w=60')
    # Every answer says where the consumer stands.
    assert all("ratelimit" in a.headers and "ratelimit-policy" in a.headers for a in answers)
    assert min(remaining_of(a, "minute") for a in admitted) <= 10


async def test_a_daily_quota_holds_across_replicas_and_says_when_the_city_day_ends(
    setup: Setup, two: list[Gateway]
):
    consumer = await new_consumer(two[0], setup, rate_limit_per_minute=1000, daily_quota=12)
    answers = await burst(two, consumer["api_key"], 30, parallel=4)
    admitted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert 12 - 2 * 5 <= len(admitted) <= 12
    assert refused
    assert all(a.json()["code"] == "gateway.daily_quota_exhausted" for a in refused)
    _, midnight = policies.window_of(Period.DAY, time.time())
    retry_after = int(refused[-1].headers["retry-after"])
    assert abs(retry_after - (midnight - time.time())) <= 5
    assert refused[-1].headers["ratelimit-policy"] == '"minute";q=1000;w=60, "day";q=12;w=86400'
    assert remaining_of(refused[-1], "day") == 0
    # A replica that has not served the consumer yet refuses too: the day is spent for the consumer.
    async with setup.gateway() as third:
        later = await third.client.get(CASES, headers={"X-API-Key": consumer["api_key"]})
    assert later.status_code == 429
    assert later.json()["code"] == "gateway.daily_quota_exhausted"


async def test_a_changed_limit_applies_on_every_replica(setup: Setup, two: list[Gateway]):
    consumer = await new_consumer(two[0], setup, rate_limit_per_minute=1000)
    key = {"X-API-Key": consumer["api_key"]}
    first = await two[1].client.get(CASES, headers=key)
    assert first.headers["ratelimit-policy"] == '"minute";q=1000;w=60'
    changed = await two[0].client.patch(
        f"/admin/v1/consumers/{consumer['id']}", json={"daily_quota": 500}, headers=setup.admin()
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["daily_quota"] == 500

    async def applied() -> bool:
        answer = await two[1].client.get(CASES, headers=key)
        return bool(answer.headers["ratelimit-policy"].endswith('"day";q=500;w=86400'))

    await wait_until(applied, timeout=5.0)


async def test_an_access_token_carries_the_daily_quota_and_is_counted_with_the_key(
    setup: Setup, two: list[Gateway]
):
    consumer = await new_consumer(two[0], setup, daily_quota=3)
    issued = await two[0].client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": consumer["id"],
            "client_secret": consumer["api_key"],
        },
    )
    assert issued.status_code == 200, issued.text  # the token request is itself one of the three
    bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    statuses = [(await two[i % 2].client.get(CASES, headers=bearer)).status_code for i in range(4)]
    assert statuses.count(200) <= 2
    assert statuses[-1] == 429


# --- the ledger with the database away ---------------------------------------------------------------


@pytest.fixture
async def engines(setup: Setup) -> AsyncIterator[dict[str, AsyncEngine]]:
    live = create_async_engine(to_asyncpg_url(setup.database))
    # Nothing listens on port 1: every connection is refused at once.
    dead = create_async_engine("postgresql+asyncpg://nobody:nothing@127.0.0.1:1/none")
    try:
        yield {"live": live, "dead": dead}
    finally:
        await live.dispose()
        await dead.dispose()


def ledger_on(engines: dict[str, AsyncEngine], current: dict[str, str], **options: Any) -> QuotaLedger:
    sessions = {name: create_sessionmaker(engine) for name, engine in engines.items()}
    return QuotaLedger(lambda: sessions[current["engine"]], **options)


async def admits(ledger: QuotaLedger, subject: str, allowance: Allowance) -> bool:
    """Whether one request is admitted (a refusal is the ledger's QuotaExceeded, nothing else)."""
    try:
        await ledger.admit(subject, allowance)
    except QuotaExceeded:
        return False
    return True


async def admitted(ledger: QuotaLedger, subject: str, allowance: Allowance, tries: int) -> int:
    """How many of ``tries`` requests, one after another, are admitted."""
    return sum([await admits(ledger, subject, allowance) for _ in range(tries)])


async def test_a_replica_without_its_database_admits_its_share_and_settles_it_when_it_is_back(
    setup: Setup, engines: dict[str, AsyncEngine]
):
    await early_in_a_minute()
    current = {"engine": "dead"}
    offline_admits: list[int] = []
    ledger = ledger_on(engines, current, replicas=4, on_offline_admit=lambda: offline_admits.append(1))
    ledger.start()
    try:
        allowance = Allowance(per_minute=100)
        # A quarter of the limit (four replicas share it while none can count with the others), and
        # what each answer says is left is what this replica will still admit alone.
        first = await ledger.admit("consumer:offline", allowance)
        assert first[0].remaining == 24
        assert await admitted(ledger, "consumer:offline", allowance, 39) == 24
        with pytest.raises(QuotaExceeded) as refused:
            await ledger.admit("consumer:offline", allowance)
        assert (refused.value.reason, refused.value.retry_after, refused.value.standings[0].remaining) == (
            "offline",
            5,
            0,
        )
        assert len(offline_admits) == 25
        assert not ledger.reachable
        current["engine"] = "live"
        await asyncio.wait_for(_until_reachable(ledger), 10.0)
        # What it admitted alone is now in the row: the others see it.
        starts, _ = policies.window_of(Period.MINUTE, time.time())
        rows = await setup.sql(
            "SELECT used FROM quota_usage WHERE subject = 'consumer:offline' AND starts = $1", starts
        )
        assert rows
        assert rows[0]["used"] >= 25
        # And the rest of the limit, no more, is admitted now.
        later = await admitted(ledger, "consumer:offline", allowance, 100)
        assert 75 - 5 <= later <= 75
    finally:
        await ledger.stop()


async def _until_reachable(ledger: QuotaLedger) -> None:
    while not (ledger.reachable and await ledger.settle_now()):
        await asyncio.sleep(0.05)


async def test_a_settlement_held_up_by_a_lock_counts_as_the_database_away_and_the_connection_stays_good(
    setup: Setup, engines: dict[str, AsyncEngine]
):
    await early_in_a_minute()
    ledger = ledger_on(engines, {"engine": "live"}, timeout_seconds=0.5, replicas=2)
    ledger.start()
    allowance = Allowance(per_minute=40)
    try:
        assert await admitted(ledger, "consumer:locked", allowance, 1) == 1
        starts, _ = policies.window_of(Period.MINUTE, time.time())
        # Another transaction holds the row (a slow neighbour, a stuck migration): the settlement
        # waits for it no longer than its timeout.
        blocker = await asyncpg.connect(to_libpq_url(setup.database))
        try:
            locking = blocker.transaction()
            await locking.start()
            await blocker.execute(
                "SELECT 1 FROM quota_usage WHERE subject = 'consumer:locked' AND starts = $1 FOR UPDATE",
                starts,
            )
            got = await admitted(ledger, "consumer:locked", allowance, 60)
            assert not ledger.reachable
            # What it held (a block of 6, one spent), then half of what was left when it last settled
            # ((40 - 6) ÷ 2 replicas): never the whole limit on one replica.
            assert got == 5 + 17
            await locking.rollback()
        finally:
            await blocker.close()
        await asyncio.wait_for(_until_reachable(ledger), 10.0)
        rows = await setup.sql(
            "SELECT used FROM quota_usage WHERE subject = 'consumer:locked' AND starts = $1", starts
        )
        assert rows[0]["used"] <= 40 + 1
    finally:
        await ledger.stop()


async def test_a_stopping_replica_gives_back_what_it_reserved(setup: Setup, engines: dict[str, AsyncEngine]):
    await early_in_a_minute()
    current = {"engine": "live"}
    allowance = Allowance(per_minute=50)
    first = ledger_on(engines, current, minimum_reservation=20)
    first.start()
    await first.admit("consumer:leaving", allowance)
    starts, _ = policies.window_of(Period.MINUTE, time.time())
    rows = await setup.sql(
        "SELECT used FROM quota_usage WHERE subject = 'consumer:leaving' AND starts = $1", starts
    )
    assert rows[0]["used"] == 21  # a block held for one request: the twenty more it reserves at least
    await first.stop()
    rows = await setup.sql(
        "SELECT used FROM quota_usage WHERE subject = 'consumer:leaving' AND starts = $1", starts
    )
    assert rows[0]["used"] == 1
    second = ledger_on(engines, current)
    second.start()
    try:
        assert await admitted(second, "consumer:leaving", allowance, 60) == 49
    finally:
        await second.stop()


async def test_many_requests_waiting_at_once_share_the_settlements_and_never_pass_the_limit(
    setup: Setup, engines: dict[str, AsyncEngine]
):
    await early_in_a_minute()
    ledger = ledger_on(engines, {"engine": "live"})
    ledger.start()
    try:
        allowance = Allowance(per_minute=50, per_day=1000)

        outcomes = await asyncio.gather(*(admits(ledger, "consumer:crowd", allowance) for _ in range(300)))
        # Only admitted or refused (a request that lost the race for three settlements is told to
        # come back at once), never more than the limit.
        assert 40 <= outcomes.count(True) <= 50
        rows = await setup.sql("SELECT period, used FROM quota_usage WHERE subject = 'consumer:crowd'")
        assert {row["period"]: row["used"] for row in rows}["minute"] <= 50
        # What was admitted is counted in the day too.
        assert {row["period"]: row["used"] for row in rows}["day"] >= outcomes.count(True)
    finally:
        await ledger.stop()


async def test_requests_far_under_the_limit_are_all_admitted_however_they_arrive(
    setup: Setup, engines: dict[str, AsyncEngine]
):
    await early_in_a_minute()
    ledger = ledger_on(engines, {"engine": "live"})
    ledger.start()
    try:
        allowance = Allowance(per_minute=1000)

        # In waves: many arrive while a settlement is under way, and must be served by the next.
        tasks = []
        for wave in range(20):
            tasks += [asyncio.create_task(admits(ledger, "consumer:trickle", allowance)) for _ in range(10)]
            await asyncio.sleep(0.002 * (wave % 3))
        outcomes = await asyncio.gather(*tasks)
        assert outcomes.count(True) == 200
    finally:
        await ledger.stop()


async def test_with_both_windows_spent_the_refusal_names_the_day(
    setup: Setup, engines: dict[str, AsyncEngine]
):
    await early_in_a_minute()
    ledger = ledger_on(engines, {"engine": "live"})
    ledger.start()
    try:
        allowance = Allowance(per_minute=3, per_day=3)
        assert await admitted(ledger, "consumer:both", allowance, 3) == 3
        with pytest.raises(QuotaExceeded) as refused:
            await ledger.admit("consumer:both", allowance)
        assert refused.value.reason == "spent"
        assert refused.value.entry.period is Period.DAY
        _, midnight = policies.window_of(Period.DAY, time.time())
        assert abs(refused.value.retry_after - (midnight - time.time())) <= 5
    finally:
        await ledger.stop()


async def test_ledger_retention_deletes_windows_past_their_days(
    setup: Setup, engines: dict[str, AsyncEngine]
):
    old = int(time.time()) - 3 * 86_400
    await setup.sql(
        "INSERT INTO quota_usage (subject, period, starts, quota, used, last_grant) "
        "VALUES ('consumer:old', 'minute', $1, 10, 3, 0), ('consumer:new', 'minute', $2, 10, 3, 0)",
        old,
        math.floor(time.time() / 60) * 60,
    )
    deleted = await purge(create_sessionmaker(engines["live"]), older_than_seconds=2 * 86_400)
    assert deleted == 1
    rows = await setup.sql(
        "SELECT subject FROM quota_usage WHERE subject IN ('consumer:old', 'consumer:new')"
    )
    assert [row["subject"] for row in rows] == ["consumer:new"]

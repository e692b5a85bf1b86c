"""Webhook delivery end to end, beside plain HTTP POSTs to the same receiver in the same run.

``python -m bench.webhooks``: an embedded PostgreSQL and nats-server, one gateway with its
durables and deliverer, a receiver on loopback that answers 204 at once, and ``--consumers``
subscriptions to ``case.case.reported``. ``--events`` events are published to the CASE stream; the
figure is deliveries per second from the first publish to the last delivery recorded (read from
JetStream, matched, queued, claimed, masked, signed, posted, recorded). The baseline posts the same
number of signed bodies straight to the receiver with the same concurrency, from the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
from fastapi import FastAPI, Request, Response
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.db import create_sessionmaker
from citygrid.devstack.servers import create_databases, database_url, servers_for
from citygrid.devstack.stack import dev_identities
from citygrid.events import envelope
from citygrid.messaging import ensure_stream, stream_config
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess
from citygrid.settings import to_asyncpg_url, to_libpq_url
from citygrid.testing import serve_app
from contract.case import CaseReported, CaseSource, CaseStatus
from contract.common import GeoPoint

DB = "bench_webhooks"


def receiver() -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    received = [0]

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        await request.body()
        received[0] += 1
        return Response(status_code=204)

    return app, received


def case_reported(n: int) -> Any:
    case_id = uuid.uuid4()
    data = CaseReported(
        case_id=case_id,
        number=f"B-{n:08d}",
        status=CaseStatus.REPORTED,
        category_code="11001",
        district_code="440106",
        location=GeoPoint(coordinates=(113.33, 23.14)),
        source=CaseSource.PUBLIC,
        version=1,
        actor="citizen",
        note="联系人：王建国，电话13800138000",
        occurred_at=datetime.now(UTC),
    )
    return envelope(data, source="case", aggregate_id=str(case_id), aggregate_version=1)


async def register(url: str, consumers: int) -> list[str]:
    from gateway.consumers.service import register_consumer

    engine = create_async_engine(to_asyncpg_url(url))
    keys = []
    async with create_sessionmaker(engine)() as session, session.begin():
        for n in range(consumers):
            _, key = await register_consumer(
                session, name=f"bench-{n}", scopes=["cases:read"], rate_limit_per_minute=1_000_000
            )
            keys.append(key)
    await engine.dispose()
    return keys


async def delivered(url: str) -> int:
    connection = await asyncpg.connect(to_libpq_url(url))
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")
        )
    finally:
        await connection.close()


async def measure(
    url: str, nats_access: NatsAccess, consumers: int, events: int, concurrency: int
) -> dict[str, Any]:
    from gateway.main import create_app
    from gateway.settings import GatewaySettings
    from gateway.subscriptions.intake import NATS_IDENTITY

    keys = await register(url, consumers)
    user, password = nats_access.credentials(NATS_IDENTITY.user)
    settings = GatewaySettings(
        environment="test",
        database_url=url,
        nats_url=nats_access.server_url,
        nats_user=user,
        nats_password=password,
        upstreams={"case": "http://127.0.0.1:9"},
        internal_token_private_key=_private_key(),
        webhook_allow_private_targets=True,
        webhook_concurrency=concurrency,
        webhook_concurrency_per_consumer=concurrency,
        webhook_poll_seconds=0.05,
    )
    app, received = receiver()
    gateway = create_app(settings)
    async with (
        serve_app(app) as receiver_url,
        serve_app(gateway) as gateway_url,
        httpx.AsyncClient() as client,
    ):
        while not gateway.state.kit.messaging_ready.is_set():
            await asyncio.sleep(0.05)
        for key in keys:
            created = await client.post(
                f"{gateway_url}/exchange/v1/subscriptions",
                json={"url": f"{receiver_url}/hook", "event_types": ["case.case.reported"]},
                headers={"X-API-Key": key},
            )
            created.raise_for_status()
        published = [case_reported(n) for n in range(events)]
        nats_client = await nats.connect(nats_access.admin_url)
        jetstream = nats_client.jetstream()
        await ensure_stream(jetstream, stream_config("case"))
        started = time.perf_counter()
        for event in published:
            await jetstream.publish(
                event.nats_subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.id}
            )
        await nats_client.close()
        total = events * consumers
        while await delivered(url) < total:
            await asyncio.sleep(0.1)
        webhook_seconds = time.perf_counter() - started

        # The baseline: the same bodies posted straight to the receiver, as many at once.
        body = json.dumps(published[0].model_dump(mode="json")).encode()
        before = received[0]
        semaphore = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_keepalive_connections=0)

        async with httpx.AsyncClient(limits=limits) as poster:

            async def post() -> None:
                async with semaphore:
                    answer = await poster.post(f"{receiver_url}/hook", content=body)
                    answer.raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(post() for _ in range(total)))
            baseline_seconds = time.perf_counter() - started
        assert received[0] - before == total
    return {
        "consumers": consumers,
        "events": events,
        "deliveries": total,
        "webhook_per_second": total / webhook_seconds,
        "post_per_second": total / baseline_seconds,
        "ratio": baseline_seconds / webhook_seconds,
    }


def _private_key() -> str:
    from citygrid.auth import generate_keypair

    return generate_keypair()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, default=10)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-bench-webhooks-"))
    try:
        with servers_for(workdir, durable=True, identities=dev_identities()) as (server_url, nats_access):
            asyncio.run(create_databases(server_url, [DB]))
            url = database_url(server_url, DB)
            upgrade("gateway", url)
            result = asyncio.run(
                measure(url, nats_access, arguments.consumers, arguments.events, arguments.concurrency)
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"webhooks: {result['deliveries']} deliveries ({result['consumers']} subscriptions × "
        f"{result['events']} events): {result['webhook_per_second']:,.0f}/s end to end; plain POSTs to "
        f"the same receiver {result['post_per_second']:,.0f}/s; ratio {result['ratio']:.2f}"
    )


if __name__ == "__main__":
    main()

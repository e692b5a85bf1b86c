"""Engines' detection batches over core NATS: each engine on its own subject, as its own principal."""

from __future__ import annotations

import asyncio
import json
import logging

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from citygrid.testing import wait_until
from services.vision.events import INTAKE_SUBJECT, engine_subject
from services.vision.main import engine_of, engine_principal
from services.vision.tests.conftest import camera, detection, engine_nats


def batch(*detections: object) -> bytes:
    return json.dumps({"detections": list(detections)}).encode()


async def send(engine: NatsClient, subject: str, body: bytes) -> Msg:
    """A request as an engine sends it, again while no replica listens yet (the service starting)."""
    for _ in range(100):
        try:
            return await engine.request(subject, body, timeout=10)
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nobody answers on {subject}")


async def test_an_engine_sends_a_batch_on_its_own_subject_and_gets_the_results_as_the_reply(vision, caplog):
    await vision.register(camera())
    caplog.set_level(logging.INFO, logger="services.vision")
    async with engine_nats(vision.infrastructure, "simulator") as engine:
        reply = await send(
            engine, engine_subject("simulator"), batch(detection(algorithm="littering"), {"camera_id": "x"})
        )
    body = json.loads(reply.data)
    assert (body["accepted"], body["refused"]) == (1, 1)
    assert body["results"][0]["outcome"] == "raised"
    assert "NATS intake: engine:simulator sent 2 detections, 1 accepted, 1 refused" in caplog.text


async def test_an_engine_cannot_send_on_another_engines_subject_nor_on_the_bare_intake_subject(vision):
    errors: list[Exception] = []
    async with engine_nats(vision.infrastructure, "simulator", errors) as engine:
        for subject in (engine_subject("edge-platform"), INTAKE_SUBJECT):
            with pytest.raises(nats.errors.TimeoutError):
                await engine.request(subject, batch(detection()), timeout=1)
    refused = " ".join(str(error) for error in errors)
    assert f'permissions violation for publish to "{engine_subject("edge-platform")}"' in refused
    assert f'permissions violation for publish to "{INTAKE_SUBJECT}"' in refused


async def test_the_engine_is_named_by_the_subject_and_nothing_else():
    assert engine_of(engine_subject("edge-platform")) == "edge-platform"
    assert engine_of(INTAKE_SUBJECT) is None
    assert engine_of(f"{INTAKE_SUBJECT}.Edge_Platform") is None
    assert engine_of("intake.vision.detectionsX.simulator") is None
    principal = engine_principal("edge-platform")
    assert principal.subject == "engine:edge-platform"
    assert principal.scopes == frozenset({"vision:ingest"})


async def test_a_batch_on_a_subject_that_names_no_engine_is_refused(vision):
    # Only the admin may publish there at all; the service still refuses to guess an engine.
    client = await nats.connect(vision.infrastructure.nats_url, connect_timeout=5)
    try:
        reply = await send(client, f"{INTAKE_SUBJECT}.NotAnEngine", batch(detection()))
    finally:
        await client.close()
    assert json.loads(reply.data)["code"] == "vision.unknown_engine"


async def test_the_intake_subscribes_again_when_its_subscription_ends(vision):
    assert vision.runtime.nats is not None
    client = vision.runtime.nats

    def intake_subscriptions() -> list[object]:
        return [sub for sub in client._subs.values() if sub.subject == f"{INTAKE_SUBJECT}.*"]

    await wait_until(lambda: len(intake_subscriptions()) == 1)
    (first,) = intake_subscriptions()
    await first.unsubscribe()  # type: ignore[attr-defined]
    await wait_until(lambda: len(intake_subscriptions()) == 1 and intake_subscriptions()[0] is not first)
    await vision.register(camera())
    async with engine_nats(vision.infrastructure, "simulator") as engine:
        reply = await send(engine, engine_subject("simulator"), batch(detection()))
    assert json.loads(reply.data)["accepted"] == 1

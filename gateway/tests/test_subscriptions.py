"""Webhook subscriptions through running gateways on real PostgreSQL and real NATS: events published
on the services' streams reach a real receiver, signed per Standard Webhooks (verified with its
library), masked by the consumer's grant, filtered; retries with backoff, the automatic pause and the
resume, replay from a point in time, secret rotation, the SSRF refusals, and two replicas that
deliver each message once. The rules themselves are unit-tested without I/O at the end."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook, WebhookVerificationError

from citygrid.events import CloudEvent, EventData, envelope
from citygrid.messaging import ensure_stream, stream_config
from citygrid.testing import Infrastructure, serve_app, wait_until
from contract.case import ALL_CASE_EVENTS, CaseClosed, CaseReported, CaseSource, CaseStatus
from contract.catalogue import DATASETS, EVENT_DATASET, EVENT_PERSONAL
from contract.common import GeoPoint
from contract.gas import ALL_GAS_EVENTS, RefusalReason, ViolationDetected
from contract.muck import ALL_MUCK_EVENTS, TransportViolation
from contract.muck import ViolationDetected as MuckViolationDetected
from contract.vision import ALL_VISION_EVENTS
from contract.waste import ALL_WASTE_EVENTS
from gateway.main import create_app
from gateway.settings import GatewaySettings
from gateway.subscriptions import delivery, rules
from gateway.subscriptions import service as subscriptions_service
from gateway.subscriptions.sealing import Sealer, SecretUnreadable, new_secret
from gateway.tests.test_consumers import Gateway, Setup, setup

__all__ = ["setup"]

SUBSCRIPTIONS = "/exchange/v1/subscriptions"
PHONE = "13800138000"
NOTE = f"联系人：王建国，电话{PHONE}，垃圾桶满溢"
ADDRESS = "广州市天河区天河路385号太古汇2座1201室"


# --- a receiver ------------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A webhook endpoint: records what arrives and answers with the statuses it is told to."""

    received: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    default: int = 204
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            self.received.append(Received(dict(request.headers), await request.body()))
            return Response(status_code=self.answers.pop(0) if self.answers else self.default)

        return app

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.event["type"].startswith(event_type + ".")]


# --- the gateway under test ------------------------------------------------------------------------


# What every gateway here has besides the consumers' tests' settings: receivers on loopback, quick
# polls and backoff measured in tenths of a second.
WEBHOOK_SETTINGS: dict[str, Any] = {
    "webhook_allow_private_targets": True,
    "webhook_poll_seconds": 0.05,
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_max_seconds": 0.2,
    "webhook_timeout_seconds": 2.0,
}


@dataclass
class Hooks:
    setup: Setup

    @property
    def admin_key(self) -> str:
        return self.setup.admin_key

    @property
    def infrastructure(self) -> Infrastructure:
        return self.setup.infrastructure

    @contextlib.asynccontextmanager
    async def gateway(self, **overrides: Any) -> AsyncIterator[Gateway]:
        app = create_app(self.setup.settings(**(WEBHOOK_SETTINGS | overrides)))
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=20.0) as client:
            await wait_until(app.state.kit.messaging_ready.is_set)
            yield Gateway(app, client)

    async def consumer(self, gateway: Gateway, name: str, scopes: list[str], **fields: Any) -> str:
        """A registered consumer's API key."""
        body = {"name": name, "kind": "department", "scopes": scopes, **fields}
        response = await gateway.client.post(
            "/admin/v1/consumers", json=body, headers={"X-API-Key": self.admin_key}
        )
        assert response.status_code == 201, response.text
        key: str = response.json()["api_key"]
        return key

    async def sql(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        return await self.setup.sql(statement, *args)

    async def publish(self, *events: CloudEvent) -> None:
        await publish(self.infrastructure, *events)


async def publish(infrastructure: Infrastructure, *events: CloudEvent) -> None:
    """Publish as a producer's outbox relay does: the envelope, with Nats-Msg-Id, on its stream."""
    client = await nats.connect(infrastructure.nats_url)
    try:
        jetstream = client.jetstream()
        for event in events:
            await ensure_stream(jetstream, stream_config(event.domain))
            await jetstream.publish(
                event.nats_subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.id}
            )
    finally:
        await client.close()


@pytest.fixture
def hooks(setup: Setup) -> Hooks:
    return Hooks(setup)


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    receiver = receiver or Receiver()
    async with serve_app(receiver.app()) as url:
        receiver.url = f"{url}/hook"
        yield receiver


async def subscribe(gateway: Gateway, key: str, receiver: Receiver, **body: Any) -> dict[str, Any]:
    response = await gateway.client.post(
        SUBSCRIPTIONS,
        json={"url": receiver.url, "event_types": ["case.case.reported"], **body},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# --- events as the services publish them -----------------------------------------------------------


def _emit(data: EventData, aggregate: str) -> CloudEvent:
    return envelope(data, source=data.domain(), aggregate_id=aggregate, aggregate_version=1)


def case_event(
    kind: type[EventData] = CaseReported, *, district: str = "440106", category: str = "11001", **extra: Any
) -> CloudEvent:
    case_id = uuid.uuid4()
    data = kind.model_validate(
        {
            "case_id": case_id,
            "number": f"C-{case_id.hex[:8]}",
            "status": CaseStatus.REPORTED if kind is CaseReported else CaseStatus.CLOSED,
            "category_code": category,
            "district_code": district,
            "location": GeoPoint(coordinates=(113.33, 23.14)),
            "source": CaseSource.PUBLIC,
            "version": 1,
            "actor": "citizen",
            "note": NOTE,
            "occurred_at": datetime.now(UTC),
        }
        | extra
    )
    return _emit(data, str(case_id))


def gas_violation(*, district: str = "440106") -> CloudEvent:
    data = ViolationDetected(
        reference=f"scan-{uuid.uuid4().hex[:8]}",
        category_code="12001",
        district_code=district,
        location=GeoPoint(coordinates=(113.33, 23.14)),
        address=ADDRESS,
        description=NOTE,
        detected_at=datetime.now(UTC),
        cylinder_code="GZ-LPG-0000001",
        station_code="ST-01",
        reasons=[next(iter(RefusalReason))],
    )
    return _emit(data, data.reference)


def muck_violation(
    *, district: str = "440106", kind: TransportViolation = TransportViolation.OFF_ROUTE
) -> CloudEvent:
    data = MuckViolationDetected(
        reference=f"violation-{uuid.uuid4().hex[:8]}",
        category_code="12001",
        district_code=district,
        location=GeoPoint(coordinates=(113.33, 23.14)),
        address=ADDRESS,
        description=NOTE,
        detected_at=datetime.now(UTC),
        plate="粤A12345",
        kind=kind,
    )
    return _emit(data, data.reference)


def verified(receiver_secret: str, received: Received) -> dict[str, Any]:
    """The payload, verified as a receiver verifies it (the Standard Webhooks library)."""
    payload: dict[str, Any] = Webhook(receiver_secret).verify(received.body, received.headers)
    return payload


async def delivered(hooks: Hooks, subscription_id: str, count: int) -> None:
    async def done() -> bool:
        rows = await hooks.sql(
            "SELECT count(*) AS n FROM webhook_deliveries WHERE subscription_id = $1 AND state = 'delivered'",
            uuid.UUID(subscription_id),
        )
        return int(rows[0]["n"]) >= count

    await wait_until(done, timeout=30.0)


# --- live ------------------------------------------------------------------------------------------


async def test_an_event_reaches_its_subscriber_signed_as_a_cloudevent_and_masked_without_pii(hooks: Hooks):
    async with hooks.gateway() as gateway, receiving() as receiver:
        plain = await hooks.consumer(gateway, "housing", ["cases:read"])
        trusted = await hooks.consumer(gateway, "police", ["cases:read", "pii:read"])
        plain_receiver = receiver
        async with receiving() as trusted_receiver:
            masked_subscription = await subscribe(gateway, plain, plain_receiver)
            clear_subscription = await subscribe(gateway, trusted, trusted_receiver)
            assert masked_subscription["secret"].startswith("whsec_")
            assert (
                "secret"
                not in (
                    await gateway.client.get(
                        f"{SUBSCRIPTIONS}/{masked_subscription['id']}", headers={"X-API-Key": plain}
                    )
                ).json()
            )

            event = case_event()
            await hooks.publish(event)
            await wait_until(lambda: plain_receiver.received and trusted_receiver.received, timeout=30.0)

    (masked,) = plain_receiver.received
    assert masked.headers["content-type"].startswith("application/cloudevents+json")
    assert masked.headers["webhook-id"] == event.id
    payload = verified(masked_subscription["secret"], masked)
    assert payload["specversion"] == "1.0"
    assert payload["type"] == "case.case.reported.v1"
    assert payload["source"] == "citygrid/case"
    assert payload["id"] == event.id
    assert PHONE not in masked.body.decode()
    assert "王建国" not in masked.body.decode()
    assert payload["data"]["case_id"] == event.data["case_id"]
    # Another subscription's secret does not verify it: each has its own.
    with pytest.raises(WebhookVerificationError):
        verified(clear_subscription["secret"], masked)

    (clear,) = trusted_receiver.received
    assert verified(clear_subscription["secret"], clear)["data"]["note"] == NOTE


async def test_filters_by_district_category_and_field_and_a_district_bound_consumer_sees_its_own(
    hooks: Hooks,
):
    async with hooks.gateway() as gateway, receiving() as city, receiving() as district:
        city_key = await hooks.consumer(gateway, "transport", ["cases:read"])
        district_key = await hooks.consumer(gateway, "tianhe", ["cases:read"], district="440106")
        await subscribe(
            gateway,
            city_key,
            city,
            event_types=["case.case.reported", "case.case.closed"],
            filters={"categories": ["11001"], "fields": {"source": ["public"]}},
        )
        await subscribe(gateway, district_key, district, event_types=["case.case.reported"])
        # A district-bound consumer cannot ask for another district's events.
        other = await gateway.client.post(
            SUBSCRIPTIONS,
            json={
                "url": district.url,
                "event_types": ["case.case.reported"],
                "filters": {"districts": ["440104"]},
            },
            headers={"X-API-Key": district_key},
        )
        assert other.status_code == 403
        assert other.json()["code"] == "subscription.other_district"

        taken = case_event(district="440106")
        other_district = case_event(district="440104")
        other_category = case_event(category="21001")
        other_source = case_event(source=CaseSource.HOTLINE)
        closed = case_event(CaseClosed, district="440104")
        await hooks.publish(taken, other_district, other_category, other_source, closed)
        await wait_until(lambda: len(city.received) >= 3 and len(district.received) >= 3, timeout=30.0)
        await asyncio.sleep(0.5)  # nothing else arrives

    assert sorted(r.event["id"] for r in city.received) == sorted([taken.id, other_district.id, closed.id])
    # The district-bound consumer: every event of its district, none of another.
    assert sorted(r.event["id"] for r in district.received) == sorted(
        [taken.id, other_category.id, other_source.id]
    )


async def test_a_failing_receiver_is_retried_with_backoff_then_paused_then_resumed_and_replayed(
    hooks: Hooks,
):
    async with (
        hooks.gateway(webhook_pause_after_failures=4, webhook_max_attempts=3) as gateway,
        receiving(Receiver(default=503)) as receiver,
    ):
        key = await hooks.consumer(gateway, "emergency", ["cases:read"])
        subscription = await subscribe(gateway, key, receiver)
        path = f"{SUBSCRIPTIONS}/{subscription['id']}"
        first, second = case_event(), case_event()
        await hooks.publish(first, second)

        async def paused() -> bool:
            body = (await gateway.client.get(path, headers={"X-API-Key": key})).json()
            return bool(body["state"] == "paused")

        await wait_until(paused, timeout=30.0)
        state = (await gateway.client.get(path, headers={"X-API-Key": key})).json()
        assert state["paused_reason"] == "failing"
        assert state["failures"] >= 4
        attempts = len(receiver.received)
        assert attempts >= 4
        # Each retry of one message carries the same webhook-id and a fresh signature.
        ids = [r.headers["webhook-id"] for r in receiver.received]
        assert set(ids) <= {first.id, second.id}
        await asyncio.sleep(0.5)
        assert len(receiver.received) == attempts, "a paused subscription is sent nothing"

        log = (await gateway.client.get(f"{path}/deliveries", headers={"X-API-Key": key})).json()
        assert {item["event_id"] for item in log["items"]} == {first.id, second.id}
        one = log["items"][0]
        detail = (
            await gateway.client.get(f"{path}/deliveries/{one['id']}", headers={"X-API-Key": key})
        ).json()
        assert detail["recent_attempts"]
        assert all(a["status"] == 503 for a in detail["recent_attempts"])
        assert detail["attempts"] == len(detail["recent_attempts"])

        # Backoff: the gaps between a message's attempts grow.
        times = [
            row["at"]
            for row in await hooks.sql(
                "SELECT a.at FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id"
                " WHERE d.event_id = $1 ORDER BY a.at",
                first.id,
            )
        ]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert gaps
        assert all(gap >= 0.03 for gap in gaps)

        receiver.default = 200
        resumed = await gateway.client.post(f"{path}/resume", headers={"X-API-Key": key})
        assert resumed.status_code == 200
        assert resumed.json()["state"] == "active"
        assert resumed.json()["failures"] == 0
        # What failed for good (its attempts spent) stays failed; a replay sends it again.
        failed = (
            await gateway.client.get(
                f"{path}/deliveries", params={"state": "failed"}, headers={"X-API-Key": key}
            )
        ).json()["items"]
        before = len(receiver.received)
        replay = await gateway.client.post(
            f"{path}/replay",
            json={"since": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()},
            headers={"X-API-Key": key},
        )
        assert replay.status_code == 202
        assert replay.json()["queued"] >= len(failed)
        await delivered(hooks, subscription["id"], 2)
        delivered_ids = {r.headers["webhook-id"] for r in receiver.received[before:]}
        assert delivered_ids == {first.id, second.id}
        for received in receiver.received[before:]:
            verified(subscription["secret"], received)


async def test_a_delivered_message_is_sent_again_by_a_replay_and_not_before_it(hooks: Hooks):
    async with hooks.gateway() as gateway, receiving() as receiver:
        key = await hooks.consumer(gateway, "market", ["cases:read"])
        subscription = await subscribe(gateway, key, receiver)
        event = case_event()
        await hooks.publish(event)
        await delivered(hooks, subscription["id"], 1)
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 1
        future = await gateway.client.post(
            f"{SUBSCRIPTIONS}/{subscription['id']}/replay",
            json={"since": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()},
            headers={"X-API-Key": key},
        )
        assert future.json()["queued"] == 0
        replay = await gateway.client.post(
            f"{SUBSCRIPTIONS}/{subscription['id']}/replay",
            json={"since": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()},
            headers={"X-API-Key": key},
        )
        assert replay.json()["queued"] == 1
        await wait_until(lambda: len(receiver.received) == 2)
    assert [r.headers["webhook-id"] for r in receiver.received] == [event.id, event.id]


async def test_a_rotated_secret_signs_beside_the_old_one_during_the_overlap(hooks: Hooks):
    async with hooks.gateway() as gateway, receiving() as receiver:
        key = await hooks.consumer(gateway, "vendor", ["cases:read"])
        subscription = await subscribe(gateway, key, receiver)
        rotated = await gateway.client.post(
            f"{SUBSCRIPTIONS}/{subscription['id']}/secret/rotate", headers={"X-API-Key": key}
        )
        assert rotated.status_code == 200
        new = rotated.json()["secret"]
        assert new != subscription["secret"]
        assert rotated.json()["previous_secret_until"]
        await hooks.publish(case_event())
        await wait_until(lambda: receiver.received, timeout=30.0)
    (received,) = receiver.received
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    verified(new, received)
    verified(subscription["secret"], received)


async def test_a_consumer_that_loses_its_scope_or_is_revoked_receives_nothing_more(hooks: Hooks):
    async with hooks.gateway() as gateway, receiving() as receiver:
        key = await hooks.consumer(gateway, "transport", ["cases:read"])
        subscription = await subscribe(gateway, key, receiver)
        consumer_id = (await hooks.sql("SELECT id FROM api_consumers WHERE name = 'transport'"))[0]["id"]
        changed = await gateway.client.patch(
            f"/admin/v1/consumers/{consumer_id}",
            json={"scopes": ["gas:read"]},
            headers={"X-API-Key": hooks.admin_key},
        )
        assert changed.status_code == 200, changed.text
        await hooks.publish(case_event())
        await asyncio.sleep(1.0)
        assert receiver.received == []
        rows = await hooks.sql(
            "SELECT count(*) AS n FROM webhook_deliveries WHERE subscription_id = $1",
            uuid.UUID(subscription["id"]),
        )
        assert rows[0]["n"] == 0


async def test_subscriptions_are_refused_for_unknown_types_missing_scopes_and_bad_filters(hooks: Hooks):
    async with hooks.gateway() as gateway, receiving() as receiver:
        key = await hooks.consumer(gateway, "housing", ["cases:read"])

        async def refused(body: dict[str, Any]) -> httpx.Response:
            response = await gateway.client.post(
                SUBSCRIPTIONS, json={"url": receiver.url} | body, headers={"X-API-Key": key}
            )
            assert response.headers["content-type"].startswith("application/problem+json"), response.text
            return response

        unknown = await refused({"event_types": ["case.case.exploded"]})
        assert unknown.status_code == 422
        scope = await refused({"event_types": ["gas.violation.detected"]})
        assert scope.status_code == 403
        assert "enterprises:read" in scope.json()["detail"]
        field_ = await refused(
            {"event_types": ["case.case.reported"], "filters": {"fields": {"colour": ["red"]}}}
        )
        assert field_.status_code == 422
        assert field_.json()["code"] == "subscription.unknown_field"
        district = await refused(
            {"event_types": ["case.case.reported"], "filters": {"districts": ["999999"]}}
        )
        assert district.status_code == 422
        anonymous = await gateway.client.post(
            SUBSCRIPTIONS, json={"url": receiver.url, "event_types": ["case.case.reported"]}
        )
        assert anonymous.status_code == 401
        admin = await gateway.client.get(SUBSCRIPTIONS, headers={"X-API-Key": hooks.admin_key})
        assert admin.status_code == 200
        assert admin.json()["items"] == []

        # Another consumer's subscription is not found, not forbidden.
        mine = await subscribe(gateway, key, receiver)
        other = await hooks.consumer(gateway, "police", ["cases:read"])
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/pause"), ("GET", "/deliveries")):
            response = await gateway.client.request(
                method, f"{SUBSCRIPTIONS}/{mine['id']}{suffix}", headers={"X-API-Key": other}
            )
            assert response.status_code == 404
            assert response.json()["code"] == "subscription.not_found"

        # The limit per consumer holds.
        for _ in range(2):
            await subscribe(gateway, key, receiver)
    async with hooks.gateway(webhook_subscriptions_per_consumer=3) as gateway, receiving() as receiver:
        full = await gateway.client.post(
            SUBSCRIPTIONS,
            json={"url": receiver.url, "event_types": ["case.case.reported"]},
            headers={"X-API-Key": key},
        )
        assert full.status_code == 409
        assert full.json()["code"] == "subscription.limit_reached"
        listed = (
            await gateway.client.get(SUBSCRIPTIONS, params={"limit": 2}, headers={"X-API-Key": key})
        ).json()
        assert len(listed["items"]) == 2
        assert listed["next_cursor"]
        rest = (
            await gateway.client.get(
                SUBSCRIPTIONS,
                params={"limit": 2, "cursor": listed["next_cursor"]},
                headers={"X-API-Key": key},
            )
        ).json()
        assert len(rest["items"]) == 1
        assert rest["next_cursor"] is None
        deleted = await gateway.client.delete(f"{SUBSCRIPTIONS}/{mine['id']}", headers={"X-API-Key": key})
        assert deleted.status_code == 204


async def test_targets_on_internal_addresses_are_refused_outside_development(hooks: Hooks):
    async with hooks.gateway(webhook_allow_private_targets=False) as gateway:
        key = await hooks.consumer(gateway, "vendor", ["cases:read"])
        for url in (
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "ftp://example.org/hook",
            "http://user:pass@example.org/hook",
        ):
            response = await gateway.client.post(
                SUBSCRIPTIONS,
                json={"url": url, "event_types": ["case.case.reported"]},
                headers={"X-API-Key": key},
            )
            assert response.status_code == 422, url
            assert response.json()["code"] == "subscription.target_refused", url


def test_production_takes_https_only_and_never_private_targets():
    base: dict[str, Any] = {
        "environment": "production",
        "internal_token_private_key": "x",
        "internal_token_public_key": "x",
        "message_log_key": "k" * 32,
        "token_key_passphrase": "p" * 32,
    }
    with pytest.raises(ValueError, match="WEBHOOK_SECRET_KEY"):
        GatewaySettings(**base)
    with pytest.raises(ValueError, match="ALLOW_PRIVATE_TARGETS"):
        GatewaySettings(**base, webhook_secret_key="w" * 32, webhook_allow_private_targets=True)
    with pytest.raises(rules.TargetRefused):
        rules.parse_target("http://example.org/hook", allow_http=False)
    assert rules.parse_target("https://example.org:8443/hook?a=1", allow_http=False).port == 8443


async def test_a_name_that_resolves_to_an_internal_address_at_send_time_is_not_followed(hooks: Hooks):
    """DNS rebinding: the name was public when registered and is internal when sent."""
    answers = {"hooks.example.org": ["93.184.216.34"]}

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    async with hooks.gateway(webhook_allow_private_targets=False) as gateway, receiving() as receiver:
        gateway.app.state.webhooks = type(gateway.app.state.webhooks)(
            policy=gateway.app.state.webhooks.policy,
            sealer=gateway.app.state.webhooks.sealer,
            deliverer=gateway.app.state.webhooks.deliverer,
            resolver=resolver,
        )
        gateway.app.state.webhooks.deliverer._resolver = resolver
        key = await hooks.consumer(gateway, "vendor", ["cases:read"])
        response = await gateway.client.post(
            SUBSCRIPTIONS,
            json={"url": "http://hooks.example.org/hook", "event_types": ["case.case.reported"]},
            headers={"X-API-Key": key},
        )
        assert response.status_code == 201, response.text
        subscription = response.json()
        answers["hooks.example.org"] = ["93.184.216.34", "127.0.0.1"]
        await hooks.publish(case_event())

        async def refused() -> bool:
            rows = await hooks.sql(
                "SELECT a.error FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id"
                " WHERE d.subscription_id = $1",
                uuid.UUID(subscription["id"]),
            )
            return any("internal address" in (row["error"] or "") for row in rows)

        await wait_until(refused, timeout=30.0)
    assert receiver.received == []


async def test_two_replicas_deliver_every_message_once(hooks: Hooks):
    async with (
        hooks.gateway() as first,
        hooks.gateway() as second,
        receiving() as receiver,
    ):
        key = await hooks.consumer(first, "police", ["cases:read", "enterprises:read"])
        subscription = await subscribe(
            first, key, receiver, event_types=["case.case.reported", "gas.violation.detected"]
        )
        events = [case_event() for _ in range(40)] + [gas_violation() for _ in range(20)]
        await hooks.publish(*events)
        await delivered(hooks, subscription["id"], len(events))
        await asyncio.sleep(0.5)
        sent_by = await hooks.sql("SELECT count(*) AS n FROM webhook_attempts")
        del second
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert sorted(ids) == sorted(event.id for event in events), "each message once, none lost"
    assert sent_by[0]["n"] == len(events)
    violation = next(r for r in receiver.received if r.event["type"].startswith("gas.violation.detected"))
    assert PHONE not in violation.body.decode()
    assert "385号" not in violation.body.decode()


async def test_messages_queued_while_the_receiver_is_down_arrive_when_it_is_back(hooks: Hooks):
    """Nothing acknowledged is lost: the gateway restarts, the receiver comes back, every message arrives."""
    receiver = Receiver(default=502)
    async with receiving(receiver):
        async with hooks.gateway(webhook_retry_max_seconds=0.1, webhook_max_attempts=100) as gateway:
            key = await hooks.consumer(gateway, "emergency", ["cases:read"])
            subscription = await subscribe(gateway, key, receiver)
            events = [case_event() for _ in range(5)]
            await hooks.publish(*events)
            await wait_until(lambda: len(receiver.received) >= 5, timeout=30.0)
        receiver.default = 200
        async with hooks.gateway(webhook_retry_max_seconds=0.1, webhook_max_attempts=100):
            await delivered(hooks, subscription["id"], len(events))
    accepted = {r.headers["webhook-id"] for r in receiver.received if r.headers}
    assert {event.id for event in events} <= accepted


async def test_a_consumer_may_not_filter_on_personal_data_it_would_see_masked(hooks: Hooks):
    """Whether an event arrives would otherwise tell the consumer a masked value it guessed."""
    async with hooks.gateway() as gateway, receiving() as receiver:
        plain = await hooks.consumer(gateway, "housing", ["cases:read"])
        trusted = await hooks.consumer(gateway, "police", ["cases:read", "cases:pii"])
        guess = {
            "url": receiver.url,
            "event_types": ["case.case.reported"],
            "filters": {"fields": {"note": [NOTE]}},
        }
        refused = await gateway.client.post(SUBSCRIPTIONS, json=guess, headers={"X-API-Key": plain})
        assert refused.status_code == 403
        assert refused.json()["code"] == "subscription.personal_filter"
        allowed = await gateway.client.post(SUBSCRIPTIONS, json=guess, headers={"X-API-Key": trusted})
        assert allowed.status_code == 201, allowed.text


async def test_values_no_database_or_clock_can_hold_are_refused_with_a_4xx(hooks: Hooks):
    async with hooks.gateway() as gateway, receiving() as receiver:
        key = await hooks.consumer(gateway, "vendor", ["cases:read", "incidents:read"])
        headers = {"X-API-Key": key, "content-type": "application/json"}
        for url in (
            "https://a..b/hook",
            "https://" + "a" * 64 + ".example/hook",
            "http://h/a b",
            "http://h/\x7f",
        ):
            body = json.dumps({"url": url, "event_types": ["case.case.reported"]})
            response = await gateway.client.post(SUBSCRIPTIONS, content=body, headers=headers)
            assert response.status_code == 422, (url, response.text)
            assert response.json()["code"] == "subscription.target_refused"
        for value in ("NaN", "Infinity", "1e400"):
            filters = f'{{"fields": {{"version": [{value}]}}}}'
            body = f'{{"url": "{receiver.url}", "event_types": ["case.case.reported"], "filters": {filters}}}'
            response = await gateway.client.post(SUBSCRIPTIONS, content=body, headers=headers)
            assert response.status_code == 422, (value, response.text)
        # Filters on what an event type does not carry would silently let nothing through.
        for missing in ({"categories": ["11001"]}, {"districts": ["440106"]}):
            response = await gateway.client.post(
                SUBSCRIPTIONS,
                json={"url": receiver.url, "event_types": ["gas.incident.closed"], "filters": missing},
                headers={"X-API-Key": key},
            )
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "subscription.unknown_field"
        subscription = await subscribe(gateway, key, receiver)
        path = f"{SUBSCRIPTIONS}/{subscription['id']}"
        for since in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01T00:00:00"):
            response = await gateway.client.post(f"{path}/replay", json={"since": since}, headers=headers)
            assert response.status_code == 422, (since, response.text)
        forged = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", 10**30]).encode()).decode()
        response = await gateway.client.get(f"{path}/deliveries", params={"cursor": forged}, headers=headers)
        assert response.status_code == 400
        assert response.json()["code"] == "pagination.invalid_cursor"
        for delivery in ("0", "99999999999999999999", "x"):
            response = await gateway.client.get(f"{path}/deliveries/{delivery}", headers=headers)
            assert response.status_code == 422, delivery


async def test_an_outcome_recorded_late_by_a_replica_whose_lease_lapsed_changes_nothing(hooks: Hooks):
    async with hooks.gateway() as gateway, receiving() as receiver:
        key = await hooks.consumer(gateway, "emergency", ["cases:read"])
        subscription = await subscribe(gateway, key, receiver)
        path = f"{SUBSCRIPTIONS}/{subscription['id']}"
        assert (await gateway.client.post(f"{path}/pause", headers={"X-API-Key": key})).status_code == 200
        await hooks.publish(case_event())

        async def queued() -> list[asyncpg.Record]:
            return await hooks.sql("SELECT id, attempts FROM webhook_deliveries WHERE state = 'pending'")

        await wait_until(queued)
        (row,) = await queued()
        # Another replica claimed it again after this one's lease lapsed: its lease is the newer.
        await hooks.sql(
            "UPDATE webhook_deliveries SET attempts = 2, leased_until = now() + interval '40 seconds'"
            " WHERE id = $1",
            row["id"],
        )
        deliverer = gateway.app.state.webhooks.deliverer
        lapsed = datetime.now(UTC) - timedelta(seconds=1)
        stale = {"id": row["id"], "lease": lapsed, "subscription_id": uuid.UUID(subscription["id"])}
        await deliverer._settle(delivery._FAILED, stale | FAILED_PARAMETERS)
        await deliverer._settle(delivery._DELIVERED, stale | {"status": 200, "duration_ms": 5})
        (after,) = await hooks.sql("SELECT state, attempts FROM webhook_deliveries WHERE id = $1", row["id"])
        assert (after["state"], after["attempts"]) == ("pending", 2)
        assert await hooks.sql("SELECT 1 FROM webhook_attempts") == []
        (held,) = await hooks.sql("SELECT failures FROM subscriptions")
        assert held["failures"] == 0


FAILED_PARAMETERS = {
    "status": 500,
    "duration_ms": 5,
    "error": "stale",
    "max_attempts": 1,
    "retry_seconds": 1.0,
    "cap": 1.0,
    "base": 1.0,
    "jitter": 1.0,
    "pause": 1,
}


async def test_resume_sends_what_waits_at_once_not_after_its_backoff(hooks: Hooks):
    async with (
        hooks.gateway(
            webhook_pause_after_failures=1, webhook_retry_base_seconds=600, webhook_retry_max_seconds=600
        ) as gateway,
        receiving(Receiver(answers=[503])) as receiver,
    ):
        key = await hooks.consumer(gateway, "market", ["cases:read"])
        subscription = await subscribe(gateway, key, receiver)
        path = f"{SUBSCRIPTIONS}/{subscription['id']}"
        await hooks.publish(case_event())

        async def paused() -> bool:
            return bool(
                (await gateway.client.get(path, headers={"X-API-Key": key})).json()["state"] == "paused"
            )

        await wait_until(paused, timeout=30.0)
        assert (await gateway.client.post(f"{path}/resume", headers={"X-API-Key": key})).status_code == 200
        await delivered(hooks, subscription["id"], 1)
    assert [r.headers["webhook-id"] for r in receiver.received][-1] == receiver.received[0].headers[
        "webhook-id"
    ]


async def test_one_consumer_holds_no_more_than_its_share_of_a_replicas_slots(hooks: Hooks):
    """A consumer with many subscriptions to a slow receiver cannot take every slot."""
    in_flight = {"now": 0, "most": 0}
    slow = FastAPI()

    @slow.post("/hook")
    async def hook(request: Request) -> Response:
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        await asyncio.sleep(0.3)
        in_flight["now"] -= 1
        return Response(status_code=204)

    async with hooks.gateway(webhook_concurrency_per_consumer=2) as gateway, serve_app(slow) as url:
        key = await hooks.consumer(gateway, "vendor", ["cases:read"])
        subscriptions = [await subscribe(gateway, key, Receiver(url=f"{url}/hook")) for _ in range(3)]
        await hooks.publish(*[case_event() for _ in range(6)])
        for subscription in subscriptions:
            await delivered(hooks, subscription["id"], 6)
    assert in_flight["most"] == 2


async def test_retention_deletes_settled_messages_past_it_with_their_deliveries_and_attempts(hooks: Hooks):
    async with hooks.gateway() as gateway, receiving(Receiver(answers=[503])) as receiver:
        key = await hooks.consumer(gateway, "police", ["cases:read"])
        subscription = await subscribe(gateway, key, receiver)
        old, recent, waiting = case_event(), case_event(), case_event()
        await hooks.publish(old, recent)
        await delivered(hooks, subscription["id"], 2)
        path = f"{SUBSCRIPTIONS}/{subscription['id']}"
        await gateway.client.post(f"{path}/pause", headers={"X-API-Key": key})
        await hooks.publish(waiting)
        await wait_until(lambda: hooks.sql("SELECT 1 FROM webhook_deliveries WHERE state = 'pending'"))
        await hooks.sql(
            "UPDATE webhook_messages SET created_at = now() - interval '10 days' WHERE event_id = ANY($1)",
            [old.id, waiting.id],
        )
        purged = await subscriptions_service.purge(
            gateway.app.state.kit.db, retention=timedelta(days=7), undelivered=timedelta(days=30)
        )
        assert purged == 1
        left = {row["event_id"] for row in await hooks.sql("SELECT event_id FROM webhook_deliveries")}
        assert left == {recent.id, waiting.id}, "a settled one past retention goes; a pending one stays"
        attempts = await hooks.sql(
            "SELECT count(*) AS n FROM webhook_attempts a LEFT JOIN webhook_deliveries d ON d.id = a.delivery_id"
            " WHERE d.id IS NULL"
        )
        assert attempts[0]["n"] == 0
        await hooks.sql(
            "UPDATE webhook_messages SET created_at = now() - interval '31 days' WHERE event_id = $1",
            waiting.id,
        )
        assert (
            await subscriptions_service.purge(
                gateway.app.state.kit.db, retention=timedelta(days=7), undelivered=timedelta(days=30)
            )
            == 1
        )


async def test_a_secret_the_gateway_cannot_open_holds_the_subscription_and_is_not_held_against_it(
    hooks: Hooks,
):
    """The key that sealed it was changed without being kept: the gateway's fault, not the receiver's."""
    async with hooks.gateway() as gateway, receiving() as receiver:
        key = await hooks.consumer(gateway, "police", ["cases:read"])
        subscription = await subscribe(gateway, key, receiver)
    async with (
        hooks.gateway(webhook_secret_key="n" * 32, webhook_retry_max_seconds=3600) as gateway,
        receiving() as elsewhere,
    ):
        del elsewhere
        await hooks.publish(case_event())

        async def deferred() -> list[asyncpg.Record]:
            return await hooks.sql("SELECT error FROM webhook_attempts")

        await wait_until(deferred, timeout=30.0)
        await asyncio.sleep(0.5)
        attempts = await deferred()
        assert len(attempts) == 1, "held an hour, not retried at once"
        assert "CITYGRID_WEBHOOK_SECRET_KEY" in attempts[0]["error"]
        (held,) = await hooks.sql(
            "SELECT failures, state, retry_at > now() + interval '30 minutes' AS held FROM subscriptions"
        )
        assert (held["failures"], held["state"], held["held"]) == (0, "active", True)
        (waiting,) = await hooks.sql("SELECT state, attempts FROM webhook_deliveries")
        assert (waiting["state"], waiting["attempts"]) == ("pending", 0)
    assert receiver.received == []
    del subscription


# --- the rules, without I/O ------------------------------------------------------------------------

EVERY_EVENT = (*ALL_CASE_EVENTS, *ALL_VISION_EVENTS, *ALL_GAS_EVENTS, *ALL_MUCK_EVENTS, *ALL_WASTE_EVENTS)


def test_every_event_type_belongs_to_one_dataset_and_names_its_personal_fields():
    subjects = {event.subject for event in EVERY_EVENT}
    assert subjects == set(EVENT_DATASET) == set(EVENT_PERSONAL) == rules.SUBSCRIBABLE
    for subject in subjects:
        assert sum(subject in dataset.events for dataset in DATASETS) == 1, subject
    personal_names = {
        "address",
        "description",
        "note",
        "resolution_note",
        "contact_name",
        "phone",
        "id_number",
    }
    for event in EVERY_EVENT:
        fields = set(event.model_fields)
        declared = set(EVENT_PERSONAL[event.subject])
        assert declared <= fields, event.subject
        assert fields & personal_names <= declared, f"{event.subject}: a personal field is not masked"


PERSONAL_EXAMPLES = {
    "text": NOTE,
    "address": ADDRESS,
    "name": "王建国",
    "phone": PHONE,
    "position": {"type": "Point", "coordinates": [113.331234, 23.141234]},
}


@pytest.mark.parametrize("subject", sorted(EVENT_PERSONAL), ids=str)
def test_each_personal_field_of_each_event_is_masked_without_pii_and_kept_with_it(subject: str):
    personal = rules.PERSONAL_PATHS[subject]
    # The dataset's own personal fields that the event carries are masked in it too.
    dataset = EVENT_DATASET[subject]
    assert {p for p in dataset.personal if p.split(".")[0] in rules.EVENT_FIELDS[subject]} <= set(personal)
    data = {path: PERSONAL_EXAMPLES[kind.value] for path, kind in personal.items() if "." not in path}
    plain = rules.Audience(frozenset({EVENT_DATASET[subject].read_scope}))
    masked = rules.masked(subject, json.loads(json.dumps(data)), plain)
    for path in data:
        assert masked[path] != data[path], (subject, path)
        assert PHONE not in str(masked[path]), (subject, path)
        assert "王建国" not in str(masked[path]), (subject, path)
    for scopes in ({"pii:read"}, {EVENT_DATASET[subject].pii_scope}):
        trusted = rules.Audience(frozenset({EVENT_DATASET[subject].read_scope, *scopes}))
        assert rules.masked(subject, json.loads(json.dumps(data)), trusted) == data


def test_matching_checks_scope_district_and_every_filter():
    reader = rules.Audience(frozenset({"cases:read"}))
    bound = rules.Audience(frozenset({"cases:read"}), "440106")
    data = {"district_code": "440106", "category_code": "11001", "status": "reported", "urgent": True, "n": 2}
    nothing = rules.Filters()
    assert rules.matches("case.case.reported", data, nothing, reader)
    assert not rules.matches("case.case.reported", data, nothing, rules.Audience(frozenset({"gas:read"})))
    assert rules.matches("case.case.reported", data, nothing, bound)
    assert not rules.matches("case.case.reported", data | {"district_code": "440104"}, nothing, bound)
    assert not rules.matches("case.case.reported", {"category_code": "11001"}, nothing, bound), "fail closed"
    assert not rules.matches(
        "case.case.reported", data, rules.Filters(districts=frozenset({"440104"})), reader
    )
    assert not rules.matches(
        "case.case.reported", data, rules.Filters(categories=frozenset({"21001"})), reader
    )
    assert rules.matches("case.case.reported", data, rules.Filters(fields={"status": ("reported",)}), reader)
    assert not rules.matches("case.case.reported", data, rules.Filters(fields={"urgent": (1,)}), reader)
    assert rules.matches("case.case.reported", data, rules.Filters(fields={"n": (2.0,)}), reader)
    assert not rules.matches("case.case.reported", data, rules.Filters(fields={"missing": ("x",)}), reader)
    assert not rules.matches("case.case.unheard_of", data, nothing, reader)
    assert rules.subject_of("case.case.reported.v2") == "case.case.reported"
    assert rules.subject_of("case.case.reported") == "case.case.reported"


def test_retries_back_off_exponentially_up_to_the_cap():
    delays = [rules.retry_delay(n, base=5, cap=3600) for n in range(1, 14)]
    assert delays[:4] == [5, 10, 20, 40]
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert delays[-1] == 3600
    assert rules.retry_delay(10_000, base=5, cap=3600) == 3600
    assert rules.retry_delay(1, base=5, cap=3600, jitter=1.2) == 6


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",
        "2002:0a00:0001::1",
        "fec0::1",
        "not an address",
    ],
)
def test_internal_addresses_are_not_public(address: str):
    assert not rules.is_public(address)
    with pytest.raises(rules.TargetRefused):
        rules.check_addresses("h", ["93.184.216.34", address], allow_private=False)


def test_public_addresses_are_and_a_target_is_reached_by_its_checked_address():
    assert rules.is_public("93.184.216.34")
    assert rules.is_public("2606:2800:220:1:248:1893:25c8:1946")
    target = rules.parse_target("https://Hooks.Example.org./in?x=1", allow_http=False)
    assert target.host == "hooks.example.org"
    assert target.path == "/in?x=1"
    assert target.url_for("93.184.216.34") == "https://93.184.216.34:443/in?x=1"
    assert target.url_for("2606:2800::1") == "https://[2606:2800::1]:443/in?x=1"
    assert target.host_header == "hooks.example.org"
    assert rules.parse_target("http://h:8080/", allow_http=True).host_header == "h:8080"
    # A name in Unicode is sent as its IDNA A-label; a port the egress policy does not open is refused.
    assert rules.parse_target("https://bücher.example/", allow_http=False).host == "xn--bcher-kva.example"
    assert rules.parse_target("https://faß.de/", allow_http=False).host == "xn--fa-hia.de"  # not fass.de
    with pytest.raises(rules.TargetRefused):
        rules.parse_target("https://h.example:8080/", allow_http=False, ports=frozenset({443, 8443}))


def test_sealed_secrets_open_under_their_key_and_a_rotated_one():
    secret = new_secret()
    old = Sealer("o" * 32)
    sealed = old.seal(secret)
    assert secret not in sealed
    assert Sealer("n" * 32, ["o" * 32]).open(sealed) == secret
    with pytest.raises(SecretUnreadable):
        Sealer("n" * 32).open(sealed)
    assert Webhook(secret).sign("id", datetime.now(UTC), b"{}").startswith("v1,")

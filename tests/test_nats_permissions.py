"""Who may do what on NATS, checked against a real nats-server with the platform's users.

Each service connects as its own user, whose permissions ``citygrid.natsauth`` derives from what the
service declares; anonymous clients are refused, a service cannot speak for another domain, read
another's replies or touch another's stream, and can still do all its own work. The dev stack's
permissions are those of the Kubernetes NATS config.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
import yaml
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from citygrid.devstack.servers import EmbeddedNats, NatsUsers, free_port
from citygrid.devstack.stack import deployed_identities, dev_identities
from citygrid.messaging import connect_service, ensure_stream, inbox_prefix, stream_config
from citygrid.natsauth import ADMIN_USER, NatsAccess, NatsIdentity, permissions
from citygrid.settings import ServiceSettings
from citygrid.testing import Infrastructure, delete_streams, stream_events, wait_until
from gateway.main import create_app as create_gateway_app
from gateway.settings import GatewaySettings
from gateway.subscriptions.intake import NATS_IDENTITY as GATEWAY
from services.case.events import NATS_IDENTITY as CASE
from services.case.main import CaseSettings
from services.case.main import create_app as create_case_app
from services.vision.events import INTAKE_SUBJECT, engine_identity, engine_subject
from services.vision.events import NATS_IDENTITY as VISION
from services.vision.main import VisionSettings
from services.vision.main import create_app as create_vision_app
from services.waste.events import NATS_IDENTITY as WASTE
from services.waste.main import WasteSettings
from services.waste.main import create_app as create_waste_app
from tests.test_vision_case_flow import burst_to_one_alarm, confirm, the_case

ROOT = Path(__file__).resolve().parents[1]
NATS_CONFIG_MAP = ROOT / "deploy" / "kubernetes" / "base" / "nats" / "configmap.yaml"
ENGINE = engine_identity("simulator")
REPORT = {
    "category_code": "20106",
    "description": "Overflowing bin at the Tianhe Road bus stop",
    "location": {"type": "Point", "coordinates": [113.3245, 23.1291]},
    "district_code": "440106",
    "source": "inspector",
}


class Session:
    """A connection as one user, with the server's refusals collected."""

    def __init__(self, client: NatsClient, errors: list[Exception]) -> None:
        self.client = client
        self.errors = errors
        self.jetstream = client.jetstream(timeout=2.0)

    async def settle(self) -> None:
        await self.client.flush(timeout=5)
        await asyncio.sleep(0.1)

    def refusals(self) -> str:
        return " ".join(str(error) for error in self.errors).lower()

    def refused(self, action: str, subject: str) -> bool:
        return f'permissions violation for {action} to "{subject.lower()}"' in self.refusals()


@contextlib.asynccontextmanager
async def session(access: NatsAccess | Infrastructure, user: str) -> AsyncIterator[Session]:
    server_url = access.nats_server_url if isinstance(access, Infrastructure) else access.server_url
    name, password = (
        access.nats_credentials(user) if isinstance(access, Infrastructure) else access.credentials(user)
    )
    errors: list[Exception] = []

    async def collect(error: Exception) -> None:
        errors.append(error)

    client = await nats.connect(
        server_url,
        user=name,
        password=password,
        inbox_prefix=inbox_prefix(name),
        error_cb=collect,
        connect_timeout=5,
        allow_reconnect=False,
    )
    try:
        yield Session(client, errors)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def admin(infrastructure: Infrastructure) -> AsyncIterator[NatsClient]:
    client = await nats.connect(infrastructure.nats_url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def no_streams(infrastructure: Infrastructure) -> Infrastructure:
    await delete_streams(infrastructure.nats_url)
    return infrastructure


async def request_when_heard(client: NatsClient, subject: str, payload: bytes, within: float = 5.0) -> Any:
    """A request, repeated while the server answers "no responders": a subscription flushed on one
    connection may reach the server's interest graph a moment after another connection asks."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await client.request(subject, payload, timeout=within)
        except nats.errors.NoRespondersError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def message_count(infrastructure: Infrastructure, stream: str) -> int:
    async with admin(infrastructure) as client:
        return int((await client.jetstream().stream_info(stream)).state.messages)


async def stream_names(infrastructure: Infrastructure) -> set[str]:
    async with admin(infrastructure) as client:
        return {info.config.name or "" for info in await client.jetstream().streams_info()}


async def declare(infrastructure: Infrastructure, *domains: str) -> None:
    """Streams as their producers declare them (the admin stands in for a producer not under test)."""
    async with admin(infrastructure) as client:
        for domain in domains:
            await ensure_stream(client.jetstream(), stream_config(domain))


# -- no anonymous access -------------------------------------------------------------------------


async def test_an_anonymous_connection_is_refused(infrastructure):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(infrastructure.nats_server_url, connect_timeout=2, allow_reconnect=False)


async def test_a_known_user_with_a_wrong_password_is_refused(infrastructure):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            infrastructure.nats_server_url,
            user=CASE.user,
            password="not-the-password",
            connect_timeout=2,
            allow_reconnect=False,
        )


async def test_generated_passwords_stay_in_an_owner_only_file_and_out_of_every_representation(tmp_path):
    users = NatsUsers.generate(tmp_path / "auth.conf", dev_identities())
    assert (users.config_file.stat().st_mode & 0o777) == 0o600
    passwords = list(users.passwords.values())
    assert len(set(passwords)) == len(passwords)
    assert all(len(password) >= 24 for password in passwords)
    access = EmbeddedNats(tmp_path / "nats", 4222, 8222, users).access
    shown = repr(users) + repr(access) + access.server_url
    assert not any(password in shown for password in passwords)
    assert "no_auth_user" not in users.config_file.read_text()


# -- the case service's user ---------------------------------------------------------------------


async def test_the_case_user_cannot_publish_vision_events(no_streams):
    await declare(no_streams, "vision")
    async with session(no_streams, CASE.user) as case:
        for subject in ("vision.alarm.confirmed", "vision.recheck.completed"):
            await case.client.publish(subject, json.dumps({"passed": True}).encode())
        await case.settle()
        assert case.refused("publish", "vision.alarm.confirmed")
        assert case.refused("publish", "vision.recheck.completed")
    assert await message_count(no_streams, "VISION") == 0


async def test_the_case_user_cannot_subscribe_to_vision_subjects_nor_to_another_users_replies(no_streams):
    async with session(no_streams, CASE.user) as case:
        subjects = ["vision.>", "case.>", f"{VISION.inbox_prefix}.>", "_INBOX.>", ">"]
        subscriptions = [await case.client.subscribe(subject) for subject in subjects]
        await case.settle()
        async with admin(no_streams) as client:
            await client.publish("vision.alarm.confirmed", b"{}")
            await client.publish(f"{VISION.inbox_prefix}.reply", b"{}")
            await client.flush()
        await asyncio.sleep(0.2)
        for subject, subscription in zip(subjects, subscriptions, strict=True):
            assert case.refused("subscription", subject), subject
            assert subscription.pending_msgs == 0, subject


async def test_the_case_user_cannot_delete_or_purge_the_vision_stream_nor_make_consumers_on_it(no_streams):
    await declare(no_streams, "vision")
    async with session(no_streams, CASE.user) as case:
        with pytest.raises(nats.errors.TimeoutError):
            await case.jetstream.delete_stream("VISION")
        with pytest.raises(nats.errors.TimeoutError):
            await case.jetstream.purge_stream("VISION")
        with pytest.raises(nats.errors.TimeoutError):
            await case.jetstream.add_consumer("VISION", ConsumerConfig(durable_name="spy"))
        with pytest.raises(nats.errors.TimeoutError):
            await case.jetstream.subscribe("vision.>", stream="VISION", ordered_consumer=True)
        # Nor its own stream: declaring and updating it is all it needs.
        await ensure_stream(case.jetstream, stream_config("case"))
        with pytest.raises(nats.errors.TimeoutError):
            await case.jetstream.delete_stream("CASE")
        await case.settle()
        assert case.refused("publish", "$JS.API.STREAM.DELETE.VISION")
        assert case.refused("publish", "$JS.API.CONSUMER.DURABLE.CREATE.VISION.spy")
    assert await stream_names(no_streams) == {"VISION", "CASE"}
    async with admin(no_streams) as client:
        assert await client.jetstream().consumers_info("VISION") == []


async def test_the_case_user_can_do_all_the_case_service_does_on_nats(no_streams):
    await declare(no_streams, *{durable.domain for durable in CASE.consumes})
    async with admin(no_streams) as client:
        await client.jetstream().publish("vision.alarm.confirmed", b'{"n": 1}')
        await client.jetstream().publish("vision.recheck.completed", b'{"n": 2}')
    async with session(no_streams, CASE.user) as case:
        js = case.jetstream
        # Its own stream and events, with the PubAck.
        await ensure_stream(js, stream_config("case"))
        await ensure_stream(js, stream_config("case"))  # a second replica updates it
        ack = await js.publish("case.case.reported", b'{"n": 3}', headers={"Nats-Msg-Id": "e-1"})
        assert ack.stream == "CASE"
        assert (await js.stream_info("CASE")).state.messages == 1
        # Its durable consumers of other domains' events: create, bind, fetch, ack, nak, progress.
        for durable in CASE.consumes:
            config = ConsumerConfig(
                durable_name=durable.name, filter_subject=durable.subject, ack_policy=AckPolicy.EXPLICIT
            )
            await js.add_consumer(durable.stream, config)
            assert (
                await js.consumer_info(durable.stream, durable.name)
            ).config.filter_subject == durable.subject
        (alarms,) = [d for d in CASE.consumes if d.subject == "vision.alarm.confirmed"]
        pull = await js.pull_subscribe_bind(durable=alarms.name, stream=alarms.stream)
        (message,) = await pull.fetch(1, timeout=5)
        await message.in_progress()
        await message.nak(delay=0.1)
        (message,) = await pull.fetch(1, timeout=5)
        await message.ack_sync()
        # The live feed: an ordered consumer on its own stream, and reads of what a client missed.
        live = await js.subscribe(
            "case.case.>",
            stream="CASE",
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        delivered = await live.next_msg(timeout=5)
        assert delivered.data == b'{"n": 3}'
        stored = await js.get_msg("CASE", seq=1, subject="case.case.>", next=True)
        assert stored.data == b'{"n": 3}'
        await live.unsubscribe()
        await case.settle()
        assert case.errors == []


async def test_the_case_users_ordered_consumer_answers_the_servers_flow_control(no_streams):
    # A few megabytes make the server ask for flow control; unanswered, the live feed would stall.
    async with session(no_streams, CASE.user) as case:
        await ensure_stream(case.jetstream, stream_config("case"))
        for _ in range(100):
            await case.jetstream.publish_async("case.case.reported", b"x" * 60_000)
        await case.jetstream.publish_async_completed()
        live = await case.jetstream.subscribe("case.case.>", stream="CASE", ordered_consumer=True)
        for _ in range(100):
            await live.next_msg(timeout=10)
        await live.unsubscribe()
        await case.settle()
        assert case.errors == []


# -- the vision service's user -------------------------------------------------------------------


async def test_the_vision_user_cannot_publish_case_events_nor_speak_for_an_engine(no_streams):
    await declare(no_streams, "case")
    async with session(no_streams, VISION.user) as vision:
        await vision.client.publish("case.case.closed", b"{}")
        await vision.client.publish(engine_subject("simulator"), b'{"detections": []}')
        with pytest.raises(nats.errors.TimeoutError):
            await vision.jetstream.delete_stream("CASE")
        with pytest.raises(nats.errors.TimeoutError):
            await vision.jetstream.add_consumer("CASE", ConsumerConfig(durable_name="spy"))
        await vision.client.subscribe("case.>")
        await vision.client.subscribe(f"{CASE.inbox_prefix}.>")
        await vision.settle()
        assert vision.refused("publish", "case.case.closed")
        assert vision.refused("publish", engine_subject("simulator"))
        assert vision.refused("publish", "$JS.API.STREAM.DELETE.CASE")
        assert vision.refused("subscription", "case.>")
        assert vision.refused("subscription", f"{CASE.inbox_prefix}.>")
    assert await message_count(no_streams, "CASE") == 0
    assert await stream_names(no_streams) == {"CASE"}


async def test_the_vision_user_can_do_all_the_vision_service_does_on_nats(no_streams):
    await declare(no_streams, "case")
    async with admin(no_streams) as client:
        await client.jetstream().publish("case.case.handled", b'{"n": 1}')
    async with session(no_streams, VISION.user) as vision, session(no_streams, ENGINE.user) as engine:
        js = vision.jetstream
        await ensure_stream(js, stream_config("vision"))
        assert (await js.publish("vision.alarm.confirmed", b"{}")).stream == "VISION"
        (durable,) = VISION.consumes
        await js.add_consumer(
            durable.stream, ConsumerConfig(durable_name=durable.name, filter_subject=durable.subject)
        )
        pull = await js.pull_subscribe_bind(durable=durable.name, stream=durable.stream)
        (message,) = await pull.fetch(1, timeout=5)
        await message.ack_sync()
        # The detection intake: engines' requests in a queue group, answered to the engine's inbox.
        intake = await vision.client.subscribe(f"{INTAKE_SUBJECT}.*", queue="vision-intake")
        await vision.client.flush()  # the server knows the subscription before the engine asks

        async def answer() -> None:
            request = await intake.next_msg(timeout=5)
            assert request.subject == engine_subject("simulator")
            await request.respond(b'{"received": 0}')

        answering = asyncio.create_task(answer())
        reply = await request_when_heard(engine.client, engine_subject("simulator"), b'{"detections": []}')
        await answering
        assert reply.data == b'{"received": 0}'
        await vision.settle()
        await engine.settle()
        assert vision.errors == []
        assert engine.errors == []


# -- engines and inboxes -------------------------------------------------------------------------


async def test_an_engine_may_only_send_batches_on_its_own_subject(no_streams):
    async with session(no_streams, ENGINE.user) as engine:
        await engine.client.publish("vision.alarm.confirmed", b"{}")
        await engine.client.publish(engine_subject("edge-platform"), b"{}")
        await engine.client.subscribe(f"{INTAKE_SUBJECT}.*")
        await engine.client.subscribe(f"{VISION.inbox_prefix}.>")
        with pytest.raises(nats.errors.TimeoutError):
            await engine.jetstream.stream_info("VISION")
        await engine.settle()
        assert engine.refused("publish", "vision.alarm.confirmed")
        assert engine.refused("publish", engine_subject("edge-platform"))
        assert engine.refused("subscription", f"{INTAKE_SUBJECT}.*")
        assert engine.refused("subscription", f"{VISION.inbox_prefix}.>")


async def test_no_user_may_read_the_replies_meant_for_another(no_streams):
    users = [identity for identity in dev_identities() if not identity.superuser]
    for identity in users:
        async with session(no_streams, identity.user) as own:
            others = [other for other in users if other is not identity]
            for other in others:
                await own.client.subscribe(f"{other.inbox_prefix}.>")
            await own.client.subscribe("_INBOX.>")
            await own.settle()
            for other in others:
                assert own.refused("subscription", f"{other.inbox_prefix}.>"), (identity.user, other.user)
            assert own.refused("subscription", "_INBOX.>"), identity.user


# -- the running services ------------------------------------------------------------------------


async def test_a_case_reported_through_the_gateway_reaches_the_case_stream_published_by_the_case_user(stack):
    settings = stack.case_runtime.settings
    assert settings.nats_user == CASE.user
    assert "@" not in settings.nats_url, "the service connects as its user, not with the admin's URL"
    response = await stack.client.post("/api/case/v1/cases", json=REPORT, headers=stack.as_("clerk"))
    assert response.status_code == 201, response.text
    (event,) = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=1)
    assert event.type == "case.case.reported.v1"


async def test_the_case_service_raises_the_case_of_an_alarm_the_vision_service_confirms(vision_stack):
    assert vision_stack.vision_runtime.settings.nats_user == VISION.user
    assert vision_stack.case_app.state.kit.settings.nats_user == CASE.user
    alarm = await burst_to_one_alarm(vision_stack)
    confirmed = await confirm(vision_stack, alarm)
    case = await the_case(vision_stack)
    assert case["origin"] == {"service": "vision", "reference": confirmed.reference}


def test_each_service_declares_the_nats_identity_of_what_it_does(infrastructure, tmp_path):
    """The declared consumers, stream and live feeds are exactly the running app's: the permissions
    follow the code."""
    common: dict[str, Any] = {"environment": "test", "internal_token_public_key": infrastructure.public_key}
    apps = (
        (CASE, create_case_app(CaseSettings(**common, blob_dir=tmp_path / "case"))),
        (VISION, create_vision_app(VisionSettings(**common, blob_dir=tmp_path / "vision"))),
        (WASTE, create_waste_app(WasteSettings(**common))),
        (GATEWAY, create_gateway_app(GatewaySettings(environment="test", upstreams={"case": "http://case"}))),
    )
    for identity, app in apps:
        runtime = app.state.kit
        declared = {(d.domain, d.name, d.subject) for d in identity.consumes}
        assert declared == {(s.domain, s.name, s.subject) for s in runtime.consumer_specs}, identity.user
        assert len(identity.consumes) == len(runtime.consumer_specs)
        assert identity.publishes == runtime.publishes
        assert set(identity.follows) == {feed.domain for feed in runtime.live_feeds}
        assert all(feed.subject.startswith(f"{feed.domain}.") for feed in runtime.live_feeds)
        assert identity.user == runtime.settings.service_name
    assert VISION.subscribe == (f"{INTAKE_SUBJECT}.*",)


# -- the dev stack's permissions are production's ------------------------------------------------


def parse_users(config: str) -> dict[str, dict[str, Any]]:
    """The users of an authorization block as ``citygrid.natsauth`` writes it."""
    users: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    section = ""
    for line in config.splitlines():
        text = line.strip()
        if match := re.fullmatch(r'user: "([\w-]+)"', text):
            current = users.setdefault(match.group(1), {"publish": [], "subscribe": [], "responses": False})
        elif current is None:
            continue
        elif text in ("publish: {", "subscribe: {"):
            section = text.split(":")[0]
        elif text == "allow_responses: true":
            current["responses"] = True
        elif re.fullmatch(r'"[^"]+"', text) and section:
            current[section].append(text.strip('"'))
        elif text.startswith("password:"):
            current["password"] = text.split(":", 1)[1].strip()
    return users


def kubernetes_auth_conf() -> str:
    (config_map,) = yaml.safe_load_all(NATS_CONFIG_MAP.read_text(encoding="utf-8"))
    text: str = config_map["data"]["auth.conf"]
    return text


def without_password(user: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in user.items() if key != "password"}


def test_the_devstack_permissions_equal_the_kubernetes_nats_config(tmp_path):
    dev = parse_users(NatsUsers.generate(tmp_path / "auth.conf", dev_identities()).config_file.read_text())
    kubernetes = parse_users(kubernetes_auth_conf())
    assert {CASE.user, VISION.user} <= set(kubernetes)
    for user in set(dev) & set(kubernetes):
        assert without_password(dev[user]) == without_password(kubernetes[user]), user
    # Engines differ by name only: the dev stack's simulator has what each deployed engine has.
    engines = [user for user in kubernetes if user.startswith("engine-")]
    assert engines
    for user in engines:
        name = user.removeprefix("engine-")
        renamed = json.loads(json.dumps(without_password(dev[ENGINE.user])).replace("simulator", name))
        assert renamed == without_password(kubernetes[user])
    # What only the dev stack has: the admin, with every right; production passwords come from Secrets.
    assert set(dev) - set(kubernetes) == {ADMIN_USER, ENGINE.user}
    assert dev[ADMIN_USER]["publish"] == []
    assert dev[ADMIN_USER]["subscribe"] == []
    assert all(user["password"].startswith("$") for user in kubernetes.values())


def start_server(directory: Path, port: int, environment: dict[str, str]) -> subprocess.Popen[bytes]:
    """nats-server with only the given environment: the users' passwords the config refers to."""
    command = [EmbeddedNats.binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(free_port())]
    command += ["-js", "-sd", str(directory / "store"), "-c", str(directory / "auth.conf")]
    with (directory / "nats.log").open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)  # noqa: S603


async def test_the_kubernetes_authorization_block_works_on_a_real_server(tmp_path):
    identities = deployed_identities([("vision", "edge-platform")])
    passwords = {identity.user: f"pw-{identity.user}" for identity in identities}
    (tmp_path / "auth.conf").write_text(kubernetes_auth_conf(), encoding="utf-8")
    environment = {identity.password_variable: passwords[identity.user] for identity in identities}
    port = free_port()
    process = await asyncio.to_thread(start_server, tmp_path, port, environment)
    try:
        access = NatsAccess(f"nats://127.0.0.1:{port}", "", passwords)

        async def up() -> bool:
            try:
                await (
                    await nats.connect(access.server_url, connect_timeout=1, allow_reconnect=False)
                ).close()
            except nats.errors.Error as error:
                return "Authorization Violation" in str(error)
            except Exception:
                return False
            return False

        await wait_until(up, timeout=20)  # anonymous: refused by a running server
        async with session(access, CASE.user) as case:
            await ensure_stream(case.jetstream, stream_config("case"))
            assert (await case.jetstream.publish("case.case.reported", b"{}")).stream == "CASE"
            await case.client.publish("vision.alarm.confirmed", b"{}")
            await case.settle()
            assert case.refused("publish", "vision.alarm.confirmed")
        async with session(access, "operator") as operator:
            assert (await operator.jetstream.stream_info("CASE")).state.messages == 1
            with pytest.raises(nats.errors.TimeoutError):
                await operator.jetstream.delete_stream("CASE")
    finally:
        process.terminate()
        process.wait(10)


# -- TLS -----------------------------------------------------------------------------------------


def certificate_for(directory: Path, host: str) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "server.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return directory / "server.crt"


async def test_a_service_connects_over_tls_verifying_the_server_against_its_ca_file(tmp_path):
    ca = certificate_for(tmp_path, "localhost")
    users = NatsUsers.generate(tmp_path / "auth.conf", [CASE])
    with users.config_file.open("a", encoding="utf-8") as config:
        config.write(f'tls {{\n  cert_file: "{ca}"\n  key_file: "{tmp_path / "server.key"}"\n}}\n')
    server = EmbeddedNats(tmp_path / "nats", free_port(), free_port(), users)
    await asyncio.to_thread(server.start)
    try:
        user, password = server.access.credentials(CASE.user)
        settings: dict[str, Any] = {
            "service_name": "case",
            "nats_url": f"tls://localhost:{server.port}",
            "nats_user": user,
            "nats_password": password,
        }
        client = await connect_service(ServiceSettings(**settings, nats_tls_ca_file=str(ca)))
        try:
            assert client.is_connected
            await ensure_stream(client.jetstream(timeout=5), stream_config("case"))
        finally:
            await client.close()
        with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await asyncio.wait_for(_connect_once(ServiceSettings(**settings)), timeout=10)
    finally:
        await asyncio.to_thread(server.stop)


async def _connect_once(settings: ServiceSettings) -> None:
    """Like ``connect_service`` but giving up after the first failure (it retries forever)."""
    client = await nats.connect(
        settings.nats_url,
        user=settings.nats_user,
        password=settings.nats_password,
        connect_timeout=3,
        allow_reconnect=False,
    )
    await client.close()


def test_every_permission_names_a_subject_of_its_own_user_or_stream():
    """No user is granted a wildcard over another domain: each grant is one of its own."""
    for identity in dev_identities():
        if identity.superuser:
            continue
        own = _own_words(identity)
        for subject in [*permissions(identity).publish, *permissions(identity).subscribe]:
            assert any(word in subject for word in own), (identity.user, subject)


def _own_words(identity: NatsIdentity) -> set[str]:
    words = {identity.user, identity.inbox_prefix, "$JS.API.INFO"}
    if identity.publishes:
        words |= {f"{identity.publishes}.", identity.publishes.upper()}
    words |= {durable.name for durable in identity.consumes}
    words |= {domain.upper() for domain in identity.follows}
    words |= set(identity.publish) | set(identity.subscribe)
    if identity.inspects:
        words |= {"$JS.API.STREAM.", "$JS.API.CONSUMER."}
    return words

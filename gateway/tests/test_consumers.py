"""Consumers and their credentials through running gateways on real PostgreSQL: keys that rotate with
overlap, revocation that holds on every replica, OAuth2 client-credentials tokens verified with the
published JWKS, changed grants, signing-key rotation, and the audit of every change."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.db import create_sessionmaker
from citygrid.settings import to_asyncpg_url, to_libpq_url
from citygrid.testing import Infrastructure, serve_app, truncate_all, wait_until
from gateway.consumers.service import register_consumer
from gateway.main import create_app
from gateway.oauth import signing
from gateway.settings import GatewaySettings
from gateway.tests.test_message_log import upstream_app

CASES = "/api/case/v1/cases"
CONTACT = {
    "contact_name": "王建国",
    "contact_phone": "13800138000",
    "contact_email": "wang.jianguo@gz.example",
}


@dataclass
class Gateway:
    app: Any
    client: httpx.AsyncClient


@dataclass
class Setup:
    database: str
    upstream: str
    infrastructure: Infrastructure
    admin_key: str
    pii_admin_key: str

    def settings(self, **overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": self.database,
            **self.infrastructure.nats_settings("gateway"),
            "upstreams": {"case": self.upstream},
            "internal_token_private_key": self.infrastructure.private_key,
            "message_log_flush_seconds": 0.05,
            # Only the changes followed can make a replica forget a key it cached.
            "api_key_cache_seconds": 300.0,
            "credential_poll_seconds": 0.1,
        }
        return GatewaySettings(**(values | overrides))

    @contextlib.asynccontextmanager
    async def gateway(self, **overrides: Any) -> AsyncIterator[Gateway]:
        app = create_app(self.settings(**overrides))
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=20.0) as client:
            yield Gateway(app, client)

    def admin(self, pii: bool = False) -> dict[str, str]:
        return {"X-API-Key": self.pii_admin_key if pii else self.admin_key}

    async def sql(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(to_libpq_url(self.database))
        try:
            return list(await connection.fetch(statement, *args))
        finally:
            await connection.close()


@pytest.fixture
async def setup(infrastructure: Infrastructure, gateway_database: str) -> AsyncIterator[Setup]:
    database = gateway_database
    await truncate_all(database)
    engine = create_async_engine(to_asyncpg_url(database))
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            _, admin_key = await register_consumer(session, name="admin", scopes=["admin"])
            _, pii_admin_key = await register_consumer(
                session, name="pii-admin", scopes=["admin", "pii:read"]
            )
    finally:
        await engine.dispose()
    async with serve_app(upstream_app()) as upstream:
        yield Setup(database, upstream, infrastructure, admin_key, pii_admin_key)


async def new_consumer(gateway: Gateway, setup: Setup, name: str = "police", **fields: Any) -> dict[str, Any]:
    body = {"name": name, "kind": "department", "scopes": ["cases:read", "cases:write"], **CONTACT} | fields
    response = await gateway.client.post("/admin/v1/consumers", json=body, headers=setup.admin())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def status_with_key(gateway: Gateway, key: str) -> int:
    return (await gateway.client.get(CASES, headers={"X-API-Key": key})).status_code


async def status_with_token(gateway: Gateway, token: str) -> int:
    return (await gateway.client.get(CASES, headers={"Authorization": f"Bearer {token}"})).status_code


def basic(client_id: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


async def token_for(gateway: Gateway, consumer: dict[str, Any], **form: str) -> dict[str, Any]:
    response = await gateway.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", **form},
        headers=basic(consumer["id"], consumer["api_key"]),
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    issued: dict[str, Any] = response.json()
    return issued


async def refused_soon(check: Any, status: int = 401) -> None:
    """The other replica refuses within a few of its polls (0.1 s each here)."""

    async def refused() -> bool:
        return bool(await check() == status)

    await wait_until(refused, timeout=5.0)


# --- registering --------------------------------------------------------------------------------------


async def test_a_consumer_is_registered_with_its_kind_and_its_contact_masked_without_pii_read(setup: Setup):
    async with setup.gateway() as gateway:
        created = await new_consumer(gateway, setup)
        assert (created["kind"], created["active"], created["api_key"].startswith("cgk_")) == (
            "department",
            True,
            True,
        )
        assert created["contact_phone"] == "138****8000"
        assert created["contact_name"] != CONTACT["contact_name"]
        assert CONTACT["contact_email"] not in str(created)
        seen = await gateway.client.get(f"/admin/v1/consumers/{created['id']}", headers=setup.admin(pii=True))
        assert {field: seen.json()[field] for field in CONTACT} == CONTACT
        assert await status_with_key(gateway, created["api_key"]) == 200
        # The audit names the personal fields it was given, never their values.
        audit = await gateway.client.get(f"/admin/v1/consumers/{created['id']}/audit", headers=setup.admin())
        (record,) = audit.json()["items"]
        assert (record["action"], record["detail"]["personal"]) == (
            "created",
            ["contact_email", "contact_name", "contact_phone"],
        )
        assert CONTACT["contact_phone"] not in audit.text
        assert CONTACT["contact_name"] not in audit.text


# --- keys and revocation ------------------------------------------------------------------------------


async def test_a_key_rotates_with_overlap_and_a_revoked_key_is_refused_by_every_replica(setup: Setup):
    async with setup.gateway() as first, setup.gateway() as second:
        consumer = await new_consumer(first, setup)
        old = consumer["api_key"]
        added = await first.client.post(
            f"/admin/v1/consumers/{consumer['id']}/keys", json={"label": "2027"}, headers=setup.admin()
        )
        assert added.status_code == 201, added.text
        new = added.json()["api_key"]
        # Both keys work on both replicas: the consumer's systems move over one by one.
        for gateway in (first, second):
            assert (await status_with_key(gateway, old), await status_with_key(gateway, new)) == (200, 200)
        revoked = await first.client.post(
            f"/admin/v1/consumers/{consumer['id']}/keys/{consumer['key_prefix']}/revoke",
            headers=setup.admin(),
        )
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoked_at"] is not None
        assert await status_with_key(first, old) == 401
        # The other replica cached the key for five minutes; it forgets it from the change it reads.
        await refused_soon(lambda: status_with_key(second, old))
        assert (await status_with_key(first, new), await status_with_key(second, new)) == (200, 200)
        listed = await first.client.get(f"/admin/v1/consumers/{consumer['id']}/keys", headers=setup.admin())
        assert [(k["label"], k["revoked_at"] is None) for k in listed.json()] == [
            ("first", False),
            ("2027", True),
        ]
        assert "api_key" not in listed.text
        assert "hash" not in listed.text


async def test_a_key_past_its_expiry_is_refused(setup: Setup):
    async with setup.gateway() as gateway:
        consumer = await new_consumer(gateway, setup)
        soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        added = await gateway.client.post(
            f"/admin/v1/consumers/{consumer['id']}/keys", json={"expires_at": soon}, headers=setup.admin()
        )
        key = added.json()["api_key"]
        assert await status_with_key(gateway, key) == 200
        await refused_soon(lambda: status_with_key(gateway, key))
        assert await status_with_key(gateway, consumer["api_key"]) == 200
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        refused = await gateway.client.post(
            f"/admin/v1/consumers/{consumer['id']}/keys", json={"expires_at": past}, headers=setup.admin()
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "gateway.key_expires_in_the_past")


async def test_revoking_a_consumer_ends_its_keys_and_its_tokens_on_every_replica(setup: Setup):
    async with setup.gateway() as first, setup.gateway() as second:
        consumer = await new_consumer(first, setup)
        token = (await token_for(first, consumer))["access_token"]
        assert (
            await status_with_token(second, token),
            await status_with_key(second, consumer["api_key"]),
        ) == (
            200,
            200,
        )
        response = await first.client.post(
            f"/admin/v1/consumers/{consumer['id']}/revoke", headers=setup.admin()
        )
        assert (response.status_code, response.json()["active"]) == (200, False)
        assert (await status_with_token(first, token), await status_with_key(first, consumer["api_key"])) == (
            401,
            401,
        )
        await refused_soon(lambda: status_with_token(second, token))
        await refused_soon(lambda: status_with_key(second, consumer["api_key"]))
        again = await second.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers=basic(consumer["id"], consumer["api_key"]),
        )
        assert (again.status_code, again.json()["error"]) == (401, "invalid_client")
        # A replica started after the revocation refuses the token too: it reads the recent changes.
        async with setup.gateway() as third:
            assert await status_with_token(third, token) == 401


async def test_a_changed_grant_reaches_every_replica_and_ends_the_tokens_issued_before(setup: Setup):
    async with setup.gateway() as first, setup.gateway() as second:
        consumer = await new_consumer(first, setup)
        token = (await token_for(first, consumer))["access_token"]
        assert await status_with_key(second, consumer["api_key"]) == 200
        await asyncio.sleep(1.0)  # tokens issued in the second of a change are refused with it
        changed = await first.client.patch(
            f"/admin/v1/consumers/{consumer['id']}", json={"scopes": ["cases:write"]}, headers=setup.admin()
        )
        assert (changed.status_code, changed.json()["scopes"]) == (200, ["cases:write"]), changed.text
        await refused_soon(lambda: status_with_token(second, token))
        await refused_soon(lambda: status_with_key(second, consumer["api_key"]), status=403)
        await asyncio.sleep(1.0)
        fresh = await token_for(second, consumer)
        assert fresh["scope"] == "cases:write"
        assert await status_with_token(first, fresh["access_token"]) == 403
        cleared = await first.client.patch(
            f"/admin/v1/consumers/{consumer['id']}",
            json={"contact_phone": None},
            headers=setup.admin(pii=True),
        )
        assert cleared.json()["contact_phone"] is None
        assert cleared.json()["contact_name"] == CONTACT["contact_name"]


# --- OAuth 2.0 client credentials ---------------------------------------------------------------------


async def test_a_token_carries_the_scopes_asked_for_and_verifies_with_the_published_keys(setup: Setup):
    async with setup.gateway() as gateway:
        consumer = await new_consumer(gateway, setup, district="440106")
        posted = await gateway.client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": consumer["id"],
                "client_secret": consumer["api_key"],
                "scope": "cases:read",
            },
        )
        assert posted.status_code == 200, posted.text
        issued = posted.json()
        assert (issued["token_type"], issued["expires_in"], issued["scope"]) == ("Bearer", 300, "cases:read")
        jwks = await gateway.client.get("/oauth/jwks.json")
        assert jwks.status_code == 200
        assert all("d" not in key for key in jwks.json()["keys"])  # no private part
        kid = jwt.get_unverified_header(issued["access_token"])["kid"]
        (published,) = [key for key in jwks.json()["keys"] if key["kid"] == kid]
        claims = jwt.decode(
            issued["access_token"],
            jwt.PyJWK.from_dict(published).key,
            algorithms=["ES256"],
            audience=signing.AUDIENCE,
            issuer="citygrid-gateway",
        )
        assert (claims["sub"], claims["scope"], claims["district"]) == (
            f"consumer:{consumer['id']}",
            "cases:read",
            "440106",
        )
        assert claims["exp"] - claims["iat"] == 300
        token = issued["access_token"]
        assert await status_with_token(gateway, token) == 200
        # The token holds cases:read only, though the consumer holds cases:write too.
        write = await gateway.client.post(CASES, json={}, headers={"Authorization": f"Bearer {token}"})
        assert write.status_code == 403, write.text
        beyond = await gateway.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "cases:read admin"},
            headers=basic(consumer["id"], consumer["api_key"]),
        )
        assert (beyond.status_code, beyond.json()["error"], beyond.json()["code"]) == (
            400,
            "invalid_scope",
            "oauth.invalid_scope",
        )
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert await status_with_token(gateway, forged) == 401


async def test_token_requests_that_are_wrong_are_refused_as_rfc_6749_says(setup: Setup):
    async with setup.gateway() as gateway:
        consumer = await new_consumer(gateway, setup)
        other = await new_consumer(gateway, setup, name="housing")

        async def asked(data: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
            return await gateway.client.post("/oauth/token", data=data, headers=headers or {})

        missing = await asked({"client_id": consumer["id"], "client_secret": consumer["api_key"]})
        assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
        password = await asked({"grant_type": "password"}, basic(consumer["id"], consumer["api_key"]))
        assert (password.status_code, password.json()["error"]) == (400, "unsupported_grant_type")
        wrong = await asked(
            {"grant_type": "client_credentials"}, basic(consumer["id"], consumer["api_key"] + "x")
        )
        assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
        assert wrong.headers["www-authenticate"].startswith("Basic")
        theirs = await asked({"grant_type": "client_credentials"}, basic(consumer["id"], other["api_key"]))
        assert (theirs.status_code, theirs.json()["error"]) == (401, "invalid_client")
        not_an_id = await asked(
            {"grant_type": "client_credentials", "client_id": "police", "client_secret": consumer["api_key"]}
        )
        assert (not_an_id.status_code, not_an_id.json()["error"]) == (401, "invalid_client")
        both = await asked(
            {"grant_type": "client_credentials", "client_id": consumer["id"]},
            basic(consumer["id"], consumer["api_key"]),
        )
        assert (both.status_code, both.json()["error"]) == (400, "invalid_request")
        assert all(
            r.headers["content-type"].startswith("application/problem+json")
            for r in (missing, password, wrong, theirs, not_an_id, both)
        )


async def test_signing_keys_rotate_a_new_one_published_before_it_signs_and_the_old_one_verifying(
    setup: Setup,
):
    async with setup.gateway() as gateway:
        consumer = await new_consumer(gateway, setup)
        before = (await token_for(gateway, consumer))["access_token"]
        old_kid = jwt.get_unverified_header(before)["kid"]
        state = gateway.app.state.gateway
        policy = signing.TokenPolicy(
            issuer="citygrid-gateway",
            lifetime=timedelta(minutes=5),
            rotation=timedelta(0),
            publish_ahead=timedelta(seconds=1),
            passphrase=b"",
        )
        engine = create_async_engine(to_asyncpg_url(setup.database))
        try:
            sessions = create_sessionmaker(engine)
            async with sessions() as session, session.begin():
                assert await signing.rotate(session, policy) == 1
            await state.tokens.refresh()
            kids = [key["kid"] for key in (await gateway.client.get("/oauth/jwks.json")).json()["keys"]]
            assert len(kids) == 2
            assert old_kid in kids
            # Published, not signing yet.
            assert (
                jwt.get_unverified_header((await token_for(gateway, consumer))["access_token"])["kid"]
                == old_kid
            )
            await asyncio.sleep(1.2)
            async with sessions() as session, session.begin():
                await signing.rotate(session, policy)
            await state.tokens.refresh()
        finally:
            await engine.dispose()
        after = (await token_for(gateway, consumer))["access_token"]
        new_kid = jwt.get_unverified_header(after)["kid"]
        assert new_kid != old_kid
        assert new_kid in kids
        # The retired key signs nothing more but verifies its tokens until they expire.
        assert (await status_with_token(gateway, before), await status_with_token(gateway, after)) == (
            200,
            200,
        )
        rows = await setup.sql("SELECT kid, retired_at FROM signing_keys ORDER BY signs_from")
        assert [(row["kid"], row["retired_at"] is not None) for row in rows][:2] == [
            (old_kid, True),
            (new_kid, False),
        ]


# --- the audit and the admin API's refusals -----------------------------------------------------------


async def test_every_change_to_a_consumer_is_audited_and_the_audit_cannot_be_rewritten(setup: Setup):
    async with setup.gateway() as gateway:
        consumer = await new_consumer(gateway, setup)
        path = f"/admin/v1/consumers/{consumer['id']}"
        key = (await gateway.client.post(f"{path}/keys", json={}, headers=setup.admin())).json()
        await gateway.client.post(f"{path}/keys/{key['prefix']}/revoke", headers=setup.admin())
        await gateway.client.patch(path, json={"rate_limit_per_minute": 100}, headers=setup.admin())
        await gateway.client.post(f"{path}/revoke", headers=setup.admin())
        first = await gateway.client.get(f"{path}/audit?limit=3", headers=setup.admin())
        rest = await gateway.client.get(
            f"{path}/audit?limit=3&cursor={first.json()['next_cursor']}", headers=setup.admin()
        )
        records = first.json()["items"] + rest.json()["items"]
        assert [r["action"] for r in records] == ["created", "key_added", "key_revoked", "changed", "revoked"]
        assert {r["actor"] for r in records} == {records[0]["actor"]}
        assert records[0]["actor"].startswith("consumer:")
        assert records[3]["detail"] == {"rate_limit_per_minute": 100}
        connection = await asyncpg.connect(to_libpq_url(setup.database))
        try:
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await connection.execute("UPDATE consumer_audit SET action = 'nothing'")
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await connection.execute("DELETE FROM consumer_audit")
        finally:
            await connection.close()


async def test_the_admin_api_refuses_non_admins_unknown_consumers_and_bad_changes(setup: Setup):
    async with setup.gateway() as gateway:
        consumer = await new_consumer(gateway, setup)
        path = f"/admin/v1/consumers/{consumer['id']}"
        not_admin = await gateway.client.get(path, headers={"X-API-Key": consumer["api_key"]})
        assert not_admin.status_code == 403
        unknown = await gateway.client.get(
            "/admin/v1/consumers/00000000-0000-7000-8000-000000000000", headers=setup.admin()
        )
        assert (unknown.status_code, unknown.json()["code"]) == (404, "gateway.consumer_not_found")
        for body in (
            {"scopes": None},
            {"district": "4401"},
            {"contact_email": "not an address"},
            {"kind": "x"},
        ):
            refused = await gateway.client.patch(path, json=body, headers=setup.admin())
            assert refused.status_code == 422, (body, refused.text)
        same = await gateway.client.post(
            "/admin/v1/consumers", json={"name": "police", "scopes": []}, headers=setup.admin()
        )
        assert (same.status_code, same.json()["code"]) == (409, "gateway.consumer_exists")
        for _ in range(4):
            assert (
                await gateway.client.post(f"{path}/keys", json={}, headers=setup.admin())
            ).status_code == 201
        sixth = await gateway.client.post(f"{path}/keys", json={}, headers=setup.admin())
        assert (sixth.status_code, sixth.json()["code"]) == (409, "gateway.too_many_keys")
        bad_prefix = await gateway.client.post(f"{path}/keys/XYZ/revoke", headers=setup.admin())
        assert bad_prefix.status_code == 422
        no_key = await gateway.client.post(f"{path}/keys/0123456789ab/revoke", headers=setup.admin())
        assert (no_key.status_code, no_key.json()["code"]) == (404, "gateway.key_not_found")


async def test_a_revocation_that_commits_after_a_later_one_is_not_skipped(setup: Setup):
    async with setup.gateway() as first, setup.gateway() as second:
        slow = await new_consumer(first, setup, name="slow")
        fast = await new_consumer(first, setup, name="fast")
        for consumer in (slow, fast):
            assert await status_with_key(second, consumer["api_key"]) == 200  # cached there for 5 minutes
        held = await asyncpg.connect(to_libpq_url(setup.database))
        try:
            # The first revocation draws its change's id, then waits before it commits; a second one
            # draws the next id and commits at once.
            transaction = held.transaction()
            await transaction.start()
            await held.execute(
                "UPDATE consumer_keys SET revoked_at = now() WHERE prefix = $1; ", slow["key_prefix"]
            )
            await held.execute(
                "INSERT INTO credential_changes (consumer_id, key_prefix) VALUES ($1, $2)",
                uuid.UUID(slow["id"]),
                slow["key_prefix"],
            )
            revoked = await first.client.post(
                f"/admin/v1/consumers/{fast['id']}/keys/{fast['key_prefix']}/revoke", headers=setup.admin()
            )
            assert revoked.status_code == 200, revoked.text
            await asyncio.sleep(0.5)  # the other replica polls meanwhile
            await transaction.commit()
        finally:
            await held.close()
        await refused_soon(lambda: status_with_key(second, fast["api_key"]))
        await refused_soon(lambda: status_with_key(second, slow["api_key"]))


async def test_revoking_a_key_ends_the_tokens_traded_for_it_and_not_the_other_keys(setup: Setup):
    async with setup.gateway() as first, setup.gateway() as second:
        consumer = await new_consumer(first, setup)
        other = (
            await first.client.post(
                f"/admin/v1/consumers/{consumer['id']}/keys", json={}, headers=setup.admin()
            )
        ).json()["api_key"]
        old_token = (await token_for(first, consumer))["access_token"]
        new_token = (await token_for(first, consumer | {"api_key": other}))["access_token"]
        assert jwt.get_unverified_header(old_token)["typ"] == "at+jwt"
        revoked = await first.client.post(
            f"/admin/v1/consumers/{consumer['id']}/keys/{consumer['key_prefix']}/revoke",
            headers=setup.admin(),
        )
        assert revoked.status_code == 200
        assert await status_with_token(first, old_token) == 401
        await refused_soon(lambda: status_with_token(second, old_token))
        assert (await status_with_token(first, new_token), await status_with_token(second, new_token)) == (
            200,
            200,
        )


async def test_a_replica_that_has_not_read_a_revocation_yet_mints_no_token_from_it(setup: Setup):
    # The second replica reads the changes only every minute: its cache still holds the key.
    async with setup.gateway() as first, setup.gateway(credential_poll_seconds=30.0) as second:
        consumer = await new_consumer(first, setup)
        assert await status_with_key(second, consumer["api_key"]) == 200
        await first.client.post(f"/admin/v1/consumers/{consumer['id']}/revoke", headers=setup.admin())
        minted = await second.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers=basic(consumer["id"], consumer["api_key"]),
        )
        assert (minted.status_code, minted.json()["error"]) == (401, "invalid_client")


async def test_a_token_that_is_not_an_access_token_of_the_gateway_is_refused(setup: Setup):
    async with setup.gateway() as gateway:
        consumer = await new_consumer(gateway, setup)
        token = (await token_for(gateway, consumer))["access_token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        kid = jwt.get_unverified_header(token)["kid"]
        # Signed by none of the gateway's keys, naming one of them, or untyped: all refused.
        foreign = jwt.encode(
            claims,
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": kid, "typ": "at+jwt"},
        )
        untyped = jwt.encode(
            claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid}
        )
        unknown_kid = jwt.encode(
            claims,
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": "0" * 16, "typ": "at+jwt"},
        )
        for bad in (foreign, untyped, unknown_kid):
            response = await gateway.client.get(CASES, headers={"Authorization": f"Bearer {bad}"})
            assert (response.status_code, response.json()["code"]) == (401, "auth.invalid_credentials")


async def test_two_registrations_of_one_name_at_once_make_one_consumer_and_a_409(setup: Setup):
    async with setup.gateway() as first, setup.gateway() as second:
        body = {"name": "transport", "kind": "department", "scopes": ["cases:read"]}
        answers = await asyncio.gather(
            *(
                gateway.client.post("/admin/v1/consumers", json=body, headers=setup.admin())
                for gateway in (first, second, first, second)
            )
        )
        assert sorted(answer.status_code for answer in answers) == [201, 409, 409, 409]
        assert {answer.json()["code"] for answer in answers if answer.status_code == 409} == {
            "gateway.consumer_exists"
        }
        rows = await setup.sql("SELECT count(*) AS n FROM api_consumers WHERE name = 'transport'")
        assert rows[0]["n"] == 1

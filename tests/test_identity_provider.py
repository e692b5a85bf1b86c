"""People's tokens from a real identity provider: its JWKS, key rotation, outages, and the settings.

The identity provider is an outside system, so a small one runs here: a Starlette app on loopback
serving a JWK Set the test changes (keys added, removed, the provider taken down) and counting its
fetches. Its tokens are signed as Keycloak or Authing sign them (RS256, ES256 or EdDSA, a ``kid``
per key). The cache's own time is a clock the test moves, so nothing passes or fails on a timing;
the end-to-end tests go through a real gateway in front of the real case service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from citygrid.testing import serve_app, wait_until
from gateway.main import create_app as create_gateway_app
from gateway.people import IdentityProviderUnavailable, InvalidPersonToken, JwksKeys, PeopleTokens, parse_jwks
from gateway.settings import GatewaySettings
from tests.conftest import gateway_settings
from tests.test_bad_input import assert_problem
from tests.test_case_flow import REPORT
from tests.test_security import b64url, handmade_jwt

ISSUER = "https://sso.city.example/realms/citygrid"
AUDIENCE = "citygrid"
CERTS = "/realms/citygrid/protocol/openid-connect/certs"
ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
# Keycloak puts group paths in "groups" (the Group Membership mapper, full path on).
GROUP_MAP = {
    "/citygrid/operators": {"roles": ["operator"], "scopes": ["cases:read", "cases:write"]},
    "/citygrid/readers": {"scopes": ["cases:read"]},
    "/districts/tianhe": {"district": "440106"},
}


def new_key(algorithm: str) -> Any:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def public_jwk(private: Any, kid: str, algorithm: str) -> dict[str, Any]:
    exporter = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[algorithm]
    jwk = exporter.to_jwk(private.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": algorithm}


@dataclass
class IdentityProvider:
    """The stand-in provider: its signing keys, the JWK Set it publishes, and how often it was asked."""

    keys: dict[str, tuple[Any, str]] = field(default_factory=dict)
    extra_members: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    down: bool = False
    url: str = ""

    def add(self, kid: str, algorithm: str = "RS256") -> None:
        self.keys[kid] = (new_key(algorithm), algorithm)

    def remove(self, kid: str) -> None:
        del self.keys[kid]

    def document(self) -> dict[str, Any]:
        members = [public_jwk(private, kid, algorithm) for kid, (private, algorithm) in self.keys.items()]
        return {"keys": members + self.extra_members}

    def token(self, kid: str | None, **changes: Any) -> str:
        """A person's token signed with the key ``kid`` (any kid a token may name: the first key's
        private half signs when the kid is unknown to the provider)."""
        private, algorithm = self.keys[kid] if kid in self.keys else next(iter(self.keys.values()))
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "f3a1-wang-fang",
            "name": "Wang Fang",
            "iat": now,
            "exp": now + 300,
            "groups": ["/citygrid/operators"],
            **changes,
        }
        claims = {name: value for name, value in claims.items() if value is not None}
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(claims, private, algorithm=algorithm, headers=headers)

    def app(self) -> Starlette:
        async def certs(request: Request) -> Response:
            self.fetches += 1
            if self.down:
                return Response("maintenance", status_code=503)
            return JSONResponse(self.document())

        return Starlette(routes=[Route(CERTS, certs)])


@contextlib.asynccontextmanager
async def running(provider: IdentityProvider) -> AsyncIterator[IdentityProvider]:
    async with serve_app(provider.app()) as base:  # type: ignore[arg-type]
        provider.url = f"{base}{CERTS}"
        yield provider


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def provider_settings(url: str, **changes: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "environment": "test",
        "people_jwks_url": url,
        "people_jwt_issuer": ISSUER,
        "people_jwt_audience": AUDIENCE,
        "people_group_map": GROUP_MAP,
    }
    return GatewaySettings(**(values | changes))


@contextlib.asynccontextmanager
async def verifier(
    provider: IdentityProvider, clock: Clock, *, cache: float = 300.0, refresh: float = 10.0
) -> AsyncIterator[PeopleTokens]:
    keys = JwksKeys(
        provider.url,
        algorithms=ALGORITHMS,
        cache_seconds=cache,
        refresh_seconds=refresh,
        timeout=2.0,
        clock=clock,
    )
    people = PeopleTokens(provider_settings(provider.url), keys)
    try:
        yield people
    finally:
        await people.aclose()


@pytest.fixture
async def provider() -> AsyncIterator[IdentityProvider]:
    idp = IdentityProvider()
    idp.add("2026-11")
    async with running(idp):
        yield idp


# -- the keys: rotation, cache, refresh on an unknown kid -------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
async def test_a_token_signed_by_a_published_key_gives_the_mapped_person(provider, algorithm):
    provider.add("signing", algorithm)
    async with verifier(provider, Clock()) as people:
        principal = await people.principal(
            provider.token("signing", groups=["/citygrid/operators", "/districts/tianhe"])
        )
    assert principal.subject == "person:f3a1-wang-fang"
    assert (principal.kind, principal.name, principal.district) == ("person", "Wang Fang", "440106")
    assert principal.roles == {"operator"}
    assert principal.scopes == {"cases:read", "cases:write"}


async def test_the_keys_are_fetched_once_and_served_from_the_cache(provider):
    clock = Clock()
    async with verifier(provider, clock) as people:
        await asyncio.gather(*(people.principal(provider.token("2026-11")) for _ in range(20)))
        clock.now += 299
        await people.principal(provider.token("2026-11"))
    assert provider.fetches == 1


async def test_a_new_kid_at_the_jwks_url_is_picked_up_at_once(provider):
    clock = Clock()
    async with verifier(provider, clock) as people:
        await people.principal(provider.token("2026-11"))
        clock.now += 30  # past the refresh pause, well inside the cache's time
        provider.add("2026-12", "ES256")  # the provider rotates: a new key, tokens signed with it
        principal = await people.principal(provider.token("2026-12"))
        assert principal.scopes == {"cases:read", "cases:write"}
        await people.principal(provider.token("2026-11"))  # the old key still published: still good
    assert provider.fetches == 2


async def test_an_old_key_removed_is_refused_after_the_cache_time(provider):
    clock = Clock()
    provider.add("2026-12")
    async with verifier(provider, clock, cache=300) as people:
        old = provider.token("2026-11")
        await people.principal(old)
        provider.remove("2026-11")
        clock.now += 299
        await people.principal(old)  # the cache is still in its time: the provider is not asked
        assert provider.fetches == 1
        clock.now += 2
        with pytest.raises(InvalidPersonToken):
            await people.principal(old)
        await people.principal(provider.token("2026-12"))
    assert provider.fetches == 2


async def test_unknown_kids_trigger_one_fetch_per_refresh_pause_however_many_arrive(provider):
    clock = Clock()
    async with verifier(provider, clock, refresh=10) as people:
        await people.principal(provider.token("2026-11"))
        clock.now += 11
        for n in range(50):
            with pytest.raises(InvalidPersonToken):
                await people.principal(provider.token(f"forged-{n}"))
        assert provider.fetches == 2
        clock.now += 11
        attempts = [people.principal(provider.token(f"forged-again-{n}")) for n in range(50)]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        assert all(isinstance(result, InvalidPersonToken) for result in results)
    assert provider.fetches == 3


async def test_a_token_without_kid_is_accepted_only_from_a_provider_with_one_key(provider):
    clock = Clock()
    async with verifier(provider, clock) as people:
        assert (await people.principal(provider.token(None))).subject == "person:f3a1-wang-fang"
    provider.add("2026-12")
    async with verifier(provider, Clock()) as people:
        with pytest.raises(InvalidPersonToken):
            await people.principal(provider.token(None))


# -- an outage of the provider -------------------------------------------------------------------


async def test_during_an_outage_cached_keys_keep_working_until_their_time_then_503(provider):
    clock = Clock()
    async with verifier(provider, clock, cache=300, refresh=10) as people:
        token = provider.token("2026-11")
        await people.principal(token)
        provider.down = True
        clock.now += 299
        await people.principal(token)
        clock.now += 2
        with pytest.raises(IdentityProviderUnavailable) as raised:
            await people.principal(token)
        assert raised.value.status == 503
        assert raised.value.headers["Retry-After"] == "10"
        fetches = provider.fetches
        for _ in range(20):  # no fetch per request while it is down: one per refresh pause
            with pytest.raises(IdentityProviderUnavailable):
                await people.principal(token)
        assert provider.fetches == fetches
        provider.down = False
        clock.now += 11
        assert (await people.principal(token)).name == "Wang Fang"


async def test_a_provider_that_is_down_from_the_start_gives_503_not_401(provider):
    provider.down = True
    async with verifier(provider, Clock()) as people:
        with pytest.raises(IdentityProviderUnavailable):
            await people.principal(provider.token("2026-11"))


# -- the tokens: algorithm, claims -------------------------------------------------------------------


def claims_of(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "iat": now, "exp": now + 300, "groups": []}
    return {name: value for name, value in (claims | changes).items() if value is not None}


async def test_alg_none_and_hmac_keyed_with_the_providers_public_key_are_refused(provider):
    rsa_public = provider.keys["2026-11"][0].public_key()
    pem = rsa_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_n = json.dumps(public_jwk(provider.keys["2026-11"][0], "2026-11", "RS256")).encode()
    forged = [
        handmade_jwt({"alg": "none", "kid": "2026-11"}, claims_of(), None),
        handmade_jwt({"alg": "HS256", "kid": "2026-11"}, claims_of(), pem),
        handmade_jwt({"alg": "HS256", "kid": "2026-11"}, claims_of(), jwk_n),
        handmade_jwt({"alg": "HS256"}, claims_of(), pem),
        # The provider's own key, with an algorithm the gateway does not take.
        jwt.encode(claims_of(), provider.keys["2026-11"][0], algorithm="RS512", headers={"kid": "2026-11"}),
        jwt.encode(claims_of(), provider.keys["2026-11"][0], algorithm="PS256", headers={"kid": "2026-11"}),
    ]
    async with verifier(provider, Clock()) as people:
        for token in forged:
            with pytest.raises(InvalidPersonToken):
                await people.principal(token)


async def test_a_token_claiming_another_algorithm_than_its_keys_is_refused(provider):
    provider.add("ec", "ES256")
    rsa_private = provider.keys["2026-11"][0]
    # Signed with the RSA key but naming the EC key's kid, and the other way round.
    wrong_kid = jwt.encode(claims_of(), rsa_private, algorithm="RS256", headers={"kid": "ec"})
    header = b64url(json.dumps({"alg": "ES256", "kid": "2026-11"}).encode())
    swapped = f"{header}.{provider.token('ec').split('.', 1)[1]}"
    async with verifier(provider, Clock()) as people:
        for token in (wrong_kid, swapped):
            with pytest.raises(InvalidPersonToken):
                await people.principal(token)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"iss": "https://sso.elsewhere.example/realms/citygrid"}, id="wrong-issuer"),
        pytest.param({"aud": "another-city"}, id="wrong-audience"),
        pytest.param({"exp": None}, id="no-expiry"),
        pytest.param({"iat": None}, id="no-issued-at"),
        pytest.param({"iss": None}, id="no-issuer"),
        pytest.param({"aud": None}, id="no-audience"),
        pytest.param({"exp": int(time.time()) - 60}, id="expired"),
        pytest.param({"nbf": int(time.time()) + 600}, id="not-yet-valid"),
        pytest.param({"district": ["440106"]}, id="district-a-list"),
        pytest.param({"district": 440106}, id="district-a-number"),
        pytest.param({"groups": "/citygrid/operators"}, id="groups-a-string"),
        pytest.param({"name": {"given": "Fang"}}, id="name-an-object"),
        pytest.param({"unit": ["a"]}, id="unit-a-list"),
    ],
)
async def test_a_token_with_a_wrong_or_missing_claim_is_refused(provider, changes):
    async with verifier(provider, Clock()) as people:
        with pytest.raises(InvalidPersonToken):
            await people.principal(provider.token("2026-11", **changes))


async def test_the_audience_may_be_one_of_a_list_as_keycloak_writes_it(provider):
    async with verifier(provider, Clock()) as people:
        principal = await people.principal(provider.token("2026-11", aud=["account", AUDIENCE]))
    assert principal.scopes == {"cases:read", "cases:write"}


async def test_an_unmapped_group_gives_no_scope_and_claimed_scopes_and_roles_count_for_nothing(provider):
    async with verifier(provider, Clock()) as people:
        principal = await people.principal(
            provider.token(
                "2026-11",
                groups=["/citygrid/unknown", "operators", "/CITYGRID/OPERATORS"],
                scope="cases:read cases:write admin",
                scopes=["admin"],
                roles=["supervisor"],
                realm_access={"roles": ["admin"]},
            )
        )
    assert (principal.scopes, principal.roles, principal.district) == (frozenset(), frozenset(), None)


async def test_groups_may_come_from_a_nested_claim_such_as_keycloaks_realm_roles(provider):
    settings = provider_settings(provider.url, people_groups_claim="realm_access.roles")
    keys = JwksKeys(provider.url, algorithms=ALGORITHMS, cache_seconds=300, refresh_seconds=10, timeout=2.0)
    people = PeopleTokens(settings, keys)
    try:
        principal = await people.principal(
            provider.token(
                "2026-11", groups=None, realm_access={"roles": ["/citygrid/readers", "offline_access"]}
            )
        )
        assert principal.scopes == {"cases:read"}
        with pytest.raises(InvalidPersonToken):
            await people.principal(provider.token("2026-11", groups=None, realm_access={"roles": "x"}))
    finally:
        await people.aclose()


def test_a_jwk_set_keeps_only_usable_signing_keys():
    good = new_key("ES256")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the point)
    document = {
        "keys": [
            {"kty": "oct", "kid": "shared", "k": b64url(b"a-shared-secret-of-32-bytes-long!")},
            {**public_jwk(new_key("RS256"), "encryption", "RS256"), "use": "enc"},
            {**RSAAlgorithm.to_jwk(weak.public_key(), as_dict=True), "kid": "weak"},
            {"kty": "XYZ", "kid": "unknown"},
            "not-a-key",
            {**public_jwk(new_key("RS256"), "rs384", "RS256"), "alg": "RS384"},
            public_jwk(good, "good", "ES256"),
        ]
    }
    assert set(parse_jwks(document, ALGORITHMS)) == {"good"}
    with pytest.raises(ValueError, match="no usable signing key"):
        parse_jwks({"keys": [document["keys"][0]]}, ALGORITHMS)
    with pytest.raises(ValueError, match="not a JWK Set"):
        parse_jwks({"kid": "not a set"}, ALGORITHMS)


# -- the settings ------------------------------------------------------------------------------------


def rsa_pem(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


SECRET = "s" * 40
KEYS = {
    "internal_token_private_key": "x",
    "internal_token_public_key": "x",
    "message_log_key": "x" * 32,
    "token_key_passphrase": "y" * 32,
    "webhook_secret_key": "w" * 32,
}


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(
            {"environment": "production", "people_jwt_key": SECRET, "people_jwt_algorithms": ["HS256"]},
            id="hs256-in-production",
        ),
        pytest.param(
            {"environment": "test", "people_jwt_key": SECRET, "people_jwt_algorithms": ["HS256", "RS256"]},
            id="hs256-beside-rs256",
        ),
        pytest.param(
            {"environment": "test", "people_jwt_key": rsa_pem(), "people_jwt_algorithms": ["HS256"]},
            id="hs256-keyed-with-a-pem",
        ),
        pytest.param(
            {"environment": "test", "people_jwt_key": "short", "people_jwt_algorithms": ["HS256"]},
            id="hs256-short-secret",
        ),
        pytest.param(
            {
                "environment": "test",
                "people_jwks_url": "https://sso.example/certs",
                "people_jwt_algorithms": ["HS256"],
            },
            id="hs256-with-a-jwks",
        ),
        pytest.param({"people_jwt_algorithms": ["none"]}, id="alg-none"),
        pytest.param({"people_jwt_algorithms": ["RS384"]}, id="an-algorithm-not-offered"),
        pytest.param({"people_jwt_algorithms": []}, id="no-algorithm"),
        pytest.param(
            {"people_jwks_url": "https://sso.example/certs", "people_jwt_key": rsa_pem()},
            id="both-a-jwks-and-a-key",
        ),
        pytest.param(
            {"people_jwks_url": "https://sso.example/certs", "people_jwt_issuer": ""}, id="no-issuer"
        ),
        pytest.param(
            {"people_jwks_url": "https://sso.example/certs", "people_jwt_audience": ""}, id="no-audience"
        ),
        pytest.param(
            {"environment": "production", "people_jwks_url": "http://sso.example/certs"},
            id="plain-http-jwks-in-production",
        ),
        pytest.param({"people_jwks_url": "ftp://sso.example/certs"}, id="not-an-http-url"),
        pytest.param({"people_jwt_key": rsa_pem(1024)}, id="a-weak-rsa-key"),
        pytest.param({"people_jwt_key": "not a key"}, id="not-a-pem"),
        pytest.param(
            {"people_jwt_key": rsa_pem(), "people_jwt_algorithms": ["EdDSA"]}, id="a-key-of-another-algorithm"
        ),
        pytest.param(
            {
                "people_jwks_url": "https://sso.example/certs",
                "people_group_map": {"g": {"scopes": ["Cases:Read"]}},
            },
            id="a-malformed-scope",
        ),
        pytest.param(
            {
                "people_jwks_url": "https://sso.example/certs",
                "people_group_map": {"g": {"district": "Tianhe"}},
            },
            id="a-malformed-district",
        ),
        pytest.param(
            {
                "people_jwks_url": "https://sso.example/certs",
                "people_group_map": {"g": {"scope": ["cases:read"]}},
            },
            id="an-unknown-grant-field",
        ),
    ],
)
def test_the_settings_refuse_what_would_weaken_peoples_tokens(values):
    base = {"people_jwt_issuer": ISSUER, **KEYS}
    with pytest.raises(ValidationError):
        GatewaySettings(**(base | values))


def test_the_settings_take_a_provider_in_production_and_a_shared_secret_in_tests_only():
    production = GatewaySettings(
        environment="production",
        people_jwks_url="https://sso.city.example/realms/citygrid/protocol/openid-connect/certs",
        people_jwt_issuer=ISSUER,
        people_group_map=GROUP_MAP,
        **KEYS,
    )
    assert production.people_jwt_algorithms == ["RS256", "ES256", "EdDSA"]
    assert production.people_group_map["/districts/tianhe"].district == "440106"
    GatewaySettings(
        environment="test", people_jwt_key=SECRET, people_jwt_algorithms=["HS256"], people_jwt_issuer=ISSUER
    )
    GatewaySettings(
        environment="production",
        people_jwt_key=rsa_pem(),
        people_jwt_algorithms=["RS256"],
        people_jwt_issuer=ISSUER,
        **KEYS,
    )
    GatewaySettings(environment="production", **KEYS)  # no people's tokens at all: API keys only


async def test_an_hs256_secret_still_works_in_a_test_environment():
    settings = GatewaySettings(
        environment="test",
        people_jwt_key=SECRET,
        people_jwt_algorithms=["HS256"],
        people_jwt_issuer=ISSUER,
        people_group_map=GROUP_MAP,
    )
    people = PeopleTokens.from_settings(settings)
    assert people is not None
    token = jwt.encode(claims_of(groups=["/citygrid/readers"]), SECRET, algorithm="HS256")
    assert (await people.principal(token)).scopes == {"cases:read"}
    with pytest.raises(InvalidPersonToken):
        await people.principal(
            jwt.encode(claims_of(), "another-secret-of-forty-characters-xxxx", algorithm="HS256")
        )


# -- end to end: a gateway on the provider's JWKS, the case service behind it ---------------------------


@contextlib.asynccontextmanager
async def gateway_on(stack, provider: IdentityProvider, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    databases = {"gateway": stack.infrastructure.database("gateway")}
    settings = gateway_settings(
        stack.infrastructure,
        databases,
        stack.case_url,
        people_jwt_key="",
        people_jwks_url=provider.url,
        people_jwt_algorithms=["RS256", "ES256", "EdDSA"],
        people_jwt_issuer=ISSUER,
        people_group_map=GROUP_MAP,
        **changes,
    )
    async with serve_app(create_gateway_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_person_from_the_provider_reports_a_case_and_is_its_actor(stack, provider):
    async with gateway_on(stack, provider) as gateway:
        token = provider.token("2026-11", groups=["/citygrid/operators", "/districts/tianhe"])
        created = await gateway.post("/api/case/v1/cases", json=REPORT, headers=bearer(token))
        assert created.status_code == 201, created.text
        detail = (
            await gateway.get(f"/api/case/v1/cases/{created.json()['id']}", headers=bearer(token))
        ).json()
        reader = provider.token("2026-11", groups=["/citygrid/readers"])
        refused = await gateway.post("/api/case/v1/cases", json=REPORT, headers=bearer(reader))
    assert [(h["actor"], h["actor_name"]) for h in detail["history"]] == [
        ("person:f3a1-wang-fang", "Wang Fang")
    ]
    problem = assert_problem(refused, 403, "auth.missing_scope")
    assert problem["required_scope"] == "cases:write"


async def test_rotation_through_the_gateway_new_kid_at_once_removed_key_refused_after_the_cache(
    stack, provider
):
    async with gateway_on(
        stack, provider, people_jwks_cache_seconds=1.0, people_jwks_refresh_seconds=0
    ) as gateway:
        old = provider.token("2026-11")
        assert (await gateway.get("/api/case/v1/cases", headers=bearer(old))).status_code == 200
        provider.add("2026-12", "EdDSA")
        new = provider.token("2026-12")
        assert (await gateway.get("/api/case/v1/cases", headers=bearer(new))).status_code == 200
        provider.remove("2026-11")

        async def old_refused() -> bool:
            return (await gateway.get("/api/case/v1/cases", headers=bearer(old))).status_code == 401

        await wait_until(old_refused, timeout=15)
        refused = await gateway.get("/api/case/v1/cases", headers=bearer(old))
        assert_problem(refused, 401, "auth.invalid_credentials")
        assert (await gateway.get("/api/case/v1/cases", headers=bearer(new))).status_code == 200


async def test_when_the_provider_is_down_past_the_cache_people_get_503_and_api_keys_still_work(
    stack, provider
):
    async with gateway_on(
        stack, provider, people_jwks_cache_seconds=0.5, people_jwks_refresh_seconds=0
    ) as gateway:
        token = provider.token("2026-11")
        assert (await gateway.get("/api/case/v1/cases", headers=bearer(token))).status_code == 200
        provider.down = True

        async def unavailable() -> bool:
            return (await gateway.get("/api/case/v1/cases", headers=bearer(token))).status_code == 503

        await wait_until(unavailable, timeout=15)
        problem = assert_problem(
            await gateway.get("/api/case/v1/cases", headers=bearer(token)),
            503,
            "gateway.identity_provider_unavailable",
        )
        assert problem["detail"]
        keyed = await gateway.get("/api/case/v1/cases", headers={"X-API-Key": stack.api_keys["reader"]})
        assert keyed.status_code == 200, keyed.text
        provider.down = False

        async def back() -> bool:
            return (await gateway.get("/api/case/v1/cases", headers=bearer(token))).status_code == 200

        await wait_until(back, timeout=15)


async def test_malformed_tokens_through_the_gateway_are_401_problems(stack, provider):
    async with gateway_on(stack, provider) as gateway:
        for token in [
            provider.token("2026-11", district=["440106"]),
            provider.token("2026-11", groups="/citygrid/operators"),
            provider.token("2026-11", iat=None),
            provider.token("2026-11", iss="https://sso.elsewhere.example"),
            handmade_jwt({"alg": "none", "kid": "2026-11"}, claims_of(), None),
            handmade_jwt({"alg": "RS256", "kid": 7}, claims_of(), None),
            "x.y.z",
        ]:
            assert_problem(
                await gateway.get("/api/case/v1/cases", headers=bearer(token)),
                401,
                "auth.invalid_credentials",
            )


async def test_the_dev_stack_s_keys_make_a_gateway_that_takes_its_local_tokens(tmp_path):
    from citygrid.devstack.__main__ import DEV_PEOPLE_AUDIENCE, DEV_PEOPLE_GROUPS, DEV_PEOPLE_ISSUER, dev_keys

    _, _, public = dev_keys(tmp_path)
    assert dev_keys(tmp_path)[2] == public  # made once
    private = (tmp_path / "keys" / "people-jwt.pem").read_text()
    assert (tmp_path / "keys" / "people-jwt.pem").stat().st_mode & 0o077 == 0
    settings = GatewaySettings(
        environment="development",
        people_jwt_key=public,
        people_jwt_algorithms=["EdDSA"],
        people_jwt_issuer=DEV_PEOPLE_ISSUER,
        people_jwt_audience=DEV_PEOPLE_AUDIENCE,
        people_group_map=DEV_PEOPLE_GROUPS,
    )
    people = PeopleTokens.from_settings(settings)
    assert people is not None
    now = int(time.time())
    token = jwt.encode(
        {
            "iss": DEV_PEOPLE_ISSUER,
            "aud": DEV_PEOPLE_AUDIENCE,
            "sub": "dev",
            "iat": now,
            "exp": now + 60,
            "groups": ["citygrid-inspectors", "tianhe-district"],
        },
        private,
        algorithm="EdDSA",
    )
    principal = await people.principal(token)
    assert (principal.roles, principal.district) == ({"inspector"}, "440106")


async def test_a_fresh_gateway_fetches_the_keys_once_for_many_concurrent_people(stack, provider):
    async with gateway_on(stack, provider) as gateway:
        tokens = [provider.token("2026-11", sub=f"person-{n}") for n in range(10)]
        responses = await asyncio.gather(
            *(gateway.get("/api/case/v1/cases", headers=bearer(t)) for t in tokens)
        )
    assert [r.status_code for r in responses] == [200] * 10
    assert provider.fetches == 1

"""Who may do what: API keys, people's JWTs, scopes, the internal token, and what the gateway never exposes."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from starlette.types import Receive, Scope, Send

from citygrid.auth import PRINCIPAL_HEADER, Principal, RequestTarget, generate_keypair, sign_principal
from citygrid.pagination import encode_cursor
from citygrid.testing import serve_app
from gateway.main import create_app as create_gateway_app
from tests.conftest import CONSUMERS as TEST_CONSUMERS
from tests.conftest import PEOPLE_JWT_PUBLIC_KEY, gateway_settings, people_token
from tests.test_bad_input import CASES, assert_nothing_written, assert_problem
from tests.test_case_flow import REPORT

CONSUMERS = "/admin/v1/consumers"


# -- helpers -------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def handmade_jwt(header: dict, claims: dict, secret: bytes | None) -> str:
    """A JWT built by hand, for the tokens a library would refuse to sign (alg none, HMAC with a PEM)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def person_claims(**changes) -> dict:
    """A person's claims as the identity provider issues them; a change set to None drops the claim."""
    now = int(time.time())
    claims = {
        "iss": "https://idp.test.example/realms/city",
        "sub": "u-1001",
        "name": "Wang Fang",
        "groups": ["operators"],
        "aud": "citygrid",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def person_token(**changes) -> str:
    return people_token(person_claims(**changes), defaults=False)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SERVICE_CALLER = Principal(
    subject="consumer:direct",
    kind="consumer",
    name="direct caller",
    roles=frozenset({"operator"}),
    scopes=frozenset({"cases:read", "cases:write"}),
)

# What a client would love the services to believe: every scope and every role.
ALMIGHTY = Principal(
    subject="consumer:forged",
    kind="consumer",
    name="forged",
    roles=frozenset({"supervisor", "operator", "dispatcher", "handler", "inspector"}),
    scopes=frozenset({"admin", "cases:read", "cases:write", "pii:read"}),
)


def internal(token: str) -> dict[str, str]:
    return {PRINCIPAL_HEADER: token}


class Sniffer:
    """An upstream that keeps what the gateway sent it (its principal token above all) and answers 200."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.seen.append(
            {
                "method": scope["method"],
                "target": scope["raw_path"]
                + (b"?" + scope["query_string"] if scope["query_string"] else b""),
                "token": headers.get(PRINCIPAL_HEADER.lower()),
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"items": [], "next_cursor": null}'})


@contextlib.asynccontextmanager
async def sniffing_gateway(stack) -> AsyncIterator[tuple[str, list[dict]]]:
    """A real gateway (the stack's key and consumers) whose case upstream only records: what an
    eavesdropper on the cluster network would see of each call."""
    sniffer = Sniffer()
    async with serve_app(sniffer) as sniffer_url:  # type: ignore[arg-type]
        databases = {"gateway": stack.infrastructure.database("gateway")}
        settings = gateway_settings(stack.infrastructure, databases, sniffer_url)
        async with serve_app(create_gateway_app(settings)) as gateway_url:
            yield gateway_url, sniffer.seen


async def sniffed(stack, method: str, path: str, consumer: str = "clerk", **kwargs) -> dict:
    async with sniffing_gateway(stack) as (gateway, seen):
        response = await stack.client.request(
            method, f"{gateway}{path}", headers=stack.as_(consumer), **kwargs
        )
        assert response.status_code == 200, response.text
    return seen[-1]


async def report_as_clerk(stack) -> str:
    created = await stack.client.post(CASES, json=REPORT, headers=stack.as_("clerk"))
    assert created.status_code == 201, created.text
    return created.json()["id"]


# -- API keys at the gateway ---------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", CASES), ("POST", CASES), ("GET", f"{CASES}/x")])
async def test_a_call_without_credentials_is_refused_with_401_missing_credentials(stack, method, path):
    response = await stack.client.request(method, path, json=REPORT if method == "POST" else None)
    assert_problem(response, 401, "auth.missing_credentials")
    await assert_nothing_written(stack)


async def test_an_unknown_but_well_formed_api_key_is_refused_with_401_invalid_credentials(stack):
    response = await stack.client.post(
        CASES, json=REPORT, headers={"X-API-Key": "cgk_0123456789ab_" + "s" * 43}
    )
    problem = assert_problem(response, 401, "auth.invalid_credentials")
    assert problem["detail"] == "the API key is not valid"
    await assert_nothing_written(stack)


async def test_a_known_key_prefix_with_the_wrong_secret_is_refused_with_401_invalid_credentials(stack):
    prefix = stack.api_keys["clerk"].rsplit("_", 1)[0]  # cgk_<12 hex> of a real consumer
    for secret in ["wrong", stack.api_keys["reader"].rsplit("_", 1)[1]]:
        response = await stack.client.post(CASES, json=REPORT, headers={"X-API-Key": f"{prefix}_{secret}"})
        assert_problem(response, 401, "auth.invalid_credentials")
    await assert_nothing_written(stack)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "not-a-key",
        "cgk_",
        "cgk_short_secret",
        "cgk_0123456789abcdef",
        "CGK_0123456789ab_secret",
        "Bearer x",
    ],
)
async def test_a_malformed_api_key_is_refused_with_401_invalid_credentials(stack, key):
    response = await stack.client.post(CASES, json=REPORT, headers={"X-API-Key": key})
    problem = assert_problem(response, 401, "auth.invalid_credentials")
    assert problem["detail"] == "the API key is malformed"
    await assert_nothing_written(stack)


async def test_an_api_key_also_works_in_the_authorization_header(stack):
    for scheme in ["Bearer", "ApiKey"]:
        response = await stack.client.get(
            CASES, headers={"Authorization": f"{scheme} {stack.api_keys['reader']}"}
        )
        assert response.status_code == 200, response.text


async def test_a_reader_cannot_report_a_case_403_missing_scope_and_nothing_is_written(stack):
    response = await stack.client.post(CASES, json=REPORT, headers=stack.as_("reader"))
    problem = assert_problem(response, 403, "auth.missing_scope")
    assert problem["required_scope"] == "cases:write"
    await assert_nothing_written(stack)


async def test_a_reader_cannot_take_a_workflow_step_403_missing_scope(stack):
    case_id = await report_as_clerk(stack)
    response = await stack.client.post(
        f"{CASES}/{case_id}/register", headers=stack.as_("reader", **{"If-Match": '"1"'})
    )
    assert_problem(response, 403, "auth.missing_scope")
    detail = (await stack.client.get(f"{CASES}/{case_id}", headers=stack.as_("reader"))).json()
    assert (detail["status"], detail["version"]) == ("reported", 1)


# -- the internal token: services answer only calls the gateway vouched for ----------------------


async def test_a_direct_call_to_the_case_service_without_an_internal_token_is_refused_with_401(stack):
    for method, body in [("GET", None), ("POST", REPORT)]:
        response = await stack.client.request(method, f"{stack.case_url}/v1/cases", json=body)
        problem = assert_problem(response, 401, "auth.missing_internal_token")
        assert problem["instance"] == "/v1/cases"
    await assert_nothing_written(stack)


async def test_a_valid_internal_token_in_the_wrong_header_counts_as_missing(stack):
    token = stack.infrastructure.token(SERVICE_CALLER, "case")
    response = await stack.client.get(f"{stack.case_url}/v1/cases", headers=bearer(token))
    assert_problem(response, 401, "auth.missing_internal_token")


def bad_internal_tokens(private_key: str, public_key: str) -> dict[str, str]:
    forger_key, _ = generate_keypair()
    now = time.time()
    valid = sign_principal(SERVICE_CALLER, private_key=private_key, audience="case")
    header, payload, signature = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {
        "forged-with-another-key": sign_principal(SERVICE_CALLER, private_key=forger_key, audience="case"),
        "expired": sign_principal(SERVICE_CALLER, private_key=private_key, audience="case", ttl_seconds=-60),
        "issued-an-hour-ago": sign_principal(
            SERVICE_CALLER, private_key=private_key, audience="case", now=now - 3600
        ),
        "for-another-service": sign_principal(SERVICE_CALLER, private_key=private_key, audience="gas"),
        "from-another-issuer": sign_principal(
            SERVICE_CALLER, private_key=private_key, audience="case", issuer="someone-else"
        ),
        "claims-tampered": ".".join(
            [header, b64url(json.dumps({**claims, "scopes": ["admin", "pii:read"]}).encode()), signature]
        ),
        "signature-stripped": f"{header}.{payload}.",
        "alg-none": handmade_jwt({"alg": "none", "typ": "JWT"}, claims, None),
        "hmac-keyed-with-the-public-key": handmade_jwt(
            {"alg": "HS256", "typ": "JWT"}, claims, public_key.encode()
        ),
        "garbage": "not.a.token",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "forged-with-another-key",
        "expired",
        "issued-an-hour-ago",
        "for-another-service",
        "from-another-issuer",
        "claims-tampered",
        "signature-stripped",
        "alg-none",
        "hmac-keyed-with-the-public-key",
        "garbage",
    ],
)
async def test_a_direct_call_with_a_bad_internal_token_is_refused_with_401_invalid_internal_token(
    stack, kind
):
    token = bad_internal_tokens(stack.infrastructure.private_key, stack.infrastructure.public_key)[kind]
    for method, body in [("GET", None), ("POST", REPORT)]:
        response = await stack.client.request(
            method, f"{stack.case_url}/v1/cases", json=body, headers=internal(token)
        )
        assert_problem(response, 401, "auth.invalid_internal_token")
    await assert_nothing_written(stack)


async def test_a_valid_internal_token_for_the_case_service_works_directly_so_the_check_is_the_token(stack):
    token = stack.infrastructure.token(SERVICE_CALLER, "case")
    listed = await stack.client.get(f"{stack.case_url}/v1/cases", headers=internal(token))
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"items": [], "next_cursor": None}
    created = await stack.client.post(f"{stack.case_url}/v1/cases", json=REPORT, headers=internal(token))
    assert created.status_code == 201, created.text
    history = (await stack.client.get(f"{CASES}/{created.json()['id']}", headers=stack.as_("reader"))).json()[
        "history"
    ]
    assert [(h["actor"], h["actor_name"]) for h in history] == [("consumer:direct", "direct caller")]


# -- the internal token is bound to its one request ----------------------------------------------


async def test_the_gateway_binds_each_token_to_the_method_and_target_the_service_receives(stack):
    read = await sniffed(stack, "GET", f"{CASES}?status=closed&limit=5")
    write = await sniffed(stack, "POST", CASES, json=REPORT)
    public_key = stack.infrastructure.public_key
    read_claims = jwt.decode(read["token"], public_key, algorithms=["EdDSA"], audience="case")
    write_claims = jwt.decode(write["token"], public_key, algorithms=["EdDSA"], audience="case")
    assert read["target"] == b"/v1/cases?status=closed&limit=5"
    assert (read_claims["htm"], write_claims["htm"]) == ("GET", "POST")
    digest = base64.urlsafe_b64encode(hashlib.sha256(read["target"]).digest()).rstrip(b"=").decode()
    assert read_claims["htu_s256"] == digest
    assert "jti" not in read_claims  # a read may be retried with its token
    assert len(write_claims["jti"]) >= 16


async def test_a_token_sniffed_from_a_read_cannot_be_replayed_as_a_write_or_on_another_path(stack):
    read = await sniffed(stack, "GET", f"{CASES}?status=reported", consumer="admin")
    case_id = await report_as_clerk(stack)
    token = internal(read["token"])
    # The one request it was issued for still works, within its minute.
    assert (
        await stack.client.get(f"{stack.case_url}/v1/cases?status=reported", headers=token)
    ).status_code == 200
    for method, target, body in [
        ("POST", "/v1/cases", REPORT),
        ("POST", f"/v1/cases/{case_id}/register", None),
        ("GET", f"/v1/cases/{case_id}", None),
        ("GET", "/v1/cases?status=reported&pii=1", None),
        ("GET", "/v1/cases", None),
        ("GET", "/v1/admin/dead-letters", None),
    ]:
        response = await stack.client.request(
            method, f"{stack.case_url}{target}", json=body, headers={**token, "If-Match": '"1"'}
        )
        assert_problem(response, 401, "auth.token_not_for_this_request")
    detail = (await stack.client.get(f"{CASES}/{case_id}", headers=stack.as_("reader"))).json()
    assert (detail["status"], detail["version"]) == ("reported", 1)
    assert len((await stack.client.get(CASES, headers=stack.as_("reader"))).json()["items"]) == 1


async def test_a_writes_token_works_once_and_a_replay_is_refused(stack):
    write = await sniffed(stack, "POST", CASES, json=REPORT)  # the sniffer swallowed the original
    first = await stack.client.post(
        f"{stack.case_url}/v1/cases", json=REPORT, headers=internal(write["token"])
    )
    assert first.status_code == 201, first.text
    replayed = await stack.client.post(
        f"{stack.case_url}/v1/cases", json=REPORT, headers=internal(write["token"])
    )
    assert_problem(replayed, 401, "auth.token_replayed")
    assert len((await stack.client.get(CASES, headers=stack.as_("reader"))).json()["items"]) == 1


async def test_a_bound_write_token_without_a_jti_is_refused(stack):
    no_jti = handmade_free_token(stack, {"htm": "POST", "htu_s256": target_digest_of(b"/v1/cases")})
    response = await stack.client.post(f"{stack.case_url}/v1/cases", json=REPORT, headers=internal(no_jti))
    assert_problem(response, 401, "auth.token_not_for_this_request")
    await assert_nothing_written(stack)


def target_digest_of(target: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(target).digest()).rstrip(b"=").decode()


def handmade_free_token(stack, binding: dict) -> str:
    """A token the gateway's key signed with these binding claims (and no others)."""
    now = int(time.time())
    claims = {
        "iss": "citygrid-gateway",
        "aud": "case",
        "sub": SERVICE_CALLER.subject,
        "iat": now,
        "exp": now + 60,
        "kind": "consumer",
        "name": "direct caller",
        "roles": ["operator"],
        "scopes": ["cases:read", "cases:write"],
        **binding,
    }
    return jwt.encode(claims, stack.infrastructure.private_key, algorithm="EdDSA")


async def test_a_bound_token_works_directly_for_its_own_request(stack):
    token = sign_principal(
        SERVICE_CALLER,
        private_key=stack.infrastructure.private_key,
        audience="case",
        request=RequestTarget("POST", b"/v1/cases"),
    )
    created = await stack.client.post(f"{stack.case_url}/v1/cases", json=REPORT, headers=internal(token))
    assert created.status_code == 201, created.text


async def test_the_keys_are_parsed_once_a_signer_in_the_gateway_a_verifier_in_the_service(stack):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    assert isinstance(stack.case_app.state.kit.verifier.key, Ed25519PublicKey)
    databases = {"gateway": stack.infrastructure.database("gateway")}
    app = create_gateway_app(gateway_settings(stack.infrastructure, databases, stack.case_url))
    async with serve_app(app) as gateway:
        signer = app.state.gateway.forwarding.signer
        for _ in range(2):
            response = await stack.client.get(f"{gateway}{CASES}", headers=stack.as_("reader"))
            assert response.status_code == 200, response.text
        assert app.state.gateway.forwarding.signer is signer
    assert isinstance(signer.key, Ed25519PrivateKey)


async def test_an_internal_token_is_not_a_credential_at_the_gateway(stack):
    token = stack.infrastructure.token(ALMIGHTY, "case")
    response = await stack.client.get(CASES, headers=bearer(token))
    assert_problem(response, 401, "auth.invalid_credentials")


# -- a client cannot bring its own principal -----------------------------------------------------


async def test_a_forged_principal_header_through_the_gateway_gains_nothing(stack):
    case_id = await report_as_clerk(stack)
    # Even a token correctly signed by the gateway's own key is dropped when a client sends it.
    forged = stack.infrastructure.token(ALMIGHTY, "case", ttl_seconds=600)
    as_reader = stack.as_("reader", **{PRINCIPAL_HEADER: forged})

    detail = await stack.client.get(f"{CASES}/{case_id}", headers=as_reader)
    assert detail.status_code == 200, detail.text
    assert detail.json()["reporter"] == {"name": "L**", "phone": "138****5678", "email": None}

    report = await stack.client.post(CASES, json=REPORT, headers=as_reader)
    assert_problem(report, 403, "auth.missing_scope")
    step = await stack.client.post(f"{CASES}/{case_id}/register", headers={**as_reader, "If-Match": '"1"'})
    assert_problem(step, 403, "auth.missing_scope")
    admin = await stack.client.get("/api/case/v1/admin/dead-letters", headers=as_reader)
    assert_problem(admin, 403, "auth.missing_scope")

    listed = (await stack.client.get(CASES, headers=stack.as_("reader"))).json()["items"]
    assert [(c["id"], c["version"]) for c in listed] == [(case_id, 1)]


async def test_a_forged_principal_header_does_not_lend_its_roles_to_a_writer(stack):
    case_id = await report_as_clerk(stack)
    forged = stack.infrastructure.token(ALMIGHTY, "case", ttl_seconds=600)
    response = await stack.client.post(
        f"{CASES}/{case_id}/register",
        headers=stack.as_("reporter", **{PRINCIPAL_HEADER: forged, "If-Match": '"1"'}),
    )
    assert_problem(response, 403, "case.role_not_allowed")


async def test_a_forged_principal_header_without_credentials_is_still_401(stack):
    forged = stack.infrastructure.token(ALMIGHTY, "case", ttl_seconds=600)
    response = await stack.client.get(CASES, headers=internal(forged))
    assert_problem(response, 401, "auth.missing_credentials")


# -- people's bearer JWTs ------------------------------------------------------------------------


async def test_a_persons_jwt_works_through_the_gateway_and_the_person_is_the_actor(stack):
    token = person_token()
    listed = await stack.client.get(CASES, headers=bearer(token))
    assert listed.status_code == 200, listed.text
    created = await stack.client.post(CASES, json=REPORT, headers=bearer(token))
    assert created.status_code == 201, created.text
    case_id = created.json()["id"]
    registered = await stack.client.post(
        f"{CASES}/{case_id}/register", headers={**bearer(token), "If-Match": '"1"'}
    )
    assert registered.status_code == 200, registered.text
    assert registered.json()["status"] == "registered"
    detail = (await stack.client.get(f"{CASES}/{case_id}", headers=bearer(token))).json()
    assert [(h["action"], h["actor"], h["actor_name"]) for h in detail["history"]] == [
        ("report", "person:u-1001", "Wang Fang"),
        ("register", "person:u-1001", "Wang Fang"),
    ]
    # No pii:read scope: the person sees the reporter masked.
    assert detail["reporter"] == {"name": "L**", "phone": "138****5678", "email": None}


async def test_a_step_taken_with_a_persons_jwt_answers_with_a_history_that_includes_it(stack):
    token = person_token()
    case_id = (await stack.client.post(CASES, json=REPORT, headers=bearer(token))).json()["id"]
    registered = await stack.client.post(
        f"{CASES}/{case_id}/register", headers={**bearer(token), "If-Match": '"1"'}
    )
    assert registered.status_code == 200, registered.text
    assert [(h["action"], h["actor"]) for h in registered.json()["history"]] == [
        ("report", "person:u-1001"),
        ("register", "person:u-1001"),
    ]


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(person_token(exp=int(time.time()) - 60), id="expired"),
        pytest.param(people_token(person_claims(), key=generate_keypair()[0]), id="signed-by-another-key"),
        pytest.param(person_token(aud="another-city"), id="wrong-audience"),
        pytest.param(person_token(aud=None), id="no-audience"),
        pytest.param(person_token(iss="https://idp.elsewhere.example/realms/city"), id="wrong-issuer"),
        pytest.param(person_token(iss=None), id="no-issuer"),
        pytest.param(person_token(exp=None), id="no-expiry"),
        pytest.param(person_token(iat=None), id="no-issued-at"),
        pytest.param(person_token(iat=int(time.time()) + 600), id="issued-in-the-future"),
        pytest.param(person_token(sub=None), id="no-subject"),
        pytest.param(handmade_jwt({"alg": "none", "typ": "JWT"}, person_claims(), None), id="alg-none"),
        pytest.param(
            handmade_jwt({"alg": "HS256", "typ": "JWT"}, person_claims(), PEOPLE_JWT_PUBLIC_KEY.encode()),
            id="hmac-keyed-with-the-public-key",
        ),
        pytest.param(
            handmade_jwt({"alg": "HS256", "typ": "JWT"}, person_claims(), b"a-shared-secret"),
            id="hmac-with-a-shared-secret",
        ),
        pytest.param("garbage", id="garbage"),
        pytest.param("a.b.c", id="three-garbage-parts"),
    ],
)
async def test_a_bad_persons_jwt_is_refused_with_401_invalid_credentials(stack, token):
    for method, body in [("GET", None), ("POST", REPORT)]:
        response = await stack.client.request(method, CASES, json=body, headers=bearer(token))
        assert_problem(response, 401, "auth.invalid_credentials")
    await assert_nothing_written(stack)


async def test_a_person_with_only_the_read_scope_cannot_report(stack):
    token = person_token(groups=["readers"])
    assert (await stack.client.get(CASES, headers=bearer(token))).status_code == 200
    response = await stack.client.post(CASES, json=REPORT, headers=bearer(token))
    assert_problem(response, 403, "auth.missing_scope")
    await assert_nothing_written(stack)


async def test_a_person_jwts_own_claims_cannot_grant_what_its_groups_do_not(stack):
    # Scopes and roles written in the token count for nothing; a principal header beside it neither.
    token = person_token(
        groups=["readers", "no-such-group"],
        scope="cases:write admin pii:read",
        scopes=["cases:write", "admin"],
        roles=["supervisor", "operator"],
    )
    forged = stack.infrastructure.token(ALMIGHTY, "case", ttl_seconds=600)
    response = await stack.client.post(CASES, json=REPORT, headers={**bearer(token), **internal(forged)})
    assert_problem(response, 403, "auth.missing_scope")
    admin = await stack.client.get("/api/case/v1/admin/dead-letters", headers=bearer(token))
    assert_problem(admin, 403, "auth.missing_scope")


async def test_a_person_in_no_mapped_group_gets_no_scope_at_all(stack):
    for groups in [None, [], ["Operators"], ["/operators"], ["no-such-group"]]:
        token = person_token(groups=groups, scope="cases:read", scopes=["cases:read"])
        problem = assert_problem(
            await stack.client.get(CASES, headers=bearer(token)), 403, "auth.missing_scope"
        )
        assert problem["required_scope"] == "cases:read"


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"district": 440106}, id="district-a-number"),
        pytest.param({"district": ["440106"]}, id="district-a-list"),
        pytest.param({"district": "Tianhe"}, id="district-not-a-code"),
        pytest.param({"unit": ["a", "b"]}, id="unit-a-list"),
        pytest.param({"unit": 7}, id="unit-a-number"),
        pytest.param({"groups": "operators"}, id="groups-a-string"),
        pytest.param({"groups": [["operators"]]}, id="groups-nested"),
        pytest.param({"groups": [1, 2]}, id="groups-numbers"),
        pytest.param({"groups": {"operators": True}}, id="groups-an-object"),
        pytest.param({"name": ["Wang", "Fang"]}, id="name-a-list"),
        pytest.param({"sub": 1001}, id="subject-a-number"),
        pytest.param({"sub": ""}, id="subject-empty"),
        pytest.param({"exp": "tomorrow"}, id="expiry-a-string"),
        pytest.param({"iat": "now"}, id="issued-at-a-string"),
        pytest.param({"aud": 7}, id="audience-a-number"),
        pytest.param({"iss": ["https://idp.test.example/realms/city"]}, id="issuer-a-list"),
        pytest.param({"groups": ["operators", "tianhe"], "district": "440104"}, id="two-districts"),
    ],
)
async def test_a_persons_jwt_with_a_malformed_claim_is_401_not_a_server_error(stack, changes):
    for method, body in [("GET", None), ("POST", REPORT)]:
        response = await stack.client.request(
            method, CASES, json=body, headers=bearer(person_token(**changes))
        )
        assert_problem(response, 401, "auth.invalid_credentials")
    await assert_nothing_written(stack)


async def test_a_persons_district_comes_from_a_mapped_group_and_reaches_the_service(stack):
    async with sniffing_gateway(stack) as (gateway, seen):
        token = person_token(groups=["operators", "tianhe"])
        assert (await stack.client.get(f"{gateway}{CASES}", headers=bearer(token))).status_code == 200
        claims = jwt.decode(
            seen[-1]["token"], stack.infrastructure.public_key, algorithms=["EdDSA"], audience="case"
        )
    assert (claims["sub"], claims["district"], claims["roles"]) == ("person:u-1001", "440106", ["operator"])
    assert claims["scopes"] == ["cases:read", "cases:write"]


# -- what is open and what is not routable -------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_the_gateways_own_health_endpoints_need_no_credentials(stack, path):
    response = await stack.client.get(path)
    assert response.status_code == 200, response.text
    assert response.json()["status"] in {"ok", "ready"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/case/healthz",
        "/api/case/readyz",
        "/api/case/metrics",
        "/api/case/openapi.json",
        "/api/case/v1",
        "/api/case/v1/%2e%2e/healthz",
        "/api/case/v1/cases/..%2F..%2Fmetrics",
        "/api/case/v1/.%2E/.%2E/readyz",
        "/api/case/v1/cases%5C..%5C..%5Chealthz",
    ],
)
async def test_a_services_unversioned_paths_are_not_routable_through_the_gateway(stack, path):
    response = await stack.client.get(path, headers=stack.as_("admin"))
    problem = assert_problem(response, 404, "gateway.unknown_service")
    assert problem["detail"].startswith("no such path: /api/case/")


async def test_an_unroutable_path_still_needs_credentials_first(stack):
    response = await stack.client.get("/api/case/healthz")
    assert_problem(response, 401, "auth.missing_credentials")


async def test_a_services_admin_api_through_the_gateway_needs_the_admin_scope(stack):
    refused = await stack.client.get("/api/case/v1/admin/dead-letters", headers=stack.as_("clerk"))
    problem = assert_problem(refused, 403, "auth.missing_scope")
    assert problem["required_scope"] == "admin"
    allowed = await stack.client.get("/api/case/v1/admin/dead-letters", headers=stack.as_("admin"))
    assert allowed.status_code == 200, allowed.text


# -- the gateway's admin API ---------------------------------------------------------------------


async def test_the_consumer_admin_api_refuses_a_consumer_without_the_admin_scope(stack):
    for consumer in ["clerk", "reader"]:
        listed = await stack.client.get(CONSUMERS, headers=stack.as_(consumer))
        assert_problem(listed, 403, "auth.missing_scope")
        created = await stack.client.post(
            CONSUMERS, json={"name": f"{consumer}-made", "scopes": ["admin"]}, headers=stack.as_(consumer)
        )
        assert_problem(created, 403, "auth.missing_scope")
    anonymous = await stack.client.get(CONSUMERS)
    assert_problem(anonymous, 401, "auth.missing_credentials")
    names = [
        c["name"] for c in (await stack.client.get(CONSUMERS, headers=stack.as_("admin"))).json()["items"]
    ]
    assert sorted(names) == sorted(TEST_CONSUMERS)


async def test_an_admin_registers_a_consumer_whose_key_works_until_it_is_revoked(stack):
    created = await stack.client.post(
        CONSUMERS,
        json={"name": "night-shift", "scopes": ["cases:read"], "roles": [], "district": "440106"},
        headers=stack.as_("admin"),
    )
    assert created.status_code == 201, created.text
    consumer = created.json()
    api_key = consumer["api_key"]
    assert api_key.startswith(f"cgk_{consumer['key_prefix']}_")
    assert consumer["active"] is True
    assert "key_hash" not in consumer

    as_new = {"X-API-Key": api_key}
    assert (await stack.client.get(CASES, headers=as_new)).status_code == 200
    assert_problem(await stack.client.post(CASES, json=REPORT, headers=as_new), 403, "auth.missing_scope")
    listed = (await stack.client.get(CONSUMERS, headers=stack.as_("admin"))).json()["items"]
    mine = [c for c in listed if c["name"] == "night-shift"]
    assert len(mine) == 1
    assert "api_key" not in mine[0]

    not_by_clerk = await stack.client.post(f"{CONSUMERS}/{consumer['id']}/revoke", headers=stack.as_("clerk"))
    assert_problem(not_by_clerk, 403, "auth.missing_scope")
    assert (await stack.client.get(CASES, headers=as_new)).status_code == 200

    revoked = await stack.client.post(f"{CONSUMERS}/{consumer['id']}/revoke", headers=stack.as_("admin"))
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["active"] is False
    refused = await stack.client.get(CASES, headers=as_new)
    assert_problem(refused, 401, "auth.invalid_credentials")


async def test_revoking_an_unknown_consumer_is_404(stack):
    response = await stack.client.post(
        f"{CONSUMERS}/00000000-0000-4000-8000-000000000000/revoke", headers=stack.as_("admin")
    )
    assert_problem(response, 404, "gateway.consumer_not_found")


async def test_a_consumer_name_is_registered_once(stack):
    response = await stack.client.post(
        CONSUMERS, json={"name": "clerk", "scopes": ["admin"]}, headers=stack.as_("admin")
    )
    assert_problem(response, 409, "gateway.consumer_exists")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": "x", "scopes": ["Cases:Read"]}, ["body", "scopes", 0]),
        ({"name": "x", "scopes": ["cases:read"], "roles": ["Super Admin"]}, ["body", "roles", 0]),
        ({"name": "x", "scopes": ["cases:read"], "district": "abc"}, ["body", "district"]),
        (
            {"name": "x", "scopes": ["cases:read"], "rate_limit_per_minute": 0},
            ["body", "rate_limit_per_minute"],
        ),
        ({"name": "x", "scopes": ["cases:read"], "api_key": "cgk_0123456789ab_mine"}, ["body", "api_key"]),
        ({"name": "x", "scopes": ["cases:read"], "active": False, "id": "1"}, ["body", "active"]),
        ({"name": "  ", "scopes": []}, ["body", "name"]),
    ],
)
async def test_the_consumer_admin_api_validates_what_it_registers(stack, body, loc):
    response = await stack.client.post(CONSUMERS, json=body, headers=stack.as_("admin"))
    problem = assert_problem(response, 422, "validation_failed")
    assert loc in [error["loc"] for error in problem["errors"]]


# -- product bugs, pinned ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["v1/cases%23anything", "v1/cases%3Fstatus=reported"])
async def test_an_encoded_hash_or_question_mark_stays_part_of_the_path_upstream(stack, path):
    response = await stack.client.get(f"/api/case/{path}", headers=stack.as_("reader"))
    assert_problem(response, 404, "http.not_found")


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        pytest.param("GET", {"params": {"cursor": encode_cursor("not-a-uuid")}}, id="cursor-not-a-uuid"),
        pytest.param(
            "POST", {"json": {"name": "night\x00shift", "scopes": ["cases:read"]}}, id="nul-in-name"
        ),
    ],
)
async def test_the_consumer_admin_api_answers_bad_input_with_4xx_not_a_server_error(stack, method, kwargs):
    response = await stack.client.request(method, CONSUMERS, headers=stack.as_("admin"), **kwargs)
    assert 400 <= response.status_code < 500, response.text

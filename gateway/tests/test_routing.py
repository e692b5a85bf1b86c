"""Which scope each call through the gateway needs, and which paths it will route at all."""

from __future__ import annotations

import pytest

from citygrid.auth import ADMIN_SCOPE
from gateway.routing import UPSTREAMS, Upstream, is_routable, required_scope

CASE = UPSTREAMS["case"]


# --- required_scope ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_reads_need_the_read_scope_of_the_dataset(method):
    assert required_scope(CASE, method, "v1/cases") == "cases:read"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_changes_need_the_write_scope_of_the_dataset(method):
    assert required_scope(CASE, method, "v1/cases/abc/register") == "cases:write"


@pytest.mark.parametrize(("method", "scope"), [("get", "cases:read"), ("post", "cases:write")])
def test_the_method_is_compared_case_insensitively(method, scope):
    assert required_scope(CASE, method, "v1/cases") == scope


def test_an_unknown_method_is_treated_as_a_change():
    assert required_scope(CASE, "PROPFIND", "v1/cases") == "cases:write"


@pytest.mark.parametrize("path", ["v1/admin", "v1/admin/", "v1/admin/keys", "v1/admin/keys/abc/revoke"])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_admin_paths_need_the_admin_scope_whatever_the_method(path, method):
    assert required_scope(CASE, method, path) == ADMIN_SCOPE == "admin"


@pytest.mark.parametrize("path", ["v1/administrators", "v1/cases/admin", "v1/admins/x"])
def test_only_the_admin_segment_itself_is_an_admin_path(path):
    assert required_scope(CASE, "GET", path) == "cases:read"


@pytest.mark.parametrize(("service", "dataset"), [(name, up.dataset) for name, up in UPSTREAMS.items()])
def test_scopes_are_named_after_each_upstreams_dataset(service, dataset):
    upstream = UPSTREAMS[service]
    assert required_scope(upstream, "GET", "v1/anything") == f"{dataset}:read"
    assert required_scope(upstream, "POST", "v1/anything") == f"{dataset}:write"


@pytest.mark.parametrize("path", ["v1/detections", "v1/cameras/heartbeats"])
def test_analysis_engines_feeds_need_the_ingest_scope_not_write(path):
    vision = UPSTREAMS["vision"]
    assert required_scope(vision, "POST", path) == "vision:ingest"
    assert required_scope(vision, "GET", path) == "vision:read"
    assert required_scope(vision, "POST", "v1/alarms/abc/confirm") == "vision:write"
    assert required_scope(CASE, "POST", path) == "cases:write"


def test_the_case_service_scopes_are_about_cases():
    assert UPSTREAMS["case"] == Upstream("case", "cases", anonymous_reads=("open311/v2",))


def test_the_gateway_routes_by_the_services_own_declarations():
    from contract.scopes import SERVICES

    assert UPSTREAMS is SERVICES
    assert all(name == rules.service for name, rules in UPSTREAMS.items())


@pytest.mark.parametrize("path", ["v1/admin", "/v1/admin/x", "v1//admin/x", "/v1/admin/"])
def test_an_admin_path_is_an_admin_path_however_its_slashes_fall(path):
    assert required_scope(CASE, "GET", path) == ADMIN_SCOPE


# --- is_routable ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "v1/cases",
        "v1/cases/abc",
        "v1/cases/abc/register",
        "v1/cases/",
        "v1/cases/0193f0a2-7c1e-7a00-8000-000000000000/close",
    ],
)
def test_the_versioned_api_is_routable(path):
    assert is_routable(path)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("", id="empty"),
        pytest.param("healthz", id="healthz"),
        pytest.param("metrics", id="metrics"),
        pytest.param("readyz", id="readyz"),
        pytest.param("v1", id="bare-version"),
        pytest.param("/v1/cases", id="leading-slash"),
        pytest.param("V1/cases", id="upper-case-version"),
        pytest.param("v2/x", id="other-version"),
        pytest.param("v10/x", id="version-prefix-lookalike"),
        pytest.param("v1/../healthz", id="dot-dot-escape"),
        pytest.param("v1/cases/../../metrics", id="deep-dot-dot-escape"),
        pytest.param("v1/..", id="trailing-dot-dot"),
        pytest.param("v1/cases/..", id="trailing-dot-dot-after-segment"),
        pytest.param("v1/./x", id="dot-segment"),
        pytest.param("v1/cases/.", id="trailing-dot"),
        pytest.param("v1//x", id="empty-segment"),
        pytest.param("v1\\cases", id="backslash-after-version"),
        pytest.param("v1/cases\\..\\..\\healthz", id="backslash-escape"),
        pytest.param("v1/x\\y", id="backslash-in-segment"),
    ],
)
def test_anything_but_a_clean_versioned_path_is_not_routable(path):
    assert not is_routable(path)


def test_dots_inside_a_segment_are_not_path_traversal():
    assert is_routable("v1/files/report..final.pdf")
    assert is_routable("v1/files/.hidden")


def test_inbound_headers_pass_utf8_values_as_they_came_and_refuse_what_would_change_or_break():
    from gateway.proxy import InvalidHeader, inbound_headers

    kept = inbound_headers(
        [(b"X-Note", "广州 café".encode()), (b"Authorization", b"Bearer x"), (b"X-Forwarded-For", b"1.2.3.4")]
    )
    assert kept == [("X-Note", "广州 café")]
    assert kept[0][1].encode() == "广州 café".encode()
    for value in (b"caf\xe9", b"a\x7fb", b"a\x01b"):
        with pytest.raises(InvalidHeader):
            inbound_headers([(b"X-Note", value)])
    assert inbound_headers([(b"X-Note", b"a\tb")]) == [("X-Note", "a\tb")]

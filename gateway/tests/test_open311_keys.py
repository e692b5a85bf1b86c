"""The Open311 ``api_key`` is taken out of the query and the form before a call reaches a service."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from citygrid.errors import DomainError, Unauthenticated
from gateway.open311 import MalformedForm, error_response, spec_status, split_api_key
from gateway.openapi import prefix_document


def test_the_key_is_taken_out_and_the_other_fields_keep_their_meaning():
    rest, key = split_api_key(b"api_key=cgk_abc_def&service_code=CG-20106&description=full+bin%21")
    assert key == "cgk_abc_def"
    assert parse_qsl(rest.decode()) == [("service_code", "CG-20106"), ("description", "full bin!")]


def test_every_copy_of_the_key_is_taken_out_and_the_first_one_counts():
    rest, key = split_api_key(b"api_key=first&api_key=second&lat=23.1")
    assert key == "first"
    assert b"api_key" not in rest
    assert b"second" not in rest


def test_without_a_key_the_bytes_pass_on_untouched():
    raw = b"status=open&service_code=CG-1%2CCG-2"
    assert split_api_key(raw) == (raw, None)
    assert split_api_key(b"") == (b"", None)


def test_a_form_that_is_not_utf8_is_refused():
    with pytest.raises(MalformedForm):
        split_api_key(b"description=%FF%FE")


@pytest.mark.parametrize(
    ("status", "spec"), [(401, 403), (403, 403), (404, 404), (405, 400), (413, 400), (429, 429), (503, 503)]
)
def test_refusals_use_the_statuses_the_spec_knows(status, spec):
    assert spec_status(status) == spec


def test_a_refusal_is_rendered_in_the_format_the_path_names():
    error = Unauthenticated("send your api_key")
    as_xml = error_response("requests.xml", error)
    assert as_xml.status_code == 403
    assert as_xml.media_type == "text/xml; charset=utf-8"
    assert b"<errors><error><code>403</code><description>send your api_key</description>" in as_xml.body
    as_json = error_response("requests.json", DomainError("bad"))
    assert as_json.status_code == 400
    assert as_json.body == b'[{"code": 400, "description": "bad", "problem": "error"}]'


def test_the_platform_document_keeps_open311_paths_where_the_standard_puts_them():
    document = {
        "paths": {
            "/v1/cases": {"get": {"operationId": "list_cases"}},
            "/open311/v2/services.{format}": {"get": {"operationId": "open311_services"}},
        }
    }
    paths = prefix_document("case", document)["paths"]
    assert set(paths) == {"/api/case/v1/cases", "/open311/v2/services.{format}"}
    assert paths["/open311/v2/services.{format}"]["get"]["security"][0] == {"Open311Key": []}
    assert {"Open311Key": []} not in paths["/api/case/v1/cases"]["get"]["security"]

"""Open311 rules without I/O: public statuses, the 90-day window, districts, submissions, XML."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import pytest

from contract.case import CaseStatus
from services.case.domain.open311_mapping import (
    InvalidQuery,
    InvalidSubmission,
    OutsideCity,
    comma_list,
    district_of,
    parse_submission,
    parse_w3c,
    public_status,
    service_notice,
    status_notes,
    statuses_of,
    w3c,
    window,
)
from services.case.domain.open311_xml import Format, UnknownFormat, format_of, format_of_path, render, to_xml

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "status", [CaseStatus.CLOSED, CaseStatus.REJECTED, CaseStatus.MERGED, CaseStatus.CANCELLED]
)
def test_finished_cases_are_closed_requests(status):
    assert public_status(status) == "closed"


@pytest.mark.parametrize(
    "status",
    [
        CaseStatus.REPORTED,
        CaseStatus.REGISTERED,
        CaseStatus.DISPATCHED,
        CaseStatus.ACCEPTED,
        CaseStatus.SUSPENDED,
        CaseStatus.HANDLED,
    ],
)
def test_cases_still_in_the_workflow_are_open_requests(status):
    assert public_status(status) == "open"


def test_open_and_closed_together_mean_every_status():
    assert statuses_of(["open", "closed"]) == frozenset(CaseStatus)
    assert statuses_of(["open"]).isdisjoint(statuses_of(["closed"]))


def test_a_status_other_than_open_or_closed_is_refused():
    with pytest.raises(InvalidQuery):
        statuses_of(["pending"])


def test_every_status_has_public_notes_and_a_merged_one_names_the_request_it_joined():
    assert all(status_notes(status) for status in CaseStatus)
    assert "440106-20261126-000001" in status_notes(CaseStatus.MERGED, "440106-20261126-000001")


def test_the_service_notice_gives_the_handling_limit_in_words():
    limits = {"handle": {"amount": 2, "unit": "working_hours"}}
    assert service_notice(limits) == "To be fixed within 2 working hours of dispatch."
    assert service_notice({"handle": {"amount": 1.5, "unit": "working_days"}}) == (
        "To be fixed within 1.5 working days of dispatch."
    )
    assert service_notice({}) is None
    assert service_notice(None) is None


def test_times_are_w3c_in_city_time_to_the_second():
    assert w3c(datetime(2026, 11, 26, 1, 30, 15, 123456, tzinfo=UTC)) == "2026-11-26T09:30:15+08:00"
    assert w3c(None) is None


def test_a_w3c_time_without_an_offset_is_read_in_city_time():
    assert parse_w3c("2026-11-26T08:00:00", name="start_date") == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    assert parse_w3c("2026-11-26T00:00:00Z", name="start_date") == datetime(2026, 11, 26, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01T00:00:00Z", "1900-01-01T00:00:00Z"])
def test_a_time_that_is_not_w3c_or_out_of_range_is_refused(text):
    with pytest.raises(InvalidQuery):
        parse_w3c(text, name="start_date")


def test_without_dates_the_window_is_the_last_90_days():
    assert window(None, None, NOW) == (NOW - timedelta(days=90), NOW)


def test_one_date_opens_a_90_day_window_from_it():
    start = NOW - timedelta(days=200)
    assert window(start, None, NOW) == (start, start + timedelta(days=90))
    assert window(None, NOW, NOW) == (NOW - timedelta(days=90), NOW)


def test_a_window_over_90_days_or_backwards_is_refused():
    with pytest.raises(InvalidQuery, match="90 days"):
        window(NOW - timedelta(days=91), NOW, NOW)
    with pytest.raises(InvalidQuery, match="before"):
        window(NOW, NOW - timedelta(days=1), NOW)


def test_a_comma_list_drops_blanks_and_is_bounded():
    assert comma_list(" a, b,,c ", name="x") == ["a", "b", "c"]
    assert comma_list(None, name="x") == []
    with pytest.raises(InvalidQuery):
        comma_list(",".join(["a"] * 101), name="x")


@pytest.mark.parametrize(
    ("lon", "lat", "district"),
    [
        (113.3245, 23.1291, "440106"),  # Tianhe Road
        (113.2644, 23.1291, "440104"),  # Beijing Road, Yuexiu
        (113.2420, 23.1250, "440103"),  # Shangxiajiu, Liwan
        (113.3260, 23.0960, "440105"),  # Canton Tower, Haizhu
        (113.3660, 22.9370, "440113"),  # Shiqiao, Panyu
        (113.5250, 22.7950, "440115"),  # Nansha
        (113.2150, 23.4050, "440114"),  # Huadu
    ],
)
def test_a_point_falls_in_the_district_of_the_nearest_reference_point(lon, lat, district):
    assert district_of(lon, lat) == district


def test_a_point_outside_the_city_is_refused():
    with pytest.raises(OutsideCity):
        district_of(116.4, 39.9)


def test_a_submission_gathers_attributes_and_joins_the_name():
    submission = parse_submission(
        [
            ("service_code", "CG-20106"),
            ("lat", "23.1291"),
            ("long", "113.3245"),
            ("first_name", "Ming"),
            ("last_name", "Li"),
            ("phone", "(020) 8888-1234"),
            ("attribute[FLOOR]", "ground"),
            ("email", ""),
        ]
    )
    assert submission.point() == (113.3245, 23.1291)
    assert submission.reporter_name == "Ming Li"
    assert submission.phone == "0208888-1234"
    assert submission.email is None
    assert submission.attributes == {"FLOOR": "ground"}


def test_a_submission_without_a_point_cannot_be_placed():
    submission = parse_submission([("service_code", "CG-20106"), ("address_string", "Tianhe Road")])
    with pytest.raises(InvalidSubmission, match="lat and long"):
        submission.point()


def test_every_problem_of_a_submission_is_listed():
    with pytest.raises(InvalidSubmission) as caught:
        parse_submission([("lat", "north"), ("email", "nobody")])
    problems = caught.value.extra["errors"]
    assert {problem.split(":")[0] for problem in problems} == {"service_code", "lat", "email"}


def test_json_is_the_payload_and_xml_wraps_lists_in_singular_elements():
    payload = [{"service_code": "CG-1", "metadata": False, "keywords": None}]
    assert (
        render(Format.JSON, "services", payload)
        == b'[{"service_code": "CG-1", "metadata": false, "keywords": null}]'
    )
    root = ElementTree.fromstring(render(Format.XML, "services", payload))  # noqa: S314 - made here
    assert root.tag == "services"
    (service,) = root.findall("service")
    assert service.findtext("metadata") == "false"
    assert service.findtext("keywords") == ""


def test_nested_lists_are_named_too():
    document = to_xml("discovery", {"endpoints": [{"formats": ["text/xml", "application/json"]}]})
    root = ElementTree.fromstring(document)  # noqa: S314 - made here
    assert [f.text for f in root.findall("endpoints/endpoint/formats/format")] == [
        "text/xml",
        "application/json",
    ]


def test_characters_xml_cannot_carry_are_left_out_rather_than_breaking_the_document():
    document = to_xml("service_requests", [{"description": "bin\x01 \x1f full 满"}])
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ElementTree.fromstring(document)  # noqa: S314 - made here
    assert root.findtext("request/description") == "bin  full 满"


def test_the_format_comes_from_the_extension_and_defaults_to_xml_for_errors():
    assert format_of("JSON") is Format.JSON
    with pytest.raises(UnknownFormat):
        format_of("html")
    assert format_of_path("/open311/v2/services.json") is Format.JSON
    assert format_of_path("/open311/v2/services.html") is Format.XML

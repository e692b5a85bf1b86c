"""The EPCIS 2.0 conformance corpus (``../shared/conformance/epcis``) replayed against GS1's JSON
schema, with format checks really on, and against our models: both give the manifest's verdict.

The corpus is third-party test data and stays out of the repository: it is read where it lies, and
these tests skip in a checkout without it.
"""

from __future__ import annotations

import copy
import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import validators  # type: ignore[import-untyped]
from jsonschema.protocols import Validator  # type: ignore[import-untyped]

from citygrid.testing import conformance_dir
from services.gas.epcis.mapping import (
    SCAN_KINDS,
    MappedScan,
    Unmappable,
    epcis_document,
    map_document,
    scan_to_object_event,
)
from services.gas.epcis.models import EpcisValidationError, parse_document, parse_event


def corpus_or_skip() -> Path:
    found = conformance_dir("epcis")
    if found is None:
        pytest.skip(
            "EPCIS conformance corpus not found: ../shared/conformance/epcis is absent in this checkout",
            allow_module_level=True,
        )
    return found


CORPUS = corpus_or_skip()

SCHEMA = CORPUS / "schema" / "EPCIS-JSON-Schema.json"
SCHEMA_COPIES = sorted((CORPUS / "schema").glob("*.json"))
QUERY_SCHEMA = CORPUS / "schema" / "query-schema.json"
DOCUMENT_SCHEMAS = [path for path in SCHEMA_COPIES if path != QUERY_SCHEMA]
VERDICTS = ("ACCEPT-OR-REFUSE", "ACCEPT", "REFUSE")


# --- The manifest's verdicts -----------------------------------------------------------------------


def manifest_verdicts(section_names: tuple[str, ...]) -> dict[str, str]:
    """``{"valid/<file>": "ACCEPT", …}`` from the tables under the manifest's ``## <folder>/`` headings:
    the first cell names the file in backticks, the last cell gives the verdict."""
    verdicts: dict[str, str] = {}
    section = None
    for line in (CORPUS / "MANIFEST.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## (\S+)/", line)
        if line.startswith("## "):
            section = heading[1] if heading else None
            continue
        if section not in section_names or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        name = re.fullmatch(r"`([^`]+)`", cells[0])
        if name is None:
            continue  # the header and separator rows
        verdicts[f"{section}/{name[1]}"] = cells[-1]
    return verdicts


def document_verdict(cell: str) -> str:
    for verdict in VERDICTS:
        if cell.startswith(verdict):
            return verdict
    raise AssertionError(f"the manifest's verdict {cell!r} is none of {VERDICTS}")


DOCUMENT_VERDICTS = {
    name: document_verdict(cell) for name, cell in manifest_verdicts(("valid", "invalid")).items()
}
QUERY_VERDICTS = {
    name: cell.split()[0] for name, cell in manifest_verdicts(("queries",)).items()
}  # "valid (…)" / "invalid (…)"
CORPUS_FILES = sorted(
    f"{path.parent.name}/{path.name}"
    for folder in ("valid", "invalid")
    for path in (CORPUS / folder).iterdir()
)
QUERY_FILES = sorted(f"queries/{path.name}" for path in (CORPUS / "queries").iterdir())


def load(name: str) -> Any:
    return json.loads((CORPUS / name).read_bytes())


@cache
def validator(schema_path: Path) -> Validator:
    """The validator class the schema declares (``$schema``), with its format checker on."""
    schema = json.loads(schema_path.read_bytes())
    validator_class = validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def schema_accepts(instance: Any, schema_path: Path = SCHEMA) -> bool:
    return bool(validator(schema_path).is_valid(instance))


def models_accept(instance: Any) -> bool:
    try:
        parse_document(instance)
    except EpcisValidationError:
        return False
    return True


def test_every_corpus_file_has_a_verdict_and_every_verdict_a_file():
    assert set(CORPUS_FILES) - set(DOCUMENT_VERDICTS) == set(), "files the manifest gives no verdict"
    assert set(DOCUMENT_VERDICTS) - set(CORPUS_FILES) == set(), "verdicts of files that are not there"
    assert set(QUERY_FILES) == set(QUERY_VERDICTS)
    assert set(QUERY_VERDICTS.values()) <= {"valid", "invalid"}
    for name, verdict in DOCUMENT_VERDICTS.items():
        assert (verdict == "REFUSE") == name.startswith("invalid/"), name


# --- The schema, with its format checks on ---------------------------------------------------------


@pytest.mark.parametrize("schema_path", [*DOCUMENT_SCHEMAS, QUERY_SCHEMA], ids=lambda path: path.name)
def test_the_format_checker_really_checks_date_times_and_uris(schema_path):
    validator_class = type(validator(schema_path))
    checker = validator_class.FORMAT_CHECKER
    assert {"date-time", "uri"} <= set(checker.checkers)
    check = validator_class({"type": "string", "format": "date-time"}, format_checker=checker)
    assert check.is_valid("2026-12-01T08:30:00+08:00")
    assert not check.is_valid("22-07-2026")
    assert not check.is_valid("2026-12-01T08:30:00")
    check = validator_class({"type": "string", "format": "uri"}, format_checker=checker)
    assert check.is_valid("https://ref.gs1.org/cbv/BizStep-shipping")
    assert check.is_valid("example:myField")
    assert not check.is_valid("transforming")
    assert not check.is_valid("https://id.gs1.org/01/ 1")


@pytest.mark.parametrize("schema_path", DOCUMENT_SCHEMAS, ids=lambda path: path.name)
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_gs1s_schema_gives_the_manifests_verdict(name, schema_path):
    expected = DOCUMENT_VERDICTS[name] != "REFUSE"  # ACCEPT-OR-REFUSE files are schema-valid
    assert schema_accepts(load(name), schema_path) is expected


@pytest.mark.parametrize("name", QUERY_FILES)
def test_the_query_schema_gives_the_manifests_verdict_on_queries(name):
    assert schema_accepts(load(name), QUERY_SCHEMA) is (QUERY_VERDICTS[name] == "valid")


# --- Our models agree with the schema --------------------------------------------------------------


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_our_models_agree_with_the_schema(name):
    data = (CORPUS / name).read_bytes()
    assert models_accept(data) is schema_accepts(json.loads(data))


# Reasons the refusals of some files must name; a file the manifest adds later is checked by the
# test above and below all the same.
EXPECTED_REASONS = {
    "invalid/openepcis-EPCISDocument_without_context.json": ["@context: Field required"],
    "invalid/openepcis-ObjectEvent_with_invalid_action.json": ["event 0: epcisBody.eventList[0].action"],
    "invalid/openepcis-ObjectEvent_with_invalid_eventTime_format.json": [
        "event 0: epcisBody.eventList[0].eventTime"
    ],
    "invalid/openepcis-ObjectEvent_with_non_standard_bizStep_in_second_event.json": [
        "event 1: epcisBody.eventList[1].bizStep: 'transforming'"
    ],
    "invalid/openepcis-ObjectEvent_without_action_and_eventTime.json": [
        "event 0: epcisBody.eventList[0].action: Field required",
        "event 0: epcisBody.eventList[0].eventTime: Field required",
        "event 0: epcisBody.eventList[0].eventTimeZoneOffset: Field required",
    ],
    "invalid/openepcis-ObjectEvent_without_identifier_list.json": ["an ObjectEvent names what it is about"],
    "invalid/block4log-Option3_JSON_DLURI.jsonld": [
        "'isA' is the pre-ratification spelling",
        "type: Field required",
    ],
    "invalid/derived-gs1-Example_9.6.1-bad-eventTimeZoneOffset.jsonld": [
        "event 0: epcisBody.eventList[0].eventTimeZoneOffset: '-0600'"
    ],
    "invalid/derived-gs1-PersistentDisposition-no-schemaVersion.jsonld": ["schemaVersion: Field required"],
    "invalid/derived-gs1-SensorDataExample17-wrong-document-type.jsonld": [
        "type: Input should be 'EPCISDocument'"
    ],
}


@pytest.mark.parametrize("name", [name for name in CORPUS_FILES if DOCUMENT_VERDICTS[name] == "REFUSE"])
def test_a_refused_file_gets_readable_reasons(name):
    with pytest.raises(EpcisValidationError) as raised:
        parse_document((CORPUS / name).read_bytes())
    reasons = raised.value.errors
    assert reasons
    assert all(isinstance(reason, str) and ": " in reason for reason in reasons)
    for expected in EXPECTED_REASONS.get(name, []):
        assert any(expected in reason for reason in reasons), (expected, reasons)


def accepted_files() -> list[str]:
    return [name for name in CORPUS_FILES if DOCUMENT_VERDICTS[name] != "REFUSE"]


@pytest.mark.parametrize("name", accepted_files())
def test_each_event_alone_is_valid_with_its_context_and_refused_without(name):
    data = load(name)
    for event in data["epcisBody"]["eventList"]:
        bare = {**event, "@context": data["@context"]}
        assert schema_accepts(bare)
        parse_event(bare)
        without = {key: value for key, value in event.items() if key != "@context"}
        assert not schema_accepts(without)
        with pytest.raises(EpcisValidationError):
            parse_event(without)


@pytest.mark.parametrize("name", accepted_files())
def test_the_events_as_query_results_are_valid_for_both(name):
    data = load(name)
    query_document = {
        "@context": data["@context"],
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-12-01T09:00:00+08:00",
        "epcisBody": {
            "queryResults": {
                "queryName": "SimpleEventQuery",
                "subscriptionID": "every-cylinder",
                "resultsBody": {"eventList": data["epcisBody"]["eventList"]},
            }
        },
    }
    assert schema_accepts(query_document)
    assert models_accept(query_document)
    del query_document["epcisBody"]["queryResults"]["queryName"]
    assert not schema_accepts(query_document)
    assert not models_accept(query_document)


def test_accepted_files_map_to_scans_or_are_unmappable_never_an_error():
    outcomes: dict[str, list[MappedScan] | str] = {}
    for name in accepted_files():
        try:
            outcomes[name] = map_document(parse_document((CORPUS / name).read_bytes()))
        except Unmappable as error:
            outcomes[name] = error.reason
    # No published example is a cylinder scan of ours (GRAIs appear only under other steps).
    assert all(isinstance(outcome, str) for outcome in outcomes.values()), outcomes


# --- Mutations of the corpus: the models still agree -----------------------------------------------

REPLACEMENTS: list[Any] = [
    "",
    "x y",
    "urn:x",
    "shipping",
    "in_transit",
    "ex:foo",
    5,
    2.5,
    None,
    True,
    "2020-01-01T00:00:00Z",
    "2020-02-30T00:00:00Z",
    "+02:00",
    "+14:30",
    "KGM",
    "kg",
    "ff",
    "urn:epcglobal:cbv:bizstep:shipping",
    "https://gs1.org/voc/Mass",
    "DELETE",
    [],
    {},
    ["urn:a"],
]
ADDITIONS: list[tuple[str, Any]] = [
    ("foo", 1),
    ("ex:foo", None),
    ("@context", "x"),
    ("ilmd", {}),
    ("action", "ADD"),
    ("epcList", []),
    ("persistentDisposition", {"set": ["active"]}),
    ("readPoint", {"id": "urn:a"}),
    ("transformationID", "urn:t"),
]
MUTATIONS_PER_FILE = 60


def mutations(document: Any) -> list[Any]:
    """Every document one edit away: a key dropped or added, a value replaced, a list emptied or
    given a duplicate."""

    def nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
        found = [(path, value)]
        children = (
            value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
        )
        for key, child in children:
            found.extend(nodes(child, (*path, key)))
        return found

    def edited(path: tuple[Any, ...], edit: Any) -> Any:
        copied = copy.deepcopy(document)
        target = copied
        for key in path:
            target = target[key]
        edit(target)
        return copied

    def replace(path: tuple[Any, ...], value: Any) -> Any:
        return edited(path[:-1], lambda parent: parent.__setitem__(path[-1], copy.deepcopy(value)))

    found = []
    for path, value in nodes(document):
        if isinstance(value, dict):
            for key in value:
                found.append(edited(path, lambda target, key=key: target.pop(key)))
            for key, added in ADDITIONS:
                found.append(
                    edited(path, lambda target, key=key, added=added: target.__setitem__(key, added))
                )
        elif isinstance(value, list) and path:
            found.append(replace(path, []))
            if value:
                found.append(replace(path, [*value, value[0]]))
        elif path:
            found.extend(replace(path, replacement) for replacement in REPLACEMENTS)
    return found


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_one_edit_away_from_a_corpus_file_the_models_still_agree_with_the_schema(name):
    candidates = mutations(load(name))
    sample = random.Random(name).sample(candidates, min(MUTATIONS_PER_FILE, len(candidates)))
    disagreements = [
        (json.dumps(mutant)[:300], schema_accepts(mutant))
        for mutant in sample
        if models_accept(mutant) != schema_accepts(mutant)
    ]
    assert disagreements == []


def test_the_one_known_difference_newline_terminated_values():
    """The schema's checkers match with ``$``, so they let one trailing newline through; we do not."""
    data = load("valid/gs1-Example_9.6.1-ObjectEvent.jsonld")
    data["epcisBody"]["eventList"][0]["readPoint"]["id"] += "\n"
    assert schema_accepts(data)
    assert not models_accept(data)


# --- Our own events ---------------------------------------------------------------------------------

STATION = "urn:epc:id:sgln:0614141.00777.0"
AT = datetime(2026, 12, 1, 8, 30, tzinfo=timezone(timedelta(hours=8)))


def our_scan(kind: str) -> MappedScan:
    return MappedScan(
        kind=kind,
        cylinder_codes=("0401234566666387",) if kind == "fill" else ("0401234566666387", "GZ-TH-000123"),
        at=AT,
        read_point=STATION,
        biz_location=None,
        passed=True if kind == "inspect" else None,
        net_mass_kg=14.5 if kind == "fill" else None,
        event_id="urn:uuid:0b9f3a3e-5d7e-4f1f-9d1e-2c3b4a5d6e7f",
    )


@pytest.mark.parametrize("kind", SCAN_KINDS)
def test_the_object_event_of_each_scan_kind_is_valid_for_gs1s_schema(kind):
    event = scan_to_object_event(our_scan(kind))
    document = epcis_document([event], created_at=datetime(2026, 12, 1, tzinfo=UTC))
    for schema_path in DOCUMENT_SCHEMAS:
        assert schema_accepts(document, schema_path), list(validator(schema_path).iter_errors(document))
        assert schema_accepts({**event, "@context": document["@context"]}, schema_path)
    assert map_document(parse_document(document)) == [our_scan(kind)]

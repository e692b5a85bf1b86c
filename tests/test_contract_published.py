"""The checked-in contract (contract/published/) is exactly what the code generates."""

from __future__ import annotations

from contract.publish import PUBLISHED, generate


def test_the_published_contract_matches_the_code():
    expected = generate()
    on_disk = {path: path.read_text() for path in PUBLISHED.rglob("*.json")}
    missing = sorted(str(p.relative_to(PUBLISHED)) for p in expected if p not in on_disk)
    stale = sorted(str(p.relative_to(PUBLISHED)) for p in on_disk if p not in expected)
    changed = sorted(
        str(p.relative_to(PUBLISHED)) for p in expected if p in on_disk and on_disk[p] != expected[p]
    )
    assert (missing, stale, changed) == ([], [], []), (
        "the contract changed: review it, then run `make contract`"
    )


def test_every_event_is_in_the_asyncapi_document_with_its_subject():
    import json

    document = json.loads((PUBLISHED / "asyncapi.json").read_text())
    assert document["asyncapi"] == "3.0.0"
    assert "case.case.closed" in document["channels"]
    closed = document["components"]["messages"]["CaseClosed"]
    assert closed["name"] == "case.case.closed.v1"
    assert closed["payload"]["properties"]["data"]["$ref"] == "events/case.case.closed.v1.schema.json"

"""Every document of the EPCIS conformance corpus captured at the endpoint, on a fresh store each,
with the manifest's verdict: ACCEPT files are captured and queryable, REFUSE files are refused with
nothing stored, ACCEPT-OR-REFUSE files get a clean outcome and never half of the document.

The corpus is read from ``../shared/conformance/epcis`` at test time; without it these tests skip
(``test_epcis_corpus`` says so)."""

from __future__ import annotations

import json

import asyncpg
import pytest

from citygrid.settings import to_libpq_url
from services.gas.tests.conftest import Gas
from services.gas.tests.test_epcis_corpus import CORPUS, CORPUS_FILES, DOCUMENT_VERDICTS

CAPTURER = ("gas:read", "gas:ingest")


async def stored_events(gas: Gas) -> int:
    connection = await asyncpg.connect(to_libpq_url(gas.runtime.settings.database_url))
    try:
        return int(
            await connection.fetchval(
                "SELECT (SELECT count(*) FROM epcis_events) + (SELECT count(*) FROM scans)"
            )
        )
    finally:
        await connection.close()


@pytest.mark.parametrize("name", CORPUS_FILES)
async def test_the_endpoint_holds_the_manifests_verdict(gas: Gas, name: str) -> None:
    await gas.register_demo()
    body = (CORPUS / name).read_bytes()
    response = await gas.client.post(
        "/v1/epcis/capture",
        content=body,
        headers={**gas.as_(scopes=CAPTURER), "content-type": "application/json"},
    )
    assert response.status_code < 500, response.text
    verdict = DOCUMENT_VERDICTS[name]
    captured = response.status_code == 202 and response.json()["success"] is True
    if verdict == "ACCEPT":
        assert captured, response.text
        listed = await gas.client.get(
            "/v1/epcis/events", params={"perPage": "500"}, headers=gas.as_(scopes=CAPTURER)
        )
        events = listed.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        expected = len(json.loads(body)["epcisBody"]["eventList"])
        assert len(events) == expected, "every event of the document is queryable"
    elif verdict == "REFUSE":
        assert not captured, response.text
        assert response.status_code == 400 or response.json()["success"] is False
        if response.status_code == 400:
            assert response.json()["type"] == "epcisException:ValidationException"
        assert await stored_events(gas) == 0, "nothing of a refused document is stored"
    else:
        assert response.status_code in (202, 400, 501), response.text
        if not captured:
            assert await stored_events(gas) == 0, "a refused document is refused whole"

"""Evidence photos through the gateway: raw image bodies in, the same bytes out, what is refused,
and handling that needs an after-photo of the current round."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.images import jpeg, png
from tests.test_case_flow import add_photo, report, step

UNIT = "tianhe-sanitation"


async def accepted(stack) -> str:
    case_id = (await report(stack)).json()["id"]
    await step(stack, case_id, "register", 1)
    await step(stack, case_id, "dispatch", 2, {"unit": UNIT})
    await step(stack, case_id, "accept", 3)
    return str(case_id)


async def test_a_photo_goes_up_as_a_raw_body_and_comes_back_byte_for_byte_through_the_gateway(stack):
    case_id = await accepted(stack)
    photo = png(width=40, height=30)
    uploaded = await add_photo(stack, case_id, "after", data=photo)
    assert uploaded.status_code == 201, uploaded.text
    record = uploaded.json()
    digest = hashlib.sha256(photo).hexdigest()
    assert record["kind"] == "after"
    assert record["sha256"] == digest
    assert record["content_type"] == "image/png"
    assert record["size_bytes"] == len(photo)
    assert record["uploaded_by_name"] == "clerk"
    assert uploaded.headers["location"].endswith(f"/evidence/{record['id']}")

    content = await stack.client.get(f"/api/case/{record['url']}", headers=stack.as_("reader"))
    assert content.status_code == 200
    assert content.content == photo
    assert content.headers["content-type"] == "image/png"
    assert content.headers["etag"] == f'"{digest}"'
    assert content.headers["x-content-type-options"] == "nosniff"
    cached = await stack.client.get(
        f"/api/case/{record['url']}", headers=stack.as_("reader", **{"If-None-Match": f'"{digest}"'})
    )
    assert cached.status_code == 304
    assert cached.content == b""

    stored = stack.infrastructure.workdir / "blobs" / "case" / digest[:2] / digest[2:4] / digest
    assert stored.read_bytes() == photo


async def test_a_jpeg_is_accepted_and_the_case_lists_its_photos_in_order(stack):
    case_id = (await report(stack)).json()["id"]
    first = await add_photo(stack, case_id, "before", data=jpeg(), content_type="image/jpeg")
    second = await add_photo(stack, case_id, "before")
    assert first.status_code == second.status_code == 201
    assert first.json()["content_type"] == "image/jpeg"
    listed = await stack.client.get(f"/api/case/v1/cases/{case_id}/evidence", headers=stack.as_("reader"))
    assert [e["id"] for e in listed.json()["items"]] == [first.json()["id"], second.json()["id"]]
    one = await stack.client.get(
        f"/api/case/v1/cases/{case_id}/evidence/{first.json()['id']}", headers=stack.as_("reader")
    )
    assert one.json() == first.json()


async def test_the_same_photo_sent_twice_is_one_record(stack):
    case_id = (await report(stack)).json()["id"]
    photo = png()
    first = await add_photo(stack, case_id, "before", data=photo)
    again = await add_photo(stack, case_id, "before", data=photo)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    listed = await stack.client.get(f"/api/case/v1/cases/{case_id}/evidence", headers=stack.as_("reader"))
    assert len(listed.json()["items"]) == 1


async def test_what_is_not_a_jpeg_or_png_of_the_declared_type_is_refused_and_nothing_is_kept(stack):
    case_id = (await report(stack)).json()["id"]
    script = b"#!/bin/sh\nrm -rf /\n"
    truncated = png()[:-12]
    for data, content_type, status, code in [
        (script, "image/png", 422, "blob.not_an_image"),
        (script, "text/plain", 415, "http.unsupported_media_type"),
        (png(), "application/json", 415, "http.unsupported_media_type"),
        (png(), "image/gif", 415, "http.unsupported_media_type"),
        (jpeg(), "image/png", 422, "evidence.content_type_mismatch"),
        (truncated, "image/png", 422, "blob.not_an_image"),
        (b"", "image/png", 422, "blob.not_an_image"),
    ]:
        response = await add_photo(stack, case_id, "before", data=data, content_type=content_type)
        assert (response.status_code, response.json()["code"]) == (status, code), (content_type, data[:8])
        assert response.headers["content-type"].startswith("application/problem+json")
    unknown_kind = await add_photo(stack, case_id, "selfie")
    assert unknown_kind.status_code == 422
    listed = await stack.client.get(f"/api/case/v1/cases/{case_id}/evidence", headers=stack.as_("reader"))
    assert listed.json()["items"] == []
    assert not (stack.infrastructure.workdir / "blobs" / "case").exists() or not any(
        path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(script).hexdigest()
        for path in (stack.infrastructure.workdir / "blobs" / "case").rglob("*")
    )


async def test_a_photo_over_the_evidence_limit_is_413_and_a_body_over_the_image_limit_too(stack):
    case_id = (await report(stack)).json()["id"]
    settings = stack.case_app.state.kit.settings
    over_evidence = png(padding=settings.evidence_max_bytes)
    refused = await add_photo(stack, case_id, "before", data=over_evidence)
    assert (refused.status_code, refused.json()["code"]) == (413, "blob.too_large")
    assert refused.json()["limit"] == settings.evidence_max_bytes
    over_body = png(padding=settings.max_image_body_bytes)
    too_big = await add_photo(stack, case_id, "before", data=over_body)
    assert (too_big.status_code, too_big.json()["code"]) == (413, "http.payload_too_large")
    json_sized = png(padding=settings.max_body_bytes)  # over the JSON limit, under the image one
    assert (await add_photo(stack, case_id, "before", data=json_sized)).status_code == 201


async def test_a_photo_belongs_to_a_stage_and_a_role(stack):
    case_id = (await report(stack)).json()["id"]
    too_early = await add_photo(stack, case_id, "after")
    assert (too_early.status_code, too_early.json()["code"]) == (409, "case.invalid_transition")
    no_role = await add_photo(stack, case_id, "before", consumer="reporter")
    assert (no_role.status_code, no_role.json()["code"]) == (403, "case.role_not_allowed")
    read_only = await add_photo(stack, case_id, "before", consumer="reader")
    assert (read_only.status_code, read_only.json()["code"]) == (403, "auth.missing_scope")
    nowhere = await add_photo(stack, "00000000-0000-0000-0000-000000000000", "before")
    assert (nowhere.status_code, nowhere.json()["code"]) == (404, "case.not_found")
    missing = await stack.client.get(
        f"/api/case/v1/cases/{case_id}/evidence/00000000-0000-0000-0000-000000000000/content",
        headers=stack.as_("reader"),
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "evidence.not_found")


async def test_handling_without_an_after_photo_is_refused_and_changes_nothing(stack):
    case_id = await accepted(stack)
    before = await add_photo(stack, case_id, "before")
    assert before.status_code == 201
    refused = await step(stack, case_id, "handle", 4, photo=False)
    assert (refused.status_code, refused.json()["code"]) == (422, "case.after_photo_required")
    case = (await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("reader"))).json()
    assert (case["status"], case["version"]) == ("accepted", 4)
    assert (await add_photo(stack, case_id, "after")).status_code == 201
    handled = await step(stack, case_id, "handle", 4, photo=False)
    assert handled.json()["status"] == "handled"


async def test_after_a_rework_the_unit_needs_a_new_after_photo(stack):
    case_id = await accepted(stack)
    photo = png()
    await add_photo(stack, case_id, "after", data=photo)
    assert (await step(stack, case_id, "handle", 4, photo=False)).status_code == 200
    check = await add_photo(stack, case_id, "verification")
    assert check.status_code == 201
    reworked = await step(stack, case_id, "verify", 5, {"passed": False, "note": "still overflowing"})
    assert reworked.json()["status"] == "accepted"
    old_photo_only = await step(stack, case_id, "handle", 6, photo=False)
    assert old_photo_only.json()["code"] == "case.after_photo_required"
    assert (await step(stack, case_id, "handle", 6)).json()["status"] == "handled"


async def test_an_image_typed_body_sent_to_a_json_route_is_refused_with_415_and_nothing_is_written(stack):
    photo = png(padding=2 * stack.case_app.state.kit.settings.max_body_bytes)
    response = await stack.client.post(
        "/api/case/v1/cases", content=photo, headers=stack.as_("clerk", **{"Content-Type": "image/png"})
    )
    assert (response.status_code, response.json()["code"]) == (415, "http.unsupported_media_type")
    listed = await stack.client.get("/api/case/v1/cases", headers=stack.as_("reader"))
    assert listed.json()["items"] == []


async def test_a_case_with_its_history_and_photos_is_read_in_one_statement_and_as_the_workflow_tells_it(
    stack,
):
    from sqlalchemy import event

    case_id = str((await report(stack)).json()["id"])
    photos = [(await add_photo(stack, case_id, "before", data=png(width=w))).json() for w in (10, 11)]
    await step(stack, case_id, "register", 1)
    await step(stack, case_id, "dispatch", 2, {"unit": UNIT})
    # A step answers with the case as its transaction left it, read through the ORM.
    accepted_answer = await step(stack, case_id, "accept", 3)
    assert accepted_answer.status_code == 200, accepted_answer.text
    pool = stack.case_runtime.engine.sync_engine.pool
    statements: list[str] = []

    def record(query: Any) -> None:
        # Only this read's statements: background jobs share the pool, never with this case's id.
        if case_id in str(query.args):
            statements.append(query.query)

    # Counted on the driver, under SQLAlchemy and beside it: every statement a connection runs.
    def watch(dbapi_connection: Any, record_: Any, proxy: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(record)

    def unwatch(dbapi_connection: Any, record_: Any) -> None:
        dbapi_connection.driver_connection.remove_query_logger(record)

    event.listen(pool, "checkout", watch)
    event.listen(pool, "checkin", unwatch)
    try:
        detail = await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("reader"))
    finally:
        event.remove(pool, "checkout", watch)
        event.remove(pool, "checkin", unwatch)
    assert detail.status_code == 200, detail.text
    assert len(statements) == 1, statements
    body = detail.json()
    assert [entry["action"] for entry in body["history"]] == ["report", "register", "dispatch", "accept"]
    assert [item["id"] for item in body["evidence"]] == [photo["id"] for photo in photos]
    assert body["evidence"] == photos
    reader_view_of_step = await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("clerk"))
    assert reader_view_of_step.json() == accepted_answer.json()

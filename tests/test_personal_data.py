"""No personal data where masking cannot reach: error text, dead letters, outbox and failure rows,
logs; and masking of addresses, free text and staff positions for callers without ``pii:read``.

The end-to-end test runs on the real stack (PostgreSQL, NATS, the case service behind the
gateway): a case reported with a reporter's phone, name, e-mail and ID number that fails on a
CHECK constraint and on a trigger quoting its fields, through HTTP and through the case service's
own event handler (counted failures, then a dead letter), and an event the handler refuses. Every
log record of every logger at DEBUG and every text column of the kit's tables is then searched.
The same run with the scrubbing switched off must find the data: the test can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import nats.js.errors
import pytest
from sqlalchemy import select, text

import citygrid.inbox
import citygrid.logging
import citygrid.outbox
from citygrid.db import create_engine, create_sessionmaker, unit_of_work
from citygrid.events import CloudEvent
from citygrid.inbox import ConsumerRunner
from citygrid.logging import (
    JsonFormatter,
    PersonalDataFilter,
    configure_logging,
    scrub_record,
)
from citygrid.masking import mask_address, mask_distance, mask_name, mask_position, mask_text
from citygrid.messaging import ensure_stream, stream_config
from citygrid.outbox import OutboxMessage, OutboxRelay, RoundResult
from citygrid.scrub import scrub, scrub_error
from citygrid.settings import ServiceSettings
from citygrid.testing import wait_until
from tests.test_case_extensions import consumer
from tests.test_case_flow import REPORT, step
from tests.test_case_intake import alarm, as_event
from tests.test_messaging import ProbeHappened, kit_database  # noqa: F401 - fixture

PHONE = "13987654321"
NAME = "欧阳明华"
ID_NUMBER = "44010619900307123X"
EMAIL = "ouyang.minghua@example.cn"
# What must appear nowhere, each with the fragment that would still identify it when half-masked.
SECRETS = {
    "phone": PHONE,
    "phone's last eight digits": PHONE[-8:],
    "name": NAME,
    "given name": NAME[2:],
    "ID number": ID_NUMBER,
    "ID number's birth date": ID_NUMBER[6:14],
    "e-mail": EMAIL,
}
KIT_TABLES = ("dead_letters", "outbox", "inbox_failures")
UNIT = "tianhe-sanitation"
CASE_POINT = [113.3245, 23.1291]  # REPORT's


def leaks(texts: dict[str, str]) -> list[tuple[str, str, str]]:
    """(where, what, the line around it) for every secret found in ``texts``."""
    found = []
    for where, value in texts.items():
        for what, secret in SECRETS.items():
            at = value.find(secret)
            if at >= 0:
                found.append((where, what, value[max(0, at - 80) : at + 80]))
    return found


# -- the scrubber ------------------------------------------------------------------------------------


def test_sqlalchemys_sections_and_postgresqls_values_are_cut_and_the_error_stays_readable():
    error = (
        "(sqlalchemy.dialects.postgresql.asyncpg.IntegrityError) <class "  # noqa: S608 - not a query
        "'asyncpg.exceptions.CheckViolationError'>: new row for relation \"cases\" violates check "
        f'constraint "ck_cases_x"\nDETAIL:  Failing row contains (1, {NAME}, {PHONE}, a\n\nb, {NAME}).\n'
        f"[SQL: INSERT INTO cases (a, b) VALUES ($1::VARCHAR, $2::VARCHAR)]\n[parameters: ('{PHONE}', "
        f"'{NAME}')]\n(Background on this error at: https://sqlalche.me/e/20/gkpj)"
    )
    cleaned = scrub(error)
    assert leaks({"scrubbed": cleaned}) == []
    assert cleaned == (
        "(sqlalchemy.dialects.postgresql.asyncpg.IntegrityError) <class "
        "'asyncpg.exceptions.CheckViolationError'>: new row for relation \"cases\" violates check "
        'constraint "ck_cases_x"\nDETAIL:  Failing row contains (hidden).\n[SQL: hidden]\n'
        "(Background on this error at: https://sqlalche.me/e/20/gkpj)"
    )
    unique = f"duplicate key value violates unique constraint\nDETAIL:  Key (reporter_phone)=({PHONE}) already exists."
    assert scrub(unique).endswith("Key (reporter_phone)=(hidden) already exists.")
    argument = f"invalid input for query argument $3: '{NAME}' (expected int, got str)"
    assert scrub(argument) == "invalid input for query argument $3: [hidden]"
    pydantic = f"String too long [type=string_too_long, input_value='{NAME} {PHONE} ...xx', input_type=str]"
    assert scrub(pydantic) == "String too long [type=string_too_long, input_value=[hidden], input_type=str]"


@pytest.mark.parametrize(
    "phone",
    [
        "13987654321",
        "139 8765 4321",
        "139-8765-4321",
        "+86 139 8765 4321",
        "+8613987654321",
        "008613987654321",
        "(+86)13987654321",
        "020-87654321",
        "(020) 8765 4321",
        "0755 2345 6789",
        "+86 20 8765 4321",
        "１３９８７６５４３２１",
    ],
)
def test_every_form_of_a_phone_number_is_replaced(phone):
    assert scrub(f"电话{phone}，请回电") == "电话[phone]，请回电"
    assert scrub(f"call {phone}.") == "call [phone]."


def test_id_numbers_e_mails_labelled_fields_and_url_passwords_are_replaced():
    assert scrub(f"id {ID_NUMBER} and {ID_NUMBER.lower()}") == "id [id-number] and [id-number]"
    assert scrub(f"mail {EMAIL}") == "mail [email]"
    assert scrub(f"Principal(subject='p-9', name='{NAME}', roles=())") == (
        "Principal(subject='p-9', name='[name]', roles=())"
    )
    assert scrub(json.dumps({"reporter_name": NAME, "reporter_phone": None}, ensure_ascii=False)) == (
        '{"reporter_name": "[name]", "reporter_phone": null}'
    )
    assert scrub(f"姓名：{NAME}，身份证号：{ID_NUMBER}，车牌：粤A12345，住址：天河路385号") == (
        "姓名：[name]，身份证号：[id-number]，车牌：[plate]，住址：[address]"
    )
    assert scrub("nats://case:s3cret@127.0.0.1:4222") == "nats://case:[hidden]@127.0.0.1:4222"


@pytest.mark.parametrize(
    "line",
    [
        "event 550e8400-e29b-41d4-a716-446655440000 published",
        "at 2026-11-26T08:00:00.123+00:00 in 0.0042s",
        "grid 440106001001001 case 440106-20261126-000012 version 3",
        "consumer case-vision-alarm-confirmed: event 7 failed (failure 2 of 5), retry in 5.0s",
        "127.0.0.1:54321 - POST /v1/cases 201",
        "hotline 12319, category 20106",
    ],
)
def test_ordinary_log_lines_pass_unchanged(line):
    assert scrub(line) is line or scrub(line) == line


def test_scrubbing_twice_changes_nothing_more():
    once = scrub(
        f"[parameters: ('{PHONE}',)] Failing row contains ({NAME}). name='{NAME}' {EMAIL} "
        f"reporter_name={NAME}, reporter_phone={PHONE}, 联系人：{NAME}，"
    )
    assert scrub(once) == once


def test_scrub_error_keeps_the_class():
    assert scrub_error(ValueError(f"bad phone {PHONE}")) == "ValueError: bad phone [phone]"


# -- masking -------------------------------------------------------------------------------------------


def test_free_text_is_masked_as_the_structured_fields_are():
    assert mask_text(f"联系人：{NAME}，电话 {PHONE}，身份证 {ID_NUMBER}，{EMAIL}") == (
        "联系人：欧**，电话 139****4321，身份证 440106********123X，o***@example.cn"
    )
    assert mask_text("+86 20 8765 4321") == "020****4321"
    assert mask_text("Overflowing bin at the bus stop") == "Overflowing bin at the bus stop"
    assert mask_text(None) is None


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("广州市天河区天河路385号太古汇2座1501室", "广州市天河区天河路**号太古汇**座**室"),
        ("丽江花园丽波楼三栋十二楼", "丽江花园丽波楼**栋**楼"),
        ("Room 1501, Block B, 385 Tianhe Road", "Room **, Block B, ** Tianhe Road"),
        ("中山二路", "中山二路"),
        ("Tianhe Road bus stop", "Tianhe Road bus stop"),
    ],
)
def test_an_address_keeps_its_names_and_loses_its_numbers(address, masked):
    assert mask_address(address) == masked


def test_a_masked_name_does_not_tell_its_length():
    assert {mask_name(name) for name in ("张三", "欧阳明华", "司马相如之")} == {"张**", "欧**", "司**"}
    assert len({len(mask_name(name) or "") for name in ("张三", "欧阳明华", "Li Ming")}) == 1


def test_a_position_is_rounded_to_about_a_hundred_metres():
    assert mask_position(113.32487, 23.12934) == (113.325, 23.129)
    assert mask_distance(33.4) == 30.0


# -- the log filter -------------------------------------------------------------------------------------


def record(msg: str, *args: object, name: str = "thirdparty.lib", exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args or None, exc_info)


def test_the_filter_scrubs_message_and_arguments_and_leaves_clean_records_alone():
    dirty = record("could not call %s for %r", PHONE, {"name": NAME})
    assert PersonalDataFilter().filter(dirty) is True
    assert dirty.getMessage() == "could not call [phone] for {'name': '[name]'}"
    clean = record("consumer %s: %d events", "case-vision", 3)
    msg, args = clean.msg, clean.args
    PersonalDataFilter().filter(clean)
    assert (clean.msg, clean.args) == (msg, args)


def test_a_traceback_quoting_personal_data_is_kept_scrubbed_and_its_exception_dropped():
    message = f"insert failed\nDETAIL:  Failing row contains ({NAME}, {PHONE})."
    try:
        raise RuntimeError(message)
    except RuntimeError:
        failed = record("unhandled error", exc_info=sys.exc_info())
    scrub_record(failed)
    assert failed.exc_info is None
    line = json.loads(JsonFormatter("case").format(failed))
    assert line["error"].endswith("RuntimeError: insert failed\nDETAIL:  Failing row contains (hidden).")
    assert leaks({"json": json.dumps(line, ensure_ascii=False)}) == []
    assert leaks({"plain": logging.Formatter().format(failed)}) == []


def test_sqlalchemys_logged_parameters_and_rows_are_hidden():
    from sqlalchemy.sql.util import _repr_params, _repr_row

    params = record(
        "[%s] %r", "generated in 0.0001s", _repr_params((PHONE, NAME), 10), name="sqlalchemy.engine.Engine"
    )
    row = record("Row %r", _repr_row((NAME, "x")), name="sqlalchemy.engine.Engine")  # type: ignore[arg-type]
    for item in (params, row):
        scrub_record(item)
        assert leaks({"record": item.getMessage()}) == []
    assert params.getMessage() == "[generated in 0.0001s] [hidden]"


def test_configured_logging_scrubs_every_record_for_every_handler(caplog):
    stream = io.StringIO()
    with kit_logging(stream):
        caplog.set_level(logging.DEBUG)
        logging.getLogger("some.library").warning("reporter_name=%s, %s", NAME, PHONE)
        logging.getLogger("some.library").info("姓名：%s 电话：%s 邮箱：%s", NAME, PHONE, EMAIL)
        logging.getLogger().error("on root: %s", ID_NUMBER)
    assert "姓名：[name] 电话：[phone] 邮箱：[email]" in stream.getvalue()
    assert len(caplog.records) == 3
    assert leaks({"json": stream.getvalue(), "caplog": caplog.text}) == []


def test_a_name_without_a_label_is_not_recognised():
    # Why whole rows and parameter lists are cut rather than searched: see docs/personal-data.md.
    assert scrub(f"reported by {NAME}") == f"reported by {NAME}"


# -- outbox.last_error --------------------------------------------------------------------------------


async def test_a_refused_events_error_is_scrubbed_before_it_is_stored_in_the_outbox(
    kit_database,  # noqa: F811
):
    engine = create_engine(ServiceSettings(service_name="pii-probe", database_url=kit_database))
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session, session.begin():
            await session.execute(text("TRUNCATE outbox"))
        async with unit_of_work(sessions, source="probe") as uow:
            uow.publish(ProbeHappened(n=1), aggregate_id="thing-1", version=1)
        relay = OutboxRelay(sessions=sessions, nats=None)  # type: ignore[arg-type]
        async with sessions() as session, session.begin():
            (row,) = [
                citygrid.outbox.ClaimedRow(*found)
                for found in (
                    await session.execute(
                        select(
                            OutboxMessage.seq,
                            OutboxMessage.event_id,
                            OutboxMessage.subject,
                            OutboxMessage.aggregate_id,
                            OutboxMessage.payload,
                            OutboxMessage.attempts,
                            text("false"),
                        )
                    )
                ).all()
            ]
            refusal = f"PublishRefused: 400/10999: message refused: {{'reporter_phone': '{PHONE}', 'name': '{NAME}'}}"
            await relay._record(session, RoundResult(acked=[], refused=[(row, refusal)]))
        async with sessions() as session:
            stored = await session.scalar(select(OutboxMessage.last_error))
        assert (
            stored
            == "PublishRefused: 400/10999: message refused: {'reporter_phone': '[phone]', 'name': '[name]'}"
        )
    finally:
        await engine.dispose()


# -- end to end: HTTP, event handler, dead letters, logs ----------------------------------------------

PROBE_DDL = [
    "ALTER TABLE cases DROP CONSTRAINT IF EXISTS ck_cases_pii_probe",
    "ALTER TABLE cases ADD CONSTRAINT ck_cases_pii_probe CHECK (description NOT LIKE '%pii-check%')",
    """CREATE OR REPLACE FUNCTION pii_probe_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.description LIKE '%pii-raise%' THEN
        RAISE EXCEPTION 'case refused: reporter_name=%, reporter_phone=%, reporter_email=%, description=%',
          NEW.reporter_name, NEW.reporter_phone, NEW.reporter_email, NEW.description;
      END IF;
      RETURN NEW;
    END $$""",
    "DROP TRIGGER IF EXISTS pii_probe ON cases",
    "CREATE TRIGGER pii_probe BEFORE INSERT ON cases FOR EACH ROW EXECUTE FUNCTION pii_probe_refuse()",
]
PROBE_CLEANUP = [
    "DROP TRIGGER IF EXISTS pii_probe ON cases",
    "DROP FUNCTION IF EXISTS pii_probe_refuse()",
    "ALTER TABLE cases DROP CONSTRAINT IF EXISTS ck_cases_pii_probe",
]


@contextlib.contextmanager
def kit_logging(stream: io.StringIO) -> Iterator[None]:
    """The kit's production logging (``configure_logging``) writing to ``stream``, with pytest's
    capture handlers kept on the root logger beside it; everything put back afterwards."""
    root = logging.getLogger()
    handlers, level, filters = list(root.handlers), root.level, list(root.filters)
    factory = logging.getLogRecordFactory()
    configure_logging("case", "DEBUG", stream=stream)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.filters[:] = filters
        root.setLevel(level)
        logging.setLogRecordFactory(factory)


def every_logger_at_debug(caplog, monkeypatch) -> None:
    caplog.set_level(logging.DEBUG)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            caplog.set_level(logging.DEBUG, logger=name)
            monkeypatch.setattr(logger, "disabled", False)


def disable_scrubbing(monkeypatch) -> None:
    monkeypatch.setattr(citygrid.logging, "scrub_record", lambda record: record)
    monkeypatch.setattr(citygrid.inbox, "scrub", lambda text: text)
    monkeypatch.setattr(citygrid.inbox, "scrub_error", lambda error: f"{type(error).__name__}: {error}")
    monkeypatch.setattr(citygrid.outbox, "scrub", lambda text: text)


async def kit_table_texts(sessions) -> dict[str, str]:
    """Every text, varchar and JSON column of the kit's tables, row by row."""
    texts: dict[str, str] = {}
    async with sessions() as session:
        columns = (
            await session.execute(
                text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = ANY(:tables) "
                    "AND data_type IN ('text', 'character varying', 'json', 'jsonb')"
                ),
                {"tables": list(KIT_TABLES)},
            )
        ).all()
        assert {table for table, _ in columns} == set(KIT_TABLES)
        for table, column in columns:
            values = await session.scalars(text(f'SELECT "{column}"::text FROM "{table}"'))  # noqa: S608
            for n, value in enumerate(values.all()):
                if value is not None:
                    texts[f"{table}.{column}[{n}]"] = value
    return texts


def rendered(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return "\n".join(formatter.format(item) for item in records)


def problem_event(marker: str, **overrides: Any) -> CloudEvent:
    description = f"{marker} 垃圾满溢，联系人：{NAME}，电话 {PHONE}，身份证 {ID_NUMBER}，邮箱 {EMAIL}"
    return as_event(alarm(description=description, **overrides), aggregate_id=str(uuid.uuid4()))


async def publish(stack, event: CloudEvent) -> None:
    client = await nats.connect(stack.infrastructure.nats_url)
    try:
        await ensure_stream(client.jetstream(), stream_config("vision"))
        await client.jetstream().publish(
            event.nats_subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.id}
        )
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def probe_runner(stack) -> AsyncIterator[ConsumerRunner]:
    """The case service's own alarm handler, under a durable of its own that gives up after two
    failures one second apart (the service's spec waits minutes), on the service's database."""
    runtime = stack.case_runtime
    spec = dataclasses.replace(
        runtime.consumers["case-vision-alarm-confirmed"].spec,
        name="pii-probe-alarms",
        inbox="pii-probe-alarms",
        max_deliver=2,
        backoff=(1.0,),
    )
    client = await nats.connect(stack.infrastructure.nats_url)
    await ensure_stream(client.jetstream(), stream_config("vision"))  # as the vision service declares it
    runner = ConsumerRunner(spec, sessions=runtime.db, source="case")
    task = asyncio.create_task(runner.run(client.jetstream()))
    try:
        await wait_until(lambda: runner.running or task.done())
        if task.done():
            task.result()
        yield runner
    finally:
        await runner.drain(timeout=10.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def settled(stack, durable: str, delivered: int) -> bool:
    client = await nats.connect(stack.infrastructure.nats_url)
    try:
        info = await client.jetstream().consumer_info("VISION", durable)
    except nats.js.errors.NotFoundError:
        return False
    finally:
        await client.close()
    return bool(
        info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= delivered
    )


async def provoke_everything(stack) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Report, fail and dead-letter records carrying the secrets; what the callers were answered."""
    answers: dict[str, str] = {}
    reporter = {"name": NAME, "phone": PHONE, "email": EMAIL}
    address = "天河路385号太古汇2座1501室"
    ok = await stack.client.post(
        "/api/case/v1/cases",
        json={**REPORT, "reporter": reporter, "address": address},
        headers=stack.as_("clerk"),
    )
    assert ok.status_code == 201, ok.text
    case_id = ok.json()["id"]
    for who in ("reader", "admin"):  # reads: SQLAlchemy logs the rows it fetches at DEBUG
        read = await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_(who))
        assert read.status_code == 200
    assert read.json()["reporter"]["phone"] == PHONE  # the admin has pii:read: the data is there
    for marker in ("pii-check", "pii-raise"):
        failed = await stack.client.post(
            "/api/case/v1/cases",
            json={
                **REPORT,
                "description": f"{marker} 垃圾满溢 身份证 {ID_NUMBER}",
                "reporter": reporter,
                "address": address,
            },
            headers=stack.as_("clerk"),
        )
        assert failed.status_code == 500, failed.text
        assert failed.json()["code"] == "internal_error"
        answers[f"HTTP 500 to {marker}"] = failed.text

    valid = as_event(alarm(), aggregate_id=str(uuid.uuid4()))
    # Too long an address: the handler refuses the event at once, with a DomainError quoting it.
    refused = valid.model_copy(update={"data": {**valid.data, "address": f"{NAME} {PHONE} " + "x" * 300}})
    events = [refused, problem_event("pii-check"), problem_event("pii-raise")]
    failures: set[tuple[str, str]] = set()
    async with probe_runner(stack):
        for event in events:
            await publish(stack, event)

        async def done() -> bool:
            # The runner deletes a failure row when it dead-letters the event: read them meanwhile.
            async with stack.case_runtime.db() as session:
                rows = (await session.execute(text("SELECT consumer, last_error FROM inbox_failures"))).all()
            failures.update((str(consumer), str(error)) for consumer, error in rows)
            return await settled(stack, "pii-probe-alarms", len(events))

        await wait_until(done, timeout=30.0)
    letters = await stack.client.get("/api/case/v1/admin/dead-letters", headers=stack.as_("admin"))
    assert letters.status_code == 200
    answers["admin dead-letter list"] = letters.text
    items = letters.json()["items"]
    mine = [item for item in items if item["consumer"] == "pii-probe-alarms"]
    assert len(mine) == 3, items
    return answers, failures


@pytest.mark.parametrize("scrubbing", [True, False], ids=["scrubbed", "unscrubbed-must-leak"])
async def test_no_log_line_and_no_kit_table_carries_the_phone_the_name_or_the_id_number(
    stack, caplog, monkeypatch, scrubbing
):
    every_logger_at_debug(caplog, monkeypatch)
    if not scrubbing:
        disable_scrubbing(monkeypatch)
    stream = io.StringIO()
    async with stack.case_runtime.db() as session, session.begin():
        for statement in PROBE_DDL:
            await session.execute(text(statement))
    try:
        with kit_logging(stream):
            answers, failures = await provoke_everything(stack)
            await asyncio.sleep(0.2)  # the last log lines of the consumers and the relay
            # The records made under the kit's logging: one a late retry makes after it is put back
            # is made without the kit's record factory, as no record of a running service is.
            records = list(caplog.records)
    finally:
        async with stack.case_runtime.db() as session, session.begin():
            for statement in PROBE_CLEANUP:
                await session.execute(text(statement))
    tables = await kit_table_texts(stack.case_runtime.db)
    failure_texts = {f"inbox_failures seen[{n}]": error for n, (_, error) in enumerate(sorted(failures))}
    places = {
        "JSON log stream": stream.getvalue(),
        "captured log records": rendered(records),
        **tables,
        **failure_texts,
        **answers,
    }
    # What happened is still readable: the errors' classes, constraints and codes.
    json_lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    unhandled = [line for line in json_lines if line["message"] == "unhandled error on POST /v1/cases"]
    assert len(unhandled) == 2, [line["message"] for line in json_lines if line["level"] == "error"]
    assert any(
        "IntegrityError" in line["error"] and "ck_cases_pii_probe" in line["error"] for line in unhandled
    )
    assert any(
        "RaiseError" in line["error"] and "case refused: reporter_name=" in line["error"]
        for line in unhandled
    )
    letters = [value for where, value in tables.items() if where.startswith("dead_letters.error")]
    assert any(letter.startswith("case.intake.invalid_event: ") for letter in letters), letters
    assert any("IntegrityError" in letter and "ck_cases_pii_probe" in letter for letter in letters), letters
    assert any("DBAPIError" in letter and "case refused: reporter_name=" in letter for letter in letters), (
        letters
    )
    assert {consumer for consumer, _ in failures} >= {"pii-probe-alarms"}, failures

    found = leaks(places)
    if scrubbing:
        assert found == [], "\n".join(f"{where}: {what}: …{line}…" for where, what, line in found)
    else:  # the test can fail: without the scrubbing, each kind of place shows the data
        places_leaking = {where.split("[")[0] for where, _, _ in found}
        assert {
            "JSON log stream",
            "captured log records",
            "dead_letters.error",
            "inbox_failures seen",
        } <= places_leaking, places_leaking


# -- masking through the gateway ------------------------------------------------------------------------

HOUSEHOLD = "广州市天河区天河路385号太古汇2座1501室"
NOTE = f"垃圾满溢，联系人：{NAME} 电话{PHONE}"


async def pii_consumer(stack, name: str, roles: list[str], unit: str | None = None) -> str:
    response = await stack.client.post(
        "/admin/v1/consumers",
        json={
            "name": name,
            "scopes": ["cases:read", "cases:write", "pii:read"],
            "roles": roles,
            "unit": unit,
        },
        headers=stack.as_("admin"),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["api_key"])


async def household_case(stack, *, dispatched: bool = True) -> str:
    created = await stack.client.post(
        "/api/case/v1/cases",
        json={**REPORT, "address": HOUSEHOLD, "description": NOTE},
        headers=stack.as_("clerk"),
    )
    assert created.status_code == 201, created.text
    case_id = str(created.json()["id"])
    if dispatched:
        await step(stack, case_id, "register", 1)
        assert (await step(stack, case_id, "dispatch", 2, {"unit": UNIT})).status_code == 200
    return case_id


async def test_a_handler_without_pii_read_sees_a_tasks_address_and_description_masked(stack):
    await household_case(stack)
    plain = await consumer(stack, "tianhe handler", ["handler"], unit=UNIT)
    trusted = await pii_consumer(stack, "tianhe team lead", ["handler"], unit=UNIT)
    (masked,) = (await stack.client.get("/api/case/v1/my/tasks", headers={"X-API-Key": plain})).json()[
        "items"
    ]
    assert masked["address"] == "广州市天河区天河路**号太古汇**座**室"
    assert masked["description"] == "垃圾满溢，联系人：欧** 电话139****4321"
    assert masked["location"]["coordinates"] == CASE_POINT  # where to go: the problem's place
    (clear,) = (await stack.client.get("/api/case/v1/my/tasks", headers={"X-API-Key": trusted})).json()[
        "items"
    ]
    assert (clear["address"], clear["description"]) == (HOUSEHOLD, NOTE)


async def test_another_persons_check_in_position_is_rounded_without_pii_read(stack):
    case_id = await household_case(stack)
    first = await consumer(stack, "handler one", ["handler"], unit=UNIT)
    second = await consumer(stack, "handler two", ["handler"], unit=UNIT)
    lon, lat = CASE_POINT
    fix = [round(lon + 0.00037, 6), round(lat + 0.00021, 6)]
    posted = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/check-ins",
        json={"location": {"type": "Point", "coordinates": fix}, "note": f"call {PHONE}"},
        headers={"X-API-Key": first},
    )
    assert posted.status_code == 201, posted.text
    exact = posted.json()
    assert exact["location"]["coordinates"] == fix  # one's own fix, as recorded
    assert exact["note"] == f"call {PHONE}"

    async def seen_by(headers: dict[str, str]) -> dict[str, Any]:
        listed = await stack.client.get(f"/api/case/v1/cases/{case_id}/check-ins", headers=headers)
        assert listed.status_code == 200, listed.text
        (item,) = listed.json()["items"]
        return dict(item)

    assert await seen_by({"X-API-Key": first}) == exact
    assert await seen_by(stack.as_("admin")) == exact  # pii:read
    for headers in ({"X-API-Key": second}, stack.as_("reader")):
        other = await seen_by(headers)
        assert other["location"]["coordinates"] == [round(fix[0], 3), round(fix[1], 3)]
        assert other["location"]["coordinates"] != fix
        assert other["distance_m"] == round(exact["distance_m"] / 10) * 10
        assert other["far"] == exact["far"]
        assert other["note"] == "call 139****4321"


async def test_the_public_open311_view_of_a_case_masks_its_address_and_description(stack):
    form = {
        "service_code": "CG-20106",
        "lat": "23.1291",
        "long": "113.3245",
        "address_string": HOUSEHOLD,
        "description": NOTE,
        "first_name": "明华",
        "last_name": "欧阳",
        "phone": PHONE,
        "api_key": stack.api_keys["reporter"],
    }
    posted = await stack.client.post("/open311/v2/requests.json", data=form)
    assert posted.status_code == 201, posted.text
    number = posted.json()[0]["service_request_id"]
    response = await stack.client.get(
        f"/open311/v2/requests/{number}.json", params={"api_key": stack.api_keys["admin"]}
    )
    assert response.status_code == 200, response.text
    (request,) = response.json()
    assert request["address"] == "广州市天河区天河路**号太古汇**座**室"
    assert request["description"] == "垃圾满溢，联系人：欧** 电话139****4321"
    assert leaks({"open311": response.text}) == []


async def test_the_case_api_masks_address_description_and_history_notes_without_pii_read(stack):
    case_id = await household_case(stack, dispatched=False)
    await step(stack, case_id, "register", 1, {"note": f"called back {PHONE}"})
    masked = (await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("reader"))).json()
    assert masked["address"] == "广州市天河区天河路**号太古汇**座**室"
    assert masked["description"] == "垃圾满溢，联系人：欧** 电话139****4321"
    assert [entry["note"] for entry in masked["history"] if entry["note"]][-1] == "called back 139****4321"
    clear = (await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("admin"))).json()
    assert (clear["address"], clear["description"]) == (HOUSEHOLD, NOTE)

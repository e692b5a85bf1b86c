"""The message log's pure parts: canonical encoding, hashing, walking a chain, and what a call
becomes (dataset, action, path, query names). No I/O."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gateway.message_log.capture import action_of, dataset_of, public_path, query_keys
from gateway.message_log.chain import (
    BreakReason,
    Hasher,
    Record,
    canonical,
    chained,
    verify_records,
)

KEY = Hasher.of("k" * 32)
WRITER = uuid.UUID("0192f0a0-0000-7000-8000-000000000001")
STARTED = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)
GENESIS = KEY.genesis(WRITER, "gateway-1", STARTED)


def chain(length: int, hasher: Hasher = KEY, genesis: str = GENESIS) -> list[Record]:
    records: list[Record] = []
    previous, previous_at = genesis, None
    for seq in range(1, length + 1):
        record = chained(
            hasher,
            Record(
                id=uuid.UUID(int=seq),
                writer_id=WRITER,
                seq=seq,
                at=STARTED + timedelta(seconds=seq),
                request_id=f"req-{seq}",
                consumer="consumer:1",
                dataset="case/cases",
                action="read",
                method="GET",
                path=f"/api/case/v1/cases/{seq}",
                query_keys=("status",),
                status=200,
                duration_ms=3,
                dropped_before=0,
                prev_hash=previous,
                prev_at=previous_at,
            ),
        )
        records.append(record)
        previous, previous_at = record.hash, record.at
    return records


def test_an_untouched_chain_verifies_from_its_genesis_to_its_seal():
    records = chain(5)
    assert verify_records(KEY, records, anchor=GENESIS, first_seq=1, sealed=(5, records[-1].hash)) is None


def test_the_encoding_is_a_fixed_order_json_array_and_leaves_the_sequence_number_out():
    record = chain(1)[0]
    assert canonical(record).startswith(b'["citygrid.message-log.v1","0192f0a0-')
    assert b"2026-12-03T01:00:01.000000+00:00" in canonical(record)
    assert canonical(dataclasses.replace(record, seq=99)) == canonical(record)


def test_a_record_of_what_an_answer_held_is_v2_and_its_count_and_fields_are_bound_by_its_hash():
    plain = chain(1)[0]
    answered = chained(KEY, dataclasses.replace(plain, record_count=3, fields=("id", "plate")))
    assert canonical(answered).startswith(b'["citygrid.message-log.v2",')
    assert canonical(plain).startswith(b'["citygrid.message-log.v1",')  # as records were before v2
    for tampered in (
        dataclasses.replace(answered, record_count=1),
        dataclasses.replace(answered, fields=("id",)),
        dataclasses.replace(answered, record_count=None, fields=()),  # made to read as v1
    ):
        found = verify_records(KEY, [tampered], anchor=GENESIS)
        assert found is not None
        assert found.reason is BreakReason.CHANGED


def test_times_in_other_offsets_encode_the_same_instant_the_same_way():
    record = chain(1)[0]
    shifted = dataclasses.replace(record, at=record.at.astimezone(datetime.now().astimezone().tzinfo))
    assert canonical(shifted) == canonical(record)


def test_an_edited_record_is_found_as_changed_at_that_record():
    records = chain(5)
    records[2] = dataclasses.replace(records[2], status=500)
    found = verify_records(KEY, records, anchor=GENESIS)
    assert found is not None
    assert (found.reason, found.seq, found.record_id) == (BreakReason.CHANGED, 3, records[2].id)


def test_a_removed_record_is_a_sequence_gap_found_at_the_record_after_it():
    records = chain(5)
    del records[2]
    found = verify_records(KEY, records, anchor=GENESIS)
    assert found is not None
    assert (found.reason, found.seq) == (BreakReason.REMOVED, 4)
    assert "3–3" in found.detail


def test_two_records_that_swapped_places_are_found_as_reordered_at_the_first_of_them():
    records = chain(5)
    third, fourth = records[2], records[3]
    records[2] = dataclasses.replace(fourth, seq=3)
    records[3] = dataclasses.replace(third, seq=4)
    found = verify_records(KEY, records, anchor=GENESIS)
    assert found is not None
    assert (found.reason, found.seq, found.record_id) == (BreakReason.REORDERED, 3, fourth.id)


def test_a_record_removed_and_the_rest_renumbered_no_longer_links():
    records = chain(5)
    del records[1]
    records = [dataclasses.replace(r, seq=i) for i, r in enumerate(records, start=1)]
    found = verify_records(KEY, records, anchor=GENESIS)
    assert found is not None
    assert (found.reason, found.seq) == (BreakReason.REORDERED, 2)


def test_a_sequence_number_seen_twice_is_a_duplicate():
    records = chain(3)
    records.insert(2, records[1])
    found = verify_records(KEY, records, anchor=GENESIS)
    assert found is not None
    assert (found.reason, found.seq) == (BreakReason.DUPLICATED, 2)


def test_a_removed_head_is_found_when_the_chain_must_start_at_one():
    records = chain(5)[2:]
    found = verify_records(KEY, records, anchor=GENESIS, first_seq=1)
    assert found is not None
    assert (found.reason, found.seq) == (BreakReason.HEAD_REMOVED, 3)


def test_a_chain_cut_by_retention_verifies_from_its_oldest_record_taken_as_the_anchor():
    records = chain(6)[3:]
    assert verify_records(KEY, records, anchor=None, sealed=(6, records[-1].hash)) is None


def test_the_oldest_kept_record_removed_after_a_retention_cut_is_found_by_its_successors_time():
    records = chain(6)
    kept_from = records[3].at  # records 1-3 lay in a dropped partition
    assert verify_records(KEY, records[3:], predecessor_before=kept_from) is None
    found = verify_records(KEY, records[4:], predecessor_before=kept_from)
    assert found is not None
    assert (found.reason, found.seq) == (BreakReason.HEAD_REMOVED, 5)


def test_a_removed_tail_is_found_against_the_writers_seal():
    records = chain(5)
    found = verify_records(KEY, records[:3], anchor=GENESIS, sealed=(5, records[-1].hash))
    assert found is not None
    assert (found.reason, found.seq) == (BreakReason.TAIL_REMOVED, 3)


def test_a_chain_recomputed_without_the_key_does_not_verify_under_it():
    forged = chain(3, hasher=Hasher.of(""), genesis=GENESIS)
    found = verify_records(KEY, forged, anchor=GENESIS)
    assert found is not None
    assert (found.reason, found.seq) == (BreakReason.CHANGED, 1)


def test_keys_are_named_without_being_revealed():
    assert KEY.key_id != Hasher.of("j" * 32).key_id
    assert "k" * 8 not in KEY.key_id
    assert Hasher.of("").key_id == "sha256"


def test_an_edited_seal_or_announcement_gives_another_mac():
    assert KEY.seal(WRITER, 5, "a" * 64, STARTED) != KEY.seal(WRITER, 4, "a" * 64, STARTED)
    assert KEY.genesis(WRITER, "gateway-2", STARTED) != GENESIS


# --- what a call becomes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "path", "dataset"),
    [
        ("case", "v1/cases", "case/cases"),
        ("case", "v1/cases/0192f0a0/steps", "case/cases"),
        ("gas", "v1/fill-checks", "gas/fill-checks"),
        ("case", "v1/", "case"),
        ("case", "v1/%E4%B8%AD", "case"),
    ],
)
def test_the_dataset_is_the_service_and_the_first_segment_after_the_version(service, path, dataset):
    assert dataset_of(service, path) == dataset


def test_reads_and_writes_follow_the_method():
    assert [action_of(m) for m in ("GET", "HEAD", "OPTIONS", "POST", "PATCH", "DELETE")] == [
        "read",
        "read",
        "read",
        "write",
        "write",
        "write",
    ]


def test_only_query_parameter_names_are_kept_never_their_values():
    kept = query_keys("phone=13800138000&name=张三&status=open&status=closed&limit=5".encode())
    assert kept == ("limit", "name", "phone", "status")


def test_a_query_name_that_is_not_an_identifier_is_dropped_too():
    assert query_keys(b"13800138000&a%40b.cn=1&district=440106") == ("district",)


def test_a_query_name_with_a_long_run_of_digits_is_dropped():
    assert query_keys(b"phone13800138000=1&page2=1&district=440106") == ("district", "page2")


def test_a_percent_encoded_query_name_is_read_as_its_name():
    assert query_keys(b"st%61tus=open&a+b=1&%ZZ=2") == ("status",)


@pytest.mark.parametrize(
    "path",
    [
        "/api/case/v1/cases/0192f0a0-0000-7000-8000-037337558014",
        "/api/case/v1/cases/0192f0a0-0000-7000-8000-00000000abcd/evidence/0192f0a0-1380-7013-8000-138001380000",
        "/api/case/v1/grid/cells/440106001001001",
        "/api/vision/v1/cameras/44010600001310000001",
        "/api/gas/v1/cylinders/GZ-2026-000123",
        "/api/case/v1/categories/20106",
        "/api/muck/v1/trucks/粤A12345",
    ],
)
def test_a_path_keeps_the_ids_the_services_take(path):
    assert public_path(path) == path


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("/api/case/v1/cases/13800138000", "/api/case/v1/cases/[phone]"),
        ("/api/case/v1/cases/+86 138 0013 8000/history", "/api/case/v1/cases/[phone]/history"),
        ("/api/case/v1/people/44010619900307123X", "/api/case/v1/people/[id-number]"),
        ("/api/case/v1/people/li.ming@example.cn", "/api/case/v1/people/[email]"),
        ("/api/case/v1/people/１３８００１３８０００", "/api/case/v1/people/[phone]"),
        (
            "/api/case/v1/cases/0192f0a0-0000-7000-8000-00000000abcd/13800138000",
            "/api/case/v1/cases/0192f0a0-0000-7000-8000-00000000abcd/[phone]",
        ),
    ],
)
def test_a_phone_number_id_number_or_email_in_a_path_is_kept_as_its_kind_only(path, kept):
    assert public_path(path) == kept


def test_a_path_is_kept_to_its_column():
    assert len(public_path("/api/case/v1/" + "a" * 1_000)) == 500


def test_a_nul_or_another_control_character_in_a_path_is_kept_percent_encoded() -> None:
    """A NUL would make PostgreSQL refuse the whole batch, holding back every later record."""
    assert public_path("/api/waste/v1/vehicles/ab\x00cde") == "/api/waste/v1/vehicles/ab%00cde"
    assert public_path("/api/case/v1/cases/a\tb\x7f") == "/api/case/v1/cases/a%09b%7F"

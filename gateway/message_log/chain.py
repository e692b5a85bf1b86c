"""The message log's chains, without I/O: canonical encoding, hashing, and walking a chain.

Each writer (a gateway process) keeps a chain of its own: record *n* carries the hash of record
*n - 1*, and its own hash is a MAC over a canonical encoding of its fields and that previous hash.
The sequence number is the index a chain is walked by: a gap is a removed record. What binds the
order is the hashes, so a record that moved (or was renumbered, or slipped in) no longer links to
the one before it. The MAC is HMAC-SHA256 under the log's key; without a key (development) it is
plain SHA-256, which anyone who can write the table can recompute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

# The encoding's version: a change of the fields or their order is a new version. A record that
# says what it returned (an exchange read: how many records, which fields) is encoded as v2; every
# other as v1, as records were before v2 existed, so they verify as they were written.
VERSION = "citygrid.message-log.v1"
VERSION_WITH_ANSWER = "citygrid.message-log.v2"
PLAIN_KEY_ID = "sha256"  # the key id of chains without a key


def timestamp(moment: datetime) -> str:
    """A time as the encoding writes it: UTC, microseconds, always the same length."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Record:
    """One call as the log keeps it (no body, no query values: see ``capture``)."""

    id: uuid.UUID
    writer_id: uuid.UUID
    seq: int
    at: datetime
    request_id: str | None
    consumer: str
    dataset: str
    action: str
    method: str
    path: str
    query_keys: tuple[str, ...]
    status: int
    duration_ms: int
    # Records this writer dropped (its buffer full) since the record before: said in the chain.
    dropped_before: int
    prev_hash: str
    # When the record before it was written (None: the writer's first), so a window or a retention
    # cut can tell a predecessor that is gone for a reason from one that was removed.
    prev_at: datetime | None = None
    hash: str = ""
    # Of an answer the gateway read (the exchange's): its records, and the fields they held.
    record_count: int | None = None
    fields: tuple[str, ...] = ()


# Built once: ``json.dumps`` with these options builds an encoder per call, half the encoding's time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def canonical(record: Record) -> bytes:
    """The bytes a record's hash covers: a JSON array of its fields in a fixed order, the previous
    hash last. ``seq`` is left out on purpose (the links bind the order; see the module)."""
    answered = record.record_count is not None or bool(record.fields)
    return _ENCODER.encode(
        [
            VERSION_WITH_ANSWER if answered else VERSION,
            str(record.writer_id),
            str(record.id),
            timestamp(record.at),
            record.request_id,
            record.consumer,
            record.dataset,
            record.action,
            record.method,
            record.path,
            list(record.query_keys),
            record.status,
            record.duration_ms,
            record.dropped_before,
            *((record.record_count, list(record.fields)) if answered else ()),
            None if record.prev_at is None else timestamp(record.prev_at),
            record.prev_hash,
        ]
    ).encode()


@dataclass(frozen=True)
class Hasher:
    """HMAC-SHA256 under ``key``, or SHA-256 when there is none."""

    key: bytes | None = None

    @classmethod
    def of(cls, key: str) -> Hasher:
        return cls(key.encode() if key else None)

    @property
    def key_id(self) -> str:
        """Names the key without revealing it (what a writer's row says it used)."""
        if self.key is None:
            return PLAIN_KEY_ID
        return hashlib.sha256(b"citygrid.message-log.key-id\n" + self.key).hexdigest()[:16]

    def digest(self, purpose: str, data: bytes) -> str:
        message = purpose.encode() + b"\n" + data
        if self.key is None:
            return hashlib.sha256(message).hexdigest()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def record_hash(self, record: Record) -> str:
        return self.digest("record", canonical(record))

    def genesis(self, writer_id: uuid.UUID, replica: str, started_at: datetime) -> str:
        """The previous hash of a writer's first record: bound to the writer's announcement."""
        return self.digest(
            "genesis", json.dumps([VERSION, str(writer_id), replica, timestamp(started_at)]).encode()
        )

    def seal(self, writer_id: uuid.UUID, last_seq: int, last_hash: str, last_at: datetime | None) -> str:
        """What a writer's row says its chain ends with, so a removed tail shows."""
        at = None if last_at is None else timestamp(last_at)
        return self.digest("seal", json.dumps([VERSION, str(writer_id), last_seq, last_hash, at]).encode())


def same_mac(expected: str, found: str) -> bool:
    """Whether two MACs are equal, in constant time: one compared character by character tells whoever
    can time the comparison how much of a forged one was right."""
    return hmac.compare_digest(expected.encode(), found.encode())


_FIELDS = tuple(field.name for field in dataclasses.fields(Record) if field.name != "hash")


def chained(hasher: Hasher, record: Record) -> Record:
    """The record with its hash filled in (built field by field: ``dataclasses.replace`` costs more
    than the hash, on the request path)."""
    return Record(**{name: getattr(record, name) for name in _FIELDS}, hash=hasher.record_hash(record))


class BreakReason(StrEnum):
    CHANGED = "changed"  # the record's fields no longer give its hash: edited
    REMOVED = "removed"  # a sequence gap: records before this one are missing
    REORDERED = "reordered"  # the record does not link to the one before it: moved, inserted, renumbered
    DUPLICATED = "duplicated"  # its sequence number was seen already
    HEAD_REMOVED = "head_removed"  # the chain's first records are missing though retention kept them
    TAIL_REMOVED = "tail_removed"  # the chain ends before the record its writer's seal names
    WRITER_CHANGED = "writer_changed"  # the writer's announcement or seal does not match its MAC
    UNKNOWN_KEY = "unknown_key"  # the writer used a key this gateway does not hold
    UNKNOWN_WRITER = "unknown_writer"  # records of a writer that has no row: inserted, or its row removed
    PAST_SEAL = "past_seal"  # records after the one the writer's seal names: inserted


@dataclass(frozen=True)
class Break:
    """The first broken link of a chain: where, and why."""

    writer_id: uuid.UUID
    reason: BreakReason
    detail: str
    seq: int | None = None
    record_id: uuid.UUID | None = None


@dataclass
class ChainWalker:
    """Walks one writer's records in sequence order, fed in batches; stops at the first break.

    ``anchor`` is the previous hash the first record must carry (the writer's genesis, or the hash
    of the record before a window); None takes the first record's own ``prev_hash`` as the anchor
    (the records before it were dropped by retention, or lie before the window asked for); its
    predecessor must then be older than ``predecessor_before`` (the oldest kept partition's start,
    or the window's), else it was removed. ``first_seq`` is the first record's sequence number, if known.
    """

    hasher: Hasher
    writer_id: uuid.UUID
    anchor: str | None = None
    first_seq: int | None = None
    predecessor_before: datetime | None = None
    checked: int = 0
    last_seq: int | None = None
    last_hash: str | None = None
    broken: Break | None = field(default=None)

    def feed(self, records: Iterable[Record]) -> Break | None:
        for record in records:
            if self.broken is not None:
                break
            self.broken = self._check(record)
            if self.broken is None:
                self.checked += 1
                self.last_seq, self.last_hash = record.seq, record.hash
        return self.broken

    def _check(self, record: Record) -> Break | None:
        def broken(reason: BreakReason, detail: str) -> Break:
            return Break(self.writer_id, reason, detail, seq=record.seq, record_id=record.id)

        if not same_mac(self.hasher.record_hash(record), record.hash):
            return broken(BreakReason.CHANGED, "the record's fields do not give its hash")
        expected: str | None
        if self.last_seq is None:
            if self.first_seq is not None and record.seq != self.first_seq:
                return broken(
                    BreakReason.HEAD_REMOVED,
                    f"the chain starts at {record.seq}; records {self.first_seq}–{record.seq - 1} are missing",
                )
            limit = self.predecessor_before
            if (
                self.anchor is None
                and limit is not None
                and record.prev_at is not None
                and record.prev_at >= limit
            ):
                return broken(
                    BreakReason.HEAD_REMOVED,
                    f"the record before it ({timestamp(record.prev_at)}) is missing though it should be kept",
                )
            expected = record.prev_hash if self.anchor is None else self.anchor
        else:
            if record.seq == self.last_seq:
                return broken(BreakReason.DUPLICATED, f"sequence number {record.seq} appears twice")
            if record.seq != self.last_seq + 1:
                return broken(
                    BreakReason.REMOVED, f"records {self.last_seq + 1}–{record.seq - 1} are missing"
                )
            expected = self.last_hash
        if record.prev_hash != expected:
            return broken(BreakReason.REORDERED, "the record does not link to the one before it")
        return None

    def finish(self, last_seq: int | None, last_hash: str | None) -> Break | None:
        """After the last record: the chain must end where its writer's seal says (None: not checked)."""
        if self.broken is not None or last_seq is None:
            return self.broken
        if self.last_seq is None or self.last_seq < last_seq or self.last_hash != last_hash:
            ends = "no record" if self.last_seq is None else f"record {self.last_seq}"
            self.broken = Break(
                self.writer_id,
                BreakReason.TAIL_REMOVED,
                f"the chain ends at {ends}; its writer sealed record {last_seq}",
                seq=self.last_seq,
            )
        return self.broken


def verify_records(
    hasher: Hasher,
    records: Sequence[Record],
    *,
    anchor: str | None = None,
    first_seq: int | None = None,
    sealed: tuple[int, str] | None = None,
    predecessor_before: datetime | None = None,
) -> Break | None:
    """The first break of one writer's records (sorted by sequence number), or None."""
    if not records:
        return None
    walker = ChainWalker(
        hasher,
        records[0].writer_id,
        anchor=anchor,
        first_seq=first_seq,
        predecessor_before=predecessor_before,
    )
    walker.feed(records)
    return walker.finish(*(sealed or (None, None)))

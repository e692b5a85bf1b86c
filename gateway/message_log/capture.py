"""What a call becomes in the message log: its dataset and action, its path, and the names of its
query parameters (never their values). Neither body is read: not the request's, not the answer's.

A path keeps its ids (``/api/case/v1/cases/<id>``): they name records, which is what an audit needs.
A segment that reads as a phone number, a resident ID number or an e-mail address is not an id any
service takes, so it is kept as its kind only (``[phone]``): a caller cannot put one in the log by
putting it in a path. A query string's values may be anyone's phone number, so only parameter names
that look like identifiers are kept, and none with a long run of digits in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

from citygrid.scopes import READ_METHODS
from citygrid.scrub import label, replace_values

MAX_PATH = 500
MAX_QUERY_KEYS = 20
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-\[\]]{0,63}")
_SEGMENT = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")
_DIGITS = re.compile(r"[0-9]{7}")
# What every phone number, ID number and e-mail address the scrubber knows has in it (and a dump's
# ``name=…``): a path without any is kept as it is, after one scan.
_SUSPECT = re.compile(r"[@＠:=：]|[0-9０-９][0-9０-９ ()+\-]{5,}[0-9０-９Xx]")
# What a text column cannot hold (NUL) or a reader should not get raw (the other control characters):
# kept percent-encoded, as the caller sent them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def dataset_of(service: str, path: str) -> str:
    """``case/cases`` for ``v1/cases/…`` of the case service: the service and the first segment
    after the version (the service alone when there is none)."""
    segments = path.split("/")
    first = segments[1] if len(segments) > 1 else ""
    return f"{service}/{first}" if _SEGMENT.fullmatch(first) else service


def action_of(method: str) -> str:
    return "read" if method.upper() in READ_METHODS else "write"


def query_keys(query_string: bytes) -> tuple[str, ...]:
    """The parameter names of a query string, sorted, each once; values are never decoded."""
    names: set[str] = set()
    for part in query_string.split(b"&"):
        raw = part.partition(b"=")[0]
        if not raw:
            continue
        name = raw.decode("utf-8", "replace")
        if "%" in name or "+" in name:
            name = unquote_plus(name, errors="replace")
        if _NAME.fullmatch(name) and not _DIGITS.search(name):
            names.add(name)
    return tuple(sorted(names)[:MAX_QUERY_KEYS])


def field_names(names: Iterable[str], limit: int = 100) -> tuple[str, ...]:
    """The names of the fields an answer held, as the log keeps them: sorted, each once, only those
    that look like identifiers and hold no run of seven digits (what the owner's JSON names is its
    own; a NUL or a formula must never reach the table or an export)."""
    kept = {name for name in names if _NAME.fullmatch(name) and not _DIGITS.search(name)}
    return tuple(sorted(kept)[:limit])


def public_path(path: str) -> str:
    """The path as the log keeps it: at most ``MAX_PATH`` characters, personal numbers and addresses
    in it replaced by their kind. A UUID is an id and is never looked into (its hex digits can read
    as a landline number). A control character (a NUL, which PostgreSQL cannot store) stays as it
    was sent, percent-encoded."""
    if _CONTROL.search(path) is not None:
        path = _CONTROL.sub(lambda found: f"%{ord(found.group()):02X}", path)
    if _SUSPECT.search(path) is not None and _SUSPECT.search(_UUID.sub("/", path)) is not None:
        path = "/".join(_public_segment(segment) for segment in path.split("/"))
    return path[:MAX_PATH]


def _public_segment(segment: str) -> str:
    if _SUSPECT.search(segment) is None or _UUID.fullmatch(segment):
        return segment
    return replace_values(segment, label)

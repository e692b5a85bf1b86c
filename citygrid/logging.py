"""JSON logs, one object per line, carrying the service, the request id and the trace id; and the
last line of defence against personal data in them (``PersonalDataFilter``)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from citygrid.scrub import scrub

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)

# Set on a record once it has been scrubbed: the factory, the root logger's and the handler's
# filter then do the work once.
SCRUBBED = "citygrid_scrubbed"


class _Hidden:
    """Stands for logged data, whether the message formats it with ``%s`` or ``%r``."""

    def __repr__(self) -> str:
        return "[hidden]"

    __str__ = __repr__


HIDDEN_DATA = _Hidden()
_TRACEBACKS = logging.Formatter()


def trace_id_of(traceparent: str | None) -> str | None:
    if traceparent is None:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else None


def _is_sqlalchemy_data(value: object) -> bool:
    """SQLAlchemy's engine logs statement parameters and fetched rows through these wrappers (with
    ``hide_parameters`` only the parameters are hidden, not the rows logged at DEBUG)."""
    return type(value).__name__ in ("_repr_params", "_repr_row") and type(value).__module__.startswith(
        "sqlalchemy."
    )


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """Take personal data out of a record's message, arguments, traceback and stack, in place.

    The message is rendered with its arguments and scrubbed as one text; only when that changes
    anything are ``msg`` and ``args`` replaced by the scrubbed text. A traceback that quotes personal
    data is kept as scrubbed text (``exc_text``) and the exception itself dropped from the record, so
    no handler can format it again from the original."""
    if getattr(record, SCRUBBED, False):
        return record
    setattr(record, SCRUBBED, True)
    if (
        record.name.startswith("sqlalchemy.engine")
        and isinstance(record.args, tuple)
        and any(_is_sqlalchemy_data(arg) for arg in record.args)
    ):
        record.args = tuple(HIDDEN_DATA if _is_sqlalchemy_data(arg) else arg for arg in record.args)
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: logging reports it when the record is emitted
        return record
    cleaned = scrub(message)
    if cleaned != message:
        record.msg, record.args = cleaned, ()
    if record.exc_info and record.exc_info[0] is not None:
        text = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
        cleaned = scrub(text)
        if cleaned != text:
            record.exc_text, record.exc_info = cleaned, None
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
    return record


class PersonalDataFilter(logging.Filter):
    """Scrubs every record it sees (``citygrid.scrub``) and lets it through.

    A filter on a logger sees only the records logged on that very logger, not those propagated
    from its children; a filter on a handler sees everything the handler writes. So the kit puts one
    on its JSON handler (everything the process writes), on the root logger (records logged on it
    directly) and in the log record factory (``install_record_scrubbing``: every record of every
    logger as it is made, so handlers others add, a test's capture or an agent's, get it clean)."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


PERSONAL_DATA_FILTER = PersonalDataFilter()
_factory_installed: Callable[..., logging.LogRecord] | None = None


def install_record_scrubbing() -> None:
    """Wrap the log record factory so that every record is scrubbed as it is made (idempotent)."""
    global _factory_installed
    current = logging.getLogRecordFactory()
    if current is _factory_installed:
        return
    previous = current

    def scrubbing_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return scrub_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(scrubbing_factory)
    _factory_installed = scrubbing_factory


def scrubbed_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the personal-data filter on it: what the kit's own modules log
    is clean before any handler sees it, however logging is configured."""
    logger = logging.getLogger(name)
    if PERSONAL_DATA_FILTER not in logger.filters:
        logger.addFilter(PERSONAL_DATA_FILTER)
    return logger


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        trace_id = trace_id_of(traceparent_var.get())
        if trace_id:
            entry["trace_id"] = trace_id
        if record.exc_info:
            entry["error"] = record.exc_text or self.formatException(record.exc_info)
        elif record.exc_text:  # a traceback already scrubbed, its exception dropped
            entry["error"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def json_handler(service: str, stream: IO[str] | None = None) -> logging.Handler:
    """The kit's log handler: JSON lines on ``stream`` (stdout), scrubbed of personal data."""
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(PERSONAL_DATA_FILTER)
    return handler


def configure_logging(service: str, level: str = "INFO", *, stream: IO[str] | None = None) -> None:
    install_record_scrubbing()
    root = logging.getLogger()
    root.handlers[:] = [json_handler(service, stream)]
    if PERSONAL_DATA_FILTER not in root.filters:
        root.addFilter(PERSONAL_DATA_FILTER)
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True

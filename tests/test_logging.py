"""Logs are one JSON object per line with the service, the request id and the trace id."""

from __future__ import annotations

import json
import logging

from citygrid.logging import JsonFormatter, request_id_var, traceparent_var


def test_a_log_line_carries_service_request_id_and_trace_id():
    record = logging.LogRecord("case.api", logging.WARNING, __file__, 1, "case %s refused", ("42",), None)
    request_token = request_id_var.set("req-7")
    trace_token = traceparent_var.set("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    try:
        line = JsonFormatter("case").format(record)
    finally:
        request_id_var.reset(request_token)
        traceparent_var.reset(trace_token)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["service"] == "case"
    assert entry["level"] == "warning"
    assert entry["message"] == "case 42 refused"
    assert entry["request_id"] == "req-7"
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_an_exception_is_kept_inside_the_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter("gateway").format(record)
    assert len(line.splitlines()) == 1
    assert "ValueError: boom" in json.loads(line)["error"]

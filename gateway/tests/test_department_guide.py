"""The departments' guide (docs/departments.md) run as written: every ``python`` and ``sh`` block,
in order, against a running gateway with the exchange's stand-in owners, as a consumer would run
them with its id and key."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.tests.test_consumers import Gateway, Setup, new_consumer, setup
from gateway.tests.test_exchange import exchange

__all__ = ["exchange", "setup"]

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "departments.md"
BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)
FENCE = re.compile(r"^```(\w*)$", re.MULTILINE)
RUNNABLE_BLOCKS = 6


def blocks() -> list[tuple[str, str]]:
    return [(match[1], match[2]) for match in BLOCK.finditer(GUIDE.read_text())]


def test_the_guide_has_examples_of_every_step():
    text = GUIDE.read_text()
    for step in (
        "/oauth/token",
        "/exchange/v1/datasets",
        "next_cursor",
        "RateLimit",
        "Retry-After",
        "problem",
    ):
        assert step in text, step
    # Every fence is one the test runs, or plain text: an example fenced otherwise is not skipped unseen.
    assert set(FENCE.findall(text)) <= {"python", "sh", "text", ""}
    assert len(blocks()) == RUNNABLE_BLOCKS


async def test_every_example_of_the_guide_runs_against_a_live_gateway(
    setup: Setup, exchange: Gateway, monkeypatch: pytest.MonkeyPatch
):
    consumer = await new_consumer(
        exchange, setup, name="transport-bureau", kind="department", scopes=["trips:read"]
    )
    environment = {
        "GATEWAY": str(exchange.client.base_url),
        "CONSUMER_ID": consumer["id"],
        "API_KEY": consumer["api_key"],
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"__name__": "guide"}
    printed = io.StringIO()

    def run_python(code: str) -> None:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, str(GUIDE), "exec"), namespace)  # noqa: S102 - the guide's own examples

    def run_sh(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - the guide's own examples
            ["bash", "-euo", "pipefail", "-c", code],  # noqa: S607
            env=os.environ | environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    for language, code in blocks():
        if language == "python":
            await asyncio.to_thread(run_python, code)
        else:
            finished = await asyncio.to_thread(run_sh, code)
            assert finished.returncode == 0, (code, finished.stderr)
    # What the examples say they print, they printed (their client is blocking: off the loop).
    assert namespace["token"].json()["scope"] == "trips:read"
    assert namespace["trips"]["paths"]["list"] == "/exchange/v1/trips"
    # Both pages of trips, the second asked for with the first's cursor.
    assert len(await asyncio.to_thread(namespace["every"], "/exchange/v1/trips")) == 2
    assert namespace["standing"](namespace["answer"])["minute"]["r"] >= 0
    assert (namespace["refused"].status_code, namespace["problem"]["code"]) == (403, "auth.missing_scope")
    assert "300 trips:read" in printed.getvalue()
    assert "\n2\n" in printed.getvalue()
    assert '"minute";q=600;w=60' in printed.getvalue()
    assert "403 auth.missing_scope cases:read" in printed.getvalue()

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
from standardwebhooks import WebhookVerificationError

from citygrid.testing import serve_app, wait_until
from gateway.tests.test_consumers import Gateway, Setup, new_consumer, setup
from gateway.tests.test_exchange import exchange
from gateway.tests.test_subscriptions import Receiver, muck_violation, publish

__all__ = ["exchange", "setup"]

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "departments.md"
BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)
FENCE = re.compile(r"^```(\w*)$", re.MULTILINE)
RUNNABLE_BLOCKS = 9


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
        "/exchange/v1/subscriptions",
        "webhook-signature",
        "openssl",
    ):
        assert step in text, step
    # Every fence is one the test runs, or plain text: an example fenced otherwise is not skipped unseen.
    assert set(FENCE.findall(text)) <= {"python", "sh", "text", ""}
    assert len(blocks()) == RUNNABLE_BLOCKS


async def test_every_example_of_the_guide_runs_against_a_live_gateway(
    setup: Setup, exchange: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    consumer = await new_consumer(
        exchange,
        setup,
        name="transport-bureau",
        kind="department",
        scopes=["trips:read", "transport_violations:read"],
    )
    receiver = Receiver()
    async with serve_app(receiver.app()) as receiver_url:
        receiver.url = f"{receiver_url}/hook"
        await run_the_guide(setup, exchange, monkeypatch, tmp_path, consumer, receiver)


async def run_the_guide(
    setup: Setup,
    exchange: Gateway,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    consumer: dict[str, Any],
    receiver: Receiver,
) -> None:
    environment = {
        "GATEWAY": str(exchange.client.base_url),
        "CONSUMER_ID": consumer["id"],
        "API_KEY": consumer["api_key"],
        "WEBHOOK_URL": receiver.url,
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

    async def an_event_arrives() -> None:
        """What the shell check reads: a webhook as the guide's subscription received it."""
        off_route, elsewhere = muck_violation(), muck_violation(district="440104")
        await publish(setup.infrastructure, elsewhere, off_route)
        await wait_until(lambda: receiver.received, timeout=30.0)
        (received,) = receiver.received
        assert received.event["id"] == off_route.id
        body = tmp_path / "body.json"
        body.write_bytes(received.body)
        environment.update(
            WEBHOOK_BODY=str(body),
            WEBHOOK_SECRET=namespace["secret"],
            WEBHOOK_ID=received.headers["webhook-id"],
            WEBHOOK_TIMESTAMP=received.headers["webhook-timestamp"],
            WEBHOOK_SIGNATURE=received.headers["webhook-signature"],
        )

    for language, code in blocks():
        if "$WEBHOOK_SIGNATURE" in code:
            await an_event_arrives()
        if language == "python":
            await asyncio.to_thread(run_python, code)
        else:
            finished = await asyncio.to_thread(run_sh, code)
            assert finished.returncode == 0, (code, finished.stderr)
            printed.write(finished.stdout)
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
    assert "active ['muck.violation.detected']" in printed.getvalue()
    assert "verified\n" in printed.getvalue()
    # The Python check takes what was sent and refuses it altered.
    (received,) = receiver.received
    assert namespace["receive"](received.body, received.headers)["type"] == "muck.violation.detected.v1"
    with pytest.raises(WebhookVerificationError):
        namespace["receive"](received.body.replace(b"}", b" }", 1), received.headers)
    # And so does the shell check.
    forged = tmp_path / "body.json"
    forged.write_bytes(received.body + b" ")
    refused = run_sh(next(code for _, code in blocks() if "$WEBHOOK_SIGNATURE" in code))
    assert refused.returncode == 1
    assert "forged" in refused.stderr

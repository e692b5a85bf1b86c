"""A failure inside a service stays one request's 500; what the database would refuse never gets there."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI

from citygrid.middleware import UnexpectedErrorMiddleware
from citygrid.problems import install_problem_handlers
from citygrid.testing import serve_app


def failing_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(UnexpectedErrorMiddleware)

    @app.get("/fails")
    async def fails() -> None:
        raise RuntimeError("a bug")

    @app.get("/works")
    async def works() -> dict[str, bool]:
        return {"ok": True}

    return app


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return status, await asyncio.wait_for(reader.readexactly(length), timeout=10)


async def test_an_unexpected_error_is_a_500_problem_and_the_connection_serves_the_next_request():
    async with serve_app(failing_app()) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            status, body = await exchange(reader, writer, "/fails")
            assert status == 500
            assert json.loads(body)["code"] == "internal_error"
            # The same connection, as a gateway's pool reuses it: still open, still answering.
            status, body = await exchange(reader, writer, "/works")
            assert (status, json.loads(body)) == (200, {"ok": True})
        finally:
            writer.close()


async def test_a_dead_letter_filter_that_is_no_consumer_name_is_refused_with_422(stack):
    response = await stack.client.get(
        "/api/case/v1/admin/dead-letters", params={"consumer": "case\x00"}, headers=stack.as_("admin")
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "params",
    [{"note\x00": "x"}, {"status": "registered\x00"}],
    ids=["nul-in-a-name", "nul-in-a-value"],
)
async def test_a_query_string_carrying_nul_is_refused_by_every_service_route(stack, params):
    response = await stack.client.get("/api/case/v1/cases", params=params, headers=stack.as_("reader"))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "http.nul_character"

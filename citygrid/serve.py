"""Run one app under uvicorn with the kit's JSON logging (the entrypoint of every image).

A process may serve a second, internal app on a port of its own (the gateway's ``/metrics``): what
only operators may reach then never shares a listener with the public.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from citygrid.logging import configure_logging
from citygrid.settings import ServiceSettings

# How long a process keeps an idle keep-alive connection. The gateway's pool lets its idle
# connections go well before this (UPSTREAM_KEEPALIVE_SECONDS), so it never sends a request on a
# connection the service is closing at that very moment.
KEEP_ALIVE_SECONDS = 75
UPSTREAM_KEEPALIVE_SECONDS = 30.0
GRACEFUL_SHUTDOWN_SECONDS = 10
STARTUP_FAILURE = 3  # uvicorn's exit status when the app did not start


def server_config(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    proxy_headers: bool = True,
    lifespan: Literal["auto", "on", "off"] = "on",
) -> uvicorn.Config:
    """How every CityGrid listener runs. ``proxy_headers=False`` leaves ``X-Forwarded-For`` to the
    app: the gateway decides itself which proxies it believes (uvicorn would believe loopback)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=proxy_headers,
        lifespan=lifespan,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # The event loop and HTTP parser in C (docs/performance.md): named, not "auto", so an
        # image without them fails at start instead of serving at a third of the speed.
        loop="uvloop",
        http="httptools",
    )


async def serve_with_internal(public: uvicorn.Config, internal: uvicorn.Config) -> None:
    """Serve both; the public server owns the signals, and the internal one stops after it."""
    internal_server = uvicorn.Server(internal)
    internal_server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    internal_task = asyncio.create_task(internal_server.serve(), name="internal-listener")
    while not internal_server.started and not internal_task.done():
        await asyncio.sleep(0.01)
    if internal_task.done():  # it could not listen: fail before the public side serves anything
        await internal_task
        raise RuntimeError(f"the internal listener on port {internal.port} did not start")
    server = uvicorn.Server(public)
    public_exit = server.handle_exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        # uvicorn re-raises the signal once the public server is done, ending the process: the
        # internal listener starts closing now, with it, rather than after.
        internal_server.should_exit = True
        public_exit(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    try:
        await server.serve()
    finally:
        internal_server.should_exit = True
        await internal_task
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def serve(
    app: ASGIApp,
    settings: ServiceSettings,
    *,
    internal_app: ASGIApp | None = None,
    internal_port: int = 0,
    proxy_headers: bool = True,
) -> None:
    configure_logging(settings.service_name, settings.log_level)
    public = server_config(app, host=settings.host, port=settings.port, proxy_headers=proxy_headers)
    if internal_app is None or not internal_port:
        server = uvicorn.Server(public)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if not server.started:
            raise SystemExit(STARTUP_FAILURE)
        return
    internal = server_config(
        internal_app, host=settings.host, port=internal_port, proxy_headers=False, lifespan="off"
    )
    with (
        contextlib.suppress(KeyboardInterrupt),
        # The loop uvicorn would pick (uvloop when installed), not asyncio's default.
        asyncio.Runner(loop_factory=public.get_loop_factory()) as runner,
    ):
        runner.run(serve_with_internal(public, internal))

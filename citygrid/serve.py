"""Run one app under uvicorn with the kit's JSON logging (the entrypoint of every image)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from citygrid.logging import configure_logging
from citygrid.settings import ServiceSettings

# How long a process keeps an idle keep-alive connection. The gateway's pool lets its idle
# connections go well before this (UPSTREAM_KEEPALIVE_SECONDS), so it never sends a request on a
# connection the service is closing at that very moment.
KEEP_ALIVE_SECONDS = 75
UPSTREAM_KEEPALIVE_SECONDS = 30.0


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(settings.service_name, settings.log_level)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )

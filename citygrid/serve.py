"""Run one app under uvicorn with the kit's JSON logging (the entrypoint of every image)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from citygrid.logging import configure_logging
from citygrid.settings import ServiceSettings


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
    )

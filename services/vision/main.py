"""Composition root of the vision service: ``create_app()`` for uvicorn and tests, ``main()`` to run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from citygrid.auth import Principal, require_scope
from citygrid.blobs import FilesystemBlobStore
from citygrid.http import create_service_app
from citygrid.jobs import PeriodicJob
from citygrid.runtime import Runtime
from citygrid.serve import serve
from citygrid.settings import ServiceSettings
from contract import scopes
from services.vision import api, intake, registry, review
from services.vision.api import INGEST_SCOPE
from services.vision.catalogue import sync_shipped_catalogue
from services.vision.context import VisionContext
from services.vision.engines import EngineClient
from services.vision.events import ENGINE_ID, INTAKE_QUEUE, INTAKE_SUBJECT, PUBLISHES, case_consumer
from services.vision.metrics import VisionMetrics
from services.vision.recheck import CONCURRENCY as RECHECK_CONCURRENCY
from services.vision.recheck import run_due_rechecks
from services.vision.schemas import BatchResult, DetectionBatch

log = logging.getLogger("services.vision")


class VisionSettings(ServiceSettings):
    service_name: str = "vision"
    analysis_engines: dict[str, str] = {}  # engine name → base URL (docs/vision-engines.md)
    default_engine: str = "simulator"
    engine_timeout_seconds: float = 10.0
    engine_retries: int = 2
    engine_breaker_failures: int = 5
    engine_breaker_reset_seconds: float = 30.0
    recheck_delay_seconds: float = 300.0
    recheck_scan_seconds: float = 5.0
    camera_offline_seconds: float = 300.0
    blob_dir: Path = Path(".data/blobs/vision")
    max_snapshot_bytes: int = 512 * 1024
    false_positive_target: float = 0.1
    stats_seconds: float = 15.0
    catalogue_refresh_seconds: float = 5.0  # an admin's change reaches every replica within this


def create_app(settings: VisionSettings | None = None) -> FastAPI:
    settings = settings or VisionSettings()
    context_holder: dict[str, VisionContext] = {}

    def setup(runtime: Runtime) -> None:
        metrics = VisionMetrics(runtime.metrics.registry)
        engines = EngineClient(
            settings.analysis_engines,
            timeout=settings.engine_timeout_seconds,
            retries=settings.engine_retries,
            failure_threshold=settings.engine_breaker_failures,
            reset_seconds=settings.engine_breaker_reset_seconds,
            metrics=metrics,
        )
        context = VisionContext(
            blobs=FilesystemBlobStore(settings.blob_dir),
            metrics=metrics,
            engines=engines,
            limits=intake.IntakeLimits(max_snapshot_bytes=settings.max_snapshot_bytes),
            false_positive_target=settings.false_positive_target,
        )
        context_holder["context"] = context

        async def prepare() -> None:
            await sync_shipped_catalogue(runtime.db)
            await context.catalogue.refresh(runtime.db)
            await engines.start()
            runtime.tasks.append(asyncio.create_task(_hold_engines(engines), name="engine-client"))
            if runtime.messaging:
                runtime.tasks.append(
                    asyncio.create_task(_serve_nats_intake(runtime, context), name="nats-intake")
                )

        async def offline() -> int:
            return await registry.mark_offline(runtime.db, settings.camera_offline_seconds)

        async def rechecks() -> int:
            return await run_due_rechecks(
                runtime,
                engines,
                context.blobs,
                default_engine=settings.default_engine,
                max_snapshot_bytes=settings.max_snapshot_bytes,
                metrics=metrics,
            )

        async def candidates() -> int:
            return await intake.expire_candidates(runtime.db, timedelta(days=2))

        async def gauges() -> int:
            # Computed by one replica per period for the fleet, shown by every replica.
            await review.refresh_fleet_gauges(runtime.db, metrics, every_seconds=settings.stats_seconds)
            return 0

        async def catalogue() -> int:
            return await context.catalogue.refresh(runtime.db)

        runtime.on_startup = [prepare]
        runtime.jobs = [
            PeriodicJob(
                "camera-offline",
                max(settings.camera_offline_seconds / 5, 1.0),
                offline,
                batch_size=registry.SWEEP_BATCH,
            ),
            PeriodicJob("recheck", settings.recheck_scan_seconds, rechecks, batch_size=RECHECK_CONCURRENCY),
            PeriodicJob("vision-gauges", settings.stats_seconds, gauges),
            PeriodicJob("catalogue-refresh", settings.catalogue_refresh_seconds, catalogue),
            PeriodicJob("candidate-expiry", 600.0, candidates),
        ]

    app = create_service_app(
        settings,
        title="CityGrid vision service",
        description=(
            "Cameras, the 57-class algorithm catalogue, detection intake, dedup, review, "
            "one-click dispatch and AI re-check."
        ),
        routers=[api.router],
        publishes=PUBLISHES,
        consumers=[case_consumer(settings.recheck_delay_seconds)],
        runtime_setup=setup,
        scopes=scopes.VISION,  # the declaration the gateway checks too
    )
    app.state.vision = context_holder["context"]
    return app


async def _hold_engines(engines: EngineClient) -> None:
    """Keeps the engine client's connections for the app's life and closes them when it stops."""
    try:
        await asyncio.Event().wait()
    finally:
        await engines.close()


def engine_of(subject: str) -> str | None:
    """The engine a batch came from: the last token of ``intake.vision.detections.<engine>``.

    Only that engine's NATS user may publish there, so the subject is its authenticated identity.
    """
    prefix = INTAKE_SUBJECT + "."
    engine = subject[len(prefix) :] if subject.startswith(prefix) else ""
    return engine if ENGINE_ID.match(engine) else None


def engine_principal(engine: str) -> Principal:
    return Principal(
        subject=f"engine:{engine}", kind="service", name=engine, scopes=frozenset({INGEST_SCOPE})
    )


async def answer_batch(runtime: Runtime, context: VisionContext, msg: Msg) -> dict[str, object]:
    """One batch sent over NATS, taken as its engine's principal; the reply document."""
    engine = engine_of(msg.subject)
    if engine is None:
        log.warning("NATS intake: a batch on %r names no engine; refused", msg.subject)
        return {"code": "vision.unknown_engine", "detail": f"send batches on {INTAKE_SUBJECT}.<engine>"}
    principal = engine_principal(engine)
    require_scope(principal, INGEST_SCOPE)
    try:
        batch = DetectionBatch.model_validate_json(msg.data)
    except ValueError as error:
        log.info("NATS intake: %s sent an invalid batch", principal.subject)
        return {"code": "validation_failed", "detail": str(error)[:500]}
    try:
        # Snapshots are written before the transaction opens, as over HTTP.
        staged = await intake.stage(batch.detections, blobs=context.blobs, limits=context.limits)
        async with runtime.uow() as uow:
            results = await intake.ingest(
                uow,
                staged,
                blobs=context.blobs,
                metrics=context.metrics,
                limits=context.limits,
                catalogue=context.catalogue,
            )
    except Exception as error:
        log.exception("NATS intake: the batch of %s failed", principal.subject)
        return {"code": "vision.intake_failed", "detail": type(error).__name__}
    accepted = sum(r.accepted for r in results)
    log.info(
        "NATS intake: %s sent %d detections, %d accepted, %d refused",
        principal.subject,
        len(results),
        accepted,
        len(results) - accepted,
    )
    return BatchResult(
        received=len(results), accepted=accepted, refused=len(results) - accepted, results=results
    ).model_dump(mode="json")


def _refused(client: NatsClient, before: Exception | None, subject: str) -> Exception | None:
    """The server's refusal of our subscription, if it sent one since ``before`` (it does not close
    the connection for that, it only reports it)."""
    error = client.last_error
    if error is not None and error is not before and subject.lower() in str(error).lower():
        return error
    return None


async def _serve_nats_intake(runtime: Runtime, context: VisionContext) -> None:
    """Core NATS request/reply intake on ``intake.vision.detections.*`` in a queue group (one replica
    takes each batch). The subscription is made again whenever it fails or ends."""
    await runtime.messaging_ready.wait()
    assert runtime.nats is not None
    client = runtime.nats
    subject = f"{INTAKE_SUBJECT}.*"
    delay = 1.0
    while True:
        subscription = None
        try:
            before = client.last_error
            subscription = await client.subscribe(subject, queue=INTAKE_QUEUE)
            await client.flush(timeout=5)
            refusal = _refused(client, before, subject)
            if refusal is not None:
                raise PermissionError(str(refusal))
            log.info("NATS intake listening on %s (queue %s)", subject, INTAKE_QUEUE)
            delay = 1.0
            async for msg in subscription.messages:
                reply = await answer_batch(runtime, context, msg)
                if msg.reply:
                    with contextlib.suppress(Exception):
                        await msg.respond(json.dumps(reply).encode())
            log.warning("NATS intake subscription ended; subscribing again")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("NATS intake subscription failed (%s); retrying in %.0fs", error, delay)
        finally:
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


def main() -> None:
    settings = VisionSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()

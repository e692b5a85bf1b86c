"""A SIMULATOR of an analysis engine, for the demo and tests: not a real video analysis.

It speaks the engine contract (docs/vision-engines.md): ``POST /v1/analyse`` answers from a scene
kept in memory, which tests and the demo set with ``PUT``/``DELETE /v1/scene/{camera}/{algorithm}``.
Every answer carries a tiny generated JPEG as its snapshot.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from fastapi import FastAPI, Response
from pydantic import BaseModel, Field

from citygrid.serve import serve
from citygrid.settings import ServiceSettings
from contract.vision import Box, Unit
from services.vision.engines import AnalyseRequest, AnalyseResponse, EngineDetection


class SimulatorSettings(ServiceSettings):
    service_name: str = "vision-simulator"
    port: int = 8106


class SceneProblem(BaseModel):
    box: Box = Field(default_factory=lambda: Box(x=0.4, y=0.4, width=0.2, height=0.2))
    confidence: Unit = 0.9


def fake_jpeg(label: str) -> bytes:
    """Start and end markers around a label: enough for the platform's image sniffing."""
    return b"\xff\xd8\xff\xe0" + b"CityGrid simulator " + label.encode() + b"\xff\xd9"


def create_simulator() -> FastAPI:
    app = FastAPI(title="CityGrid analysis-engine simulator", version="1.0.0")
    scene: dict[tuple[str, str], SceneProblem] = {}
    app.state.scene = scene
    app.state.calls = []

    @app.post("/v1/analyse")
    async def analyse(request: AnalyseRequest) -> AnalyseResponse:
        app.state.calls.append((request.camera_id, request.algorithm_code))
        now = datetime.now(UTC)
        problem = scene.get((request.camera_id, request.algorithm_code))
        detections = (
            [] if problem is None else [EngineDetection(confidence=problem.confidence, boxes=[problem.box])]
        )
        label = f"{request.camera_id}/{request.algorithm_code}/{now.isoformat()}"
        return AnalyseResponse(
            camera_id=request.camera_id,
            algorithm_code=request.algorithm_code,
            analysed_at=now,
            detections=detections,
            snapshot_base64=base64.b64encode(fake_jpeg(label)).decode(),
        )

    @app.put("/v1/scene/{camera_id}/{algorithm_code}", status_code=204)
    async def put_problem(camera_id: str, algorithm_code: str, problem: SceneProblem) -> Response:
        scene[(camera_id, algorithm_code)] = problem
        return Response(status_code=204)

    @app.delete("/v1/scene/{camera_id}/{algorithm_code}", status_code=204)
    async def clear_problem(camera_id: str, algorithm_code: str) -> Response:
        scene.pop((camera_id, algorithm_code), None)
        return Response(status_code=204)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    settings = SimulatorSettings()
    serve(create_simulator(), settings)


if __name__ == "__main__":
    main()

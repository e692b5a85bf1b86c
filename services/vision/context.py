"""What the vision service keeps beside the kit's runtime: its blob store, figures and engine client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from citygrid.blobs import BlobStore
from services.vision.catalogue import CatalogueCache
from services.vision.engines import EngineClient
from services.vision.intake import IntakeLimits
from services.vision.metrics import VisionMetrics


@dataclass
class VisionContext:
    blobs: BlobStore
    metrics: VisionMetrics
    engines: EngineClient
    limits: IntakeLimits
    false_positive_target: float
    catalogue: CatalogueCache = field(default_factory=CatalogueCache)


async def get_context(request: Request) -> VisionContext:
    context: VisionContext = request.app.state.vision
    return context


Vision = Annotated[VisionContext, Depends(get_context)]

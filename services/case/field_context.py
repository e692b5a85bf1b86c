"""What the handler's field work needs beside the runtime: the blob store and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from citygrid.blobs import BlobStore


@dataclass(frozen=True)
class FieldConfig:
    blobs: BlobStore
    evidence_max_bytes: int
    check_in_radius_m: float


def get_field_config(request: Request) -> FieldConfig:
    config: FieldConfig = request.app.state.field
    return config


FieldWork = Annotated[FieldConfig, Depends(get_field_config)]

"""CloudEvents 1.0 envelope, the base model of event payloads, and subject/stream naming.

NATS subject ``<domain>.<entity>.<event>``; CloudEvents type ``<subject>.v<N>``; one JetStream
stream per domain (``CASE`` holds ``case.>``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from citygrid.ids import new_id


class EventData(BaseModel):
    """Payload of one event type. Subclasses set ``subject`` (NATS) and ``schema_version``.

    A change that breaks a published schema is a new class with ``schema_version + 1``.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    subject: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @classmethod
    def event_type(cls) -> str:
        return f"{cls.subject}.v{cls.schema_version}"

    @classmethod
    def domain(cls) -> str:
        return cls.subject.split(".", 1)[0]

    @classmethod
    def from_envelope(cls, envelope: CloudEvent) -> Self:
        return cls.model_validate(envelope.data)


class CloudEvent(BaseModel):
    """The structured-mode JSON envelope every CityGrid event travels in."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str | None = None
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: str | None = None
    # The aggregate's version after this event (a CloudEvents extension attribute): consumers that
    # keep a copy of another service's aggregate apply only a version newer than the one they hold.
    aggregateversion: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def domain(self) -> str:
        """The producing domain its subject names (``case`` for ``case.case.registered.v1``)."""
        return self.type.split(".", 1)[0]

    @property
    def nats_subject(self) -> str:
        """``case.case.registered.v1`` travels on ``case.case.registered``."""
        return self.type.rsplit(".", 1)[0]


def envelope(
    data: EventData,
    *,
    source: str,
    aggregate_id: str,
    aggregate_version: int,
    traceparent: str | None = None,
) -> CloudEvent:
    return CloudEvent(
        id=str(new_id()),
        source=source_of(source),
        type=data.event_type(),
        subject=aggregate_id,
        time=datetime.now(UTC),
        traceparent=traceparent,
        aggregateversion=aggregate_version,
        data=data.model_dump(mode="json"),
    )


def source_of(service: str) -> str:
    """The CloudEvents ``source`` of a service's events: ``citygrid/case``."""
    return f"citygrid/{service}"


def stream_name(domain: str) -> str:
    return domain.upper()


def stream_subjects(domain: str) -> list[str]:
    return [f"{domain}.>"]

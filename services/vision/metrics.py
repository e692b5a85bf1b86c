"""The vision service's own figures, registered beside the kit's in the app's registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class VisionMetrics:
    registry: CollectorRegistry

    def __post_init__(self) -> None:
        r = self.registry
        self.detections = Counter(
            "citygrid_vision_detections",
            "Detections by class and what became of them: received, then raised, merged, persisting, "
            "cooling_down, outside_region, below_confidence or refused.",
            ["algorithm", "outcome"],
            registry=r,
        )
        self.alarms_raised = Counter(
            "citygrid_vision_alarms_raised",
            "Alarms raised, by class and whether they dispatched themselves (auto) or wait for review.",
            ["algorithm", "dispatch"],
            registry=r,
        )
        self.reviews = Counter(
            "citygrid_vision_reviews",
            "People's verdicts on alarms (confirmed or false_positive).",
            ["algorithm", "verdict"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "citygrid_vision_review_queue_depth", "Alarms waiting for a person's review.", registry=r
        )
        self.queue_oldest_age = Gauge(
            "citygrid_vision_review_oldest_age_seconds",
            "Age of the oldest alarm waiting for review.",
            registry=r,
        )
        self.false_positive_ratio = Gauge(
            "citygrid_vision_false_positive_ratio",
            "False positives among the reviews of the last 7 days, per class.",
            ["algorithm"],
            registry=r,
        )
        self.auto_dispatch_ratio = Gauge(
            "citygrid_vision_auto_dispatch_ratio",
            "Share of the alarms of the last 7 days that dispatched themselves.",
            registry=r,
        )
        self.figures_age = Gauge(
            "citygrid_vision_figures_age_seconds",
            "Age of the fleet's review figures above (one replica computes them for all, every "
            "CITYGRID_STATS_SECONDS): growing means no replica computes them.",
            registry=r,
        )
        self.rechecks = Counter(
            "citygrid_vision_rechecks",
            "Re-checks after handling: passed, failed, or error (engine unavailable, retried).",
            ["outcome"],
            registry=r,
        )
        self.engine_calls = Histogram(
            "citygrid_vision_engine_call_duration_seconds",
            "Calls to analysis engines, by engine and outcome (ok, error, refused by the breaker).",
            ["engine", "outcome"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )

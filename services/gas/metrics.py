"""The gas service's own figures, registered beside the kit's in the app's registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class GasMetrics:
    registry: CollectorRegistry

    def __post_init__(self) -> None:
        r = self.registry
        self.scans = Counter(
            "citygrid_gas_scans",
            "Cylinder scans by type and outcome (accepted, or the refusal's code).",
            ["kind", "outcome"],
            registry=r,
        )
        self.fill_checks = Counter(
            "citygrid_gas_fill_checks",
            "Fill checks answered: allowed or refused.",
            ["outcome"],
            registry=r,
        )
        self.refusal_reasons = Counter(
            "citygrid_gas_fill_refusal_reasons",
            "Reasons given in refused fill checks (a check may give several).",
            ["reason"],
            registry=r,
        )
        self.fill_check_seconds = Histogram(
            "citygrid_gas_fill_check_duration_seconds",
            "Time to answer a fill check inside the service, its transaction included.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.cylinders = Gauge(
            "citygrid_gas_cylinders",
            "Registered cylinders by status (the fleet's figure, computed by one replica each period).",
            ["status"],
            registry=r,
        )
        self.open_incidents = Gauge(
            "citygrid_gas_open_incidents",
            "Leak incidents not closed yet.",
            registry=r,
        )
        self.figures_age = Gauge(
            "citygrid_gas_figures_age_seconds",
            "Age of the fleet figures above.",
            registry=r,
        )

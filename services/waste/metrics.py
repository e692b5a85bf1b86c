"""The waste service's own metrics, beside the kit's RED metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WasteMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.bin_events = Counter(
            "citygrid_waste_bin_events_total",
            "AI boxes' events by outcome (new, repeat, ignored, duplicate, refused).",
            ["outcome"],
            registry=registry,
        )
        self.violations = Counter(
            "citygrid_waste_violations_total",
            "Violations recorded at drop-off points, by kind, severity and source (box, camera).",
            ["kind", "severity", "source"],
            registry=registry,
        )


class ChainMetrics:
    """The collection chain's: records taken in, checks run, violations found, trips, today's figures
    (computed by one replica, shown by all)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "citygrid_waste_chain_records_total",
            "Collection-chain records received, by kind (pickup, weighing, movement) and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.checks = Counter(
            "citygrid_waste_chain_checks_total",
            "Trips (or scheduled visits, for missed_collection) checked by the chain round, by check.",
            ["check"],
            registry=registry,
        )
        self.violations = Counter(
            "citygrid_waste_chain_violations_total",
            "Collection-chain violations recorded, by kind.",
            ["kind"],
            registry=registry,
        )
        self.vehicles_failed = Counter(
            "citygrid_waste_chain_vehicles_failed_total",
            "Vehicles whose trips the chain round could not assemble (noted again for the next round).",
            registry=registry,
        )
        self.round_leader = Gauge(
            "citygrid_waste_chain_round_leader",
            "1 while this replica holds the chain round's lease.",
            registry=registry,
        )
        self.trips = Gauge(
            "citygrid_waste_trips",
            "Trips open now, and closed among those started today (city time).",
            ["state"],
            registry=registry,
        )
        self.tonnage_today = Gauge(
            "citygrid_waste_tonnage_today_tonnes",
            "Tonnes weighed today (net, city time), by the unloading vehicle's stream.",
            ["stream"],
            registry=registry,
        )
        self.recycling_rate_today = Gauge(
            "citygrid_waste_recycling_rate_today",
            "Recyclable tonnage over all tonnage weighed today (target 0.35); NaN before any weighing.",
            registry=registry,
        )
        self.resource_utilisation_rate_today = Gauge(
            "citygrid_waste_resource_utilisation_rate_today",
            "Recyclable and food-treated tonnage over all tonnage today (target 0.60).",
            registry=registry,
        )
        self.coverage_today = Gauge(
            "citygrid_waste_collection_coverage_today",
            "Scheduled point visits done in the windows of today closed so far, over those due.",
            registry=registry,
        )
        self.figures_age = Gauge(
            "citygrid_waste_chain_figures_age_seconds",
            "Age of the stored figures the gauges show.",
            registry=registry,
        )


class FleetMetrics:
    """The sanitation fleet's positions: stored and refused by intake, the writer's batches and what
    waits for it, the terminals connected and their frames, the movements read from them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.positions = Counter(
            "citygrid_waste_positions_total",
            "Vehicle positions stored, by intake (jt808 or http).",
            ["intake"],
            registry=registry,
        )
        self.positions_refused = Counter(
            "citygrid_waste_positions_refused_total",
            "Vehicle positions refused, by intake and reason (the problem code).",
            ["intake", "reason"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "citygrid_waste_position_batch_seconds",
            "Time to store one batch of positions (one COPY).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.pending = Gauge(
            "citygrid_waste_positions_pending",
            "Positions this replica holds for its writer, not yet stored.",
            registry=registry,
        )
        self.terminals_connected = Gauge(
            "citygrid_waste_terminals_connected",
            "JT/T 808 connections open on this replica.",
            registry=registry,
        )
        self.frames = Counter(
            "citygrid_waste_jt808_frames_total",
            "JT/T 808 frames by outcome (ok, rejected, bad, unsupported, limited).",
            ["outcome"],
            registry=registry,
        )
        self.movements = Counter(
            "citygrid_waste_movements_derived_total",
            "Movements read from the positions and stored (new, or a stop that ended), by kind.",
            ["kind"],
            registry=registry,
        )
        self.movements_positions = Counter(
            "citygrid_waste_movements_positions_read_total",
            "New positions the movements round read (each once, whichever replica stored it).",
            registry=registry,
        )
        self.movements_leader = Gauge(
            "citygrid_waste_movements_round_leader",
            "1 while this replica reads the fleet's positions for movements (holds the lease).",
            registry=registry,
        )
        self.movements_lag = Gauge(
            "citygrid_waste_movements_lag_seconds",
            "Age of the newest position the leading replica's last round read.",
            registry=registry,
        )

"""The muck service's own metrics, beside the kit's RED metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class MuckMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.positions = Counter(
            "citygrid_muck_positions_total",
            "Positions stored, by intake (jt808, http).",
            ["intake"],
            registry=registry,
        )
        self.positions_refused = Counter(
            "citygrid_muck_positions_refused_total",
            "Reports not stored, by intake and reason (not fixed, out of range, too old, in the future).",
            ["intake", "reason"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "citygrid_muck_position_batch_seconds",
            "Time to COPY one batch of positions into the store.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.intake_lag = Gauge(
            "citygrid_muck_intake_lag_seconds",
            "Age of the newest position of the last stored batch when it was stored (terminal to store).",
            registry=registry,
        )
        self.pending = Gauge(
            "citygrid_muck_positions_pending",
            "Positions waiting to be stored in this replica.",
            registry=registry,
        )
        self.terminals_connected = Gauge(
            "citygrid_muck_terminals_connected",
            "JT/T 808 connections open on this replica.",
            registry=registry,
        )
        self.frames = Counter(
            "citygrid_muck_jt808_frames_total",
            "JT/T 808 frames by outcome (ok, rejected, bad, unsupported).",
            ["outcome"],
            registry=registry,
        )
        self.active_trucks = Gauge(
            "citygrid_muck_active_trucks",
            "Trucks whose latest position is under 10 minutes old (this replica's map).",
            registry=registry,
        )
        # The transport rules (services/muck/rules): evaluated once, in the replica holding the lease.
        self.rules_positions = Counter(
            "citygrid_muck_rules_positions_total",
            "Positions the transport rules evaluated (in time order per truck; late ones are not).",
            registry=registry,
        )
        self.rules_leader = Gauge(
            "citygrid_muck_rules_leader",
            "1 while this replica holds the transport rules' lease.",
            registry=registry,
        )
        self.rules_trucks = Gauge(
            "citygrid_muck_rules_trucks",
            "Trucks whose episodes the leading replica follows.",
            registry=registry,
        )
        self.rules_lag = Gauge(
            "citygrid_muck_rules_lag_seconds",
            "Age of the newest position of the last round when the rules evaluated it (leader only).",
            registry=registry,
        )
        self.manifests = Gauge(
            "citygrid_muck_manifests",
            "Unfinished manifests by status, counted in the database (every replica shows the same).",
            ["status"],
            registry=registry,
        )
        self.violations = Counter(
            "citygrid_muck_violations_total",
            "Transport violations recorded, by kind and severity.",
            ["kind", "severity"],
            registry=registry,
        )

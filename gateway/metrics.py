"""The gateway's own metrics, beside the kit's HTTP ones (served on the internal port only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.upstream_saturated = Counter(
            "citygrid_gateway_upstream_saturated",
            "Calls refused because the upstream's connection pool stayed full for the pool timeout.",
            ["service"],
            registry=registry,
        )
        self.refused = Counter(
            "citygrid_gateway_refused_requests",
            "Requests refused by a limit before reaching a service.",
            ["reason"],
            registry=registry,
        )
        self.key_lookups = Counter(
            "citygrid_gateway_key_lookups",
            "API-key lookups in the gateway's database, by whether they found a consumer.",
            ["outcome"],
            registry=registry,
        )
        self.openapi_builds = Counter(
            "citygrid_gateway_openapi_builds",
            "Builds of the merged OpenAPI document (each fetches every service's document once).",
            ["outcome"],
            registry=registry,
        )
        self.jwks_fetches = Counter(
            "citygrid_gateway_people_jwks_fetches",
            "Fetches of the identity provider's keys (JWKS), by outcome (ok, failed).",
            ["outcome"],
            registry=registry,
        )
        # The message log (gateway.message_log): this replica's writer.
        self.message_log_written = Counter(
            "citygrid_gateway_message_log_written_records",
            "Message-log records written to the database.",
            registry=registry,
        )
        self.message_log_dropped = Counter(
            "citygrid_gateway_message_log_dropped_records",
            "Calls not recorded because the message log's buffer was full (the database away too long).",
            registry=registry,
        )
        self.message_log_pending = Gauge(
            "citygrid_gateway_message_log_pending_records",
            "Message-log records buffered in this replica, not yet written.",
            registry=registry,
        )
        self.message_log_oldest_pending_age = Gauge(
            "citygrid_gateway_message_log_oldest_pending_age_seconds",
            "How long the oldest buffered message-log record has waited to be written (0: none waits).",
            registry=registry,
        )
        self.message_log_flush_seconds = Histogram(
            "citygrid_gateway_message_log_flush_seconds",
            "Time to write one batch of message-log records (COPY and the writer's seal, one transaction).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=registry,
        )
        self.message_log_flush_failures = Counter(
            "citygrid_gateway_message_log_flush_failures",
            "Message-log batches that could not be written (retried until they are).",
            registry=registry,
        )
        self.credential_polls = Counter(
            "citygrid_gateway_credential_polls_total",
            "Reads of the credential changes (revocations, changed grants), by outcome (ok, failed).",
            ["outcome"],
            registry=registry,
        )
        self.tokens_issued = Counter(
            "citygrid_gateway_access_tokens_issued_total",
            "OAuth2 client-credentials access tokens issued.",
            registry=registry,
        )
        self.credential_changes_age = Gauge(
            "citygrid_gateway_credential_changes_age_seconds",
            "Seconds since this replica last read the credential changes (a revocation elsewhere "
            "holds here only once they are read).",
            registry=registry,
        )
        # The quota ledger (gateway.quotas): this replica's settlements with the others.
        self.quota_settlements = Counter(
            "citygrid_gateway_quota_settlements_total",
            "Settlements of this replica's quota reservations in the database, by outcome (ok, failed).",
            ["outcome"],
            registry=registry,
        )
        self.quota_settle_seconds = Histogram(
            "citygrid_gateway_quota_settle_seconds",
            "Time to settle this replica's quota reservations (one transaction).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.quota_offline_admits = Counter(
            "citygrid_gateway_quota_offline_admits_total",
            "Requests admitted from this replica's offline share (the ledger unreachable or slow).",
            registry=registry,
        )
        self.quota_windows = Gauge(
            "citygrid_gateway_quota_windows",
            "Quota windows (a subject's minute or day) this replica holds in memory.",
            registry=registry,
        )
        self.quota_ledger_reachable = Gauge(
            "citygrid_gateway_quota_ledger_reachable",
            "1 while this replica's last quota settlement reached the database; 0 while it admits "
            "from its offline share (limit ÷ CITYGRID_QUOTA_REPLICAS per window).",
            registry=registry,
        )
        # Webhook subscriptions (gateway.subscriptions): what this replica delivers.
        self.webhook_queued = Counter(
            "citygrid_gateway_webhook_messages_queued_total",
            "Deliveries queued for subscriptions from the events read (one per subscription and event).",
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "citygrid_gateway_webhook_attempts_total",
            "Delivery attempts by outcome: delivered (2xx), failed (retried later), given_up (the last "
            "attempt failed), dropped (the consumer or its scope is gone).",
            ["outcome"],
            registry=registry,
        )
        self.webhook_attempt_seconds = Histogram(
            "citygrid_gateway_webhook_attempt_seconds",
            "Time from connecting to a receiver to its answer, per attempt.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.webhook_in_flight = Gauge(
            "citygrid_gateway_webhook_in_flight",
            "Deliveries this replica is sending now.",
            registry=registry,
        )
        self.webhook_subscriptions = Gauge(
            "citygrid_gateway_webhook_subscriptions",
            "Subscriptions by state (active, paused); a pause after failures has the reason failing.",
            ["state"],
            registry=registry,
        )
        self.webhook_oldest_due_age = Gauge(
            "citygrid_gateway_webhook_oldest_due_age_seconds",
            "How long the oldest delivery due to an active subscription has waited (0: none waits).",
            registry=registry,
        )

"""The collection chain's share of the waste service's composition: its metrics, its round, its
periodic jobs (the round, today's figures, retention), built once the runtime exists."""

from __future__ import annotations

from dataclasses import dataclass

from citygrid.jobs import PeriodicJob
from citygrid.runtime import Runtime
from services.waste.chain import figures, retention
from services.waste.chain.rounds import ChainConfig, ChainRound
from services.waste.chain.service import Tally
from services.waste.metrics import ChainMetrics


@dataclass
class ChainPart:
    round_seconds: float = 15.0
    figures_seconds: float = 60.0
    retention_seconds: float = 600.0
    record_days: int = retention.RECORD_DAYS
    evidence_days: int = retention.EVIDENCE_DAYS
    config: ChainConfig | None = None
    metrics: ChainMetrics | None = None
    round: ChainRound | None = None

    def counted(self, tally: Tally) -> None:
        if self.metrics is None:
            return
        for (kind, outcome), count in tally.records.items():
            self.metrics.records.labels(kind, outcome).inc(count)

    def jobs(self, runtime: Runtime) -> list[PeriodicJob]:
        metrics = self.metrics = ChainMetrics(runtime.metrics.registry)
        chain_round = self.round = ChainRound(runtime, metrics, self.config)

        async def today() -> int:
            await figures.refresh(runtime.db, metrics, every_seconds=self.figures_seconds)
            return 0

        return [
            PeriodicJob(
                "waste-chain-round",
                self.round_seconds,
                chain_round.round,
                batch_size=chain_round.config.vehicles_per_round,
                on_stop=chain_round.release,
            ),
            PeriodicJob("waste-chain-figures", self.figures_seconds, today),
            PeriodicJob(
                "waste-chain-retention",
                self.retention_seconds,
                lambda: retention.purge_once(
                    runtime.db, record_days=self.record_days, evidence_days=self.evidence_days
                ),
                batch_size=retention.BATCH_SIZE,
            ),
        ]

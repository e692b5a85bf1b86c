"""A circuit breaker per analysis engine, as a pure state machine driven by the caller's clock.

Closed: calls go through; ``failure_threshold`` failures in a row open it. Open: calls are refused
at once until ``reset_seconds`` have passed, then one trial call is let through (half-open); its
success closes the breaker, its failure opens it again. Every call ``allow`` let through ends in
exactly one of ``succeeded``, ``failed`` or ``abandoned`` (the caller's ``finally``), or a trial
stays taken and the breaker refuses every call for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    reset_seconds: float = 30.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    trial_in_flight: bool = False

    def allow(self, now: float) -> bool:
        """May a call start now? In half-open, only one trial at a time."""
        if self.state is BreakerState.OPEN:
            if now - self.opened_at < self.reset_seconds:
                return False
            self.state = BreakerState.HALF_OPEN
            self.trial_in_flight = False
        if self.state is BreakerState.HALF_OPEN:
            if self.trial_in_flight:
                return False
            self.trial_in_flight = True
        return True

    def succeeded(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.trial_in_flight = False

    def abandoned(self) -> None:
        """The call ended without a verdict on the engine (cancelled, or an error of our own): a
        half-open trial is free again, nothing else changes."""
        self.trial_in_flight = False

    def failed(self, now: float) -> None:
        self.trial_in_flight = False
        if self.state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.failures = 0

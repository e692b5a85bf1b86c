"""False-positive rates from people's reviews, and the confidence threshold they recommend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Reviewed:
    confidence: float
    false_positive: bool


@dataclass(frozen=True)
class Recommendation:
    reviewed: int
    false_positives: int
    false_positive_rate: float | None
    recommended_min_confidence: float | None
    reason: str


def false_positive_rate(reviews: Sequence[Reviewed]) -> float | None:
    if not reviews:
        return None
    return sum(r.false_positive for r in reviews) / len(reviews)


def recommend_threshold(
    reviews: Sequence[Reviewed],
    current: float,
    *,
    target_rate: float = 0.1,
    minimum_reviews: int = 20,
) -> Recommendation:
    """The lowest threshold at which the reviewed alarms would have met the target FP rate.

    Lowering below ``current`` is never recommended: alarms under it were never raised, so the
    reviews say nothing about them. ``None`` when there are too few reviews, or when no threshold
    among the reviewed confidences reaches the target.
    """
    total = len(reviews)
    false = sum(r.false_positive for r in reviews)
    rate = false / total if total else None
    if total < minimum_reviews:
        return Recommendation(total, false, rate, None, f"needs at least {minimum_reviews} reviews")
    if rate is not None and rate <= target_rate:
        return Recommendation(total, false, rate, current, "the current threshold meets the target")
    ordered = sorted(reviews, key=lambda r: r.confidence)
    remaining_false = false
    for index, review in enumerate(ordered):
        kept = total - index
        first_of_its_value = index == 0 or ordered[index - 1].confidence < review.confidence
        if (
            first_of_its_value
            and review.confidence >= current
            and kept >= minimum_reviews // 2
            and remaining_false / kept <= target_rate
        ):
            return Recommendation(
                total, false, rate, round(review.confidence, 3), f"keeps {kept} of {total} reviewed alarms"
            )
        remaining_false -= review.false_positive
    return Recommendation(total, false, rate, None, "no threshold reaches the target rate")

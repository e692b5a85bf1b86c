"""False-positive rates from people's reviews, and the confidence threshold they recommend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Reviewed:
    confidence: float
    false_positive: bool


@dataclass(frozen=True)
class Bucket:
    """The reviews of one class at one confidence (the database groups them): how many, how many
    of them false positives."""

    confidence: float
    reviewed: int
    false_positives: int


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


def buckets_of(reviews: Sequence[Reviewed]) -> list[Bucket]:
    """Reviews grouped by their exact confidence."""
    counts: dict[float, list[int]] = {}
    for review in reviews:
        count = counts.setdefault(review.confidence, [0, 0])
        count[0] += 1
        count[1] += review.false_positive
    return [Bucket(confidence, n, false) for confidence, (n, false) in counts.items()]


def recommend_threshold(
    reviews: Sequence[Reviewed],
    current: float,
    *,
    target_rate: float = 0.1,
    minimum_reviews: int = 20,
) -> Recommendation:
    """``recommend_from_buckets`` of individual reviews."""
    return recommend_from_buckets(
        buckets_of(reviews), current, target_rate=target_rate, minimum_reviews=minimum_reviews
    )


def recommend_from_buckets(
    buckets: Sequence[Bucket],
    current: float,
    *,
    target_rate: float = 0.1,
    minimum_reviews: int = 20,
) -> Recommendation:
    """The lowest threshold at which the reviewed alarms would have met the target FP rate.

    A threshold is a bucket's confidence: it keeps that bucket's reviews and those above. Lowering
    below ``current`` is never recommended: alarms under it were never raised, so the reviews say
    nothing about them. ``None`` when there are too few reviews, or when no threshold among the
    reviewed confidences reaches the target.
    """
    total = sum(b.reviewed for b in buckets)
    false = sum(b.false_positives for b in buckets)
    rate = false / total if total else None
    if total < minimum_reviews:
        return Recommendation(total, false, rate, None, f"needs at least {minimum_reviews} reviews")
    if rate is not None and rate <= target_rate:
        return Recommendation(total, false, rate, current, "the current threshold meets the target")
    kept, remaining_false = total, false
    for bucket in sorted(buckets, key=lambda b: b.confidence):
        if (
            bucket.confidence >= current
            and kept >= minimum_reviews // 2
            and remaining_false / kept <= target_rate
        ):
            return Recommendation(
                total, false, rate, round(bucket.confidence, 3), f"keeps {kept} of {total} reviewed alarms"
            )
        kept -= bucket.reviewed
        remaining_false -= bucket.false_positives
    return Recommendation(total, false, rate, None, "no threshold reaches the target rate")

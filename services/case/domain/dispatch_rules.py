"""Dispatch rules: category × area → responsible unit, the most specific matching rule wins.

A rule names a category as a small class (5 digits, e.g. ``20106`` overflowing bin) or a big class
(the 3-digit prefix of its small classes, e.g. ``201`` city appearance), and an area as a prefix of
the 15-digit grid code: a district (6 digits), a street (9), a community (12), one grid cell (15),
or the empty prefix for the whole city. A case matches a rule when both are prefixes of the case's
category and place.

"Most specific" is decided by the category first, then the area: a small-class rule anywhere in the
district beats a big-class rule for one street, because the category decides *which kind* of unit
answers and the place only *which one of them*. Two rules never tie: (category, area) is unique.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

CATEGORY_RULE_PATTERN: Final = r"^[12][0-9]{2}([0-9]{2})?$"
AREA_RULE_PATTERN: Final = r"^([0-9]{6}|[0-9]{9}|[0-9]{12}|[0-9]{15})?$"


@dataclass(frozen=True)
class Place:
    """Where a case is: its district always, the rest when the point lies on the grid."""

    district_code: str
    street_code: str | None = None
    community_code: str | None = None
    grid_code: str | None = None

    def area_prefixes(self) -> list[str]:
        """Every area code a rule could name for this place, most specific first ("" = city)."""
        found = [self.grid_code, self.community_code, self.street_code, self.district_code, ""]
        return [code for code in found if code is not None]


@dataclass(frozen=True)
class Rule:
    category_code: str
    area_code: str
    unit_code: str

    def __post_init__(self) -> None:
        if re.fullmatch(CATEGORY_RULE_PATTERN, self.category_code) is None:
            raise ValueError(
                f"a rule's category is a small class (5 digits) or a big class (3 digits), got {self.category_code!r}"
            )
        if re.fullmatch(AREA_RULE_PATTERN, self.area_code) is None:
            raise ValueError(
                "a rule's area is a district (6 digits), street (9), community (12), grid (15) "
                f"or empty for the whole city, got {self.area_code!r}"
            )

    @property
    def specificity(self) -> tuple[int, int]:
        return len(self.category_code), len(self.area_code)

    def matches(self, category_code: str, place: Place) -> bool:
        return category_code.startswith(self.category_code) and self.area_code in place.area_prefixes()


def category_prefixes(category_code: str) -> list[str]:
    """The category codes a rule could name for this small class: itself and its big class."""
    return [category_code, category_code[:3]]


def best_rule(rules: Iterable[Rule], category_code: str, place: Place) -> Rule | None:
    """The most specific rule matching the case's category and place, or None (the dispatcher decides)."""
    matching = [rule for rule in rules if rule.matches(category_code, place)]
    if not matching:
        return None
    return max(matching, key=lambda rule: rule.specificity)

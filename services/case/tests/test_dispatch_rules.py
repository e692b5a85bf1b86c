"""Dispatch rules (category × area → unit) and the shipped responsible units, without I/O."""

from __future__ import annotations

import pytest

from contract.common import GUANGZHOU_DISTRICTS
from services.case.domain.categories import UnitType, load_catalogue
from services.case.domain.dispatch_rules import Place, Rule, best_rule, category_prefixes
from services.case.domain.units import hierarchy_problem, shipped_units

TIANHE_CELL = Place("440106", "440106003", "440106003002", "440106003002007")


def unit_of(rules, category, place=TIANHE_CELL):
    rule = best_rule(rules, category, place)
    return None if rule is None else rule.unit_code


def test_a_rule_matches_when_its_category_and_area_are_prefixes_of_the_case():
    rule = Rule("201", "440106003", "street-office")
    assert rule.matches("20106", TIANHE_CELL)
    assert not rule.matches("20206", TIANHE_CELL)
    assert not rule.matches("20106", Place("440106", "440106004", "440106004001", "440106004001001"))


def test_an_empty_area_covers_the_whole_city_even_off_the_grid():
    rule = Rule("20106", "", "city-sanitation")
    assert rule.matches("20106", Place("440113"))
    assert unit_of([rule], "20106", Place("440113")) == "city-sanitation"


def test_the_most_specific_area_wins_for_the_same_category():
    rules = [
        Rule("20106", "", "city"),
        Rule("20106", "440106", "district"),
        Rule("20106", "440106003", "street"),
        Rule("20106", "440106003002", "community"),
        Rule("20106", "440106003002007", "cell"),
    ]
    for dropped in range(len(rules)):
        remaining = rules[: len(rules) - dropped]
        assert unit_of(remaining, "20106") == remaining[-1].unit_code


def test_a_small_class_rule_beats_a_big_class_rule_even_for_a_narrower_area():
    rules = [Rule("201", "440106003002007", "street-office"), Rule("20106", "440106", "tianhe-sanitation")]
    assert unit_of(rules, "20106") == "tianhe-sanitation"
    assert unit_of(rules, "20101") == "street-office"


def test_no_matching_rule_leaves_the_case_to_the_dispatcher():
    rules = [Rule("20106", "440104", "yuexiu-sanitation"), Rule("101", "", "municipal")]
    assert unit_of(rules, "20106") is None
    assert best_rule([], "20106", TIANHE_CELL) is None


def test_a_place_off_the_grid_matches_only_district_and_city_rules():
    off_grid = Place("440106")
    assert off_grid.area_prefixes() == ["440106", ""]
    rules = [Rule("20106", "440106003", "street"), Rule("20106", "440106", "district")]
    assert unit_of(rules, "20106", off_grid) == "district"


def test_the_category_prefixes_are_the_small_class_and_its_big_class():
    assert category_prefixes("20106") == ["20106", "201"]


@pytest.mark.parametrize(
    ("category", "area"),
    [("2010", "440106"), ("301", "440106"), ("20106", "4401"), ("20106", "4401060031"), ("20106", "44010a")],
)
def test_a_rule_with_a_malformed_category_or_area_is_refused(category, area):
    with pytest.raises(ValueError, match="a rule's"):
        Rule(category, area, "unit")


# -- units ---------------------------------------------------------------------------------------


def test_the_shipped_units_cover_every_district_with_its_sanitation_and_power_supply():
    codes = {unit.code: unit for unit in shipped_units()}
    for slug, district in [("tianhe", "440106"), ("yuexiu", "440104"), ("zengcheng", "440118")]:
        assert codes[f"{slug}-sanitation"].district_code == district
        assert codes[f"{slug}-sanitation"].type is UnitType.SANITATION
        assert codes[f"power-supply-{slug}"].type is UnitType.POWER
    assert {u.district_code for u in codes.values() if u.district_code} == set(GUANGZHOU_DISTRICTS)


def test_the_shipped_units_list_each_parent_before_its_children_and_codes_once():
    units = shipped_units()
    assert len({unit.code for unit in units}) == len(units)
    seen: set[str] = set()
    for unit in units:
        assert unit.parent_code is None or unit.parent_code in seen
        seen.add(unit.code)


def test_every_default_unit_type_of_the_catalogue_that_is_local_has_a_shipped_unit_in_each_district():
    local = {UnitType.SANITATION, UnitType.MUNICIPAL_WORKS, UnitType.PARKS, UnitType.ENFORCEMENT}
    used = {category.default_unit_type for category in load_catalogue().categories}
    units = shipped_units()
    for unit_type in local & used:
        assert {u.district_code for u in units if u.type is unit_type} == set(GUANGZHOU_DISTRICTS)


def test_a_parent_must_exist_and_must_not_close_a_cycle():
    parents = {"city": None, "district": "city", "team": "district"}
    assert hierarchy_problem(parents, "team", "district") is None
    assert hierarchy_problem(parents, "new", None) is None
    assert "no unit" in (hierarchy_problem(parents, "team", "nowhere") or "")
    assert "cycle" in (hierarchy_problem(parents, "city", "team") or "")
    assert "cycle" in (hierarchy_problem(parents, "team", "team") or "")

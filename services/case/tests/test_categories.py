"""The case category catalogue as a specification: what ships, and what the loader refuses."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.case.domain.categories import (
    DEFAULT_PATH,
    Catalogue,
    CategoryKind,
    Stage,
    UnitType,
    load_catalogue,
)

SHIPPED: dict[str, Any] = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def mutated(change) -> dict[str, Any]:
    document = copy.deepcopy(SHIPPED)
    change(document)
    return document


def category(document: dict[str, Any], code: str) -> dict[str, Any]:
    return next(c for c in document["categories"] if c["code"] == code)


# --- what ships ---------------------------------------------------------------------------------


def test_the_shipped_catalogue_loads_and_validates(catalogue):
    assert catalogue.catalogue == "citygrid-case-categories"
    assert catalogue.version == "2026.1"
    assert catalogue.standard.startswith("GB/T 30428.2")


def test_the_default_path_is_the_v1_seed_file():
    assert DEFAULT_PATH.parts[-3:] == ("data", "categories", "v1.json")
    assert load_catalogue(DEFAULT_PATH) == load_catalogue()


def test_there_are_at_least_six_big_classes_of_each_kind(catalogue):
    kinds = Counter(b.kind for b in catalogue.big_classes)
    assert kinds[CategoryKind.COMPONENT] >= 6
    assert kinds[CategoryKind.EVENT] >= 6


def test_the_big_classes_follow_gb_t_30428_2(catalogue):
    names = {(b.kind, b.code): b.name_zh for b in catalogue.big_classes}
    assert names[(CategoryKind.COMPONENT, "01")] == "公用设施"
    assert names[(CategoryKind.COMPONENT, "02")] == "道路交通"
    assert names[(CategoryKind.COMPONENT, "04")] == "园林绿化"
    assert names[(CategoryKind.EVENT, "01")] == "市容环境"
    assert names[(CategoryKind.EVENT, "04")] == "突发事件"
    assert names[(CategoryKind.EVENT, "05")] == "街面秩序"


def test_there_are_at_least_120_small_classes(catalogue):
    assert len(catalogue.categories) >= 120


def test_every_big_class_has_small_classes(catalogue):
    used = {(c.kind, c.big_class_code) for c in catalogue.categories}
    assert used == {(b.kind, b.code) for b in catalogue.big_classes}


def test_every_small_class_has_all_four_stage_limits_and_a_known_unit_type(catalogue):
    for c in catalogue.categories:
        assert set(c.limits) == set(Stage), c.code
        assert all(limit.amount > 0 for limit in c.limits.values()), c.code
        assert isinstance(c.default_unit_type, UnitType), c.code


def test_every_code_is_kind_digit_then_big_class_then_small_class(catalogue):
    for c in catalogue.categories:
        assert len(c.code) == 5
        assert c.code.isdigit()
        assert c.code[0] == {"component": "1", "event": "2"}[c.kind]
        assert c.code[1:3] == c.big_class_code


def test_open311_service_codes_are_unique_and_groups_are_big_class_names(catalogue):
    assert len({c.open311_service_code for c in catalogue.categories}) == len(catalogue.categories)
    for c in catalogue.categories:
        assert c.open311_group == catalogue.big_class_of(c).name_en


def test_urgent_small_classes_are_handled_in_natural_hours(catalogue):
    urgent = [c for c in catalogue.categories if c.urgent]
    assert urgent
    for c in urgent:
        assert c.limits[Stage.HANDLE].unit == "natural_hours", c.code
    for c in catalogue.categories:
        if not c.urgent:
            assert c.limits[Stage.HANDLE].unit != "natural_hours", c.code


def test_registration_and_dispatch_take_at_most_an_hour(catalogue):
    for c in catalogue.categories:
        for stage in (Stage.REGISTER, Stage.DISPATCH):
            assert c.limits[stage].unit in {"working_hours", "natural_hours"}, c.code
            assert c.limits[stage].amount <= 1, c.code


def test_exposed_garbage_is_handled_within_a_working_day_by_sanitation(catalogue):
    garbage = catalogue.by_code("20101")
    assert garbage is not None
    assert garbage.name_zh == "暴露垃圾"
    assert garbage.default_unit_type is UnitType.SANITATION
    handle = garbage.limits[Stage.HANDLE]
    assert (handle.unit == "working_hours" and handle.amount <= 8) or (
        handle.unit == "working_days" and handle.amount <= 1
    )


def test_illegal_building_is_handled_in_working_days(catalogue):
    building = next(c for c in catalogue.categories if c.name_zh == "违法建设")
    assert building.kind is CategoryKind.EVENT
    assert building.limits[Stage.HANDLE].unit == "working_days"
    assert building.limits[Stage.HANDLE].amount == 20
    assert building.default_unit_type is UnitType.ENFORCEMENT


def test_a_missing_manhole_cover_is_urgent(catalogue):
    missing = next(c for c in catalogue.categories if c.name_zh == "井盖缺失")
    assert missing.urgent
    assert missing.limits[Stage.HANDLE].unit == "natural_hours"
    assert missing.limits[Stage.HANDLE].amount <= 4


def test_muck_spillage_takes_two_to_four_working_days(catalogue):
    muck = next(c for c in catalogue.categories if c.name_zh == "渣土撒漏")
    assert muck.limits[Stage.HANDLE].unit == "working_days"
    assert 2 <= muck.limits[Stage.HANDLE].amount <= 4


def test_the_water_supply_manhole_cover_is_component_10101(catalogue):
    cover = catalogue.by_code("10101")
    assert cover is not None
    assert (cover.name_zh, cover.kind, cover.big_class_code) == ("上水井盖", CategoryKind.COMPONENT, "01")


@pytest.mark.parametrize(
    "name", ["路灯", "交通信号灯", "公交站亭", "垃圾箱", "公厕", "行道树", "消防栓", "雕塑", "绿地"]
)
def test_well_known_components_exist(catalogue, name):
    assert any(c.name_zh == name and c.kind is CategoryKind.COMPONENT for c in catalogue.categories)


@pytest.mark.parametrize(
    "name",
    [
        "道路不洁",
        "违章张贴小广告",
        "施工占道",
        "道路积水",
        "火灾",
        "占道经营",
        "流动摊贩",
        "共享单车乱停放",
        "油烟污染",
    ],
)
def test_well_known_events_exist(catalogue, name):
    assert any(c.name_zh == name and c.kind is CategoryKind.EVENT for c in catalogue.categories)


def test_an_unknown_code_finds_nothing(catalogue):
    assert catalogue.by_code("29999") is None
    assert catalogue.by_code("") is None


def test_the_catalogue_is_immutable(catalogue):
    with pytest.raises(ValidationError):
        catalogue.version = "2099.9"


def test_a_catalogue_can_be_loaded_from_another_path(tmp_path: Path):
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(mutated(lambda d: d.update(version="2026.2"))), encoding="utf-8")
    assert load_catalogue(path).version == "2026.2"


# --- what the loader refuses --------------------------------------------------------------------


def refused(document: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Catalogue.model_validate(document)


def test_duplicate_codes_are_refused():
    def duplicate(d):
        twin = copy.deepcopy(category(d, "20101"))
        twin["open311_service_code"] = "CG-twin"
        d["categories"].append(twin)

    refused(mutated(duplicate), "duplicate category code 20101")


def test_a_code_that_is_not_five_digits_is_refused():
    refused(mutated(lambda d: category(d, "20101").update(code="2011")), "pattern")


def test_a_code_whose_kind_digit_disagrees_is_refused():
    refused(mutated(lambda d: category(d, "20101").update(kind="component")), "prefix must be 101")


def test_a_code_whose_big_class_disagrees_is_refused():
    refused(mutated(lambda d: category(d, "20101").update(big_class_code="02")), "prefix must be 202")


def test_a_category_of_an_unknown_big_class_is_refused():
    def move(d):
        category(d, "20101").update(code="20901", big_class_code="09")

    refused(mutated(move), "unknown big class event 09")


def test_duplicate_open311_codes_are_refused():
    refused(
        mutated(lambda d: category(d, "20102").update(open311_service_code="CG-20101")),
        "duplicate Open311 service code CG-20101",
    )


def test_a_missing_stage_limit_is_refused():
    refused(mutated(lambda d: category(d, "20101")["limits"].pop("verify")), "missing stage limits: verify")


@pytest.mark.parametrize("amount", [0, -1])
def test_a_non_positive_amount_is_refused(amount):
    def change(d):
        category(d, "20101")["limits"]["handle"]["amount"] = amount

    refused(mutated(change), "greater than 0")


def test_an_unknown_limit_unit_is_refused():
    def change(d):
        category(d, "20101")["limits"]["handle"]["unit"] = "weeks"

    refused(mutated(change), "working_hours")


def test_an_unknown_unit_type_is_refused():
    refused(mutated(lambda d: category(d, "20101").update(default_unit_type="police")), "default_unit_type")


def test_an_urgent_flag_without_natural_hours_is_refused():
    refused(mutated(lambda d: category(d, "20101").update(urgent=True)), "natural hours")


def test_a_big_class_without_categories_is_refused():
    def add(d):
        d["big_classes"].append({"kind": "event", "code": "07", "name_zh": "空", "name_en": "Empty"})

    refused(mutated(add), "big classes without categories: event 07")


def test_unknown_fields_are_refused():
    refused(mutated(lambda d: category(d, "20101").update(colour="red")), "colour")


def test_the_shipped_document_itself_passes_the_same_validation():
    assert Catalogue.model_validate(copy.deepcopy(SHIPPED)).by_code("20101") is not None

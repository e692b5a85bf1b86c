"""The case category catalogue: what a case is about, who handles it and how long each stage may take.

Shaped on GB/T 30428.2: managed objects are components (部件, city furniture) or events (事件, conduct
and conditions), each in a big class and a small class. A category code is five digits:
kind (1 = component, 2 = event) + big class (2 digits) + small class (2 digits), e.g. ``20101`` 暴露垃圾.

The catalogue is versioned seed data (``services/case/data/categories/v1.json``); this module only
describes and validates it. Pure: stdlib and pydantic.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PrivateAttr,
    field_validator,
    model_validator,
)

from services.case.domain.calendar import LimitUnit

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "data" / "categories" / "v1.json"


class CategoryKind(StrEnum):
    COMPONENT = "component"  # 部件
    EVENT = "event"  # 事件


KIND_DIGIT: dict[CategoryKind, str] = {CategoryKind.COMPONENT: "1", CategoryKind.EVENT: "2"}


class Stage(StrEnum):
    REGISTER = "register"  # 立案: from report to registration
    DISPATCH = "dispatch"  # 派遣: from registration to dispatch
    HANDLE = "handle"  # 处置: from dispatch to handled
    VERIFY = "verify"  # 核查: from handled to verified


class UnitType(StrEnum):
    """The kind of unit a category is dispatched to by default; the place picks the concrete unit."""

    DISTRICT_OFFICE = "district_office"  # 区城管部门
    STREET_OFFICE = "street_office"  # 街道办事处
    SANITATION = "sanitation"  # 环卫
    MUNICIPAL_WORKS = "municipal_works"  # 市政
    PARKS = "parks"  # 园林绿化
    POWER = "power"  # 供电
    WATER = "water"  # 供水
    DRAINAGE = "drainage"  # 排水
    GAS_COMPANY = "gas_company"  # 燃气公司
    TELECOM = "telecom"  # 通信运营商
    TRAFFIC_POLICE = "traffic_police"  # 交警
    ENFORCEMENT = "enforcement"  # 城管执法
    HOUSING_CONSTRUCTION = "housing_construction"  # 住建
    MARKET_REGULATION = "market_regulation"  # 市场监管
    ECOLOGY_ENVIRONMENT = "ecology_environment"  # 生态环境
    FIRE_RESCUE = "fire_rescue"  # 消防救援
    PROPERTY_MANAGEMENT = "property_management"  # 物业


CategoryCode = Annotated[str, Field(pattern=r"^[12][0-9]{4}$")]
BigClassCode = Annotated[str, Field(pattern=r"^[0-9]{2}$")]
NonEmpty = Annotated[str, Field(min_length=1)]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class StageLimit(BaseModel):
    model_config = _FROZEN

    amount: PositiveFloat
    unit: LimitUnit


class BigClass(BaseModel):
    model_config = _FROZEN

    kind: CategoryKind
    code: BigClassCode
    name_zh: NonEmpty
    name_en: NonEmpty


class Category(BaseModel):
    model_config = _FROZEN

    code: CategoryCode
    kind: CategoryKind
    big_class_code: BigClassCode
    name_zh: NonEmpty
    name_en: NonEmpty
    limits: dict[Stage, StageLimit]
    urgent: bool
    default_unit_type: UnitType
    open311_service_code: NonEmpty
    open311_group: NonEmpty
    keywords: tuple[str, ...] = ()

    @field_validator("limits")
    @classmethod
    def _every_stage_has_a_limit(cls, limits: dict[Stage, StageLimit]) -> dict[Stage, StageLimit]:
        missing = [stage.value for stage in Stage if stage not in limits]
        if missing:
            raise ValueError(f"missing stage limits: {', '.join(missing)}")
        return limits

    @model_validator(mode="after")
    def _code_agrees_with_kind_and_big_class(self) -> Category:
        expected = KIND_DIGIT[self.kind] + self.big_class_code
        if not self.code.startswith(expected):
            raise ValueError(
                f"category {self.code}: prefix must be {expected} (kind {self.kind}, big class {self.big_class_code})"
            )
        # Urgent means a safety hazard: handled against the natural clock, nights and holidays included.
        if self.urgent != (self.limits[Stage.HANDLE].unit == "natural_hours"):
            raise ValueError(
                f"category {self.code}: urgent if and only if handling is limited in natural hours"
            )
        return self


class Catalogue(BaseModel):
    model_config = _FROZEN

    catalogue: NonEmpty
    version: NonEmpty
    standard: str
    big_classes: tuple[BigClass, ...]
    categories: tuple[Category, ...]

    _index: dict[str, Category] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        big: dict[tuple[CategoryKind, str], BigClass] = {}
        for big_class in self.big_classes:
            key = (big_class.kind, big_class.code)
            if key in big:
                raise ValueError(f"duplicate big class {big_class.kind} {big_class.code}")
            big[key] = big_class
        seen_codes: set[str] = set()
        seen_open311: set[str] = set()
        used: set[tuple[CategoryKind, str]] = set()
        for category in self.categories:
            if category.code in seen_codes:
                raise ValueError(f"duplicate category code {category.code}")
            seen_codes.add(category.code)
            if category.open311_service_code in seen_open311:
                raise ValueError(f"duplicate Open311 service code {category.open311_service_code}")
            seen_open311.add(category.open311_service_code)
            key = (category.kind, category.big_class_code)
            if key not in big:
                raise ValueError(
                    f"category {category.code}: unknown big class {category.kind} {category.big_class_code}"
                )
            if category.open311_group != big[key].name_en:
                raise ValueError(f"category {category.code}: Open311 group must be {big[key].name_en!r}")
            used.add(key)
        empty = [f"{kind} {code}" for kind, code in big if (kind, code) not in used]
        if empty:
            raise ValueError(f"big classes without categories: {', '.join(empty)}")
        return self

    def model_post_init(self, context: Any, /) -> None:
        # Private attributes may be set on a frozen model; the index is built once per instance.
        self._index = {category.code: category for category in self.categories}

    def by_code(self, code: str) -> Category | None:
        return self._index.get(code)

    def big_class_of(self, category: Category) -> BigClass:
        return next(
            b for b in self.big_classes if b.kind == category.kind and b.code == category.big_class_code
        )


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Read and validate a catalogue document; the shipped v1 catalogue by default."""
    return Catalogue.model_validate_json((path or DEFAULT_PATH).read_bytes())

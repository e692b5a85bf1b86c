"""The 57 analysis algorithm classes, their groups, the case category each raises, and their gates.

Defaults follow practice: confidence 0.7–0.8, a stall counts after minutes on the spot, duplicates
of one camera and class merge within a window, a camera is quiet for a cooldown after an alarm.
A city changes a class's defaults (``algorithms`` table) and a camera's own (``camera_overrides``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class Group(StrEnum):
    CITY_APPEARANCE = "city_appearance"
    STREET_ORDER = "street_order"
    ADVERTISING = "advertising"
    PARKING_TRAFFIC = "parking_traffic"
    CITY_FIXTURES = "city_fixtures"
    CONSTRUCTION_MUCK = "construction_muck"
    SAFETY = "safety"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


GROUP_NAMES: dict[Group, tuple[str, str]] = {
    Group.CITY_APPEARANCE: ("市容环境", "City appearance"),
    Group.STREET_ORDER: ("街面秩序", "Street order"),
    Group.ADVERTISING: ("宣传广告", "Advertising"),
    Group.PARKING_TRAFFIC: ("停车与交通", "Parking and traffic"),
    Group.CITY_FIXTURES: ("城市部件与设施", "City fixtures"),
    Group.CONSTRUCTION_MUCK: ("施工与渣土", "Construction and muck"),
    Group.SAFETY: ("安全隐患", "Safety"),
}


@dataclass(frozen=True)
class Gates:
    """What an algorithm's detections must pass before they are an alarm."""

    min_confidence: float
    min_persistence_seconds: float
    dedup_window_seconds: float
    cooldown_seconds: float
    severity: Severity
    auto_dispatch: bool

    def with_overrides(self, overrides: dict[str, Any] | None) -> Gates:
        if not overrides:
            return self
        known = {k: v for k, v in overrides.items() if k in GATE_FIELDS}
        if "severity" in known:
            known["severity"] = Severity(known["severity"])
        return replace(self, **known)

    def as_dict(self) -> dict[str, Any]:
        return {
            "min_confidence": self.min_confidence,
            "min_persistence_seconds": self.min_persistence_seconds,
            "dedup_window_seconds": self.dedup_window_seconds,
            "cooldown_seconds": self.cooldown_seconds,
            "severity": self.severity.value,
            "auto_dispatch": self.auto_dispatch,
        }


GATE_FIELDS = frozenset(
    {
        "min_confidence",
        "min_persistence_seconds",
        "dedup_window_seconds",
        "cooldown_seconds",
        "severity",
        "auto_dispatch",
    }
)


@dataclass(frozen=True)
class Algorithm:
    code: str
    group: Group
    name_zh: str
    name_en: str
    category_code: str  # the case small class it raises (event classes 2xxxx)
    gates: Gates


def _a(
    code: str,
    group: Group,
    name_zh: str,
    name_en: str,
    category: str,
    confidence: float = 0.75,
    persistence: float = 60,
    window: float = 1800,
    cooldown: float = 300,
    severity: Severity = Severity.MEDIUM,
    auto: bool = False,
) -> Algorithm:
    return Algorithm(
        code,
        group,
        name_zh,
        name_en,
        category,
        Gates(confidence, persistence, window, cooldown, severity, auto),
    )


G = Group
S = Severity
CATALOGUE_VERSION = "2026.1"

ALGORITHMS: tuple[Algorithm, ...] = (
    # City appearance
    _a("exposed_garbage", G.CITY_APPEARANCE, "暴露垃圾", "Exposed garbage", "20101", 0.75, 120),
    _a("overflowing_bin", G.CITY_APPEARANCE, "垃圾满溢", "Overflowing bin", "20106", 0.8, 120, auto=True),
    _a(
        "garbage_beside_bin",
        G.CITY_APPEARANCE,
        "桶边垃圾堆放",
        "Garbage piled beside bins",
        "20101",
        0.75,
        120,
    ),
    _a("scattered_garbage", G.CITY_APPEARANCE, "散落垃圾", "Scattered garbage", "20103", 0.7, 60),
    _a(
        "bagged_garbage_outside_bin",
        G.CITY_APPEARANCE,
        "袋装垃圾未入桶",
        "Bagged garbage not in bin",
        "20111",
        0.75,
        120,
    ),
    _a("littering", G.CITY_APPEARANCE, "乱丢垃圾", "Littering", "20103", 0.8, 0, 600, 120, S.LOW),
    _a("dirty_road", G.CITY_APPEARANCE, "道路不洁", "Dirty road", "20103", 0.7, 300, 3600, 600, S.LOW),
    _a(
        "floating_waste",
        G.CITY_APPEARANCE,
        "水面漂浮物",
        "Floating waste",
        "20104",
        0.7,
        300,
        3600,
        600,
        S.LOW,
    ),
    _a(
        "street_laundry",
        G.CITY_APPEARANCE,
        "沿街晾挂",
        "Laundry hung along the street",
        "20113",
        0.75,
        600,
        7200,
        1800,
        S.LOW,
    ),
    _a("piled_materials", G.CITY_APPEARANCE, "乱堆物料", "Piled materials", "20509", 0.75, 600, 3600, 900),
    # Street order
    _a("road_occupying_stall", G.STREET_ORDER, "占道经营", "Road-occupying stall", "20501", 0.8, 300),
    _a("business_outside_shop", G.STREET_ORDER, "店外经营", "Business outside the shop", "20502", 0.8, 300),
    _a("mobile_vendor", G.STREET_ORDER, "流动摊贩", "Mobile vendor", "20503", 0.8, 180, 1800, 600),
    _a("night_vendor", G.STREET_ORDER, "夜间摊贩", "Night vendor", "20503", 0.8, 300, 1800, 600),
    _a(
        "blocked_fire_lane",
        G.STREET_ORDER,
        "占用消防通道",
        "Blocked fire lane",
        "20603",
        0.8,
        300,
        1800,
        300,
        S.HIGH,
    ),
    _a("open_air_barbecue", G.STREET_ORDER, "露天烧烤", "Open-air barbecue", "20507", 0.75, 300),
    _a(
        "scrap_collection_on_road",
        G.STREET_ORDER,
        "占道废品收购",
        "Scrap collection on the road",
        "20512",
        0.75,
        300,
    ),
    # Advertising
    _a(
        "illegal_outdoor_ad",
        G.ADVERTISING,
        "违规户外广告",
        "Illegal outdoor advertising",
        "20202",
        0.75,
        600,
        86400,
        3600,
        S.LOW,
    ),
    _a(
        "road_occupying_ad",
        G.ADVERTISING,
        "占道广告牌",
        "Road-occupying advertising board",
        "20209",
        0.75,
        300,
        7200,
        1800,
        S.LOW,
    ),
    _a(
        "small_posters",
        G.ADVERTISING,
        "违章张贴小广告",
        "Small illegal posters",
        "20201",
        0.75,
        60,
        86400,
        3600,
        S.LOW,
    ),
    _a("flyers", G.ADVERTISING, "派发传单", "Flyers handed out", "20207", 0.8, 120, 1800, 600, S.LOW),
    _a(
        "illegal_banner",
        G.ADVERTISING,
        "非法悬挂横幅",
        "Illegal banner",
        "20204",
        0.75,
        300,
        86400,
        3600,
        S.LOW,
    ),
    # Parking and traffic
    _a(
        "illegal_parking",
        G.PARKING_TRAFFIC,
        "违法停车",
        "Illegal parking (with plate)",
        "20504",
        0.8,
        300,
        1800,
        300,
    ),
    _a(
        "messy_non_motor_parking",
        G.PARKING_TRAFFIC,
        "非机动车乱停放",
        "Messy non-motor vehicle parking",
        "20506",
        0.75,
        600,
        3600,
        1800,
        S.LOW,
    ),
    _a(
        "shared_bike_clutter",
        G.PARKING_TRAFFIC,
        "共享单车乱停放",
        "Shared bikes parked badly",
        "20505",
        0.75,
        600,
        3600,
        1800,
        S.LOW,
        True,
    ),
    _a(
        "pavement_parking",
        G.PARKING_TRAFFIC,
        "人行道违停",
        "Parking on the pavement",
        "20504",
        0.8,
        300,
        1800,
        300,
    ),
    _a("spilled_load", G.PARKING_TRAFFIC, "车辆抛洒", "Spilled load", "20303", 0.75, 30, 1800, 300, S.HIGH),
    _a(
        "abandoned_vehicle",
        G.PARKING_TRAFFIC,
        "废弃车辆",
        "Abandoned vehicle",
        "20606",
        0.8,
        3600,
        86400,
        86400,
        S.LOW,
    ),
    _a("car_washing_on_road", G.PARKING_TRAFFIC, "占道洗车", "Car washing on the road", "20511", 0.75, 300),
    _a(
        "private_parking_lock",
        G.PARKING_TRAFFIC,
        "私设地锁",
        "Private parking lock",
        "20513",
        0.8,
        600,
        86400,
        3600,
        S.LOW,
    ),
    # City fixtures
    _a(
        "manhole_cover_missing",
        G.CITY_FIXTURES,
        "井盖缺失",
        "Missing manhole cover",
        "20403",
        0.85,
        30,
        3600,
        600,
        S.CRITICAL,
        True,
    ),
    _a(
        "manhole_cover_broken",
        G.CITY_FIXTURES,
        "井盖破损",
        "Broken manhole cover",
        "20404",
        0.8,
        60,
        3600,
        600,
        S.HIGH,
    ),
    _a(
        "manhole_cover_displaced",
        G.CITY_FIXTURES,
        "井盖移位",
        "Displaced manhole cover",
        "20404",
        0.8,
        60,
        3600,
        600,
        S.HIGH,
    ),
    _a(
        "road_collapse", G.CITY_FIXTURES, "路面塌陷", "Road collapse", "20402", 0.8, 30, 3600, 600, S.CRITICAL
    ),
    _a(
        "standing_water", G.CITY_FIXTURES, "道路积水", "Standing water", "20401", 0.75, 300, 3600, 900, S.HIGH
    ),
    _a("burst_pipe", G.CITY_FIXTURES, "管道爆裂", "Burst pipe", "20407", 0.8, 60, 3600, 600, S.HIGH),
    _a("broken_hoarding", G.CITY_FIXTURES, "围挡破损", "Broken hoarding", "20308", 0.75, 300, 7200, 1800),
    _a(
        "water_level_over_limit",
        G.CITY_FIXTURES,
        "水位超限",
        "Water level over the limit",
        "20401",
        0.85,
        60,
        3600,
        600,
        S.CRITICAL,
        True,
    ),
    _a("fallen_tree", G.CITY_FIXTURES, "树木倒伏", "Fallen tree", "20409", 0.8, 60, 3600, 600, S.HIGH),
    # Construction and muck
    _a(
        "truck_not_covered",
        G.CONSTRUCTION_MUCK,
        "渣土车未密闭",
        "Muck truck not sealed or covered",
        "20311",
        0.8,
        0,
        600,
        120,
        S.MEDIUM,
        True,
    ),
    _a(
        "muddy_wheels",
        G.CONSTRUCTION_MUCK,
        "车辆带泥上路",
        "Muddy wheels on the road",
        "20309",
        0.8,
        0,
        600,
        120,
    ),
    _a(
        "truck_overload",
        G.CONSTRUCTION_MUCK,
        "渣土车超载",
        "Overloaded muck truck",
        "20311",
        0.8,
        0,
        600,
        120,
    ),
    _a(
        "unregistered_truck_at_gate",
        G.CONSTRUCTION_MUCK,
        "未备案车辆出入工地",
        "Unregistered truck at the site gate",
        "20311",
        0.85,
        0,
        600,
        120,
    ),
    _a("site_dust", G.CONSTRUCTION_MUCK, "工地扬尘", "Site dust", "20307", 0.75, 300, 3600, 900),
    _a(
        "construction_occupying_road",
        G.CONSTRUCTION_MUCK,
        "施工占道",
        "Construction occupying the road",
        "20302",
        0.75,
        600,
        7200,
        1800,
    ),
    _a(
        "illegal_building",
        G.CONSTRUCTION_MUCK,
        "违法建设",
        "Illegal building",
        "20304",
        0.8,
        3600,
        86400,
        86400,
        S.HIGH,
    ),
    _a(
        "night_construction",
        G.CONSTRUCTION_MUCK,
        "夜间违规施工",
        "Unpermitted night construction",
        "20310",
        0.8,
        600,
        3600,
        1800,
    ),
    _a(
        "road_excavation",
        G.CONSTRUCTION_MUCK,
        "擅自挖掘道路",
        "Unauthorised road excavation",
        "20306",
        0.8,
        600,
        7200,
        1800,
        S.HIGH,
    ),
    _a(
        "construction_waste_dumping",
        G.CONSTRUCTION_MUCK,
        "建筑垃圾乱倒",
        "Construction waste dumped",
        "20115",
        0.8,
        60,
        3600,
        600,
        S.HIGH,
    ),
    _a(
        "abandoned_construction_materials",
        G.CONSTRUCTION_MUCK,
        "施工废弃料",
        "Abandoned construction materials",
        "20305",
        0.75,
        600,
        7200,
        1800,
        S.LOW,
    ),
    # Safety
    _a("smoke_and_fire", G.SAFETY, "烟火", "Smoke and fire", "20405", 0.85, 10, 1800, 300, S.CRITICAL, True),
    _a("smoking_bin", G.SAFETY, "垃圾桶冒烟", "Smoking bin", "20405", 0.85, 10, 1800, 300, S.CRITICAL, True),
    _a(
        "open_burning", G.SAFETY, "焚烧垃圾树叶", "Open burning of waste", "20107", 0.8, 60, 1800, 600, S.HIGH
    ),
    _a(
        "fallen_power_line",
        G.SAFETY,
        "电线断落",
        "Fallen power line",
        "20410",
        0.85,
        30,
        3600,
        600,
        S.CRITICAL,
    ),
    _a("sagging_cable", G.SAFETY, "线缆垂落", "Sagging cable", "20411", 0.8, 300, 7200, 1800),
    _a("oil_spill", G.SAFETY, "路面油污", "Oil spill on the road", "20414", 0.8, 60, 3600, 600, S.HIGH),
    _a(
        "sewage_on_street",
        G.SAFETY,
        "污水乱排",
        "Sewage discharged onto the street",
        "20117",
        0.75,
        120,
        3600,
        900,
    ),
)

BY_CODE: dict[str, Algorithm] = {a.code: a for a in ALGORITHMS}


def algorithm(code: str) -> Algorithm | None:
    return BY_CODE.get(code)

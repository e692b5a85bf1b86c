"""Responsible units (责任单位) and the defaults shipped for Guangzhou.

A unit has a code (what dispatch names), a type (``UnitType``, the kind the catalogue's
``default_unit_type`` refers to), an optional district it serves and an optional parent. The
shipped set is the city bureau at the root, one city management office per district with that
district's sanitation, municipal works, parks and enforcement teams under it, and the city-wide
utilities (power supply with one branch per district, water, drainage, gas, telecom, traffic police).
Codes are stable slugs (``tianhe-sanitation``, ``power-supply-tianhe``) because dispatchers type them.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.case.domain.categories import UnitType

# GB/T 2260 code → (slug, Chinese name of the district).
DISTRICTS: dict[str, tuple[str, str]] = {
    "440103": ("liwan", "荔湾区"),
    "440104": ("yuexiu", "越秀区"),
    "440105": ("haizhu", "海珠区"),
    "440106": ("tianhe", "天河区"),
    "440111": ("baiyun", "白云区"),
    "440112": ("huangpu", "黄埔区"),
    "440113": ("panyu", "番禺区"),
    "440114": ("huadu", "花都区"),
    "440115": ("nansha", "南沙区"),
    "440117": ("conghua", "从化区"),
    "440118": ("zengcheng", "增城区"),
}

CITY_BUREAU = "gz-city-management"
POWER_SUPPLY = "gz-power-supply"


@dataclass(frozen=True)
class UnitSpec:
    code: str
    name: str
    type: UnitType
    district_code: str | None = None
    parent_code: str | None = None


def shipped_units() -> list[UnitSpec]:
    """Guangzhou's default units, parents before their children."""
    units = [
        UnitSpec(CITY_BUREAU, "广州市城市管理和综合执法局", UnitType.DISTRICT_OFFICE),
        UnitSpec(POWER_SUPPLY, "广州供电局", UnitType.POWER, parent_code=None),
        UnitSpec("gz-water", "广州市自来水公司", UnitType.WATER),
        UnitSpec("gz-drainage", "广州市排水公司", UnitType.DRAINAGE),
        UnitSpec("gz-gas", "广州燃气集团", UnitType.GAS_COMPANY),
        UnitSpec("gz-telecom", "广州市通信管线协调单位", UnitType.TELECOM),
        UnitSpec("gz-traffic-police", "广州市公安局交通警察支队", UnitType.TRAFFIC_POLICE),
        UnitSpec("gz-housing", "广州市住房和城乡建设局", UnitType.HOUSING_CONSTRUCTION),
        UnitSpec("gz-market-regulation", "广州市市场监督管理局", UnitType.MARKET_REGULATION),
        UnitSpec("gz-ecology", "广州市生态环境局", UnitType.ECOLOGY_ENVIRONMENT),
        UnitSpec("gz-fire-rescue", "广州市消防救援支队", UnitType.FIRE_RESCUE),
    ]
    for district, (slug, name) in DISTRICTS.items():
        office = f"{slug}-city-management"
        units.append(
            UnitSpec(office, f"{name}城市管理和综合执法局", UnitType.DISTRICT_OFFICE, district, CITY_BUREAU)
        )
        units.extend(
            [
                UnitSpec(f"{slug}-sanitation", f"{name}环卫所", UnitType.SANITATION, district, office),
                UnitSpec(f"{slug}-municipal", f"{name}市政所", UnitType.MUNICIPAL_WORKS, district, office),
                UnitSpec(f"{slug}-parks", f"{name}园林绿化所", UnitType.PARKS, district, office),
                UnitSpec(
                    f"{slug}-enforcement", f"{name}城管执法大队", UnitType.ENFORCEMENT, district, office
                ),
                UnitSpec(f"power-supply-{slug}", f"{name}供电分局", UnitType.POWER, district, POWER_SUPPLY),
            ]
        )
    return units


def hierarchy_problem(parents: Mapping[str, str | None], code: str, parent: str | None) -> str | None:
    """Why ``code`` may not have ``parent`` given the current parent of every unit, or None."""
    if parent is None:
        return None
    if parent not in parents:
        return f"no unit {parent} to be the parent"
    seen = {code}
    current: str | None = parent
    while current is not None:
        if current in seen:
            return f"making {parent} the parent of {code} would close a cycle"
        seen.add(current)
        current = parents.get(current)
    return None

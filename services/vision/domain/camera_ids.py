"""GB/T 28181 device ids: 20 digits = 8 centre (GB/T 2260 division) + 2 industry + 3 type + 1 network + 6 serial."""

from __future__ import annotations

from dataclasses import dataclass

from contract.common import GUANGZHOU_DISTRICTS

INDUSTRIES: dict[str, str] = {
    "00": "social_security_road",
    "01": "social_security_public_place",
    "02": "social_security_key_unit",
    "03": "social_security_other",
    "04": "traffic_road",
    "05": "traffic_checkpoint",
    "06": "traffic_station",
    "07": "traffic_other",
    "08": "city_management",
    "09": "sanitation",
    "10": "water_affairs",
}
DEVICE_TYPES: dict[str, str] = {
    "111": "dvr",
    "118": "nvr",
    "131": "camera",
    "132": "ipc",
    "200": "sip_platform",
}
CAMERA_TYPES = frozenset({"131", "132"})
NETWORKS: dict[str, str] = {
    "0": "monitoring",
    "1": "monitoring",
    "2": "monitoring",
    "3": "monitoring",
    "4": "monitoring",
    "5": "public_security",
    "6": "government",
    "7": "internet",
    "8": "private",
}


class InvalidCameraId(ValueError):
    """The id is not a GB/T 28181 camera id; the message says which part is wrong."""


@dataclass(frozen=True)
class CameraIdParts:
    camera_id: str
    division_code: str  # the 8-digit centre code: province, city, district, grassroots unit
    district_code: str | None  # the district (6 digits) when it is one of the city's districts
    industry_code: str
    industry: str
    device_type_code: str
    device_type: str
    network_code: str
    network: str
    serial: str


def parse_camera_id(camera_id: str) -> CameraIdParts:
    """Split and check a device id; only cameras and IP cameras (types 131, 132) are accepted."""
    if len(camera_id) != 20 or not (camera_id.isascii() and camera_id.isdigit()):
        raise InvalidCameraId("a GB/T 28181 id has exactly 20 digits")
    division, industry, device_type, network, serial = (
        camera_id[:8],
        camera_id[8:10],
        camera_id[10:13],
        camera_id[13],
        camera_id[14:],
    )
    if division[:2] in ("00", "99") or division[2:4] == "00":
        raise InvalidCameraId(f"digits 1–8 ({division}) are not an administrative division")
    if device_type not in CAMERA_TYPES:
        raise InvalidCameraId(f"digits 11–13 ({device_type}) are not a camera type (131 or 132)")
    district = division[:6]
    return CameraIdParts(
        camera_id=camera_id,
        division_code=division,
        district_code=district if district in GUANGZHOU_DISTRICTS else None,
        industry_code=industry,
        industry=INDUSTRIES.get(industry, "other"),
        device_type_code=device_type,
        device_type=DEVICE_TYPES[device_type],
        network_code=network,
        network=NETWORKS.get(network, "other"),
        serial=serial,
    )

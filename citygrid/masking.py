"""Masking of personal data (phones, names, ID numbers, e-mails, addresses, positions, free text) for
callers without ``pii:read``. What each field shows is listed in docs/personal-data.md."""

from __future__ import annotations

import re
from typing import Final

from citygrid.scrub import Kind, replace_values

PII_SCOPE = "pii:read"

# Staff positions are shown to three decimals of a degree (about 110 m north-south, 100 m east-west
# in Guangzhou): enough to see that a handler was at the case, not where exactly they stood.
POSITION_DECIMALS: Final = 3
DISTANCE_STEP_M: Final = 10.0

_NON_DIGITS: Final = re.compile(r"[^0-9０-９]")
_ASCII_DIGITS: Final = str.maketrans("０１２３４５６７８９", "0123456789")
# In an address: every number (door, building, unit, floor, room; 385号, 2座, 1501室, B1501, 12-3) and
# a Chinese numeral that counts one (三栋, 十二楼); road, street, community and place names stay.
_ADDRESS_NUMBER: Final = re.compile(
    r"(?:(?<![A-Za-z])[A-Za-z])?[0-9０-９]+(?:[A-Za-z]\b)?(?:[-－—/][0-9０-９]+)*"
    r"|[零〇一二三四五六七八九十百千两]+(?=[号號栋棟座幢单單楼樓层層室户戶房弄排])"
)


def mask_phone(phone: str | None) -> str | None:
    """Mobile numbers keep the first three and last four digits (138****5678); shorter ones the last four."""
    if phone is None:
        return None
    if len(phone) >= 11:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    if len(phone) >= 8:
        return "*" * (len(phone) - 4) + phone[-4:]
    return "*" * len(phone)


def mask_name(name: str | None) -> str | None:
    """The first character and a fixed ``**``, whatever the length: 张**, 欧**, L**; a one-character
    name shows nothing (``**``)."""
    if not name:
        return name
    if len(name) == 1:
        return "**"
    return name[0] + "**"


def mask_email(email: str | None) -> str | None:
    """Keep the first character of the mailbox and the domain: l***@example.com."""
    if not email:
        return email
    local, at, domain = email.rpartition("@")
    if not at:
        return "*" * len(email)
    return (local[:1] + "***" if local else "") + "@" + domain


def mask_id_number(number: str | None) -> str | None:
    """Keep the six-digit region prefix and the last four: 440106********1234."""
    if number is None:
        return None
    if len(number) <= 10:
        return "*" * len(number)
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


def mask_plate(plate: str | None) -> str | None:
    """Keep the province and the issuing office: 粤A*****."""
    if not plate:
        return plate
    return plate[:2] + "*****"


def mask_address(address: str | None) -> str | None:
    """Every number of an address masked, its names kept: 广州市天河区天河路**号太古汇**座**室.

    District, street, road, community and building names stay, so the place can be found and
    counted; the door, building, unit, floor and room numbers that make it one household do not.
    A place without numbers (``Tianhe Road bus stop``) is shown as it is.
    """
    if address is None:
        return None
    return _ADDRESS_NUMBER.sub("**", address)


def mask_position(lon: float, lat: float) -> tuple[float, float]:
    """A person's GPS fix rounded to ``POSITION_DECIMALS`` (about 100 m)."""
    return round(lon, POSITION_DECIMALS), round(lat, POSITION_DECIMALS)


def mask_distance(metres: float) -> float:
    """A distance from a known point, rounded to ``DISTANCE_STEP_M``: with the rounded position it
    would otherwise place the person on a circle around the case."""
    return round(metres / DISTANCE_STEP_M) * DISTANCE_STEP_M


def _masked_phone(value: str) -> str:
    digits = _NON_DIGITS.sub("", value).translate(_ASCII_DIGITS)
    international = value.lstrip("( ").startswith(("+", "＋", "00")) or (
        len(digits) == 13 and digits.startswith("86")
    )
    if international:
        digits = digits.removeprefix("00").removeprefix("86")
        if not digits.startswith("1"):
            digits = "0" + digits  # a landline: its area code as dialled at home
    return mask_phone(digits) or ""


def _mask_value(kind: Kind, value: str) -> str:
    if kind == "phone":
        return _masked_phone(value)
    if kind == "id_number":
        return mask_id_number(value) or ""
    if kind == "email":
        return mask_email(value) or ""
    if kind == "name":
        return mask_name(value) or ""
    if kind == "plate":
        return mask_plate(value) or ""
    if kind == "address":
        return mask_address(value) or ""
    return "***"


def mask_text(text: str | None) -> str | None:
    """Free text (a description, a note) with the phones, ID numbers and e-mails it contains masked
    as the structured fields are (138****5678), and labelled values (``联系人：李明``) too.

    A name written without a label cannot be recognised: free text is documented as possibly
    personal (docs/personal-data.md)."""
    if not text:
        return text
    return replace_values(text, _mask_value)

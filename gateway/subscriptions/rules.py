"""What a subscription may ask for and which events reach it, masked how: pure, no I/O.

An event reaches a subscription when its type is one the subscription names, its consumer may read
the dataset the event belongs to (the catalogue's scopes, checked again for every event, so a scope
taken away stops deliveries at once), a district-bound consumer's district is the event's, and every
filter holds. Its personal fields are masked unless the consumer holds ``pii:read`` or
``<dataset>:pii``.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import idna

from citygrid.errors import DomainError, Forbidden
from citygrid.masking import PII_SCOPE
from contract.case import ALL_CASE_EVENTS
from contract.catalogue import EVENT_DATASET, EVENT_PERSONAL, PersonalKind, owner_read_scope
from contract.gas import ALL_GAS_EVENTS
from contract.muck import ALL_MUCK_EVENTS
from contract.vision import ALL_VISION_EVENTS
from contract.waste import ALL_WASTE_EVENTS
from gateway.exchange.masking import mask_record

Scalar = str | int | float | bool
SUBSCRIBABLE: Final[frozenset[str]] = frozenset(EVENT_DATASET)
# The top-level fields of each event type's ``data``: what a field filter may name.
EVENT_FIELDS: Final[dict[str, frozenset[str]]] = {
    event.subject: frozenset(event.model_fields)
    for event in (*ALL_CASE_EVENTS, *ALL_VISION_EVENTS, *ALL_GAS_EVENTS, *ALL_MUCK_EVENTS, *ALL_WASTE_EVENTS)
}


def _head(path: str) -> str:
    return path.split(".", 1)[0].removesuffix("[]")


# What is masked in each event type's data: the catalogue's fields of the event, and every personal
# field of its dataset that the event carries too (an incident's location is masked in a webhook as
# in a read).
PERSONAL_PATHS: Final[dict[str, dict[str, PersonalKind]]] = {
    event_type: {
        **{
            path: kind
            for path, kind in EVENT_DATASET[event_type].personal.items()
            if _head(path) in EVENT_FIELDS[event_type]
        },
        **EVENT_PERSONAL[event_type],
    }
    for event_type in EVENT_DATASET
}
MAX_FIELD_FILTERS: Final = 10
MAX_FILTER_VALUES: Final = 50


class UnknownEventType(DomainError):
    code = "subscription.unknown_event_type"
    title = "Unknown event type"
    status = 422


class TargetRefused(DomainError):
    code = "subscription.target_refused"
    title = "Webhook target refused"
    status = 422


class OtherDistrict(Forbidden):
    code = "subscription.other_district"


class PersonalFilter(Forbidden):
    code = "subscription.personal_filter"


class UnknownField(DomainError):
    code = "subscription.unknown_field"
    title = "Unknown field"
    status = 422


@dataclass(frozen=True)
class Audience:
    """The consumer a delivery is for, as it stands now."""

    scopes: frozenset[str]
    district: str | None = None


@dataclass(frozen=True)
class Filters:
    """Every filter given must hold: the event's district and category among those listed, and each
    field of its ``data`` (a dotted path) equal to one of its values."""

    districts: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    fields: Mapping[str, tuple[Scalar, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "districts": sorted(self.districts),
            "categories": sorted(self.categories),
            "fields": {path: list(values) for path, values in sorted(self.fields.items())},
        }

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> Filters:
        return cls(
            districts=frozenset(stored.get("districts") or ()),
            categories=frozenset(stored.get("categories") or ()),
            fields={path: tuple(values) for path, values in (stored.get("fields") or {}).items()},
        )


def subject_of(event_type: str) -> str:
    """The catalogue's name of a CloudEvents type: ``case.case.closed`` for ``case.case.closed.v1``
    (a subscription receives every version of its types)."""
    head, _, version = event_type.rpartition(".")
    return head if head and version.startswith("v") and version[1:].isdigit() else event_type


def scopes_for(event_type: str) -> tuple[str, str]:
    """The scopes either of which lets a consumer receive ``event_type``: its dataset's read scope
    and the owner's."""
    dataset = EVENT_DATASET[event_type]
    return dataset.read_scope, owner_read_scope(dataset)


def may_receive(event_type: str, audience: Audience) -> bool:
    return any(scope in audience.scopes for scope in scopes_for(event_type))


def reveals_personal(event_type: str, audience: Audience) -> bool:
    return PII_SCOPE in audience.scopes or EVENT_DATASET[event_type].pii_scope in audience.scopes


def check_event_types(event_types: Iterable[str], audience: Audience) -> list[str]:
    """The types, each known and each one the consumer may receive (else 422, or 403 naming the scope)."""
    checked: list[str] = []
    for event_type in dict.fromkeys(event_types):
        if event_type not in SUBSCRIBABLE:
            raise UnknownEventType(
                f"{event_type!r} is not an event type of the catalogue: GET /exchange/v1/datasets lists them"
            )
        if not may_receive(event_type, audience):
            read_scope = scopes_for(event_type)[0]
            raise Forbidden(f"receiving {event_type} needs the scope '{read_scope}'")
        checked.append(event_type)
    return checked


def check_districts(filters: Filters, audience: Audience) -> None:
    """A district-bound consumer filters within its own district only."""
    if audience.district is not None and filters.districts - {audience.district}:
        raise OtherDistrict(f"this consumer receives the events of district {audience.district} only")


def check_fields(filters: Filters, event_types: Iterable[str], audience: Audience) -> None:
    """Each filter names what every one of the event types carries (else 422: a filter on a field an
    event lacks would silently let none of it through), and never a personal field the consumer
    would see masked (403: whether an event arrives would tell its value)."""
    types = list(event_types)
    wanted = [*filters.fields, *(["district_code"] if filters.districts else [])]
    wanted += ["category_code"] if filters.categories else []
    if audience.district is not None:
        wanted.append("district_code")  # a district-bound consumer receives only what names one
    for path in wanted:
        head = _head(path)
        lacking = [event_type for event_type in types if head not in EVENT_FIELDS.get(event_type, ())]
        if lacking:
            raise UnknownField(f"{lacking[0]} has no field {head!r} to filter on")
    for path in filters.fields:
        for event_type in types:
            if _is_personal(event_type, path) and not reveals_personal(event_type, audience):
                raise PersonalFilter(
                    f"{path!r} is personal data of {event_type}: filtering on it needs "
                    f"'{PII_SCOPE}' or '{EVENT_DATASET[event_type].pii_scope}'"
                )


def _is_personal(event_type: str, path: str) -> bool:
    head = _head(path)
    return any(_head(personal) == head for personal in PERSONAL_PATHS.get(event_type, {}))


def _value_at(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for step in path.split("."):
        if not isinstance(node, Mapping) or step not in node:
            return None
        node = node[step]
    return node


def _equal(value: Any, accepted: tuple[Scalar, ...]) -> bool:
    # JSON's true is not 1: a boolean matches only a boolean.
    return any(type(value) is type(candidate) and value == candidate for candidate in accepted) or (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and any(
            isinstance(candidate, int | float) and not isinstance(candidate, bool) and value == candidate
            for candidate in accepted
        )
    )


def matches(event_type: str, data: Mapping[str, Any], filters: Filters, audience: Audience) -> bool:
    """Whether an event of ``event_type`` with ``data`` reaches a subscription with ``filters`` of
    ``audience``. An event without a district reaches no district-bound consumer (fail closed)."""
    if event_type not in SUBSCRIBABLE or not may_receive(event_type, audience):
        return False
    district = data.get("district_code")
    if audience.district is not None and district != audience.district:
        return False
    if filters.districts and district not in filters.districts:
        return False
    if filters.categories and data.get("category_code") not in filters.categories:
        return False
    for path, accepted in filters.fields.items():
        if _is_personal(event_type, path) and not reveals_personal(event_type, audience):
            return False  # its grant changed since: the filter tells nothing now
        if not _equal(_value_at(data, path), accepted):
            return False
    return True


def masked(event_type: str, data: dict[str, Any], audience: Audience) -> dict[str, Any]:
    """``data`` as the consumer may see it (masked in place)."""
    if reveals_personal(event_type, audience):
        return data
    masked_data: dict[str, Any] = mask_record(data, PERSONAL_PATHS[event_type])
    return masked_data


def retry_delay(failures: int, *, base: float, cap: float, jitter: float = 1.0) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: base × 2ⁿ⁻¹, at most ``cap``,
    times ``jitter`` (the caller draws it from 0.8–1.2, so replicas do not retry in step)."""
    exponent = max(0, failures - 1)
    delay = cap if exponent > 60 else min(cap, base * math.pow(2, exponent))
    return delay * jitter


# --- where a webhook may go (SSRF) -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written, lower case; an IPv6 address without brackets
    port: int
    path: str  # path and query, as written

    def url_for(self, address: str) -> str:
        """The URL with the host replaced by the address it was checked to resolve to."""
        shown = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{shown}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return shown if self.port == default else f"{shown}:{self.port}"


def parse_target(url: str, *, allow_http: bool, ports: frozenset[int] | None = None) -> Target:
    """The target a webhook URL names, or 422: https only (http too where ``allow_http``), a host
    (as its IDNA A-label), a port among ``ports`` when given, no credentials, no fragment, nothing
    a request line cannot carry."""
    url = url.strip()
    if any(ord(character) < 0x21 or ord(character) == 0x7F for character in url):
        raise TargetRefused("the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("the URL cannot be read") from None
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        raise TargetRefused("a webhook target must be an https:// URL")
    if not parts.hostname:
        raise TargetRefused("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("a webhook URL may not carry credentials (the signature authenticates us)")
    if parts.fragment:
        raise TargetRefused("a webhook URL has no fragment")
    host = parts.hostname.lower().rstrip(".")
    if literal_address(host) is None:
        try:
            # IDNA 2008 with UTS 46 mapping, as httpx and browsers encode it (IDNA 2003 would send
            # faß.de to fass.de, another registrant's domain).
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise TargetRefused("the URL's host is not a valid domain name") from None
    default = 443 if parts.scheme == "https" else 80
    port = port or default
    if ports is not None and port not in ports:
        raise TargetRefused(f"a webhook target's port is one of {sorted(ports)}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path)


def _embedded(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return None


def is_public(address: str) -> bool:
    """Whether an address is on the public internet: not private, loopback, link-local (cloud
    metadata), shared, multicast, reserved or unspecified, nor an IPv6 form of one."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    embedded = _embedded(parsed)
    if embedded is not None and not is_public(str(embedded)):
        return False
    site_local = isinstance(parsed, ipaddress.IPv6Address) and parsed.is_site_local  # fec0::/10
    return parsed.is_global and not (
        parsed.is_multicast or parsed.is_reserved or parsed.is_unspecified or site_local
    )


def literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def check_addresses(host: str, addresses: Iterable[str], *, allow_private: bool) -> list[str]:
    """The addresses a host resolved to, each one allowed (or 422 naming none of them)."""
    found = list(dict.fromkeys(addresses))
    if not found:
        raise TargetRefused(f"{host} does not resolve")
    if not allow_private and not all(is_public(address) for address in found):
        raise TargetRefused(f"{host} resolves to a private, loopback or otherwise internal address")
    return found

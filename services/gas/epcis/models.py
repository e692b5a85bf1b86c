"""Typed models of the GS1 EPCIS 2.0 JSON/JSON-LD binding, refusing exactly what GS1's JSON schema refuses.

The reference is ``EPCIS-JSON-Schema.json`` of the gs1/EPCIS repository (draft-07). Each constraint
it states has its counterpart here, so that a document our models accept is one the schema accepts
and the other way round:

- the required fields of each document and event type; JSON ``null`` is never the value of a
  standard field; numbers are JSON numbers (not strings, not booleans);
- ``format: uri`` is RFC 3986's ``URI`` (an absolute URI with a scheme; ``example:myField`` is one),
  ``format: date-time`` is RFC 3339 with a ``Z`` or a numeric offset; the schema's regular
  expressions (``eventTimeZoneOffset``, ``schemaVersion``, ``uom``, hex values) are applied as the
  schema applies them (a search with the very same pattern);
- a CBV value (bizStep, disposition, business transaction, source/destination type, error reason,
  sensor component) is a bare CBV 2.0 term from the standard list, or an absolute URI that is not
  under ``urn:epcglobal:cbv`` or ``https://ns.gs1.org/cbv/`` (those are spelled as bare terms);
  measurement and alert types are bare terms or URIs outside ``https://gs1.org/voc/``;
- an object that the schema closes (quantity elements, business transactions, sources,
  destinations, persistent dispositions) takes no other key; the others take, besides their own
  fields, only extension fields whose names are URIs or prefixed names (``example:myField``); the
  objects the schema leaves open (readPoint, bizLocation, epcisBody, master data) take any key;
- the "what" rules: an ObjectEvent names an epcList, a non-empty quantityList, or a readPoint
  with sensor data; ``ilmd`` only with action ADD; an Aggregation/Association/Transaction event
  names children (or deletes); a TransformationEvent has inputs and outputs, or a transformationID;
  ``epcList`` of ObjectEvents and TransformationEvents, persistent dispositions and ``@context``
  arrays hold no duplicates;
- an event whose ``type`` is none of the five standard ones is an extension event, whose type must
  be a URI.

One deliberate difference: the schema's format checkers (rfc3986-validator, rfc3339-validator)
match with ``$`` and so accept a URI or date-time followed by one newline; these models do not.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

# --- RFC 3986 URI (absolute, with scheme) -------------------------------------------------------

_SUB_DELIMS_UNRESERVED = r"A-Za-z0-9\-._~!$&'()*+,;="
_PCT_ENCODED = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_SUB_DELIMS_UNRESERVED}:@]|{_PCT_ENCODED})"
_QUERY = rf"(?:[{_SUB_DELIMS_UNRESERVED}:@/?]|{_PCT_ENCODED})*"
# Leading zeros in an octet are tolerated, as the schema's checker tolerates them.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = "|".join(
    (
        rf"(?:{_H16}:){{6}}{_LS32}",
        rf"::(?:{_H16}:){{5}}{_LS32}",
        rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
        rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
        rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
    )
)
_IP_LITERAL = rf"\[(?:{_IPV6}|v[0-9A-Fa-f]+\.[{_SUB_DELIMS_UNRESERVED}:]+)\]"
_USERINFO = rf"(?:[{_SUB_DELIMS_UNRESERVED}:]|{_PCT_ENCODED})*@"
# A dotted IPv4 address is also a reg-name, so the host needs no separate IPv4 branch.
_REG_NAME = rf"(?:[{_SUB_DELIMS_UNRESERVED}]|{_PCT_ENCODED})*"
_AUTHORITY = rf"(?:{_USERINFO})?(?:{_IP_LITERAL}|{_REG_NAME})(?::[0-9]*)?"
_URI = re.compile(
    rf"[A-Za-z][A-Za-z0-9+.\-]*:"
    rf"(?://{_AUTHORITY}(?:/{_PCHAR}*)*|/(?:{_PCHAR}+(?:/{_PCHAR}*)*)?|{_PCHAR}+(?:/{_PCHAR}*)*|)"
    rf"(?:\?{_QUERY})?(?:#{_QUERY})?"
)


def is_uri(value: str) -> bool:
    """Whether ``value`` is an absolute URI by RFC 3986 (what JSON schema's ``format: uri`` means)."""
    return _URI.fullmatch(value) is not None


# --- RFC 3339 date-time -------------------------------------------------------------------------

_DATE_TIME = re.compile(
    r"(\d{4})-(0[1-9]|1[0-2])-(\d{2})T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(?:\.(\d+))?"
    r"(Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)


def parse_date_time(value: str) -> datetime:
    """An RFC 3339 date-time (``T`` and ``Z`` in either case, any number of fractional digits, leap
    seconds not supported) as an aware datetime; fractions beyond microseconds are cut off."""
    match = _DATE_TIME.fullmatch(value.upper())
    if match is None:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time such as 2026-12-01T08:30:00.000+08:00")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    if year == 0 or day < 1 or day > calendar.monthrange(year, month)[1]:
        raise ValueError(f"{value!r} is not a date of the calendar")
    microsecond = int((match[7] or "0")[:6].ljust(6, "0"))
    zone = match[8]
    offset = UTC
    if zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        offset = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=offset)


# --- CBV 2.0 vocabularies (the bare terms the schema enumerates) ---------------------------------

BIZ_STEPS = frozenset(
    [
        "accepting",
        "arriving",
        "assembling",
        "collecting",
        "commissioning",
        "consigning",
        "creating_class_instance",
        "cycle_counting",
        "decommissioning",
        "departing",
        "destroying",
        "disassembling",
        "dispensing",
        "encoding",
        "entering_exiting",
        "holding",
        "inspecting",
        "installing",
        "killing",
        "loading",
        "other",
        "packing",
        "picking",
        "receiving",
        "removing",
        "repackaging",
        "repairing",
        "replacing",
        "reserving",
        "retail_selling",
        "shipping",
        "staging_outbound",
        "stock_taking",
        "stocking",
        "storing",
        "transporting",
        "unloading",
        "unpacking",
        "void_shipping",
        "sensor_reporting",
        "sampling",
    ]
)
DISPOSITIONS = frozenset(
    [
        "active",
        "container_closed",
        "damaged",
        "destroyed",
        "dispensed",
        "disposed",
        "encoded",
        "expired",
        "in_progress",
        "in_transit",
        "inactive",
        "no_pedigree_match",
        "non_sellable_other",
        "partially_dispensed",
        "recalled",
        "reserved",
        "retail_sold",
        "returned",
        "sellable_accessible",
        "sellable_not_accessible",
        "stolen",
        "unknown",
        "available",
        "completeness_verified",
        "completeness_inferred",
        "conformant",
        "container_open",
        "mismatch_instance",
        "mismatch_class",
        "mismatch_quantity",
        "needs_replacement",
        "non_conformant",
        "unavailable",
    ]
)
BIZ_TRANSACTION_TYPES = frozenset(
    [
        "bol",
        "cert",
        "desadv",
        "inv",
        "pedigree",
        "po",
        "poc",
        "prodorder",
        "recadv",
        "rma",
        "testprd",
        "testres",
        "upevt",
    ]
)
SOURCE_DESTINATION_TYPES = frozenset({"owning_party", "possessing_party", "location"})
ERROR_REASONS = frozenset({"did_not_occur", "incorrect_data"})
SENSOR_COMPONENTS = frozenset(
    [
        "x",
        "y",
        "z",
        "axial_distance",
        "azimuth",
        "height",
        "spherical_radius",
        "polar_angle",
        "elevation_angle",
        "easting",
        "northing",
        "latitude",
        "longitude",
        "altitude",
    ]
)
MEASUREMENT_TYPES = frozenset(
    [
        "AbsoluteHumidity",
        "AbsorbedDose",
        "AbsorbedDoseRate",
        "Acceleration",
        "Radioactivity",
        "Altitude",
        "AmountOfSubstance",
        "AmountOfSubstancePerUnitVolume",
        "Angle",
        "AngularAcceleration",
        "AngularMomentum",
        "AngularVelocity",
        "Area",
        "Capacitance",
        "Conductance",
        "Conductivity",
        "Count",
        "Density",
        "Dimensionless",
        "DoseEquivalent",
        "DoseEquivalentRate",
        "DynamicViscosity",
        "ElectricCharge",
        "ElectricCurrent",
        "ElectricCurrentDensity",
        "ElectricFieldStrength",
        "Energy",
        "Exposure",
        "Force",
        "Frequency",
        "Illuminance",
        "Inductance",
        "Irradiance",
        "KinematicViscosity",
        "Length",
        "LinearMomentum",
        "Luminance",
        "LuminousFlux",
        "LuminousIntensity",
        "MagneticFlux",
        "MagneticFluxDensity",
        "MagneticVectorPotential",
        "Mass",
        "MassConcentration",
        "MassFlowRate",
        "MassPerAreaTime",
        "MemoryCapacity",
        "MolalityOfSolute",
        "MolarEnergy",
        "MolarMass",
        "MolarVolume",
        "Power",
        "Pressure",
        "RadiantFlux",
        "RadiantIntensity",
        "RelativeHumidity",
        "Resistance",
        "Resistivity",
        "SolidAngle",
        "SpecificVolume",
        "Speed",
        "SurfaceDensity",
        "SurfaceTension",
        "Temperature",
        "Time",
        "Torque",
        "Voltage",
        "Volume",
        "VolumeFlowRate",
        "VolumeFraction",
        "VolumetricFlux",
        "Wavenumber",
    ]
)
SENSOR_ALERT_TYPES = frozenset({"ALARM_CONDITION", "ERROR_CONDITION"})

# The schema's own patterns, searched as JSON schema searches them.
_OUTSIDE_CBV = re.compile(r"^(?!(urn:epcglobal:cbv|https?:\/\/ns\.gs1\.org/cbv\/))")
_OUTSIDE_GS1_WEB_VOCABULARY = re.compile(r"^(?!(https?:\/\/gs1\.org\/voc\/|https?:\/\/www\.gs1\.org\/voc\/))")
_TIME_ZONE_OFFSET = re.compile(r"^([+]|[-])((0[0-9]|1[0-3]):([0-5][0-9])|14:00)$")
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_UOM = re.compile(r"^[A-Z0-9]{2,3}$")
_HEX_BINARY = re.compile(r"^[A-Fa-f0-9]+$")


# --- Constrained values ----------------------------------------------------------------------------


def _uri(value: str) -> str:
    if not is_uri(value):
        raise ValueError(f"{value!r} is not an absolute URI")
    return value


def _date_time(value: Any) -> datetime:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if not isinstance(value, str):
        raise ValueError("a date-time is a string in RFC 3339 form")
    return parse_date_time(value)


def _pattern(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if pattern.search(value) is None:
            raise ValueError(f"{value!r} is not {what}")
        return value

    return check


def _vocabulary(
    terms: frozenset[str], what: str, outside: re.Pattern[str], namespaces: str
) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value in terms or (is_uri(value) and outside.search(value) is not None):
            return value
        raise ValueError(f"{value!r} is neither {what} nor an absolute URI outside {namespaces}")

    return check


_CBV_NAMESPACES = "the CBV namespaces (urn:epcglobal:cbv…, https://ns.gs1.org/cbv/…)"
_GS1_WEB_VOCABULARY = "the GS1 web vocabulary (https://gs1.org/voc/…)"


def _unique(values: list[Any]) -> list[Any]:
    strings: set[str] = set()
    others: list[Any] = []
    for value in values:
        if isinstance(value, str):
            duplicate = value in strings
            strings.add(value)
        else:
            duplicate = any(_json_equal(value, earlier) for earlier in others)
            others.append(value)
        if duplicate:
            raise ValueError(f"{value!r} appears more than once")
    return values


def _json_equal(one: Any, other: Any) -> bool:
    """Equality of JSON values (``true`` is not ``1``), as JSON schema's ``uniqueItems`` compares."""
    if isinstance(one, bool) or isinstance(other, bool):
        return isinstance(one, bool) and isinstance(other, bool) and one == other
    if isinstance(one, dict) and isinstance(other, dict):
        return one.keys() == other.keys() and all(_json_equal(one[key], other[key]) for key in one)
    if isinstance(one, list) and isinstance(other, list):
        return len(one) == len(other) and all(_json_equal(a, b) for a, b in zip(one, other, strict=True))
    if isinstance(one, (dict, list)) or isinstance(other, (dict, list)):
        return False
    return bool(one == other)


def _context(value: Any) -> str | dict[str, Any] | list[str | dict[str, Any]]:
    def entry(item: Any) -> str | dict[str, Any]:
        if isinstance(item, str):
            return _uri(item)
        if isinstance(item, dict):
            return item
        raise ValueError("a JSON-LD @context is a URI, an object, or an array of URIs and objects")

    if isinstance(value, list):
        return _unique([entry(item) for item in value])
    return entry(value)


def _certification_info(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return _uri(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [_uri(item) for item in value]
    raise ValueError("certificationInfo is a URI or an array of URIs")


def _uri_keys(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if not is_uri(key):
            raise ValueError(f"{key!r}: names in ilmd are URIs or prefixed names such as 'example:{key}'")
    return value


def _number(value: Any) -> int | float:
    # Integers stay integers: a JSON integer too large for a float is still a JSON number.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise ValueError(f"{value!r} is not a number")


def _attribute(value: Any) -> int | float | str | dict[str, Any]:
    if isinstance(value, (int, float, str, dict)) and not isinstance(value, bool):
        return value
    raise ValueError("a master data attribute is a number, a string or an object")


Uri = Annotated[str, AfterValidator(_uri)]
UniqueUris = Annotated[list[Uri], AfterValidator(_unique)]
DateTime = Annotated[datetime, PlainValidator(_date_time)]
Number = Annotated[int | float, PlainValidator(_number)]
TimeZoneOffset = Annotated[
    str,
    AfterValidator(_pattern(_TIME_ZONE_OFFSET, "a time zone offset from -14:00 to +14:00 such as +08:00")),
]
Version = Annotated[str, AfterValidator(_pattern(_VERSION, "a version such as 2.0"))]
Uom = Annotated[
    str, AfterValidator(_pattern(_UOM, "a UN/CEFACT unit code of 2 or 3 capitals or digits, such as KGM"))
]
HexBinary = Annotated[str, AfterValidator(_pattern(_HEX_BINARY, "hexadecimal"))]
JsonLdContext = Annotated[str | dict[str, Any] | list[str | dict[str, Any]], PlainValidator(_context)]
CertificationInfo = Annotated[str | list[str], PlainValidator(_certification_info)]
Ilmd = Annotated[dict[str, Any], AfterValidator(_uri_keys)]
Action = Literal["OBSERVE", "ADD", "DELETE"]
BizStep = Annotated[
    str, AfterValidator(_vocabulary(BIZ_STEPS, "a CBV 2.0 business step", _OUTSIDE_CBV, _CBV_NAMESPACES))
]
Disposition = Annotated[
    str, AfterValidator(_vocabulary(DISPOSITIONS, "a CBV 2.0 disposition", _OUTSIDE_CBV, _CBV_NAMESPACES))
]
UniqueDispositions = Annotated[list[Disposition], Field(min_length=1), AfterValidator(_unique)]
BizTransactionType = Annotated[
    str,
    AfterValidator(
        _vocabulary(
            BIZ_TRANSACTION_TYPES, "a CBV 2.0 business transaction type", _OUTSIDE_CBV, _CBV_NAMESPACES
        )
    ),
]
SourceDestinationType = Annotated[
    str,
    AfterValidator(
        _vocabulary(
            SOURCE_DESTINATION_TYPES, "a CBV 2.0 source/destination type", _OUTSIDE_CBV, _CBV_NAMESPACES
        )
    ),
]
ErrorReason = Annotated[
    str, AfterValidator(_vocabulary(ERROR_REASONS, "a CBV 2.0 error reason", _OUTSIDE_CBV, _CBV_NAMESPACES))
]
SensorComponent = Annotated[
    str,
    AfterValidator(
        _vocabulary(SENSOR_COMPONENTS, "a CBV 2.0 sensor component", _OUTSIDE_CBV, _CBV_NAMESPACES)
    ),
]
MeasurementType = Annotated[
    str,
    AfterValidator(
        _vocabulary(
            MEASUREMENT_TYPES, "a GS1 measurement type", _OUTSIDE_GS1_WEB_VOCABULARY, _GS1_WEB_VOCABULARY
        )
    ),
]
SensorAlertType = Annotated[
    str,
    AfterValidator(
        _vocabulary(
            SENSOR_ALERT_TYPES, "a GS1 sensor alert type", _OUTSIDE_GS1_WEB_VOCABULARY, _GS1_WEB_VOCABULARY
        )
    ),
]


# --- Base models ------------------------------------------------------------------------------------


class _EpcisModel(BaseModel):
    """Strict JSON types, camelCase names, no null for a standard field; closed to other keys."""

    model_config = ConfigDict(strict=True, extra="forbid", alias_generator=to_camel)

    @field_validator("*", mode="before")
    @classmethod
    def _null_is_no_value(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null is not a value of this field; leave the field out instead")
        return value


class _OpenModel(_EpcisModel):
    """An object the schema leaves open: any other key, with any value."""

    model_config = ConfigDict(extra="allow")


class _ExtensibleModel(_EpcisModel):
    """Besides its standard fields, extension fields named by URIs or prefixed names (``example:foo``)."""

    model_config = ConfigDict(extra="allow")

    @property
    def extensions(self) -> dict[str, Any]:
        """The extension fields, by their name as written."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _extension_names_are_uris(self) -> Self:
        unknown = [name for name in self.model_extra or {} if not is_uri(name)]
        if unknown:
            names = ", ".join(repr(name) for name in unknown)
            raise ValueError(
                f"unknown field {names}: an extension field is named by a URI or a prefixed name "
                f"such as 'example:{unknown[0]}'"
            )
        return self


# --- Event parts -----------------------------------------------------------------------------------


class QuantityElement(_EpcisModel):
    epc_class: Uri
    quantity: Number | None = None
    uom: Uom | None = None


class ReadPoint(_OpenModel):
    id: Uri


class BizLocation(_OpenModel):
    id: Uri


class BizTransaction(_EpcisModel):
    type: BizTransactionType | None = None
    biz_transaction: Uri


class Source(_EpcisModel):
    type: SourceDestinationType
    source: Uri


class Destination(_EpcisModel):
    type: SourceDestinationType
    destination: Uri


class PersistentDisposition(_EpcisModel):
    set: UniqueDispositions | None = None
    unset: UniqueDispositions | None = None

    @model_validator(mode="after")
    def _sets_or_unsets(self) -> Self:
        if self.set is None and self.unset is None:
            raise ValueError("a persistentDisposition sets or unsets at least one disposition")
        return self


class ErrorDeclaration(_ExtensibleModel):
    declaration_time: DateTime
    reason: ErrorReason | None = None
    corrective_event_ids: list[Uri] | None = Field(None, alias="correctiveEventIDs")


class SensorMetadata(_ExtensibleModel):
    time: DateTime | None = None
    device_id: Uri | None = Field(None, alias="deviceID")
    device_metadata: Uri | None = None
    raw_data: Uri | None = None
    start_time: DateTime | None = None
    end_time: DateTime | None = None
    data_processing_method: Uri | None = None
    biz_rules: Uri | None = None


class SensorReport(_ExtensibleModel):
    type: MeasurementType
    exception: SensorAlertType | None = None
    device_id: Uri | None = Field(None, alias="deviceID")
    device_metadata: Uri | None = None
    raw_data: Uri | None = None
    data_processing_method: Uri | None = None
    biz_rules: Uri | None = None
    time: DateTime | None = None
    microorganism: Uri | None = None
    chemical_substance: Uri | None = None
    coordinate_reference_system: Uri | None = None
    value: Number | None = None
    component: SensorComponent | None = None
    string_value: str | None = None
    boolean_value: bool | None = None
    hex_binary_value: HexBinary | None = None
    uri_value: Uri | None = None
    min_value: Number | None = None
    max_value: Number | None = None
    mean_value: Number | None = None
    s_dev: Number | None = None
    perc_rank: Number | None = None
    perc_value: Number | None = None
    uom: str | None = None


class SensorElement(_ExtensibleModel):
    sensor_metadata: SensorMetadata | None = None
    sensor_report: list[SensorReport] = Field(min_length=1)


# --- Events ----------------------------------------------------------------------------------------


class _Event(_ExtensibleModel):
    """The fields every event has (the schema's ``Event``)."""

    context: JsonLdContext | None = Field(None, alias="@context")
    event_time: DateTime
    record_time: DateTime | None = None
    event_time_zone_offset: TimeZoneOffset
    event_id: Uri | None = Field(None, alias="eventID")
    certification_info: CertificationInfo | None = None
    error_declaration: ErrorDeclaration | None = None


class ObjectEvent(_Event):
    type: Literal["ObjectEvent"]
    action: Action
    epc_list: UniqueUris | None = None
    quantity_list: list[QuantityElement] | None = None
    biz_step: BizStep | None = None
    disposition: Disposition | None = None
    persistent_disposition: PersistentDisposition | None = None
    read_point: ReadPoint | None = None
    biz_location: BizLocation | None = None
    biz_transaction_list: list[BizTransaction] | None = None
    source_list: list[Source] | None = None
    destination_list: list[Destination] | None = None
    sensor_element_list: list[SensorElement] | None = None
    ilmd: Ilmd | None = None

    @model_validator(mode="after")
    def _names_its_objects(self) -> Self:
        if (
            self.epc_list is None
            and not self.quantity_list
            and not (self.sensor_element_list and self.read_point)
        ):
            raise ValueError(
                "an ObjectEvent names what it is about: an epcList, a non-empty quantityList, "
                "or a readPoint with a non-empty sensorElementList"
            )
        if self.ilmd is not None and self.action != "ADD":
            raise ValueError(f"ilmd (instance/lot master data) comes only with action ADD, not {self.action}")
        return self


class _ParentChildEvent(_Event):
    """The fields AggregationEvent and AssociationEvent share."""

    action: Action
    child_epcs: list[Uri] | None = Field(None, alias="childEPCs")
    child_quantity_list: list[QuantityElement] | None = None
    biz_step: BizStep | None = None
    disposition: Disposition | None = None
    read_point: ReadPoint | None = None
    biz_location: BizLocation | None = None
    biz_transaction_list: list[BizTransaction] | None = None
    source_list: list[Source] | None = None
    destination_list: list[Destination] | None = None
    sensor_element_list: list[SensorElement] | None = None

    @model_validator(mode="after")
    def _names_its_children(self) -> Self:
        if not self.child_epcs and not self.child_quantity_list and self.action != "DELETE":
            raise ValueError(
                f"an {type(self).__name__} names childEPCs or a childQuantityList unless its action is DELETE"
            )
        return self


class AggregationEvent(_ParentChildEvent):
    type: Literal["AggregationEvent"]
    parent_id: Uri | None = Field(None, alias="parentID")


class AssociationEvent(_ParentChildEvent):
    type: Literal["AssociationEvent"]
    parent_id: Uri = Field(alias="parentID")


class TransactionEvent(_Event):
    type: Literal["TransactionEvent"]
    action: Action
    biz_transaction_list: list[BizTransaction] = Field(min_length=1)
    parent_id: Uri | None = Field(None, alias="parentID")
    epc_list: list[Uri] | None = None
    quantity_list: list[QuantityElement] | None = None
    biz_step: BizStep | None = None
    disposition: Disposition | None = None
    read_point: ReadPoint | None = None
    biz_location: BizLocation | None = None
    source_list: list[Source] | None = None
    destination_list: list[Destination] | None = None
    sensor_element_list: list[SensorElement] | None = None

    @model_validator(mode="after")
    def _names_its_objects(self) -> Self:
        if self.epc_list is None and not self.quantity_list and self.action != "DELETE":
            raise ValueError(
                "a TransactionEvent names an epcList or a non-empty quantityList unless its action is DELETE"
            )
        return self


class TransformationEvent(_Event):
    type: Literal["TransformationEvent"]
    input_epc_list: UniqueUris | None = Field(None, alias="inputEPCList")
    input_quantity_list: list[QuantityElement] | None = None
    output_epc_list: UniqueUris | None = Field(None, alias="outputEPCList")
    output_quantity_list: list[QuantityElement] | None = None
    transformation_id: Uri | None = Field(None, alias="transformationID")
    biz_step: BizStep | None = None
    disposition: Disposition | None = None
    persistent_disposition: PersistentDisposition | None = None
    read_point: ReadPoint | None = None
    biz_location: BizLocation | None = None
    biz_transaction_list: list[BizTransaction] | None = None
    source_list: list[Source] | None = None
    destination_list: list[Destination] | None = None
    sensor_element_list: list[SensorElement] | None = None
    ilmd: Ilmd | None = None

    @model_validator(mode="after")
    def _has_inputs_and_outputs(self) -> Self:
        inputs = bool(self.input_epc_list) or bool(self.input_quantity_list)
        outputs = bool(self.output_epc_list) or bool(self.output_quantity_list)
        if not (inputs and outputs) and not ((inputs or outputs) and self.transformation_id is not None):
            raise ValueError(
                "a TransformationEvent has inputs and outputs (EPCs or quantities), "
                "or at least one of them and a transformationID"
            )
        return self


class ExtensionEvent(_Event):
    """An event of a type the standard does not define: the common fields, a URI as its type, and
    any other field (the schema's ``Extended-Event``)."""

    type: Uri

    @model_validator(mode="after")
    def _extension_names_are_uris(self) -> Self:
        """Overrides the check of the base: the schema leaves an extension event's field names free."""
        return self


EVENT_TYPES: tuple[str, ...] = (
    "ObjectEvent",
    "AggregationEvent",
    "AssociationEvent",
    "TransactionEvent",
    "TransformationEvent",
)
_EXTENSION_TAG = "extension event"


def _event_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if isinstance(kind, str) and kind in EVENT_TYPES else _EXTENSION_TAG


EpcisEvent = Annotated[
    Annotated[ObjectEvent, Tag("ObjectEvent")]
    | Annotated[AggregationEvent, Tag("AggregationEvent")]
    | Annotated[AssociationEvent, Tag("AssociationEvent")]
    | Annotated[TransactionEvent, Tag("TransactionEvent")]
    | Annotated[TransformationEvent, Tag("TransformationEvent")]
    | Annotated[ExtensionEvent, Tag(_EXTENSION_TAG)],
    Discriminator(_event_tag),
]


EVENT_ADAPTER: TypeAdapter[EpcisEvent] = TypeAdapter(EpcisEvent)
"""Validates one event inside a document (no ``@context`` of its own needed)."""


# --- Documents -------------------------------------------------------------------------------------


class Attribute(_OpenModel):
    id: Uri
    attribute: Annotated[int | float | str | dict[str, Any], PlainValidator(_attribute)] | None = None


class VocabularyElement(_OpenModel):
    id: Uri
    attributes: list[Attribute] | None = None
    children: list[Uri] | None = None


class Vocabulary(_OpenModel):
    type: Uri
    vocabulary_element_list: list[VocabularyElement] | None = None


class EPCISMasterData(_OpenModel):
    vocabulary_list: list[Vocabulary] | None = None


class EPCISHeader(_ExtensibleModel):
    epcis_master_data: EPCISMasterData | None = None


class EPCISBody(_OpenModel):
    event_list: list[EpcisEvent]


class EPCISDocument(_ExtensibleModel):
    context: JsonLdContext = Field(alias="@context")
    id: Uri | None = None
    type: Literal["EPCISDocument"]
    schema_version: Version
    creation_date: DateTime
    instance_identifier: str | None = None
    sender: str | None = None
    receiver: str | None = None
    epcis_header: EPCISHeader | None = None
    epcis_body: EPCISBody

    @property
    def events(self) -> list[EpcisEvent]:
        return self.epcis_body.event_list


class ResultsBody(_ExtensibleModel):
    event_list: list[EpcisEvent]
    vocabulary_list: list[Vocabulary] | None = None


class QueryResults(_ExtensibleModel):
    query_name: str
    subscription_id: str | None = Field(None, alias="subscriptionID")
    results_body: ResultsBody


class EPCISQueryDocumentBody(_ExtensibleModel):
    query_results: QueryResults


class EPCISQueryDocument(_ExtensibleModel):
    context: JsonLdContext = Field(alias="@context")
    id: Uri | None = None
    type: Literal["EPCISQueryDocument"]
    schema_version: Version | None = None
    creation_date: DateTime | None = None
    epcis_body: EPCISQueryDocumentBody

    @property
    def events(self) -> list[EpcisEvent]:
        return self.epcis_body.query_results.results_body.event_list


# --- Parsing ---------------------------------------------------------------------------------------


class EpcisValidationError(ValueError):
    """A document (or event) that GS1's schema refuses, with one readable reason per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


_EVENT_TAGS = frozenset((*EVENT_TYPES, _EXTENSION_TAG))


def _path(location: tuple[int | str, ...]) -> tuple[int | None, str]:
    """(index of the event, if inside one; the JSON path) of a pydantic error location."""
    event_index: int | None = None
    path = ""
    previous: int | str | None = None
    for part in location:
        if isinstance(part, int):
            if previous == "eventList" and event_index is None:
                event_index = part
            path += f"[{part}]"
        elif (previous is None or isinstance(previous, int)) and part in _EVENT_TAGS:
            pass  # the discriminated union's tag: not part of the document
        else:
            path += f".{part}" if path else part
        previous = part
    return event_index, path


def validation_reasons(error: ValidationError) -> list[str]:
    """One readable line per problem pydantic found: event index, JSON path, what is wrong."""
    reasons = []
    for detail in error.errors(include_url=False):
        event_index, path = _path(tuple(detail["loc"]))
        message = detail["msg"].removeprefix("Value error, ")
        value = detail.get("input")
        if detail["type"] not in {"value_error", "missing"} and isinstance(value, (str, int, float, bool)):
            message += f" (got {json.dumps(value)})"
        where = path or "document"
        if event_index is not None:
            where = f"event {event_index}: {path}"
        reasons.append(f"{where}: {message}")
    return reasons


def _load(data: bytes | str | dict[str, Any]) -> Any:
    if isinstance(data, dict):
        return data

    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(data, parse_constant=refuse_constant)
    except ValueError as error:
        raise EpcisValidationError([f"document: not JSON ({error})"]) from None


def parse_document(data: bytes | str | dict[str, Any]) -> EPCISDocument | EPCISQueryDocument:
    """An ``EPCISDocument`` or ``EPCISQueryDocument`` from its JSON (text or already parsed).

    Raises ``EpcisValidationError`` with every reason found when GS1's schema would refuse it.
    """
    document = _load(data)
    if not isinstance(document, dict):
        raise EpcisValidationError(["document: an EPCIS document is a JSON object"])
    model: type[EPCISDocument | EPCISQueryDocument] = (
        EPCISQueryDocument if document.get("type") == "EPCISQueryDocument" else EPCISDocument
    )
    try:
        return model.model_validate(document)
    except ValidationError as error:
        reasons = validation_reasons(error)
        if "type" not in document and "isA" in document:
            reasons.insert(0, "document: 'isA' is the pre-ratification spelling of 'type'")
        raise EpcisValidationError(reasons) from None


def parse_event(data: bytes | str | dict[str, Any]) -> EpcisEvent:
    """A single bare event (the body of ``POST /events``), which carries its own ``@context``."""
    event = _load(data)
    if not isinstance(event, dict):
        raise EpcisValidationError(["event: an EPCIS event is a JSON object"])
    reasons = [] if "@context" in event else ["event: a bare event carries its own @context"]
    try:
        parsed = EVENT_ADAPTER.validate_python(event)
    except ValidationError as error:
        reasons.extend(f"event: {reason}" for reason in validation_reasons(error))
    if reasons:
        raise EpcisValidationError(reasons)
    return parsed

"""Personal data out of error text and log lines: where masking cannot reach.

Masking (``citygrid.masking``) shapes the fields a service renders. Error text is different: a
database error quotes the statement's parameters (``[parameters: ('13812345678', '李明')]``) and
PostgreSQL's ``DETAIL`` quotes the row (``Failing row contains (…)``, ``Key (phone)=(…)``), a
validation error quotes the input (``input_value='…'``), and all of it would be stored in dead
letters and outbox rows or written to the logs, which admins and log pipelines read without any
``pii:read``. ``scrub`` takes out, before such text is stored or logged:

- SQLAlchemy's ``[SQL: …]`` and ``[parameters: …]`` sections (up to its "Background on this error"
  link, which stays: it names the error's code);
- the values PostgreSQL and asyncpg quote: the failing row, a key's values, an invalid input;
- pydantic's ``input_value=…``;
- mainland mobile numbers (``13812345678``, ``138 1234 5678``, ``+86 138…``, ``0086…``), landlines
  with their area code (``020-87654321``, ``(020) 8765 4321``, ``+86 20 8765 4321``), 18-character
  resident ID numbers (``44010619900307123X``), e-mail addresses;
- the value of anything that looks like a personal field in a dump: ``name='…'``,
  ``reporter_phone=…``, ``"email": "…"``, ``姓名：…``, ``身份证号：…``, ``车牌：…``, ``地址：…``;
- the password of a URL (``nats://case:…@host``).

The error's class, its message and SQLSTATE-derived wording and the SQLAlchemy error code stay
readable. Names in free text without a label cannot be recognised; they are kept out by removing
the sections that carry whole rows and parameter lists.

``mask_text`` applies the same recognisers to free text a service renders to a caller without
``pii:read`` (a case's description, a note), masking as the structured fields are masked
(``138****5678``) instead of replacing them with a label.

Everything here is precompiled; a text in which nothing matches costs one scan of each pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, Literal

Kind = Literal["phone", "id_number", "email", "name", "plate", "address", "hidden"]
Replace = Callable[[Kind, str], str]

# -- whole sections ----------------------------------------------------------------------------------

# Where a section that quotes data ends: the next part of SQLAlchemy's message, the next block of a
# traceback, or the end of the text. A newline may also be the two characters of a repr.
_NL = r"(?:\n|\\n)"
_BOUNDARY = (
    rf"(?={_NL}HINT:  |{_NL}\[SQL: |{_NL}\[parameters: |{_NL}\[SQL parameters hidden|"
    rf"\s*\(Background on this \w+ at: |{_NL}The above exception was|{_NL}During handling of the above|"
    rf"{_NL}Traceback \(most recent call last\)|\Z)"
)
_SQL_SECTION: Final = re.compile(
    rf"\[(?:SQL: |parameters: |SQL parameters hidden).*?(?=\s*\(Background on this \w+ at: |"
    rf"{_NL}The above exception was|{_NL}During handling of the above|{_NL}Traceback \(most recent|\Z)",
    re.DOTALL,
)
_FAILING_ROW: Final = re.compile(rf"(Failing row contains )\(.*?{_BOUNDARY}", re.DOTALL)
_KEY_VALUES: Final = re.compile(
    r"([Kk]ey \((?:.*?)\)=\().*?(\) (?:already exists|is not present in table|is still referenced|"
    r"conflicts with existing key|is duplicated))",
    re.DOTALL,
)
# asyncpg quotes the argument it could not encode, PostgreSQL the input it could not parse.
_INVALID_ARGUMENT: Final = re.compile(r"(invalid input for query argument \$\d+: )[^\n]*")
_INVALID_INPUT: Final = re.compile(r'(invalid input (?:syntax|value) for (?:type |enum )?[\w ]+: )"[^"\n]*"')
_INPUT_VALUE: Final = re.compile(r"(input_value=)(?:.*?(?=, input_type=)|[^\n\]]*)")
_URL_PASSWORD: Final = re.compile(r"(://[^\s:/@]+:)[^\s@/]+(@)")

# -- values recognised anywhere ---------------------------------------------------------------------

_D = "[0-9]"  # fullwidth digits are folded to ASCII before matching (see _FOLD)
_SEP = r"[ \-]?"
_NOT_BEFORE = r"(?<![0-9A-Za-z])"
_NOT_AFTER = r"(?![0-9A-Za-z])"
_COUNTRY = r"(?:\(?(?:\+|00)86\)?|86)"
_MOBILE = rf"(?:{_COUNTRY}{_SEP})?1[3-9]{_D}(?:{_SEP}{_D}{{4}}){{2}}"
# Area code 0 + two or three digits (020, 0755), then seven or eight digits not starting 0 or 1.
_LOCAL = rf"[2-9]{_D}{{2,3}}{_SEP}{_D}{{4}}"
_LANDLINE = (
    rf"(?:\(0[1-9]{_D}{{1,2}}\)|0[1-9]{_D}{{1,2}}|{_COUNTRY}{_SEP}\(?0?\)?[1-9]{_D}{{1,2}}){_SEP}{_LOCAL}"
)
# Region (6), birth date (8, years 1800-2099), sequence (3), check digit or X.
_ID_NUMBER = rf"[1-9]{_D}{{5}}(?:18|19|20){_D}{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]{_D}|3[01]){_D}{{3}}[0-9Xx]"
_EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"

# Keys whose value in a dump (``name='…'``, ``"reporter_phone": "…"``, ``姓名：…``) is personal. An ASCII
# key may carry prefixes (``reporter_name``, ``contact_phone``); a Chinese one is matched at the end
# of the run of characters before the separator (``投诉人联系电话：``).
_ASCII_KEYS: Final = re.compile(
    r"(?:[a-z]+_)*(?:(?P<name>name|full_?name)|(?P<phone>phone|mobile|tel|telephone|phone_?number)"
    r"|(?P<email>e-?mail)|(?P<id_number>id_?(?:number|card|no))|(?P<plate>plate(?:_?number)?)"
    r"|(?P<address>address))"
)
_CHINESE_KEYS_OF: Final[dict[Kind, str]] = {
    "name": "姓名 名字 联系人 报告人 举报人 投诉人 反映人 当事人 户主 驾驶员 司机",
    "phone": "手机号码 手机号 手机 联系电话 电话号码 电话 联系方式",
    "email": "电子邮箱 邮箱",
    "id_number": "身份证号码 身份证号 身份证 证件号码 证件号",
    "plate": "车牌号码 车牌号 车牌",
    "address": "家庭住址 住址 地址",
}
_CHINESE_KEYS: Final[tuple[tuple[str, Kind], ...]] = tuple(
    (key, kind) for kind, keys in _CHINESE_KEYS_OF.items() for key in keys.split()
)
_FIELD: Final = re.compile(
    r"""(?<![A-Za-z0-9_])(["']?)([A-Za-z][A-Za-z_\-]*|[\u4e00-\u9fff]{2,8})\1\s*[:=：]\s*"""
)
# Words every personal key contains: text with none of them needs no field search.
_ASCII_KEY_WORDS: Final = (
    "name",
    "phone",
    "mobile",
    "tel",
    "mail",
    "idn",
    "id_n",
    "idc",
    "id_c",
    "plate",
    "address",
)
_CHINESE_KEY_WORDS: Final = tuple(key for key, _ in _CHINESE_KEYS)
_VALUE: Final = re.compile(
    r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|\[[a-z-]+\]|<NULL>|[^\s,;，；、。)）\]】}>'"]+"""
)
_EMAIL_VALUE: Final = re.compile(_EMAIL)
_ID_VALUE: Final = re.compile(rf"{_NOT_BEFORE}{_ID_NUMBER}{_NOT_AFTER}")
_PHONE_VALUE: Final = re.compile(rf"{_NOT_BEFORE}(?:{_MOBILE}|{_LANDLINE}){_NOT_AFTER}")
# Every phone and ID number is a run of seven or more characters of digits, spaces, hyphens and
# brackets: text without one (most log lines) needs no number search.
_NUMBER_RUN: Final = re.compile(r"[0-9][0-9 ()+\-]{5,}[0-9Xx]")
_EMPTY_VALUES: Final = frozenset({"None", "null", "NULL", "<NULL>"})  # <NULL>: PL/pgSQL's RAISE
# Fullwidth digits, plus and at sign, folded one character for one so match positions stay valid.
_FOLD: Final = str.maketrans("０１２３４５６７８９＋＠－", "0123456789+@-")
_FULLWIDTH: Final = re.compile("[０-９＋＠－]")

LABELS: Final[dict[Kind, str]] = {
    "phone": "[phone]",
    "id_number": "[id-number]",
    "email": "[email]",
    "name": "[name]",
    "plate": "[plate]",
    "address": "[address]",
    "hidden": "[hidden]",
}
_LABEL_VALUES: Final = frozenset(LABELS.values())  # already scrubbed: scrubbing again changes nothing
_KEY_KINDS: dict[str, Kind | None] = {}


def label(kind: Kind, _value: str) -> str:
    return LABELS[kind]


def key_kind(key: str) -> Kind | None:
    """What a dump's key holds when it is personal (``reporter_phone`` → phone), else None."""
    if key in _KEY_KINDS:
        return _KEY_KINDS[key]
    kind: Kind | None = None
    if key.isascii():
        match = _ASCII_KEYS.fullmatch(key.lower())
        if match is not None:
            kind = match.lastgroup  # type: ignore[assignment]
    else:
        kind = next((kind for suffix, kind in _CHINESE_KEYS if key.endswith(suffix)), None)
    if len(_KEY_KINDS) < 4096:  # keys are few; a flood of distinct ones is not kept
        _KEY_KINDS[key] = kind
    return kind


class _Text:
    """The text being scrubbed and its folded twin (fullwidth digits as ASCII) that patterns match
    on; both take the same replacements, so their positions stay the same."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.probe = text.translate(_FOLD) if _FULLWIDTH.search(text) else text

    def replace(self, spans: list[tuple[int, int, str]]) -> None:
        if not spans:
            return
        folded = self.probe is not self.text
        text_parts: list[str] = []
        probe_parts: list[str] = []
        last = 0
        for start, end, new in spans:
            text_parts += (self.text[last:start], new)
            probe_parts += (self.probe[last:start], new)
            last = end
        text_parts.append(self.text[last:])
        probe_parts.append(self.probe[last:])
        self.text = "".join(text_parts)
        self.probe = "".join(probe_parts) if folded else self.text

    def substitute(self, pattern: re.Pattern[str], kind: Kind, replace: Replace) -> None:
        self.replace(
            [
                (match.start(), match.end(), replace(kind, self.text[match.start() : match.end()]))
                for match in pattern.finditer(self.probe)
            ]
        )

    def substitute_fields(self, replace: Replace) -> None:
        spans: list[tuple[int, int, str]] = []
        after = 0
        for field in _FIELD.finditer(self.probe):
            if field.start() < after:
                continue
            kind = key_kind(field[2])
            if kind is None:
                continue
            value = _VALUE.match(self.probe, field.end())
            if value is None:
                continue
            start, end = value.span()
            found = self.text[start:end]
            quote = found[0] if len(found) >= 2 and found[0] == found[-1] and found[0] in "'\"" else ""
            inner = found[1:-1] if quote else found
            if inner and inner not in _EMPTY_VALUES and inner not in _LABEL_VALUES:
                spans.append((start, end, f"{quote}{replace(kind, inner)}{quote}"))
            after = end
        self.replace(spans)


def _may_have_fields(text: str) -> bool:
    if not ("=" in text or ":" in text or "：" in text):
        return False
    lowered = text.lower()
    if any(word in lowered for word in _ASCII_KEY_WORDS):
        return True
    return not text.isascii() and any(word in text for word in _CHINESE_KEY_WORDS)


def replace_values(text: str, replace: Replace) -> str:
    """``text`` with the value of every personal field of a dump, and every e-mail, ID number and
    phone number in it, replaced by ``replace(kind, value)``."""
    work = _Text(text)
    if _may_have_fields(work.probe):
        work.substitute_fields(replace)
    if "@" in work.probe:
        work.substitute(_EMAIL_VALUE, "email", replace)
    if _NUMBER_RUN.search(work.probe):
        work.substitute(_ID_VALUE, "id_number", replace)
        work.substitute(_PHONE_VALUE, "phone", replace)
    return work.text


def _cut_sections(text: str) -> str:
    if "[SQL" in text or "[parameters: " in text:
        text = _SQL_SECTION.sub("[SQL: hidden]", text)
    if "Failing row contains" in text:
        text = _FAILING_ROW.sub(r"\1(hidden).", text)
    if "ey (" in text:
        text = _KEY_VALUES.sub(r"\1hidden\2", text)
    if "invalid input" in text:
        text = _INVALID_ARGUMENT.sub(r"\1[hidden]", text)
        text = _INVALID_INPUT.sub(r'\1"[hidden]"', text)
    if "input_value=" in text:
        text = _INPUT_VALUE.sub(r"\1[hidden]", text)
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1[hidden]\2", text)
    return text


def scrub(text: str) -> str:
    """Error or log text without the personal data it may quote; the same text when it has none."""
    if not text:
        return text
    return replace_values(_cut_sections(text), label)


def scrub_error(error: BaseException) -> str:
    """``Class: message`` of an error, scrubbed: what the kit stores and logs about a failure."""
    return scrub(f"{type(error).__name__}: {error}")

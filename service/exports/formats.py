"""Export files: intake records as CSV or XLSX, safe to open in a spreadsheet.

Pure: no I/O besides the file handed in, no clock, no environment. Rows are written as the
records arrive, so memory does not grow with the number of records.

Patients type the names, addresses, conditions and medications, so any value a spreadsheet
would read as a formula is made inert (OWASP "CSV injection"): in CSV it is prefixed with
`'`; in XLSX it is stored as a plain string cell with Excel's quote-prefix style, never as a
formula, and its text is kept as typed. An XLSX cell is never split again, so there only the
start of the value matters; a CSV file may be split on other separators than ours, so there
every piece after a separator is checked too (see `neutralise`).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from os import PathLike
from typing import TYPE_CHECKING, BinaryIO

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from service.domain.record import IntakeRecord

if TYPE_CHECKING:
    from openpyxl.cell.cell import Cell
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

COLUMNS = (
    "record_id",
    "submitted_at",
    "name",
    "date_of_birth",
    "gender",
    "address",
    "medical_conditions",
    "current_medications",
    "phone",
    "language",
    "consent_at",
    # Last, so scripts reading the earlier columns by position keep working.
    "whatsapp_user_id",
)
LIST_SEPARATOR = "; "
EXCEL_MAX_ROWS = 1_048_576  # Excel's limit per sheet, header row included
SHEET_TITLE = "intakes"

# What Excel, LibreOffice and Google Sheets may read as the start of a formula or a DDE
# payload, with the full-width and small forms that East Asian input methods produce.
_FORMULA_TRIGGERS = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20\ufe66\ufe62\ufe63\ufe6b")
# Where a spreadsheet may split a CSV line into cells or rows: ours (","), the list separator
# of locales whose decimal mark is "," (";"), tab and "|" (import dialogs offer both), and the
# line breaks a differently-quoted reading turns into row ends.
_CELL_SEPARATORS = frozenset(",;\t|\r\n")
_COLUMN_WIDTHS = (18, 20, 28, 13, 8, 40, 40, 40, 17, 9, 20, 24)
_DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"


def is_formula_like(value: str) -> bool:
    """Tell whether a spreadsheet could read value as a formula, even after leading blanks."""
    for char in value:
        if char in _FORMULA_TRIGGERS:
            return True
        if not _is_blank(char):
            return False
    return False


def neutralise(value: str) -> str:
    """Return value made inert for CSV: `'` before every piece that could start a formula.

    A spreadsheet may split a CSV line on other characters than ours (Excel with a Spanish,
    German or French locale splits on ";", tab-separated imports on tab), and a line break
    inside a quoted field starts a new row when the quoting is read differently. Each piece
    between such separators can then become a cell of its own, so each is checked: the value
    itself is prefixed with `'` (as it always was); a later piece gets the `'` right before its
    trigger, so the text reads as typed (`Calle Mayor 1; '=HYPERLINK(...)`). Blanks, invisible
    characters and double quotes between a separator and the trigger do not hide it, since a
    parser may strip them. A separator that is itself a trigger (tab, carriage return) is made
    inert as the start of its piece and also starts the next one.
    """
    pieces: list[str] = []
    at_piece_start, first_piece = True, True
    for char in value:
        if at_piece_start and char in _FORMULA_TRIGGERS:
            if first_piece:
                pieces.insert(0, "'")
            else:
                pieces.append("'")
            at_piece_start = False
        pieces.append(char)
        if char in _CELL_SEPARATORS:
            at_piece_start, first_piece = True, False
        elif not (char == '"' or _is_blank(char)):
            at_piece_start = False
    return "".join(pieces)


def _is_blank(char: str) -> bool:
    # Spaces and invisible format characters (zero-width space, BOM) are skipped by some
    # spreadsheets before they look for "=", so they do not hide a formula.
    return char.isspace() or unicodedata.category(char) == "Cf"


def text_values(record: IntakeRecord) -> list[str]:
    """Return a record's cells as text, in COLUMNS order (times in ISO 8601 UTC)."""
    return [
        record.record_id,
        record.submitted_at.astimezone(UTC).isoformat(),
        record.name,
        record.date_of_birth.isoformat(),
        record.gender,
        record.address,
        LIST_SEPARATOR.join(record.medical_conditions),
        LIST_SEPARATOR.join(record.current_medications),
        phone_cell(record),
        record.language,
        record.consent_at.astimezone(UTC).isoformat(),
        record.bsuid or "",
    ]


def phone_cell(record: IntakeRecord) -> str:
    """Return the phone in E.164 (`+34…`), or "" for a patient who wrote without a number."""
    return "+" + record.wa_id if record.wa_id else ""


def write_csv(records: Iterable[IntakeRecord], file: BinaryIO) -> int:
    """Write a header and one row per record as UTF-8 CSV with a BOM; return the row count.

    RFC 4180: fields quoted only when needed, CRLF between rows, newlines inside a field kept.
    The BOM makes Excel read the file as UTF-8, so accented names survive.
    """
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    try:
        writer = csv.writer(text, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        count = 0
        for record in records:
            writer.writerow([neutralise(value) for value in text_values(record)])
            count += 1
        text.flush()
    finally:
        text.detach()  # the caller owns the file: leave it open
    return count


def write_xlsx(
    records: Iterable[IntakeRecord],
    file: BinaryIO | str | PathLike[str],
    max_rows_per_sheet: int = EXCEL_MAX_ROWS,
) -> int:
    """Write the records as an XLSX workbook; return the row count.

    openpyxl's write-only mode keeps only the current row in memory. Each sheet has a bold,
    frozen header row; a new sheet ("intakes 2", ...) starts before Excel's row limit. Dates are
    real date cells; times are naive UTC datetimes, since Excel cells have no time zone.
    """
    if max_rows_per_sheet < 2:
        raise ValueError("max_rows_per_sheet must leave room for the header and one row")
    workbook = Workbook(write_only=True)
    sheet = _new_sheet(workbook, 1)
    sheets, rows_in_sheet, count = 1, 1, 0
    for record in records:
        if rows_in_sheet >= max_rows_per_sheet:
            sheets += 1
            sheet = _new_sheet(workbook, sheets)
            rows_in_sheet = 1
        sheet.append(_xlsx_row(sheet, record))
        rows_in_sheet += 1
        count += 1
    workbook.save(file)
    return count


def _new_sheet(workbook: Workbook, number: int) -> WriteOnlyWorksheet:
    sheet = workbook.create_sheet(SHEET_TITLE if number == 1 else f"{SHEET_TITLE} {number}")
    # Write-only sheets take layout settings only before their first row.
    sheet.freeze_panes = "A2"
    for index, width in enumerate(_COLUMN_WIDTHS, 1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    header = []
    for name in COLUMNS:
        cell = WriteOnlyCell(sheet, value=name)
        cell.font = Font(bold=True)
        header.append(cell)
    sheet.append(header)
    return sheet


def _xlsx_row(sheet: WriteOnlyWorksheet, record: IntakeRecord) -> list[object]:
    return [
        _text_cell(sheet, record.record_id),
        _datetime_cell(sheet, record.submitted_at),
        _text_cell(sheet, record.name),
        record.date_of_birth,  # openpyxl gives a date its yyyy-mm-dd number format
        _text_cell(sheet, record.gender),
        _text_cell(sheet, record.address),
        _text_cell(sheet, LIST_SEPARATOR.join(record.medical_conditions)),
        _text_cell(sheet, LIST_SEPARATOR.join(record.current_medications)),
        _text_cell(sheet, phone_cell(record)),
        _text_cell(sheet, record.language),
        _datetime_cell(sheet, record.consent_at),
        _text_cell(sheet, record.bsuid or ""),
    ]


def _text_cell(sheet: WriteOnlyWorksheet, value: str) -> object:
    """Return value as openpyxl should write it: always a string cell, never a formula."""
    formula_like = is_formula_like(value)
    if not formula_like and value not in ERROR_CODES:
        return value  # openpyxl writes any other str as an inline string cell
    # openpyxl binds a str starting with "=" as a formula and "#N/A" and the like as errors:
    # the cell is built here and its type forced back to string after the value is bound.
    cell = WriteOnlyCell(sheet, value=value)
    cell.data_type = "s"
    if formula_like:
        cell.quotePrefix = True  # Excel shows it as text and keeps it text when edited
    return cell


def _datetime_cell(sheet: WriteOnlyWorksheet, value: datetime) -> Cell:
    cell = WriteOnlyCell(sheet, value=value.astimezone(UTC).replace(tzinfo=None))
    cell.number_format = _DATETIME_FORMAT
    return cell

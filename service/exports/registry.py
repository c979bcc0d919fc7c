"""The export formats, in one place: what a request may ask for, what a person is shown, what
the zip holds and how it is written. The API, the portal and the docs list formats from here.

A writer gets the records and a `ZipMembers`, which opens a new member of the export's AES
zip for writing and gives a temporary folder private to this export; it returns how many
records it wrote. Adding a format is one entry here (and its value in ExportFormat).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from repositories.exports import ExportFormat
from service.domain.record import IntakeRecord
from service.exports.fhir import bulk
from service.exports.formats import write_csv, write_xlsx

_COPY_CHUNK = 1024 * 1024


class ZipMembers(Protocol):
    @property
    def folder(self) -> Path: ...

    def open(self, name: str) -> AbstractContextManager[BinaryIO]: ...


Writer = Callable[[Iterable[IntakeRecord], ZipMembers], int]


@dataclass(frozen=True)
class FileFormat:
    """One export format: its stored value, its label for people, what the zip holds."""

    format: ExportFormat
    label: str  # as a person picks it: "CSV", "Excel", "FHIR R4"
    description: str
    names: tuple[str, ...]  # the `format` values a request may give, the first the usual one
    members: tuple[str, ...]  # the files inside the zip
    write: Writer
    compress_level: int | None = None  # zlib's level for the members; None: zlib's default


def _write_csv(records: Iterable[IntakeRecord], zipped: ZipMembers) -> int:
    with zipped.open("intakes.csv") as entry:  # streamed straight into the encrypted member
        return write_csv(records, entry)


def _write_xlsx(records: Iterable[IntakeRecord], zipped: ZipMembers) -> int:
    # An XLSX file is itself a zip that openpyxl must finish before it can be copied in.
    sheet_path = zipped.folder / "intakes.xlsx"
    count = write_xlsx(records, sheet_path)
    with open(sheet_path, "rb") as source, zipped.open("intakes.xlsx") as entry:
        shutil.copyfileobj(source, entry, _COPY_CHUNK)
    sheet_path.unlink()
    return count


def _write_fhir(records: Iterable[IntakeRecord], zipped: ZipMembers) -> int:
    return bulk.write_fhir(records, zipped.open, zipped.folder)


FILE_FORMATS: tuple[FileFormat, ...] = (
    FileFormat(
        ExportFormat.CSV,
        "CSV",
        "One row per intake, UTF-8, opens in any spreadsheet",
        ("csv",),
        ("intakes.csv",),
        _write_csv,
    ),
    FileFormat(
        ExportFormat.XLSX,
        "Excel",
        "One row per intake in an Excel workbook",
        ("xlsx", "excel"),  # "excel": the seed's name
        ("intakes.xlsx",),
        _write_xlsx,
    ),
    FileFormat(
        ExportFormat.FHIR,
        "FHIR R4",
        "FHIR R4 resources as NDJSON, for a clinic's record system (EHR)",
        ("fhir",),
        bulk.MEMBER_NAMES,
        _write_fhir,
        # FHIR JSON is about 20 times the CSV's text per record: at zlib's default level
        # deflating it would take longer than reading the archive, for a zip ~20 % smaller.
        compress_level=1,
    ),
)
_BY_NAME = {name: file_format for file_format in FILE_FORMATS for name in file_format.names}
_BY_FORMAT = {file_format.format: file_format for file_format in FILE_FORMATS}


def by_name(requested: str) -> FileFormat | None:
    """Return the format a request's `format` value names (case and spaces ignored), if any."""
    return _BY_NAME.get(requested.strip().lower())


def of(export_format: ExportFormat) -> FileFormat:
    """Return the registry entry of a stored export format."""
    return _BY_FORMAT[export_format]


def accepted_names() -> tuple[str, ...]:
    """Return every `format` value a request may give, in the registry's order."""
    return tuple(_BY_NAME)

"""Write an export's FHIR files: NDJSON per resource type, as FHIR Bulk Data does, and the form.

One pass over the records, as the CSV export: the archive is read (and decrypted) once. A
zip takes one member at a time, so the QuestionnaireResponses (the largest file) stream
straight into their zip member, and the other types go, as they are made, to spill files in
the export's temporary folder, each gzip-compressed at level 1, and are copied into their
members once the records end. Memory holds one record's resources whatever the number of
records; the spill files hold about a tenth of their text, which matters on Cloud Run, where
/tmp is memory (written as is, they would take about 200 MB per 100k records).
Reading the archive again for each type would instead pay its reads and decryption five times.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from service.domain.record import IntakeRecord
from service.exports.fhir.questionnaire import questionnaire_json
from service.exports.fhir.resources import RESOURCE_TYPES, RecordMapper

QUESTIONNAIRE_MEMBER = "Questionnaire.json"
STREAMED_TYPE = "QuestionnaireResponse"
MEMBER_NAMES = tuple(f"{resource_type}.ndjson" for resource_type in RESOURCE_TYPES) + (
    QUESTIONNAIRE_MEMBER,
)
_SPILL_LEVEL = 1  # fast: the spill files are read back once, seconds later
_COPY_CHUNK = 1024 * 1024
_BLOCK = 256 * 1024

OpenMember = Callable[[str], AbstractContextManager[BinaryIO]]


def write_fhir(records: Iterable[IntakeRecord], open_member: OpenMember, folder: Path) -> int:
    """Write the records' resources and the Questionnaire as zip members; return the count.

    `open_member(name)` opens a new member of the zip for writing; `folder` is private to
    this export and holds the spill files until they are copied in.
    """
    mapper = RecordMapper()
    spilled = [name for name in RESOURCE_TYPES if name != STREAMED_TYPE]
    count = 0
    with ExitStack() as spills:
        files = {
            name: _Buffered(
                spills.enter_context(
                    gzip.GzipFile(folder / f"{name}.ndjson.gz", "wb", _SPILL_LEVEL, mtime=0)
                )
            )
            for name in spilled
        }
        with open_member(f"{STREAMED_TYPE}.ndjson") as member:
            streamed = _Buffered(member)
            for record in records:
                resources = mapper.map(record).by_type()
                streamed.write(resources[STREAMED_TYPE])
                for name in spilled:
                    files[name].write(resources[name])
                count += 1
            streamed.flush()
        for spill in files.values():
            spill.flush()
    for name in spilled:
        spill_path = folder / f"{name}.ndjson.gz"
        with gzip.open(spill_path, "rb") as source, open_member(f"{name}.ndjson") as member:
            shutil.copyfileobj(source, member, _COPY_CHUNK)
        spill_path.unlink()
    with open_member(QUESTIONNAIRE_MEMBER) as member:
        member.write(questionnaire_json())
    return count


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _Buffered:
    """Write resources as NDJSON lines to a file in blocks rather than a few lines at a time.

    Each write to a zip member or a gzip file compresses (and, in the zip, encrypts and
    authenticates) what it is given, at a cost per call that would exceed the work for the
    few hundred bytes of a resource.
    """

    def __init__(self, file: _Writable) -> None:
        self._file = file
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, resources: list[dict[str, Any]]) -> None:
        for resource in resources:
            # orjson: compact UTF-8 JSON about four times as fast as the json module, which
            # would make serialising, not reading the archive, most of a FHIR export's time.
            # It escapes line breaks inside strings, so each resource stays on one line.
            line = orjson.dumps(resource, option=orjson.OPT_APPEND_NEWLINE)
            self._pending.append(line)
            self._size += len(line)
        if self._size >= _BLOCK:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._file.write(b"".join(self._pending))
            self._pending.clear()
            self._size = 0

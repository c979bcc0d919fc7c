"""Sealed daily batches: one object per complete UTC day holding that day's record ciphertexts.

An export of 100k records cannot afford one GET per record, so a daily job (`records seal`)
copies each closed day's per-record ciphertexts, unchanged, into one object read in a few
large requests. The per-record objects stay the archive; a batch is a derived copy:

- Each frame is `record id (16 ASCII bytes) | length (4 bytes, big-endian) | ciphertext`, the
  record's own Tink ciphertext, still authenticated with the record id as associated data.
  A frame cannot be altered or moved to another record without failing decryption.
- Frames are in index order (submitted_at, then record id), so a reader checks that each key
  is strictly greater than the last: no frame can be repeated or reordered.
- The day's document (`intake_days/{day}`) names the object, its generation, its frame count
  and SHA-256, and the day's `version` when it was sealed. Every index change of the day bumps
  `version` in the same write, so a batch whose version is behind is never read.

This module holds the format only; ArchiveRepository writes and reads the objects.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, BinaryIO

MAGIC = b"INTAKE-BATCH/1\n"
BATCH_PREFIX = "batches/"
DAY_COLLECTION = "intake_days"
_RECORD_ID_BYTES = 16
_LENGTH = struct.Struct(">I")
_MAX_FRAME = 1024 * 1024  # a record's ciphertext is a few KB; anything larger is corrupt


class BatchFormatError(Exception):
    """The batch object does not parse; the caller reports it as an integrity failure."""


@dataclass(frozen=True)
class SealedBatch:
    """A day's batch as its day document describes it."""

    day: date
    object_name: str
    generation: int
    version: int
    count: int
    sha256: str
    key_ids: tuple[int, ...]
    sealed_at: datetime

    def to_fields(self) -> dict[str, object]:
        return {
            "object": self.object_name,
            "generation": self.generation,
            "version": self.version,
            "count": self.count,
            "sha256": self.sha256,
            "key_ids": list(self.key_ids),
            "sealed_at": self.sealed_at,
        }

    @classmethod
    def from_fields(cls, day: date, fields: dict[str, Any]) -> SealedBatch:
        return cls(
            day=day,
            object_name=fields["object"],
            generation=int(fields["generation"]),
            version=int(fields["version"]),
            count=int(fields["count"]),
            sha256=fields["sha256"],
            key_ids=tuple(fields.get("key_ids", ())),
            sealed_at=fields["sealed_at"],
        )


def day_id(day: date) -> str:
    return day.isoformat()


def batch_prefix(day: date) -> str:
    return f"{BATCH_PREFIX}{day:%Y/%m/%d}/"


class FrameWriter:
    """Write frames to a binary file, keeping the count and the SHA-256 of what was written."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._digest = hashlib.sha256()
        self.count = 0
        self._write(MAGIC)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)

    def add(self, record_id: str, ciphertext: bytes) -> None:
        encoded = record_id.encode("ascii")
        if len(encoded) != _RECORD_ID_BYTES:
            raise ValueError("a record id is 16 characters")
        self._write(encoded + _LENGTH.pack(len(ciphertext)) + ciphertext)
        self.count += 1

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class FrameReader:
    """Parse frames from a binary stream; `sha256` and `count` are final at the end."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self.count = 0

    def _read(self, size: int, at_frame_start: bool = False) -> bytes:
        """Read exactly `size` bytes; at a frame's start, b"" means a clean end of the batch."""
        chunks: list[bytes] = []
        wanted = size
        while wanted:
            chunk = self._stream.read(wanted)
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        data = b"".join(chunks)
        self._digest.update(data)
        if not data and at_frame_start:
            return b""  # a clean end, between frames
        if len(data) != size:
            raise BatchFormatError("the batch ends in the middle of a frame")
        return data

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        if self._read(len(MAGIC)) != MAGIC:
            raise BatchFormatError("the batch does not start with the expected header")
        while head := self._read(_RECORD_ID_BYTES + _LENGTH.size, at_frame_start=True):
            try:
                record_id = head[:_RECORD_ID_BYTES].decode("ascii")
            except UnicodeDecodeError:
                raise BatchFormatError("a frame's record id is not ASCII") from None
            (length,) = _LENGTH.unpack(head[_RECORD_ID_BYTES:])
            if length > _MAX_FRAME:
                raise BatchFormatError("a frame is larger than any record")
            ciphertext = self._read(length)
            self.count += 1
            yield record_id, ciphertext

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

"""The encrypted intake archive: Tink-encrypted objects in GCS and a PHI-free Firestore index.

Objects: `intakes/YYYY/MM/DD/{record_id}.tink`, the record JSON under Tink AEAD with associated
data = the record id, written with `if_generation_match=0` so nothing is ever overwritten.
Index: `intakes/{record_id}` with submitted_at, object, key_id, schema_version, status.
Days: `intake_days/{YYYY-MM-DD}` with a `version` bumped in the same write as every index change
of that day, and the day's sealed batch (repositories/batches.py) once `records seal` ran.
"""

from repositories.archive.model import (
    IndexEntry,
    IndexStatus,
    ReadStats,
    RecordIntegrityError,
    SealReport,
    day_of,
    object_name_for,
    record_id_of_object,
)
from repositories.archive.repository import ArchiveRepository

__all__ = [
    "ArchiveRepository",
    "IndexEntry",
    "IndexStatus",
    "ReadStats",
    "RecordIntegrityError",
    "SealReport",
    "day_of",
    "object_name_for",
    "record_id_of_object",
]

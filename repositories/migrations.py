"""Applied-migration records (`_migrations/{id}`) and the schema-version document."""

from __future__ import annotations

from datetime import datetime, timedelta

from google.api_core import exceptions as google_exceptions
from google.cloud import firestore

from service.errors import ConflictError

COLLECTION = "_migrations"
_LOCK_ID = "_lock"
_STALE_LOCK = timedelta(minutes=15)
SCHEMA_DOCUMENT = ("_meta", "schema")


class MigrationRepository:
    """Which migrations ran, a run lock, and the schema version they maintain."""

    def __init__(self, client: firestore.Client) -> None:
        self._client = client
        self._collection = client.collection(COLLECTION)

    def applied(self) -> set[str]:
        return {snapshot.id for snapshot in self._collection.stream() if snapshot.id != _LOCK_ID}

    def record(self, migration_id: str, description: str, applied_at: datetime) -> None:
        self._collection.document(migration_id).set(
            {"description": description, "applied_at": applied_at}
        )

    def acquire_lock(self, owner: str, now: datetime) -> None:
        """Take the run lock so two operators cannot apply the same migration twice."""
        reference = self._collection.document(_LOCK_ID)
        try:
            reference.create({"owner": owner, "taken_at": now})
            return
        except google_exceptions.AlreadyExists:
            pass
        snapshot = reference.get()
        taken_at = (snapshot.to_dict() or {}).get("taken_at")
        if taken_at is not None and now - taken_at < _STALE_LOCK:
            raise ConflictError("another migration run holds the lock; try again later")
        # A lock older than any migration run is left by a crashed runner: take it over,
        # guarded by its update time so two runners cannot both take it.
        try:
            reference.update(
                {"owner": owner, "taken_at": now},
                option=self._client.write_option(last_update_time=snapshot.update_time),
            )
        except google_exceptions.FailedPrecondition as error:
            raise ConflictError("another migration run took the lock") from error

    def release_lock(self) -> None:
        self._collection.document(_LOCK_ID).delete()

    def schema_version(self) -> int | None:
        snapshot = self._client.collection(SCHEMA_DOCUMENT[0]).document(SCHEMA_DOCUMENT[1]).get()
        return (snapshot.to_dict() or {}).get("version") if snapshot.exists else None

    def set_schema_version(self, version: int, updated_at: datetime) -> None:
        self._client.collection(SCHEMA_DOCUMENT[0]).document(SCHEMA_DOCUMENT[1]).set(
            {"version": version, "updated_at": updated_at}
        )

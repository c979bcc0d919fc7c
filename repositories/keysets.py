"""The KMS-wrapped Tink keyset, kept as one object in the archive bucket."""

from __future__ import annotations

from google.api_core import exceptions as google_exceptions
from google.cloud import storage

from repositories.clients import STORAGE_CALL, STORAGE_ERRORS, translated
from service.errors import ConflictError
from service.keys.crypto import StoredKeyset


class KeysetObjectStore:
    """Read and write the wrapped keyset with generation preconditions (no lost rotations)."""

    def __init__(self, bucket: storage.Bucket, object_name: str) -> None:
        self._bucket = bucket
        self.object_name = object_name
        self.description = f"gs://{bucket.name}/{object_name}"

    def read(self) -> StoredKeyset | None:
        blob = self._bucket.blob(self.object_name)
        with translated("Cloud Storage", STORAGE_ERRORS):
            try:
                data = blob.download_as_bytes(**STORAGE_CALL)
            except google_exceptions.NotFound:
                return None
        return StoredKeyset(data, blob.generation)

    def create(self, data: bytes) -> None:
        self._write(data, if_generation_match=0)

    def replace(self, data: bytes, generation: int | None) -> None:
        self._write(data, if_generation_match=generation)

    def _write(self, data: bytes, if_generation_match: int | None) -> None:
        blob = self._bucket.blob(self.object_name)
        with translated("Cloud Storage", STORAGE_ERRORS):
            try:
                blob.upload_from_string(
                    data,
                    content_type="application/json",
                    if_generation_match=if_generation_match,
                    **STORAGE_CALL,
                )
            except google_exceptions.PreconditionFailed as error:
                raise ConflictError(
                    f"the keyset at {self.description} exists or changed meanwhile"
                ) from error

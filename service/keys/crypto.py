"""Key material: a Tink AEAD keyset (AES256_GCM), wrapped by Cloud KMS or, in development only,
kept in a cleartext file. Unwrapped once per process, not once per record."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import tink
from tink import aead, secret_key_access
from tink.proto import tink_pb2

from service.errors import (
    ConflictError,
    KeyMaterialUnavailableError,
    KeysetMissingError,
    UnavailableError,
)

logger = logging.getLogger(__name__)
aead.register()

_TINK_PREFIX = b"\x01"  # Tink's output prefix: version byte, then the 4-byte key id
_RELOAD_INTERVAL_SECONDS = 30.0
# A failed load is retried at most this often; meanwhile readiness probes and requests that need
# the keys answer at once, instead of each waiting for KMS's timeout in turn.
_RETRY_LOAD_SECONDS = 5.0


@dataclass(frozen=True)
class StoredKeyset:
    data: bytes
    generation: int | None  # a precondition for replacing it; None for files


class KeysetStore(Protocol):
    """Where the (wrapped or cleartext) keyset lives: a GCS object or a local file."""

    description: str

    def read(self) -> StoredKeyset | None: ...
    def create(self, data: bytes) -> None: ...
    def replace(self, data: bytes, generation: int | None) -> None: ...


class FileKeysetStore:
    """Development only: a cleartext keyset in a git-ignored file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = f"file {self.path}"

    def read(self) -> StoredKeyset | None:
        if not self.path.exists():
            return None
        return StoredKeyset(self.path.read_bytes(), int(self.path.stat().st_mtime_ns))

    def create(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as error:
            raise ConflictError(f"a keyset already exists at {self.path}") from error
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)

    def replace(self, data: bytes, generation: int | None) -> None:
        current = self.read()
        if current is None or current.generation != generation:
            raise ConflictError("the keyset changed meanwhile; run the command again")
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.chmod(0o600)
        temporary.replace(self.path)


@dataclass(frozen=True)
class KeyInfo:
    key_id: int
    status: str
    primary: bool


class Keyring:
    """An unwrapped keyset and its AEAD primitive."""

    def __init__(self, handle: tink.KeysetHandle) -> None:
        self.handle = handle
        self._aead = handle.primitive(aead.Aead)
        info = handle.keyset_info()
        self.primary_key_id = info.primary_key_id
        self.key_ids = frozenset(key.key_id for key in info.key_info)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        return self._aead.encrypt(plaintext, associated_data)

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        """Decrypt; raise tink.TinkError for tampered data or a wrong associated data."""
        return self._aead.decrypt(ciphertext, associated_data)

    def keys(self) -> list[KeyInfo]:
        info = self.handle.keyset_info()
        return [
            KeyInfo(
                key.key_id,
                tink_pb2.KeyStatusType.Name(key.status),
                key.key_id == info.primary_key_id,
            )
            for key in info.key_info
        ]


def key_id_of(ciphertext: bytes) -> int | None:
    """Return the id of the key a Tink ciphertext was made with, from its 5-byte prefix."""
    if len(ciphertext) < 5 or ciphertext[:1] != _TINK_PREFIX:
        return None
    return int.from_bytes(ciphertext[1:5], "big")


def new_keyset() -> tink.KeysetHandle:
    return tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)


def add_primary_key(handle: tink.KeysetHandle) -> tink.KeysetHandle:
    """Return a keyset with one new AES256_GCM key, made primary; earlier keys stay enabled."""
    keyset = tink_pb2.Keyset.FromString(
        tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
    )
    fresh = tink_pb2.Keyset.FromString(
        tink.proto_keyset_format.serialize(new_keyset(), secret_key_access.TOKEN)
    )
    key = fresh.key[0]
    used = {existing.key_id for existing in keyset.key}
    while key.key_id in used:  # Tink draws 32-bit ids at random; a clash is rare but possible
        key.key_id = secrets.randbits(32)
    keyset.key.append(key)
    keyset.primary_key_id = key.key_id
    return tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)


class KeysetCodec(Protocol):
    """Turns a keyset into stored bytes and back (wrapped by KMS, or cleartext)."""

    def dump(self, handle: tink.KeysetHandle) -> bytes: ...
    def load(self, data: bytes) -> tink.KeysetHandle: ...


class KmsWrappedCodec:
    """The keyset encrypted by a KMS key, bound by associated data to where it is stored."""

    def __init__(self, kek: aead.Aead, associated_data: bytes) -> None:
        self._kek = kek
        self._associated_data = associated_data

    def dump(self, handle: tink.KeysetHandle) -> bytes:
        serialized = tink.json_proto_keyset_format.serialize_encrypted(
            handle, self._kek, self._associated_data
        )
        return serialized.encode()

    def load(self, data: bytes) -> tink.KeysetHandle:
        return tink.json_proto_keyset_format.parse_encrypted(
            data.decode(), self._kek, self._associated_data
        )


class CleartextCodec:
    """Development only: the keyset as cleartext JSON."""

    def dump(self, handle: tink.KeysetHandle) -> bytes:
        return tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN).encode()

    def load(self, data: bytes) -> tink.KeysetHandle:
        return tink.json_proto_keyset_format.parse(data.decode(), secret_key_access.TOKEN)


class KeyMaterial:
    """Loads the keyset once per process and keeps it; creates, rotates and lists keys."""

    def __init__(
        self,
        store: KeysetStore,
        codec_factory: Callable[[], KeysetCodec],
        create_if_missing: bool = False,
    ) -> None:
        self.store = store
        self._codec_factory = codec_factory
        self._codec: KeysetCodec | None = None
        self._create_if_missing = create_if_missing
        self._keyring: Keyring | None = None
        self._lock = threading.Lock()
        self._last_reload = 0.0
        self._last_failure: tuple[float, str] | None = None

    def _get_codec(self) -> KeysetCodec:
        if self._codec is None:
            self._codec = self._codec_factory()
        return self._codec

    def keyring(self) -> Keyring:
        """Return the unwrapped keyset, loading it on first use.

        Raises:
            UnavailableError: the keyset could not be loaded, now or less than
                _RETRY_LOAD_SECONDS ago (then without trying again).
        """
        keyring = self._keyring
        if keyring is not None:
            return keyring
        with self._lock:
            if self._keyring is None:
                self._keyring = self._load_at_most_every_few_seconds()
            return self._keyring

    def _load_at_most_every_few_seconds(self) -> Keyring:
        failure = self._last_failure
        if failure and time.monotonic() - failure[0] < _RETRY_LOAD_SECONDS:
            raise KeyMaterialUnavailableError(failure[1])
        try:
            keyring = self._load()
        except UnavailableError as error:
            self._last_failure = (time.monotonic(), str(error))
            raise
        if failure is not None:
            logger.info("key material loaded after an earlier failure")
        self._last_failure = None
        return keyring

    def keyring_for(self, key_id: int | None) -> Keyring:
        """Return a keyring holding key_id, reloading once if another process rotated."""
        keyring = self.keyring()
        if key_id is None or key_id in keyring.key_ids:
            return keyring
        with self._lock:
            if time.monotonic() - self._last_reload >= _RELOAD_INTERVAL_SECONDS:
                self._last_reload = time.monotonic()
                self._keyring = self._load()
            # forget() may have run since keyring() answered: the keys read then still serve.
            return self._keyring or keyring

    def _load(self) -> Keyring:
        try:
            stored = self.store.read()
            if stored is None and self._create_if_missing:
                logger.warning(
                    "creating a cleartext development keyset; never use this in production",
                    extra={"keyset": self.store.description},
                )
                self.store.create(self._get_codec().dump(new_keyset()))
                stored = self.store.read()
            if stored is None:
                raise self._missing()
            return Keyring(self._get_codec().load(stored.data))
        except (UnavailableError, ConflictError):
            raise
        except tink.TinkError as error:
            raise KeyMaterialUnavailableError(
                f"the keyset could not be unwrapped: {error}"
            ) from error

    def ready(self) -> str | None:
        """Return None when the key material is loaded or loads now, else a short reason."""
        if self._keyring is not None:
            return None
        try:
            self.keyring()
        except UnavailableError as error:
            return str(error)
        return None

    def init(self) -> list[KeyInfo]:
        """Create and store a new wrapped keyset; refuse when one exists."""
        if self.store.read() is not None:
            raise ConflictError(f"a keyset already exists at {self.store.description}")
        handle = new_keyset()
        self.store.create(self._get_codec().dump(handle))
        with self._lock:
            self._keyring = Keyring(handle)
        return self._keyring.keys()

    def rotate(self) -> list[KeyInfo]:
        """Add a new key and make it primary; every earlier key still decrypts."""
        stored = self._read_existing()
        codec = self._get_codec()
        rotated = add_primary_key(codec.load(stored.data))
        self.store.replace(codec.dump(rotated), stored.generation)
        with self._lock:
            self._keyring = Keyring(rotated)
        return self._keyring.keys()

    def list_keys(self) -> list[KeyInfo]:
        """Return the stored keyset's keys, read afresh."""
        stored = self._read_existing()
        return Keyring(self._get_codec().load(stored.data)).keys()

    def _read_existing(self) -> StoredKeyset:
        stored = self.store.read()
        if stored is None:
            raise self._missing()
        return stored

    def _missing(self) -> KeysetMissingError:
        return KeysetMissingError(
            f"no keyset at {self.store.description}: run python -m service keys init"
        )

    def forget(self) -> None:
        """Drop the in-memory keyset so the next use reads the stored one (tests, reloads)."""
        with self._lock:
            self._keyring = None
            self._last_failure = None

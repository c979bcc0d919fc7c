"""What the archive's use cases may reach: the stores they name and the key material.

The shell hands them its components, which have all of this and more; typing the parameter
with these protocols means a use case cannot reach a client it does not declare (mypy checks
it), and the archive never imports the shell.
"""

from __future__ import annotations

from typing import Protocol

from repositories.archive import ArchiveRepository
from repositories.audit import AuditRepository
from repositories.conversations import ConversationRepository
from repositories.exports import ExportRepository
from service.keys.crypto import KeyMaterial


class Failpoint(Protocol):
    """A test-only failpoint (INTAKE_FAILPOINTS); does nothing unless a fault test armed it."""

    def hit(self, point: str) -> None: ...


class ArchiveStores(Protocol):
    @property
    def archive(self) -> ArchiveRepository: ...
    @property
    def audit(self) -> AuditRepository: ...
    @property
    def exports(self) -> ExportRepository: ...  # erasure purges the zips holding a record
    @property
    def conversations(self) -> ConversationRepository: ...  # and the reference to it


class ArchiveDeps(Protocol):
    @property
    def repos(self) -> ArchiveStores: ...
    @property
    def keys(self) -> KeyMaterial: ...

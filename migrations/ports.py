"""What a migration may reach: the archive's stores and keys (0002 rebuilds the index), the
migration records and the provider accounts. The shell's components satisfy it."""

from __future__ import annotations

from typing import Protocol

from repositories.migrations import MigrationRepository
from repositories.providers import ProviderRepository
from service.archive.ports import ArchiveDeps, ArchiveStores


class MigrationStores(ArchiveStores, Protocol):
    @property
    def migrations(self) -> MigrationRepository: ...
    @property
    def providers(self) -> ProviderRepository: ...


class MigrationDeps(ArchiveDeps, Protocol):
    @property
    def repos(self) -> MigrationStores: ...

"""What the portal's use cases may reach: the stores they read, the key material (records are
decrypted for the page shown) and the audit log every view of a record goes to."""

from __future__ import annotations

from typing import Protocol

from repositories.archive import ArchiveRepository
from repositories.audit import AuditRepository
from repositories.insights import InsightsRepository
from repositories.providers import ProviderRepository


class PortalStores(Protocol):
    @property
    def insights(self) -> InsightsRepository: ...
    @property
    def archive(self) -> ArchiveRepository: ...
    @property
    def audit(self) -> AuditRepository: ...
    @property
    def providers(self) -> ProviderRepository: ...


class PortalDeps(Protocol):
    @property
    def repos(self) -> PortalStores: ...

"""What the export use cases may reach: the stores of exports, records, accounts and audit,
the secrets and link lifetime, the export slots and the failed-link limiter. Typed as
protocols the shell's components satisfy, so no use case reaches a client it does not
declare and exports never import the shell."""

from __future__ import annotations

from typing import Protocol

from repositories.archive import ArchiveRepository
from repositories.audit import AuditRepository
from repositories.export_jobs import ExportJobRepository
from repositories.exports import ExportRepository
from repositories.providers import ProviderRepository
from service.accounts.ratelimit import SharedFailureLimiter
from service.archive.ports import Failpoint
from service.exports.slots import ExportSlots


class ExportStores(Protocol):
    @property
    def archive(self) -> ArchiveRepository: ...
    @property
    def audit(self) -> AuditRepository: ...
    @property
    def exports(self) -> ExportRepository: ...
    @property
    def export_jobs(self) -> ExportJobRepository: ...
    @property
    def providers(self) -> ProviderRepository: ...


class ExportSettings(Protocol):
    @property
    def zip_password(self) -> str: ...
    @property
    def secret_key(self) -> str: ...
    @property
    def export_link_ttl_seconds(self) -> int: ...


class ExportDeps(Protocol):
    @property
    def repos(self) -> ExportStores: ...
    @property
    def config(self) -> ExportSettings: ...
    @property
    def failpoints(self) -> Failpoint: ...
    @property
    def export_slots(self) -> ExportSlots: ...
    @property
    def download_failures(self) -> SharedFailureLimiter: ...

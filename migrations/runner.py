"""Discover numbered migrations and apply the pending ones in order, recording each."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType

import migrations
from migrations.ports import MigrationDeps

logger = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+$")


class MigrationError(Exception):
    """A migration failed: it is not recorded, and no later one ran."""


@dataclass(frozen=True)
class Migration:
    migration_id: str
    description: str
    apply: Callable[[MigrationDeps], None]


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    pending: list[str]
    dry_run: bool


def discover(package: ModuleType = migrations) -> list[Migration]:
    """Return the package's migrations in number order; refuse duplicate numbers."""
    found: dict[str, Migration] = {}
    for info in pkgutil.iter_modules(package.__path__):
        match = _NAME.match(info.name)
        if not match:
            continue
        number = match.group(1)
        if number in found:
            raise MigrationError(f"two migrations are numbered {number}")
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        description = (module.__doc__ or info.name).strip().splitlines()[0]
        found[number] = Migration(info.name, description, module.apply)
    return [found[number] for number in sorted(found)]


def run_migrations(
    components: MigrationDeps, dry_run: bool = False, available: list[Migration] | None = None
) -> MigrationReport:
    """Apply every pending migration in order; stop at the first failure."""
    repos = components.repos
    available = discover() if available is None else available
    done = repos.migrations.applied()
    pending = [migration for migration in available if migration.migration_id not in done]
    if dry_run:
        return MigrationReport([], [m.migration_id for m in pending], dry_run=True)
    applied: list[str] = []
    repos.migrations.acquire_lock(socket.gethostname(), datetime.now(UTC))
    try:
        # Read again under the lock: a run that finished meanwhile must not be repeated.
        done = repos.migrations.applied()
        for migration in (m for m in pending if m.migration_id not in done):
            logger.info("applying migration", extra={"migration": migration.migration_id})
            try:
                migration.apply(components)
            except Exception as error:
                raise MigrationError(
                    f"migration {migration.migration_id} failed: {type(error).__name__}: {error}"
                ) from error
            repos.migrations.record(
                migration.migration_id, migration.description, datetime.now(UTC)
            )
            applied.append(migration.migration_id)
    finally:
        repos.migrations.release_lock()
    return MigrationReport(applied, [], dry_run=False)

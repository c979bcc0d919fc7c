"""Give provider accounts created before roles existed the staff role."""

from __future__ import annotations

from migrations.ports import MigrationDeps
from repositories.providers import ROLE_WHEN_MISSING


def apply(components: MigrationDeps) -> None:
    components.repos.providers.fill_missing_roles(ROLE_WHEN_MISSING)

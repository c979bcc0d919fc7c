"""Rebuild missing intakes/ index documents from the archived objects."""

from __future__ import annotations

from migrations.ports import MigrationDeps
from service.archive.records import rebuild_index


def apply(components: MigrationDeps) -> None:
    rebuild_index(components)

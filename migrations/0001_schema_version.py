"""Record schema version 1 in the _meta/schema document."""

from __future__ import annotations

from datetime import UTC, datetime

from migrations.ports import MigrationDeps

SCHEMA_VERSION = 1


def apply(components: MigrationDeps) -> None:
    migrations = components.repos.migrations
    current = migrations.schema_version()
    if current is None or current < SCHEMA_VERSION:
        migrations.set_schema_version(SCHEMA_VERSION, datetime.now(UTC))

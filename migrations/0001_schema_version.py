"""Record schema version 1 in the _meta/schema document."""

from datetime import UTC, datetime

from repositories.registry import Repositories

SCHEMA_VERSION = 1


def apply(repos: Repositories) -> None:
    current = repos.migrations.schema_version()
    if current is None or current < SCHEMA_VERSION:
        repos.migrations.set_schema_version(SCHEMA_VERSION, datetime.now(UTC))

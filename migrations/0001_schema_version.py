"""Record schema version 1 in the _meta/schema document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the wiring is the shell's; a use case only names its type
    from service.shell.components import Components


SCHEMA_VERSION = 1


def apply(components: Components) -> None:
    migrations = components.repos.migrations
    current = migrations.schema_version()
    if current is None or current < SCHEMA_VERSION:
        migrations.set_schema_version(SCHEMA_VERSION, datetime.now(UTC))

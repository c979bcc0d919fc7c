"""Give every account the `email` field (null until an administrator sets one).

People sign in to the portal by email (issue 16). Accounts made before it have none; writing
the field as null keeps every account document the same shape in the console, and reading a
missing one as null (repositories/providers.py) keeps them working before this has run.
"""

from __future__ import annotations

from migrations.ports import MigrationDeps


def apply(components: MigrationDeps) -> None:
    components.repos.providers.fill_missing_emails()

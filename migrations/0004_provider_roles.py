"""Give provider accounts created before roles existed the staff role."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repositories.providers import ROLE_WHEN_MISSING

if TYPE_CHECKING:  # the wiring is the shell's; a use case only names its type
    from service.shell.components import Components


def apply(components: Components) -> None:
    components.repos.providers.fill_missing_roles(ROLE_WHEN_MISSING)

"""Rebuild missing intakes/ index documents from the archived objects."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.archive.records import rebuild_index

if TYPE_CHECKING:  # the wiring is the shell's; a use case only names its type
    from service.shell.components import Components


def apply(components: Components) -> None:
    rebuild_index(components)

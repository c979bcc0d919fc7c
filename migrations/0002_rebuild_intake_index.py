"""Rebuild missing intakes/ index documents from the archived objects."""

from service.archive import rebuild_index
from service.components import Components


def apply(components: Components) -> None:
    rebuild_index(components)

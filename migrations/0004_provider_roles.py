"""Give provider accounts created before roles existed the staff role."""

from repositories.providers import ROLE_WHEN_MISSING
from service.components import Components


def apply(components: Components) -> None:
    components.repos.providers.fill_missing_roles(ROLE_WHEN_MISSING)

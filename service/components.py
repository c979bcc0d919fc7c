"""Everything a request or CLI command needs, built once per process from Config."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from repositories.registry import Repositories, build_repositories
from service.config import Config

EXTENSION_KEY = "intake"


@dataclass
class Components:
    config: Config
    repos: Repositories

    def readiness(self) -> dict[str, str | None]:
        """Return each dependency's problem, or None where it answers."""
        return {
            "firestore": self.repos.firestore_ready(),
            "storage": self.repos.storage_ready(),
        }


def build_components(config: Config) -> Components:
    """Create the clients and repositories for this process."""
    return Components(config=config, repos=build_repositories(config))


def current_components() -> Components:
    """Return the components of the app handling the current request."""
    return current_app.extensions[EXTENSION_KEY]

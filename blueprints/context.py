"""How a request reaches the components the app was built with (the shell puts them there)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from service.shell.components import Components

EXTENSION_KEY = "intake"


def current_components() -> Components:
    """Return the components of the app handling the current request."""
    return current_app.extensions[EXTENSION_KEY]

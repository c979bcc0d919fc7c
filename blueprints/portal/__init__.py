"""The staff portal: server-rendered pages under /portal (see docs/portal.md)."""

from blueprints.portal import admin, exports, pages, signin  # noqa: F401  (each registers its routes)
from blueprints.portal.web import bp

__all__ = ["bp"]

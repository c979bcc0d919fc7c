"""The OpenAPI description of the provider API, served as written in docs/openapi.yaml.

Public on purpose: it describes the endpoints, never holds a secret, and lets a clinic's
integrator (or schemathesis) read the contract from the running service.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
_EXTENSION_KEY = "openapi_yaml"

bp = Blueprint("docs", __name__)


@bp.record_once
def _load_description(state: BlueprintSetupState) -> None:
    # Read at start: an image built without the file fails to boot instead of answering 500.
    state.app.extensions[_EXTENSION_KEY] = OPENAPI_PATH.read_bytes()


@bp.get("/openapi.yaml")
def openapi_yaml() -> Response:
    """Return the OpenAPI description (application/yaml, RFC 9512)."""
    return Response(current_app.extensions[_EXTENSION_KEY], mimetype="application/yaml")

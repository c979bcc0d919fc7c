"""Liveness and readiness probes for Cloud Run."""

from flask import Blueprint, Response, jsonify

from blueprints.context import current_components

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    problems = current_components().readiness()
    failing = {name: reason for name, reason in problems.items() if reason}
    body = {
        "status": "unavailable" if failing else "ready",
        "checks": {name: reason or "ok" for name, reason in problems.items()},
    }
    return jsonify(body), 503 if failing else 200
